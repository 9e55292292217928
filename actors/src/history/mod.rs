//! Endpoint history: what ran where and when, kept on the endpoint and asked like any sensor.
//!
//! Live sensors say what is true now; history says what was true last week. On a real
//! machine a supervised [`recorder::Recorder`] samples `/proc` at an interval and writes
//! process runs (executable, its SHA-256, command line, user, parent, start and end),
//! listening sockets and outbound connections into a [`store::HistoryStore`] in the state
//! directory, bounded by age and size (the oldest dropped first). A simulated host answers
//! from a deterministic history drawn from its seed ([`sim`]), so history questions run at
//! 100,000 endpoints.
//!
//! The sensors ([`SENSORS`]): `Process Hash History[sha256]`, `Process Name History[name]`
//! and `Connection History[address or port]` give one line per machine that saw it — first
//! seen, last seen, how often, by what — and nothing on a machine that never did; `… Last
//! Seen[…]` gives the time since, so a window is a comparison (`Process Hash Last Seen[H] <
//! 7 days`); `Application Last Used[name]` gives the time since an application last ran
//! (where history never saw it run: the length of the history kept, so `> 90 days` holds
//! only where the history reaches back that far).

pub mod linux;
pub mod recorder;
pub mod sim;
pub mod store;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::question::{SensorRef, ValueKind};
use crate::sensors::{Builtin, SensorError};

/// One process run as history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRun {
    /// Its process id.
    pub pid: u32,
    /// Its parent's.
    pub ppid: u32,
    /// The executable's path.
    pub exe: String,
    /// The executable's SHA-256 (hex), as it was when the process ran.
    pub sha256: String,
    /// Its command line (cut at [`MAX_CMDLINE`] bytes).
    pub cmdline: String,
    /// The user it ran as.
    pub user: String,
    /// When it started (ms since the Unix epoch).
    pub start_ms: u64,
    /// When it was last seen running, and whether it had ended then.
    pub last_ms: u64,
    /// Whether it has ended (at or before `last_ms`).
    pub ended: bool,
}

/// One outbound connection (or listening socket) as history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketSeen {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The remote address (empty for a listening socket).
    pub remote: String,
    /// The remote port (the local one for a listening socket).
    pub port: u16,
    /// The executable of the process that held it (empty when not known).
    pub exe: String,
    /// First and last seen (ms since the Unix epoch).
    pub first_ms: u64,
    /// See `first_ms`.
    pub last_ms: u64,
    /// Whether it has closed.
    pub ended: bool,
    /// Whether it is a listening socket.
    pub listening: bool,
}

/// One record in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A process run.
    Run(ProcessRun),
    /// A connection or a listening socket.
    Socket(SocketSeen),
}

impl Record {
    /// When it was last seen.
    pub fn last_ms(&self) -> u64 {
        match self {
            Record::Run(r) => r.last_ms,
            Record::Socket(s) => s.last_ms,
        }
    }
}

/// The longest command line kept.
pub const MAX_CMDLINE: usize = 1024;

/// What history says about one thing on one machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sighting {
    /// First seen (ms since the Unix epoch).
    pub first_ms: u64,
    /// Last seen.
    pub last_ms: u64,
    /// How many runs or connections.
    pub count: u64,
    /// Still running or open at the last sample.
    pub live: bool,
    /// The executables involved (at most [`MAX_PATHS`]).
    pub paths: Vec<String>,
}

/// How many paths a sighting lists.
pub const MAX_PATHS: usize = 4;

impl Sighting {
    /// Adds one record's times and path.
    pub fn add(&mut self, first_ms: u64, last_ms: u64, live: bool, path: &str) {
        if self.count == 0 || first_ms < self.first_ms {
            self.first_ms = first_ms;
        }
        self.last_ms = self.last_ms.max(last_ms);
        self.count += 1;
        self.live |= live;
        if !path.is_empty() && self.paths.len() < MAX_PATHS && !self.paths.iter().any(|p| p == path)
        {
            self.paths.push(path.to_string());
        }
    }

    /// The line a history sensor answers, e.g. `first 2026-12-01 10:00:00Z, last
    /// 2026-12-05 08:00:00Z, 3 runs, /usr/bin/x`.
    pub fn line(&self, noun: &str) -> String {
        let mut s = format!(
            "first {}, last {}{}, {} {noun}{}",
            utc(self.first_ms),
            utc(self.last_ms),
            if self.live { " (still running)" } else { "" },
            self.count,
            if self.count == 1 { "" } else { "s" },
        );
        if !self.paths.is_empty() {
            s.push_str(", ");
            s.push_str(&self.paths.join(" "));
        }
        s
    }
}

/// `ms` since the Unix epoch as `2026-12-05 08:00:00Z`.
pub fn utc(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{secs} s after the epoch"),
    }
}

