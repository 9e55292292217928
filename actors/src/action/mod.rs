//! Actions: what the server makes endpoints do, signed by it, run at most once per machine.
//!
//! An action ([`ActionSpec`]) is a package (a built-in or an admin's command), its
//! parameters, a target (every machine, a list of machines, or a filter each machine
//! evaluates on itself) and an optional spread. The server signs it ([`SignedAction`],
//! [`Purpose::Action`]) and sends it along the rings as the body of a question (a body that
//! begins with [`ACTION_BODY`], a byte no encoded question starts with); each endpoint's
//! [`runner::ActionRunner`] verifies it before anything else, checks the target, writes the
//! action into its [`journal`] before it starts, and runs it with its [`Executor`]. Statuses
//! come back as answers (`[status, output]` rows), merged along the ring like any answer; the
//! server asks `Action Status[ID]` until every targeted machine is done or the action
//! expires ([`server`]).

pub mod journal;
pub mod linux;
pub mod runner;
pub mod server;
pub mod sim;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use rollcall_runtime::signing::{
    Purpose, ServerSigner, ServerTrust, SignatureError, Stamp, unix_ms,
};
use rollcall_runtime::wire::{self, WireError};
use serde::{Deserialize, Serialize};

use crate::question::Question;
use rollcall_patchdist::Manifest;

thread_local! {
    /// The last action this thread opened: its signature and what it decoded to.
    static LAST_OPENED: std::cell::RefCell<Option<(Vec<u8>, Arc<ActionSpec>)>> =
        const { std::cell::RefCell::new(None) };
}

/// First byte of a question body that carries an action: `0xc1`, which MessagePack never
/// uses, so no encoded question begins with it.
pub const ACTION_BODY: u8 = 0xc1;

/// Bytes of an action's output an answer carries (the journal keeps up to the cap).
pub const OUTPUT_IN_ANSWER: usize = 200;

/// Most machines an action may name (`--from-question`): the list travels in every copy.
pub const MAX_TARGET_MACHINES: usize = 16_384;

/// Default output cap of a package.
pub const DEFAULT_OUTPUT_CAP: usize = 64 * 1024;

/// What a package does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PackageKind {
    /// Moves a file (parameter: its path) into the endpoint's quarantine folder, or deletes
    /// it with `purge`; only under the endpoint's allowed roots.
    DeleteFile,
    /// Kills processes by name, pid or the SHA-256 of their executable (parameter).
    KillProcess,
    /// Cuts the machine off the network except for the server and its ring neighbours.
    Quarantine,
    /// Lifts the quarantine.
    Release,
    /// Removes an installed package (parameter: its name) with apt/dpkg or dnf/rpm.
    Uninstall,
    /// Runs the action's script with `sh`.
    RunScript,
    /// An admin's command, run with `sh -c COMMAND rollcall PARAMS...` (the parameters are
    /// `$1`, `$2`, …, never pasted into the command).
    Command(String),
    /// Cancels action `0` where it has not started (the server sends this when an operator
    /// cancels an action that is out); a machine that has not received that action yet
    /// will never run it.
    Cancel(u64),
}

/// A package: what runs, with its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Its name (`delete-file`, or an admin's).
    pub name: String,
    /// What it does.
    pub kind: PackageKind,
    /// Longest a run may take.
    pub timeout_secs: u64,
    /// Most output kept.
    pub output_cap: usize,
    /// The files it carries (each chunk's and each file's hash), fetched and verified by
    /// each machine before the command runs in a folder holding them; signed with the
    /// action that carries it.
    #[serde(default)]
    pub manifest: Option<Arc<Manifest>>,
}

/// The built-in packages: (name, parameter, description).
pub const BUILTIN_PACKAGES: &[(&str, &str, &str)] = &[
    (
        "delete-file",
        "PATH",
        "moves a file under the endpoint's allowed roots into its quarantine folder (--purge deletes it)",
    ),
    (
        "kill-process",
        "NAME|PID|SHA256",
        "kills the processes of that name, pid or executable hash",
    ),
    (
        "quarantine",
        "",
        "drops all traffic except to the server and the ring neighbours (nftables)",
    ),
    ("release", "", "lifts the quarantine"),
    (
        "uninstall",
        "NAME",
        "removes an installed package (apt/dpkg, or dnf/rpm)",
    ),
    (
        "run-script",
        "",
        "runs the script given with --script-file (sh), with its exit code and output",
    ),
];

