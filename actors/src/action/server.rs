//! The server's side of actions: the book of actions (issued, awaiting approval, out,
//! closed), their signing and delivery along the rings, and the statuses gathered back.
//!
//! An action goes out as one question whose body is the signed action: each machine's
//! answer is its status there. While a targeted machine is not done, the server asks
//! `Action Status[ID]` again (one ring round each time), until every targeted machine is
//! done or the action expires; machines that come back before expiry receive the action
//! with the questions they missed, and their late answers count. Records live in the
//! server's store: a restart loses none, and sends the same signed action again (each
//! endpoint's journal keeps it from running twice).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcall_cluster::shard::RingServer;
use rollcall_runtime::NodeId;
use rollcall_runtime::signing::{Stamp, unix_ms};
use rollcall_runtime::wire;
use serde::{Deserialize, Serialize};

use super::{
    ActionSpec, FileSources, MAX_TARGET_MACHINES, Package, PackageKind, SignedAction, Status,
    Target,
};
use crate::question::{SensorSpec, parse};
use crate::store::ServerStore;
use rollcall_patchdist::Origin;

mod packages;
pub use packages::{MachineFiles, PackageReport, RingFiles};

/// Packages that wait for a second admin's approval unless the server's configuration says
/// otherwise.
pub const DEFAULT_REQUIRE_APPROVAL: &[&str] = &[
    "delete-file",
    "quarantine",
    "uninstall",
    "run-script",
    "kill-process",
];

/// Default time an action may start in, on top of its package's timeout.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(600);

/// How often the server asks the statuses of an action that is not done.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// How often the answers of a round still going are read.
const GATHER_WHILE_GOING: Duration = Duration::from_secs(1);

/// Machines one status reply lists at most.
pub const MACHINES_PER_REPLY: usize = 2_000;

const PACKAGES_KEY: &str = "packages";

/// What an operator asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActRequest {
    /// The package's name.
    pub package: String,
    /// Its parameters.
    pub params: Vec<String>,
    /// `--where`: a filter in the question language.
    pub filter: Option<String>,
    /// `--from-question`: the machines that matched that question.
    pub from_question: Option<u64>,
    /// `--all`.
    pub all: bool,
    /// Only say what would be done.
    pub dry_run: bool,
    /// Seconds it may start in (default: 10 min + the package's timeout).
    pub expire_secs: Option<u64>,
    /// Spread of the start over this many seconds.
    pub spread_secs: u64,
    /// `delete-file --purge`.
    pub purge: bool,
    /// `run-script`'s script.
    pub script: Option<String>,
    /// These machines by node id (a case's response: the machines it found).
    #[serde(default)]
    pub machines: Option<Vec<String>>,
}

/// Where an action stands as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Waiting for an admin other than the issuer.
    AwaitingApproval,
    /// Denied by this admin.
    Denied(String),
    /// Cancelled before it went out, by this operator.
    Cancelled(String),
    /// Out on the rings.
    Out,
    /// Expired: nothing more starts.
    Closed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::AwaitingApproval => f.write_str("awaiting approval"),
            Phase::Denied(by) => write!(f, "denied by {by}"),
            Phase::Cancelled(by) => write!(f, "cancelled by {by}"),
            Phase::Out => f.write_str("out"),
            Phase::Closed => f.write_str("closed"),
        }
    }
}