/// What one machine remembers. Queries are answered at `now_ms`.
pub trait HistoryView: Send + Sync + 'static {
    /// Runs of executables whose SHA-256 is `sha256` (lowercase hex).
    fn by_hash(&self, sha256: &str) -> Result<Option<Sighting>, SensorError>;
    /// Runs of processes whose executable is named `name` (its file name, any case).
    fn by_name(&self, name: &str) -> Result<Option<Sighting>, SensorError>;
    /// Connections to `to`: an address, or a port (digits).
    fn connections(&self, to: &str) -> Result<Option<Sighting>, SensorError>;
    /// The oldest time the history still covers (ms since the Unix epoch).
    fn since_ms(&self) -> Result<u64, SensorError>;
}

/// The history sensors, as the catalog lists them.
pub const SENSORS: &[Builtin] = &[
    Builtin {
        name: "Process Hash History",
        param: "sha256",
        kind: ValueKind::Text,
        multi: false,
        description: "when executables with this SHA-256 ran on the machine: first and last seen, runs, paths (nothing where it never ran, in the history kept)",
    },
    Builtin {
        name: "Process Hash Last Seen",
        param: "sha256",
        kind: ValueKind::Seconds,
        multi: false,
        description: "time since an executable with this SHA-256 last ran (0 while it runs; nothing where it never ran)",
    },
    Builtin {
        name: "Process Name History",
        param: "executable name",
        kind: ValueKind::Text,
        multi: false,
        description: "when executables of this name ran: first and last seen, runs, paths",
    },
    Builtin {
        name: "Process Name Last Seen",
        param: "executable name",
        kind: ValueKind::Seconds,
        multi: false,
        description: "time since an executable of this name last ran (0 while it runs)",
    },
    Builtin {
        name: "Connection History",
        param: "address or port",
        kind: ValueKind::Text,
        multi: false,
        description: "outbound connections to this address or port: first and last seen, how many, by which executables",
    },
    Builtin {
        name: "Connection Last Seen",
        param: "address or port",
        kind: ValueKind::Seconds,
        multi: false,
        description: "time since the last outbound connection to this address or port (0 while one is open)",
    },
    Builtin {
        name: "Application Last Used",
        param: "executable name",
        kind: ValueKind::Seconds,
        multi: false,
        description: "time since the application last ran (0 while it runs; never in the history kept: the history's length)",
    },
];

/// Whether `sha256` is 64 hex digits.
fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn since(now_ms: u64, s: &Sighting) -> String {
    if s.live {
        "0".into()
    } else {
        (now_ms.saturating_sub(s.last_ms) / 1000).to_string()
    }
}

/// Reads history sensor `s` from `view` at `now_ms`; `None` if `s` is not a history sensor.
pub fn read(
    view: Option<&dyn HistoryView>,
    s: &SensorRef,
    now_ms: u64,
) -> Option<Result<Vec<String>, SensorError>> {
    let name = s.name.as_str();
    if !SENSORS.iter().any(|b| b.name == name) {
        return None;
    }
    let Some(view) = view else {
        return Some(Err(SensorError::Unsupported(
            "an endpoint that keeps no history".into(),
        )));
    };
    let arg = s.args.first().map(|a| a.trim()).unwrap_or_default();
    Some((|| {
        let one = |v: Option<String>| Ok(v.into_iter().collect());
        match name {
            "Process Hash History" | "Process Hash Last Seen" => {
                if !is_sha256(arg) {
                    return Err(SensorError::Failed(format!(
                        "{arg:?} is not a SHA-256 (64 hex digits)"
                    )));
                }
                let got = view.by_hash(&arg.to_ascii_lowercase())?;
                one(got.map(|g| {
                    if name.ends_with("History") {
                        g.line("run")
                    } else {
                        since(now_ms, &g)
                    }
                }))
            }
            "Process Name History" | "Process Name Last Seen" => {
                let got = view.by_name(arg)?;
                one(got.map(|g| {
                    if name.ends_with("History") {
                        g.line("run")
                    } else {
                        since(now_ms, &g)
                    }
                }))
            }
            "Connection History" | "Connection Last Seen" => {
                let got = view.connections(arg)?;
                one(got.map(|g| {
                    if name.ends_with("History") {
                        g.line("connection")
                    } else {
                        since(now_ms, &g)
                    }
                }))
            }
            _ => {
                // Application Last Used.
                match view.by_name(arg)? {
                    Some(g) => one(Some(since(now_ms, &g))),
                    None => one(Some(
                        (now_ms.saturating_sub(view.since_ms()?) / 1000).to_string(),
                    )),
                }
            }
        }
    })())
}

/// The file name of `path` (what `Process Name History` matches).
pub fn file_name(path: &str) -> &str {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    path.rsplit('/').next().unwrap_or(path)
}