impl Package {
    /// The package that cancels action `id`.
    pub fn cancel(id: u64) -> Package {
        Package {
            name: "cancel".into(),
            kind: PackageKind::Cancel(id),
            timeout_secs: 60,
            output_cap: DEFAULT_OUTPUT_CAP,
            manifest: None,
        }
    }

    /// The built-in package `name`, if there is one.
    pub fn builtin(name: &str) -> Option<Package> {
        let kind = match name {
            "delete-file" => PackageKind::DeleteFile,
            "kill-process" => PackageKind::KillProcess,
            "quarantine" => PackageKind::Quarantine,
            "release" => PackageKind::Release,
            "uninstall" => PackageKind::Uninstall,
            "run-script" => PackageKind::RunScript,
            _ => return None,
        };
        let timeout_secs = match kind {
            PackageKind::Uninstall => 600,
            PackageKind::RunScript => 300,
            _ => 60,
        };
        Some(Package {
            name: name.to_string(),
            kind,
            timeout_secs,
            output_cap: DEFAULT_OUTPUT_CAP,
            manifest: None,
        })
    }

    /// How many parameters it takes.
    pub fn params(&self) -> std::ops::RangeInclusive<usize> {
        match self.kind {
            PackageKind::DeleteFile | PackageKind::KillProcess | PackageKind::Uninstall => 1..=1,
            PackageKind::Quarantine | PackageKind::Release | PackageKind::RunScript => 0..=0,
            PackageKind::Command(_) => 0..=16,
            PackageKind::Cancel(_) => 0..=0,
        }
    }
}

/// Which machines an action is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// Every machine.
    All,
    /// These machines (node ids), e.g. those that matched a question.
    Machines(Vec<String>),
    /// Machines whose sensors satisfy this question's filter (each evaluates it on itself; a
    /// machine that cannot tell, because a sensor failed, is not targeted).
    Where(Question),
}

/// An action as the server signs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionSpec {
    /// The server's id for it.
    pub id: u64,
    /// What runs.
    pub package: Package,
    /// Its parameters.
    pub params: Vec<String>,
    /// On which machines.
    pub target: Target,
    /// Each machine waits a random share of this before it starts.
    pub spread_secs: u64,
    /// Only say what would be done.
    pub dry_run: bool,
    /// `delete-file`: delete instead of moving into the quarantine folder.
    pub purge: bool,
    /// `run-script`: the script.
    pub script: Option<String>,
    /// Who issued it.
    pub issued_by: String,
}

impl ActionSpec {
    /// Action `id`: `package` on every machine, no parameters, no spread, issued by `who`.
    pub fn new(id: u64, package: Package, who: impl Into<String>) -> ActionSpec {
        ActionSpec {
            id,
            package,
            params: Vec::new(),
            target: Target::All,
            spread_secs: 0,
            dry_run: false,
            purge: false,
            script: None,
            issued_by: who.into(),
        }
    }
}

/// An [`ActionSpec`] as it travels: encoded and signed by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAction {
    /// The action's id (also inside the body).
    pub id: u64,
    /// The encoded [`ActionSpec`].
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// When it was issued and until when it may start.
    pub stamp: Stamp,
    /// The server's signature ([`Purpose::Action`]) over the id, the stamp and the body.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why an endpoint refused an action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionRefusal {
    /// It does not decode.
    #[error("unreadable action: {0}")]
    Unreadable(String),
    /// The signature is not the pinned server's over these bytes.
    #[error("bad signature: {0}")]
    Signature(SignatureError),
    /// The body names another id than the signed one.
    #[error("the body's id {inner} is not the signed id {outer}")]
    IdMismatch {
        /// Signed.
        outer: u64,
        /// In the body.
        inner: u64,
    },
    /// Its expiry has passed.
    #[error("expired {0} s ago")]
    Expired(u64),
}