/// One action as the server keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The action.
    pub spec: ActionSpec,
    /// How the operator wrote it.
    pub description: String,
    /// Where it stands.
    pub phase: Phase,
    /// When it was issued.
    pub issued_unix_ms: u64,
    /// Seconds it may start in, from when it goes out.
    pub expire_secs: u64,
    /// The admin who approved it.
    pub approved_by: Option<String>,
    /// The action as signed, once out.
    pub signed: Option<SignedAction>,
    /// Each machine's last status and output's first bytes.
    pub machines: HashMap<NodeId, (Status, String)>,
    /// Answers taken from each question so far (a question whose count has not moved is
    /// not read again).
    #[serde(skip)]
    gathered: BTreeMap<u64, usize>,
    /// When each question's answers were last read.
    #[serde(skip)]
    read_at: BTreeMap<u64, tokio::time::Instant>,
    /// The question that delivered it (this server run).
    #[serde(skip)]
    delivery: Option<u64>,
    /// The last status question (this server run) and when it was asked.
    #[serde(skip)]
    poll: Option<(u64, tokio::time::Instant)>,
    /// Who cancelled it while it was out.
    #[serde(default)]
    pub cancelled_by: Option<String>,
    /// Statuses changed since it was last saved.
    #[serde(skip)]
    dirty: bool,
    /// Where each machine's copy of the package's files came from (packages with files,
    /// once the machine holds them all).
    #[serde(default)]
    pub files: HashMap<NodeId, FileSources>,
}

impl ActionRecord {
    /// A new record of `spec`, in `phase`.
    fn new(spec: ActionSpec, description: String, phase: Phase, expire_secs: u64) -> ActionRecord {
        ActionRecord {
            spec,
            description,
            phase,
            issued_unix_ms: unix_ms(),
            expire_secs,
            approved_by: None,
            signed: None,
            machines: HashMap::new(),
            gathered: BTreeMap::new(),
            read_at: BTreeMap::new(),
            delivery: None,
            poll: None,
            cancelled_by: None,
            dirty: false,
            files: HashMap::new(),
        }
    }
}

/// One machine in a status report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineStatus {
    /// Its node id.
    pub id: String,
    /// Its status.
    pub status: String,
    /// The first bytes of its output.
    pub output: String,
}

/// Where an action stands: counts, then machines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReport {
    /// Its id.
    pub id: u64,
    /// How it was written.
    pub description: String,
    /// Its package.
    pub package: String,
    /// The phase, as text.
    pub phase: String,
    /// Waiting for approval.
    pub awaiting_approval: bool,
    /// Who issued it.
    pub issued_by: String,
    /// Who approved it.
    pub approved_by: Option<String>,
    /// A dry run.
    pub dry_run: bool,
    /// Machines targeted (known so far).
    pub targeted: u64,
    /// Machines per status kind (`completed`, `failed`, …).
    pub counts: BTreeMap<String, u64>,
    /// Every targeted machine is done.
    pub done: bool,
    /// Milliseconds until it expires (0: expired or not out).
    pub expires_in_ms: u64,
    /// Machines with their status (all, or only the failed ones), at most
    /// [`MACHINES_PER_REPLY`].
    pub machines: Vec<MachineStatus>,
    /// How many machines the full list has.
    pub machines_total: usize,
}

impl ActionReport {
    /// Machines whose status is of `kind`.
    pub fn count(&self, kind: &str) -> u64 {
        self.counts.get(kind).copied().unwrap_or(0)
    }
}

#[derive(Default)]
struct Book {
    last_id: u64,
    actions: BTreeMap<u64, ActionRecord>,
    packages: BTreeMap<String, Package>,
}

/// The server's actions.
pub struct ActionBook {
    rings: RingServer,
    store: Option<Arc<ServerStore>>,
    book: Mutex<Book>,
    require_approval: Mutex<Vec<String>>,
    /// Where packages' files are kept and fetched from.
    origin: std::sync::OnceLock<Arc<Origin>>,
}

impl std::fmt::Debug for ActionBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActionBook")
    }
}

impl ActRequest {
    /// `package` with `params` on the machines where `filter` holds.
    pub fn where_(package: &str, params: &[&str], filter: impl Into<String>) -> ActRequest {
        ActRequest {
            package: package.into(),
            params: params.iter().map(|p| p.to_string()).collect(),
            filter: Some(filter.into()),
            ..ActRequest::default()
        }
    }