impl SignedAction {
    /// Encodes and signs `spec`, valid until `stamp`'s expiry.
    pub fn sign(
        spec: &ActionSpec,
        stamp: Stamp,
        signer: &ServerSigner,
    ) -> Result<SignedAction, WireError> {
        let body = wire::encode_body(spec)?;
        let signature = signer.sign(Purpose::Action, spec.id, stamp, &body);
        Ok(SignedAction {
            id: spec.id,
            body,
            stamp,
            signature,
        })
    }

    /// The action, if the server pinned in `trust` signed it and it has not expired at
    /// `now_unix_ms` (strictly: no clock-skew grace past an action's expiry).
    ///
    /// What it decodes is kept per thread for the last signature that verified: a simulated
    /// fleet's endpoints share threads and all open the same action (as `ServerTrust`
    /// memoises the verification); a real endpoint opens each action once either way.
    pub fn open(
        &self,
        trust: &ServerTrust,
        now_unix_ms: u64,
    ) -> Result<Arc<ActionSpec>, ActionRefusal> {
        // The signature first: an expiry that is not the server's means nothing.
        trust
            .verify(
                Purpose::Action,
                self.id,
                self.stamp,
                &self.body,
                &self.signature,
                now_unix_ms.min(self.stamp.expires_unix_ms),
            )
            .map_err(ActionRefusal::Signature)?;
        if now_unix_ms > self.stamp.expires_unix_ms {
            return Err(ActionRefusal::Expired(
                (now_unix_ms - self.stamp.expires_unix_ms) / 1000,
            ));
        }
        // Verified: the same signature is over these very bytes, so the same decoding.
        if let Some(spec) = LAST_OPENED.with(|last| {
            last.borrow()
                .as_ref()
                .filter(|(sig, _)| *sig == self.signature)
                .map(|(_, spec)| spec.clone())
        }) {
            return Ok(spec);
        }
        let spec: ActionSpec =
            wire::decode_body(&self.body).map_err(|e| ActionRefusal::Unreadable(e.to_string()))?;
        if spec.id != self.id {
            return Err(ActionRefusal::IdMismatch {
                outer: self.id,
                inner: spec.id,
            });
        }
        if let Target::Where(q) = &spec.target {
            q.check()
                .map_err(|e| ActionRefusal::Unreadable(e.to_string()))?;
        }
        let spec = Arc::new(spec);
        LAST_OPENED.with(|last| *last.borrow_mut() = Some((self.signature.clone(), spec.clone())));
        Ok(spec)
    }

    /// The question body that carries it along a ring.
    pub fn to_question_body(&self) -> Result<Vec<u8>, WireError> {
        let mut body = vec![ACTION_BODY];
        body.extend(wire::encode_body(self)?);
        Ok(body)
    }

    /// The action a question body carries (`None`: the body is a question).
    pub fn from_question_body(body: &[u8]) -> Option<Result<SignedAction, WireError>> {
        match body.split_first() {
            Some((&ACTION_BODY, rest)) => Some(wire::decode_body(rest)),
            _ => None,
        }
    }
}

/// Where an action stands on one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The machine is not among the action's targets.
    NotTargeted,
    /// Waiting for its share of the spread.
    Waiting,
    /// Running now.
    Running,
    /// Done, exit 0.
    Completed,
    /// Done, and it failed (exit code or reason).
    Failed(String),
    /// Refused before it ran (signature, expiry, a path outside the roots, …).
    Refused(String),
    /// It could not start before its expiry.
    Expired,
    /// The endpoint stopped while it ran (it is never run again).
    Interrupted,
    /// Cancelled by an operator before it started.
    Cancelled,
}

impl Status {
    /// Whether nothing more will happen.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Status::Waiting | Status::Running)
    }

    /// Its one-word kind, as counts are keyed: `completed`, `failed`, …
    pub fn kind(&self) -> &'static str {
        match self {
            Status::NotTargeted => "not targeted",
            Status::Waiting => "waiting",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed(_) => "failed",
            Status::Refused(_) => "refused",
            Status::Expired => "expired",
            Status::Interrupted => "interrupted",
            Status::Cancelled => "cancelled",
        }
    }

    /// Reads a status as [`fmt::Display`] writes it.
    pub fn parse(s: &str) -> Status {
        let (kind, why) = match s.split_once(": ") {
            Some((k, w)) => (k, w.to_string()),
            None => (s, String::new()),
        };
        match kind {
            "not targeted" => Status::NotTargeted,
            "waiting" => Status::Waiting,
            "running" => Status::Running,
            "completed" => Status::Completed,
            "failed" => Status::Failed(why),
            "refused" => Status::Refused(why),
            "expired" => Status::Expired,
            "interrupted" => Status::Interrupted,
            "cancelled" => Status::Cancelled,
            other => Status::Failed(format!("unknown status {other:?}")),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Failed(why) | Status::Refused(why) if !why.is_empty() => {
                write!(f, "{}: {why}", self.kind())
            }
            _ => f.write_str(self.kind()),
        }
    }
}

/// What a run gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `Completed`, `Failed` or `Refused`.
    pub status: Status,
    /// Its output (cut at the package's cap).
    pub output: String,
}

impl Outcome {
    /// Completed with `output`.
    pub fn done(output: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Completed,
            output: output.into(),
        }
    }

    /// Failed for `why`.
    pub fn failed(why: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Failed(why.into()),
            output: String::new(),
        }
    }

    /// Refused for `why`.
    pub fn refused(why: impl Into<String>) -> Outcome {
        Outcome {
            status: Status::Refused(why.into()),
            output: String::new(),
        }
    }
}

/// Runs packages on one machine: the real one ([`linux::LinuxExecutor`]) or a simulated
/// host's profile ([`sim::SimExecutor`]).
pub trait Executor: Send + Sync + 'static {
    /// Runs `spec` (or, with `dry_run`, says what it would do).
    fn run(&self, spec: &ActionSpec) -> BoxFuture<'static, Outcome>;

    /// Runs `spec` in `dir`, the folder holding its package's files (where the package has
    /// files and they are written out; a simulated host keeps them in its cache).
    fn run_in(&self, spec: &ActionSpec, dir: Option<PathBuf>) -> BoxFuture<'static, Outcome> {
        let _ = dir;
        self.run(spec)
    }

    /// Whether runs finish at once (a simulated host): then the answer that delivers the
    /// action already carries its outcome.
    fn immediate(&self) -> bool {
        false
    }

    /// Whether this machine is quarantined now.
    fn quarantined(&self) -> bool;
}

/// Where one machine's copy of a package's files came from, in bytes (chunks it held
/// already count in neither).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSources {
    /// Received from ring neighbours.
    pub from_peers: u64,
    /// Received from the server.
    pub from_server: u64,
}

impl FileSources {
    /// As the `Action Files` sensor answers: `peers=N server=M`.
    pub fn cell(&self) -> String {
        format!("peers={} server={}", self.from_peers, self.from_server)
    }

    /// Reads [`FileSources::cell`]'s text (`None`: empty or not that shape).
    pub fn parse(s: &str) -> Option<FileSources> {
        let (p, v) = s.split_once(' ')?;
        Some(FileSources {
            from_peers: p.strip_prefix("peers=")?.parse().ok()?,
            from_server: v.strip_prefix("server=")?.parse().ok()?,
        })
    }
}

/// Where an endpoint gets a package's files before its command runs.
pub trait PackageFiles: Send + Sync + 'static {
    /// Fetches every chunk of `manifest` this machine lacks (from its ring neighbours, or
    /// from the server if it leads its ring), verifies the files, and returns the folder
    /// they were written to for action `action` (`None`: kept in the cache only, as on a
    /// simulated host) and where the bytes came from.
    fn obtain(
        &self,
        action: u64,
        manifest: Arc<Manifest>,
    ) -> BoxFuture<'static, Result<(Option<PathBuf>, FileSources), String>>;

    /// Action `action` is done with its files: their chunks may be evicted again.
    fn release(&self, action: u64, manifest: &Manifest);

    /// Fetches `manifest`'s chunks into the cache for the neighbours' sake, on a machine the
    /// action does not target (chunks flow down the ring through every machine; they are
    /// not pinned). Returns at once.
    fn relay(&self, manifest: Arc<Manifest>);
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    &s[..at]
}

/// Milliseconds since the Unix epoch now (re-exported for the action's users).
pub fn now_ms() -> u64 {
    unix_ms()
}

#[cfg(test)]
mod tests;