    /// `package` with `params` on every machine.
    pub fn all(package: &str, params: &[&str]) -> ActRequest {
        ActRequest {
            package: package.into(),
            params: params.iter().map(|p| p.to_string()).collect(),
            all: true,
            ..ActRequest::default()
        }
    }
}

impl ActionBook {
    /// The book, with what `store` kept.
    pub fn new(rings: RingServer, store: Option<Arc<ServerStore>>) -> ActionBook {
        let mut book = Book::default();
        if let Some(st) = &store {
            match st.actions::<ActionRecord>() {
                Ok(records) => {
                    for r in records {
                        book.last_id = book.last_id.max(r.spec.id);
                        book.actions.insert(r.spec.id, r);
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not load the actions"),
            }
            match st.setting::<Vec<Package>>(PACKAGES_KEY) {
                Ok(p) => {
                    book.packages = p
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| (p.name.clone(), p))
                        .collect()
                }
                Err(e) => tracing::error!(error = %e, "could not load the packages"),
            }
        }
        ActionBook {
            rings,
            store,
            book: Mutex::new(book),
            origin: std::sync::OnceLock::new(),
            require_approval: Mutex::new(
                DEFAULT_REQUIRE_APPROVAL
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        rollcall_runtime::sync::lock(&self.book)
    }

    /// Sets the packages that need a second admin's approval.
    pub fn set_require_approval(&self, packages: Vec<String>) {
        *rollcall_runtime::sync::lock(&self.require_approval) = packages;
    }

    fn persist(&self, r: &ActionRecord) {
        if let Some(st) = &self.store
            && let Err(e) = st.put_action(r.spec.id, r)
        {
            tracing::error!(action = r.spec.id, error = %e, "could not save the action");
        }
    }

    /// Issues an action for `who`; it goes out now, or waits for approval.
    pub async fn act(
        &self,
        req: ActRequest,
        who: &str,
        catalog: &[SensorSpec],
    ) -> Result<ActionReport, String> {
        let package = self
            .package(&req.package)
            .ok_or_else(|| format!("no package {:?} (rollcall package list)", req.package))?;
        if !package.params().contains(&req.params.len()) {
            let r = package.params();
            return Err(format!(
                "{} takes {} parameter{}, not {}",
                package.name,
                if r.start() == r.end() {
                    r.start().to_string()
                } else {
                    format!("{} to {}", r.start(), r.end())
                },
                if *r.end() == 1 { "" } else { "s" },
                req.params.len()
            ));
        }
        if package.kind == PackageKind::RunScript && req.script.as_deref().is_none_or(str::is_empty)
        {
            return Err("run-script needs a script (--script-file)".into());
        }
        let targets = [
            req.filter.is_some(),
            req.from_question.is_some(),
            req.all,
            req.machines.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if targets != 1 {
            return Err(
                "say which machines: exactly one of --where, --from-question, --all".into(),
            );
        }
        let target = if let Some(f) = &req.filter {
            let q = parse(
                &format!("Get Computer Name from all machines with {f}"),
                catalog,
            )
            .map_err(|e| format!("in --where: {e}"))?;
            Target::Where(q)
        } else if let Some(qid) = req.from_question {
            let groups = self
                .rings
                .answers_by_machine(qid)
                .ok_or_else(|| format!("no question {qid} (it may have been dropped)"))?;
            let mut ids: Vec<String> = groups
                .into_iter()
                .filter(|(a, _)| a.rows.is_some())
                .flat_map(|(_, who)| who.into_iter().map(|n| n.to_string()))
                .collect();
            ids.sort();
            if ids.is_empty() {
                return Err(format!("no machine matched question {qid}"));
            }
            if ids.len() > MAX_TARGET_MACHINES {
                return Err(format!(
                    "{} machines matched question {qid}; an action names at most {MAX_TARGET_MACHINES} (use --where with the question's filter)",
                    ids.len()
                ));
            }
            Target::Machines(ids)
        } else if let Some(ids) = &req.machines {
            if ids.is_empty() || ids.len() > MAX_TARGET_MACHINES {
                return Err(format!(
                    "an action names 1 to {MAX_TARGET_MACHINES} machines, not {}",
                    ids.len()
                ));
            }
            let mut ids = ids.clone();
            ids.sort();
            ids.dedup();
            Target::Machines(ids)
        } else {
            Target::All
        };
        let expire_secs = req
            .expire_secs
            .unwrap_or(DEFAULT_EXPIRY.as_secs() + package.timeout_secs);
        if expire_secs == 0 || expire_secs > 7 * 24 * 3600 {
            return Err("an action expires 1 s to 7 days after it goes out".into());
        }
        if req.spread_secs >= expire_secs {
            return Err("the spread must be shorter than the expiry".into());
        }
        let description = describe(&req, &package);
        let needs_approval =
            rollcall_runtime::sync::lock(&self.require_approval).contains(&package.name);
        let id = {
            let mut b = self.lock();
            b.last_id += 1;
            let id = b.last_id;
            let record = ActionRecord::new(
                ActionSpec {
                    params: req.params,
                    target,
                    spread_secs: req.spread_secs,
                    dry_run: req.dry_run,
                    purge: req.purge,
                    script: req.script,
                    ..ActionSpec::new(id, package, who)
                },
                description,
                if needs_approval {
                    Phase::AwaitingApproval
                } else {
                    Phase::Out
                },
                expire_secs,
            );
            b.actions.insert(id, record);
            id
        };
        if needs_approval {
            if let Some(r) = self.lock().actions.get(&id).cloned() {
                self.persist(&r);
            }
        } else {
            self.launch(id).await?;
        }
        self.report(id, false)
            .ok_or_else(|| "the action vanished".into())
    }

    /// Sends action `id` out: signs it (its expiry counts from now) and asks it of every ring.
    async fn launch(&self, id: u64) -> Result<(), String> {
        let (spec, expire_secs, signed) = {
            let b = self.lock();
            let r = b.actions.get(&id).ok_or("no such action")?;
            (r.spec.clone(), r.expire_secs, r.signed.clone())
        };
        let signed = match signed {
            Some(s) => s,
            None => SignedAction::sign(
                &spec,
                Stamp::now_for(Duration::from_secs(expire_secs)),
                self.rings.signer(),
            )
            .map_err(|e| e.to_string())?,
        };
        let left = signed.stamp.expires_unix_ms.saturating_sub(unix_ms());
        if left == 0 {
            return Err("expired".into());
        }
        let body = signed.to_question_body().map_err(|e| e.to_string())?;
        if body.len() > crate::desk::MAX_QUESTION_BODY_BYTES {
            return Err(format!(
                "the action encodes to {} bytes; at most {} travel a ring",
                body.len(),
                crate::desk::MAX_QUESTION_BODY_BYTES
            ));
        }
        let text = format!(
            "action {id}: {}",
            self.lock()
                .actions
                .get(&id)
                .map(|r| r.description.clone())
                .unwrap_or_default()
        );
        let qid = self
            .rings
            .ask(
                text,
                vec!["Action Status".into(), "Action Output".into()],
                body,
                Duration::from_millis(left),
            )
            .await;
        let record = {
            let mut b = self.lock();
            let r = b.actions.get_mut(&id).ok_or("no such action")?;
            r.signed = Some(signed);
            r.phase = Phase::Out;
            r.delivery = Some(qid);
            r.clone()
        };
        tracing::info!(action = id, question = qid, "action out");
        self.persist(&record);
        Ok(())
    }

    /// Approves action `id` (an admin other than its issuer) and sends it out.
    pub async fn approve(&self, id: u64, who: &str) -> Result<String, String> {
        {
            let mut b = self.lock();
            let r = b.actions.get_mut(&id).ok_or(format!("no action {id}"))?;
            if r.phase != Phase::AwaitingApproval {
                return Err(format!("action {id} is {}, not awaiting approval", r.phase));
            }
            if r.spec.issued_by == who {
                return Err(format!(
                    "{who} issued action {id}: another admin must approve it"
                ));
            }
            r.approved_by = Some(who.to_string());
        }
        self.launch(id).await?;
        Ok(format!("action {id} approved by {who} and out"))
    }

    /// Cancels action `id` (its issuer or an admin): before it is out, it never goes; once
    /// out, the server stops handing it to returning machines and sends a signed cancel
    /// that every machine applies where it has not started (one waiting its share of the
    /// spread, or one that has not received it yet, never runs it).
    pub async fn cancel(&self, id: u64, who: &str, admin: bool) -> Result<String, String> {
        let (phase, delivery, expire_secs, issuer) = {
            let b = self.lock();
            let r = b.actions.get(&id).ok_or(format!("no action {id}"))?;
            (
                r.phase.clone(),
                r.delivery,
                r.signed
                    .as_ref()
                    .map(|s| s.stamp.expires_unix_ms.saturating_sub(unix_ms()) / 1000 + 1)
                    .unwrap_or(r.expire_secs),
                r.spec.issued_by.clone(),
            )
        };
        if !admin && issuer != who {
            return Err(format!(
                "only its issuer or an admin may cancel action {id}"
            ));
        }
        match phase {
            Phase::AwaitingApproval => self.stop(id, who, admin, false),
            Phase::Out
                if self
                    .lock()
                    .actions
                    .get(&id)
                    .is_some_and(|r| r.cancelled_by.is_some()) =>
            {
                Err(format!("action {id} is already cancelled"))
            }
            Phase::Out => {
                if let Some(q) = delivery {
                    self.rings.close(q);
                }
                let cancel_id = {
                    let mut b = self.lock();
                    b.last_id += 1;
                    let cancel_id = b.last_id;
                    let record = ActionRecord::new(
                        ActionSpec::new(cancel_id, Package::cancel(id), who),
                        format!("cancel action {id}"),
                        Phase::Out,
                        expire_secs,
                    );
                    b.actions.insert(cancel_id, record);
                    if let Some(r) = b.actions.get_mut(&id) {
                        r.cancelled_by = Some(who.to_string());
                    }
                    cancel_id
                };
                if let Some(r) = self.lock().actions.get(&id).cloned() {
                    self.persist(&r);
                }
                self.launch(cancel_id).await?;
                Ok(format!(
                    "action {id}: cancel sent as action {cancel_id}; machines that have not started it never will"
                ))
            }
            other => Err(format!("action {id} is {other}: nothing to cancel")),
        }
    }

    /// Denies action `id` (admin) or cancels it (its issuer or an admin), before it is out.
    pub fn stop(&self, id: u64, who: &str, admin: bool, deny: bool) -> Result<String, String> {
        let record = {
            let mut b = self.lock();
            let r = b.actions.get_mut(&id).ok_or(format!("no action {id}"))?;
            if !deny && !admin && r.spec.issued_by != who {
                return Err(format!(
                    "only its issuer or an admin may cancel action {id}"
                ));
            }
            if r.phase != Phase::AwaitingApproval {
                return Err(format!(
                    "action {id} is {}: only an action awaiting approval can be {}",
                    r.phase,
                    if deny { "denied" } else { "cancelled" }
                ));
            }
            r.phase = if deny {
                Phase::Denied(who.to_string())
            } else {
                Phase::Cancelled(who.to_string())
            };
            r.clone()
        };
        self.persist(&record);
        Ok(format!("action {id} {}", record.phase))
    }

    /// Where action `id` stands (`failed_only`: list only machines that did not complete).
    pub fn report(&self, id: u64, failed_only: bool) -> Option<ActionReport> {
        self.refresh(id);
        let b = self.lock();
        let r = b.actions.get(&id)?;
        let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
        for (s, _) in r.machines.values() {
            *kinds.entry(s.kind()).or_default() += 1;
        }
        let counts: BTreeMap<String, u64> =
            kinds.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
        let listed = match &r.spec.target {
            Target::Machines(ids) => ids.len(),
            _ => 0,
        };
        let targeted = r.machines.len().max(listed) as u64;
        let wanted = |s: &Status| {
            !failed_only || !matches!(s, Status::Completed | Status::Waiting | Status::Running)
        };
        let total = r.machines.values().filter(|(s, _)| wanted(s)).count();
        let mut shown: Vec<MachineStatus> = r
            .machines
            .iter()
            .filter(|(_, (s, _))| wanted(s))
            .take(MACHINES_PER_REPLY)
            .map(|(id, (status, output))| MachineStatus {
                id: id.to_string(),
                status: status.to_string(),
                output: output.clone(),
            })
            .collect();
        shown.sort_by(|a, b| a.id.cmp(&b.id));
        let expires_in_ms = match (&r.phase, &r.signed) {
            (Phase::Out, Some(s)) => s.stamp.expires_unix_ms.saturating_sub(unix_ms()),
            _ => 0,
        };
        Some(ActionReport {
            id,
            description: r.description.clone(),
            package: r.spec.package.name.clone(),
            phase: match &r.cancelled_by {
                Some(by) if r.phase == Phase::Out => format!("out, cancelled by {by}"),
                _ => r.phase.to_string(),
            },
            awaiting_approval: r.phase == Phase::AwaitingApproval,
            issued_by: r.spec.issued_by.clone(),
            approved_by: r.approved_by.clone(),
            dry_run: r.spec.dry_run,
            targeted,
            counts,
            done: done(r, &self.rings),
            expires_in_ms,
            machines: shown,
            machines_total: total,
        })
    }

    /// Machines by status kind over every action kept, and actions awaiting approval (for
    /// the server's metrics: no action is refreshed).
    pub fn totals(&self) -> (BTreeMap<&'static str, u64>, u64) {
        let b = self.lock();
        let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut waiting = 0;
        for r in b.actions.values() {
            for (s, _) in r.machines.values() {
                *kinds.entry(s.kind()).or_default() += 1;
            }
            waiting += u64::from(r.phase == Phase::AwaitingApproval);
        }
        (kinds, waiting)
    }

    /// Every action, newest first, as reports without machines.
    pub fn list(&self) -> Vec<ActionReport> {
        let ids: Vec<u64> = self.lock().actions.keys().rev().copied().collect();
        ids.into_iter()
            .filter_map(|id| {
                let mut r = self.report(id, false)?;
                r.machines.clear();
                Some(r)
            })
            .collect()
    }

    /// Sends out again, after a server restart, the actions that were out and have not
    /// expired (the same signed action: endpoints that have it do not run it again).
    pub async fn resume(&self) {
        let out: Vec<u64> = self
            .lock()
            .actions
            .values()
            .filter(|r| r.phase == Phase::Out && r.delivery.is_none())
            .map(|r| r.spec.id)
            .collect();
        for id in out {
            if let Err(e) = self.launch(id).await {
                tracing::info!(action = id, reason = %e, "not sent again");
            }
        }
    }

    /// One round of gathering: reads what the delivery and status questions brought, asks
    /// again where a targeted machine is not done, closes expired actions.
    pub async fn tick(&self, catalog: &[SensorSpec]) {
        let now = tokio::time::Instant::now();
        let open: Vec<u64> = self
            .lock()
            .actions
            .values()
            .filter(|r| r.phase == Phase::Out)
            .map(|r| r.spec.id)
            .collect();
        for id in open {
            let (delivery, poll, expires, grace, listed, has_files) = {
                let b = self.lock();
                let Some(r) = b.actions.get(&id) else {
                    continue;
                };
                (
                    r.delivery,
                    r.poll,
                    r.signed
                        .as_ref()
                        .map(|s| s.stamp.expires_unix_ms)
                        .unwrap_or(0),
                    r.spec.package.timeout_secs * 1000 + 5_000,
                    match &r.spec.target {
                        Target::Machines(ids) => ids.clone(),
                        _ => Vec::new(),
                    },
                    r.spec.package.manifest.is_some(),
                )
            };
            for q in [delivery, poll.map(|p| p.0)].into_iter().flatten() {
                // While a round is still going, its answers are read at most once a second
                // (each read copies every answering machine's id, and at 100,000 machines
                // reading at every tick would take the cores the round needs); the moment
                // it has reached every ring, they are read at once.
                let going = self.rings.is_open(q).is_some_and(|(fanned, _)| !fanned);
                let recent = self
                    .lock()
                    .actions
                    .get(&id)
                    .and_then(|r| r.read_at.get(&q).copied())
                    .is_some_and(|at| now.duration_since(at) < GATHER_WHILE_GOING);
                if going && recent {
                    continue;
                }
                self.gather(id, q);
                if let Some(r) = self.lock().actions.get_mut(&id) {
                    r.read_at.insert(q, now);
                }
            }
            if unix_ms() > expires.saturating_add(grace) {
                let record = {
                    let mut b = self.lock();
                    let Some(r) = b.actions.get_mut(&id) else {
                        continue;
                    };
                    for m in &listed {
                        r.machines
                            .entry(NodeId(m.as_str().into()))
                            .or_insert_with(|| (Status::Expired, String::new()));
                    }
                    for (s, _) in r.machines.values_mut() {
                        if !s.is_terminal() {
                            *s = Status::Expired;
                        }
                    }
                    r.phase = Phase::Closed;
                    r.clone()
                };
                tracing::info!(action = id, "action closed (expired)");
                self.persist(&record);
                continue;
            }
            let pending = {
                let b = self.lock();
                b.actions
                    .get(&id)
                    .is_some_and(|r| r.machines.values().any(|(s, _)| !s.is_terminal()))
            };
            let delivered = delivery
                .and_then(|q| self.rings.is_open(q))
                .is_some_and(|(fanned, _)| fanned);
            let poll_idle = poll.is_none_or(|(q, at)| {
                now.duration_since(at) >= STATUS_INTERVAL
                    && self.rings.is_open(q).is_none_or(|(fanned, _)| fanned)
            });
            if pending && delivered && poll_idle {
                // Packages with files: where each machine's copy came from, too.
                let files = if has_files {
                    format!(" and Action Files[{id}]")
                } else {
                    String::new()
                };
                let text = format!(
                    "Get Action Status[{id}] and Action Output[{id}]{files} from all machines with Action Status[{id}] is not \"not targeted\""
                );
                match parse(&text, catalog)
                    .map_err(|e| e.to_string())
                    .and_then(|q| {
                        let columns = q.select.iter().map(ToString::to_string).collect();
                        wire::encode_body(&q)
                            .map(|b| (columns, b))
                            .map_err(|e| e.to_string())
                    }) {
                    Ok((columns, body)) => {
                        let ttl = (STATUS_INTERVAL * 10).min(Duration::from_millis(
                            expires.saturating_sub(unix_ms()).max(1),
                        ));
                        let q = self.rings.ask(text, columns, body, ttl).await;
                        if let Some(r) = self.lock().actions.get_mut(&id) {
                            r.poll = Some((q, now));
                        }
                    }
                    Err(e) => tracing::error!(action = id, error = %e, "cannot ask the statuses"),
                }
            }
            let dirty = self.lock().actions.get_mut(&id).and_then(|r| {
                let was = std::mem::take(&mut r.dirty);
                was.then(|| r.clone())
            });
            if let Some(r) = dirty {
                self.persist(&r);
            }
        }
    }

    /// Takes the statuses question `q` brought for action `id`; whether any changed.
    fn gather(&self, id: u64, q: u64) -> bool {
        // Unchanged since the last look: nothing to read (at 100,000 machines a look copies
        // every answer's machine list).
        let answered = self.rings.answered(q).unwrap_or(0);
        let seen = self
            .lock()
            .actions
            .get(&id)
            .and_then(|r| r.gathered.get(&q).copied());
        if seen == Some(answered) {
            return false;
        }
        let Some(groups) = self.rings.answers_by_machine(q) else {
            return false;
        };
        let mut b = self.lock();
        let Some(r) = b.actions.get_mut(&id) else {
            return false;
        };
        r.gathered.insert(q, answered);
        let mut changed = false;
        for (answer, who) in groups {
            let Some(row) = answer.rows.as_ref().and_then(|rows| rows.first()) else {
                continue;
            };
            let new = Status::parse(row.first().map(String::as_str).unwrap_or_default());
            if new == Status::NotTargeted {
                continue;
            }
            let output = row.get(1).cloned().unwrap_or_default();
            let files = row.get(2).and_then(|c| FileSources::parse(c));
            for m in who {
                if let Some(f) = files
                    && r.files.insert(m.clone(), f) != Some(f)
                {
                    changed = true;
                }
                match r.machines.entry(m) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert((new.clone(), output.clone()));
                        changed = true;
                    }
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        if !o.get().0.is_terminal() && o.get().0 != new {
                            o.insert((new.clone(), output.clone()));
                            changed = true;
                        }
                    }
                }
            }
        }
        r.dirty |= changed;
        changed
    }

    /// The question that delivered action `id` (this server run).
    pub fn delivery(&self, id: u64) -> Option<u64> {
        self.lock().actions.get(&id).and_then(|r| r.delivery)
    }

    /// Reads what action `id`'s finished rounds brought, if not read yet (so that whoever
    /// asks sees a round's answers as soon as it has reached every ring, not at the next
    /// tick).
    fn refresh(&self, id: u64) {
        let rounds: Vec<u64> = {
            let b = self.lock();
            let Some(r) = b.actions.get(&id) else { return };
            [r.delivery, r.poll.map(|p| p.0)]
                .into_iter()
                .flatten()
                .collect()
        };
        for q in rounds {
            if self.rings.is_open(q).is_some_and(|(fanned, _)| fanned) {
                self.gather(id, q);
            }
        }
    }

    /// Whether every machine action `id` targeted is done (cheap: for polling).
    pub fn is_done(&self, id: u64) -> bool {
        self.refresh(id);
        let b = self.lock();
        b.actions.get(&id).is_some_and(|r| done(r, &self.rings))
    }
}

/// Whether nothing more will happen to `r` on a machine known to the server: it is not out,
/// or its delivery reached every ring and every targeted machine is done.
fn done(r: &ActionRecord, rings: &RingServer) -> bool {
    match r.phase {
        Phase::AwaitingApproval => false,
        Phase::Out => {
            let listed = match &r.spec.target {
                Target::Machines(ids) => ids.len(),
                _ => 0,
            };
            // The delivery reached every ring, and every answer it brought has been read.
            let delivered = r.delivery.is_some_and(|q| {
                rings.is_open(q).is_some_and(|(fanned, _)| fanned)
                    && r.gathered.get(&q).copied() == rings.answered(q)
            });
            delivered
                && r.machines.len() >= listed
                && r.machines.values().all(|(s, _)| s.is_terminal())
        }
        _ => true,
    }
}

fn describe(req: &ActRequest, package: &Package) -> String {
    let mut s = package.name.clone();
    for p in &req.params {
        s.push(' ');
        s.push_str(p);
    }
    if req.purge {
        s.push_str(" --purge");
    }
    if req.dry_run {
        s.push_str(" --dry-run");
    }
    if let Some(f) = &req.filter {
        s.push_str(&format!(" where {f}"));
    } else if let Some(q) = req.from_question {
        s.push_str(&format!(" on the machines of question {q}"));
    } else if let Some(m) = &req.machines {
        s.push_str(&format!(" on {} named machines", m.len()));
    } else {
        s.push_str(" on all machines");
    }
    s
}
