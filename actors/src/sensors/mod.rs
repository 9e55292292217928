//! Sensors: what a question can ask a machine.
//!
//! A sensor reads one fact of a [`HostView`] — the real Linux machine ([`linux::LinuxHost`]),
//! or a deterministic simulated one ([`sim::SimulatedHost`]) — and returns its values (several
//! for facts like installed applications). Every read runs under a [`Budget`]: a time limit
//! and an output cap; a sensor that blows either is cut off and reported with its runtime,
//! never left to stall a question.

pub mod linux;
pub mod sim;
pub mod version;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::question::{Question, SensorRef, SensorSpec, Truth, ValueKind};

/// Why a sensor gave no values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SensorError {
    /// This operating system has no implementation of the sensor.
    #[error("not supported on {0}")]
    Unsupported(String),
    /// Reading failed.
    #[error("{0}")]
    Failed(String),
    /// No sensor of that name here.
    #[error("unknown sensor {0}")]
    Unknown(String),
    /// It ran past its time limit and was cut off.
    #[error("timed out after {runtime_ms} ms (limit {limit_ms} ms)")]
    TimedOut {
        /// How long it had run.
        runtime_ms: u64,
        /// The limit.
        limit_ms: u64,
    },
    /// It produced more output than allowed; the values were cut.
    #[error("output over {limit_bytes} bytes; cut")]
    OutputCapped {
        /// The cap.
        limit_bytes: usize,
    },
}

/// The facts sensors read. Each method is one sensor's source.
pub trait HostView: Send + Sync + 'static {
    /// Host name.
    fn computer_name(&self) -> Result<String, SensorError>;
    /// Operating system name, e.g. `Ubuntu`.
    fn operating_system(&self) -> Result<String, SensorError>;
    /// Its version, e.g. `24.04`.
    fn os_version(&self) -> Result<String, SensorError>;
    /// Kernel release.
    fn kernel_version(&self) -> Result<String, SensorError>;
    /// IP addresses (loopback excluded).
    fn ip_addresses(&self) -> Result<Vec<String>, SensorError>;
    /// MAC addresses.
    fn mac_addresses(&self) -> Result<Vec<String>, SensorError>;
    /// Seconds since boot.
    fn uptime_secs(&self) -> Result<u64, SensorError>;
    /// CPU model and count, e.g. `AMD EPYC 7B13 x 2`.
    fn cpu(&self) -> Result<String, SensorError>;
    /// Total memory in bytes.
    fn memory_bytes(&self) -> Result<u64, SensorError>;
    /// Free bytes on the root file system.
    fn disk_free_bytes(&self) -> Result<u64, SensorError>;
    /// Logged-in user names.
    fn logged_in_users(&self) -> Result<Vec<String>, SensorError>;
    /// Names of running processes.
    fn processes(&self) -> Result<Vec<String>, SensorError>;
    /// Listening ports as `tcp/22`, `udp/53`.
    fn listening_ports(&self) -> Result<Vec<String>, SensorError>;
    /// Installed packages: (name, version).
    fn packages(&self) -> Result<Vec<(String, String)>, SensorError>;
    /// Whether a file exists.
    fn file_exists(&self, path: &str) -> Result<bool, SensorError>;
    /// SHA-256 of a file, `None` if it does not exist.
    fn file_sha256(&self, path: &str) -> Result<Option<String>, SensorError>;
    /// Whether reads may block (file system, processes): then they run on the blocking pool
    /// under the time limit. Reads that never block (simulated hosts) run inline.
    fn reads_block(&self) -> bool {
        true
    }
    /// What the machine remembers, if the host itself answers for it (a simulated host);
    /// a real endpoint's recorded history is given with [`Sensors::with_history`].
    fn history(&self) -> Option<&dyn crate::history::HistoryView> {
        None
    }
}

/// A package version the fleet should be at or above, distributed by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchLevel {
    /// Package name.
    pub package: String,
    /// Lowest acceptable version.
    pub min_version: String,
}

/// A built-in sensor as the catalog lists it.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Canonical name.
    pub name: &'static str,
    /// What its parameter is (empty: it takes none).
    pub param: &'static str,
    /// What its values are.
    pub kind: ValueKind,
    /// Whether a machine may give several values.
    pub multi: bool,
    /// One line on what it reads.
    pub description: &'static str,
}

const fn b(
    name: &'static str,
    param: &'static str,
    kind: ValueKind,
    multi: bool,
    description: &'static str,
) -> Builtin {
    Builtin {
        name,
        param,
        kind,
        multi,
        description,
    }
}

/// Every built-in sensor: the live ones, then the history ones.
pub fn builtins() -> impl Iterator<Item = &'static Builtin> {
    BUILTIN.iter().chain(crate::history::SENSORS)
}

/// The search path of script sensors, which run with a clean environment.
pub const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The built-in sensors.
pub const BUILTIN: &[Builtin] = &[
    b("Computer Name", "", ValueKind::Text, false, "the host name"),
    b(
        "Operating System",
        "",
        ValueKind::Text,
        false,
        "the distribution's name, e.g. Ubuntu (from /etc/os-release)",
    ),
    b(
        "OS Version",
        "",
        ValueKind::Version,
        false,
        "the distribution's version, e.g. 24.04",
    ),
    b(
        "Kernel Version",
        "",
        ValueKind::Version,
        false,
        "the kernel release, e.g. 6.8.0-45-generic",
    ),
    b(
        "IP Address",
        "",
        ValueKind::Text,
        true,
        "each IP address, loopback excluded",
    ),
    b(
        "MAC Address",
        "",
        ValueKind::Text,
        true,
        "each network interface's hardware address",
    ),
    b("Uptime", "", ValueKind::Seconds, false, "time since boot"),
    b("CPU", "", ValueKind::Text, false, "the CPU model and count"),
    b("Memory", "", ValueKind::Bytes, false, "total memory"),
    b(
        "Disk Free",
        "",
        ValueKind::Bytes,
        false,
        "free space on the root file system",
    ),
    b(
        "Logged In Users",
        "",
        ValueKind::Text,
        true,
        "each user with a session",
    ),
    b(
        "Running Processes",
        "",
        ValueKind::Text,
        true,
        "each running process's name",
    ),
    b(
        "Listening Ports",
        "",
        ValueKind::Text,
        true,
        "each listening socket, as tcp/22 or udp/53",
    ),
    b(
        "Installed Applications",
        "",
        ValueKind::Text,
        true,
        "each installed package's name (dpkg or rpm)",
    ),
    b(
        "Installed Application Version",
        "package name",
        ValueKind::Version,
        true,
        "the installed versions of one package",
    ),
    b(
        "File Exists",
        "path",
        ValueKind::Bool,
        false,
        "whether a file exists",
    ),
    b(
        "File Hash",
        "path",
        ValueKind::Text,
        false,
        "a file's SHA-256, or \"file not found\"",
    ),
    b(
        "Action Status",
        "action id",
        ValueKind::Text,
        false,
        "where an action stands on the machine: not targeted, waiting, running, completed, failed: …, refused: …, expired, interrupted",
    ),
    b(
        "Action Output",
        "action id",
        ValueKind::Text,
        false,
        "the first 200 bytes of an action's output on the machine",
    ),
    b(
        "Action Files",
        "action id",
        ValueKind::Text,
        false,
        "where the files of an action's package came from on the machine, in bytes: peers=N server=M (empty until all are here)",
    ),
    b(
        "Quarantined",
        "",
        ValueKind::Bool,
        false,
        "whether the machine is cut off by a quarantine action",
    ),
    b(
        "Missing Patches",
        "",
        ValueKind::Text,
        true,
        "each package below the server's patch baseline, as \"name version < wanted\"",
    ),
];

/// Most rows one machine gives one question; past it the rows are cut (and that is said in
/// the answer's problems).
pub const MAX_ROWS_PER_MACHINE: usize = 1024;

/// Time and output limits of one sensor read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Time limit.
    pub time_limit_ms: u64,
    /// Output cap (sum of the values' lengths).
    pub output_limit_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            time_limit_ms: 5_000,
            output_limit_bytes: 64 * 1024,
        }
    }
}

/// A shell script registered as a sensor by an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptSensor {
    /// Its name, as questions use it.
    pub name: String,
    /// The script, run with `sh -c`; its standard output's lines are the values.
    pub script: String,
    /// SHA-256 of the script, checked before it runs.
    pub sha256: String,
}

impl ScriptSensor {
    /// A script sensor with its hash filled in.
    pub fn new(name: impl Into<String>, script: impl Into<String>) -> ScriptSensor {
        let script = script.into();
        let sha256 = sha256_hex(script.as_bytes());
        ScriptSensor {
            name: name.into(),
            script,
            sha256,
        }
    }
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// What the action sensors read: the endpoint's action journal and quarantine state.
pub trait ActionState: Send + Sync + 'static {
    /// Action `id`'s status and the first bytes of its output (`None`: not targeted here).
    fn status(&self, id: u64) -> Option<(String, String)>;
    /// Where action `id`'s package files came from (`peers=N server=M` bytes), once they
    /// are all here.
    fn files(&self, id: u64) -> Option<String>;
    /// Whether a quarantine is in force.
    fn quarantined(&self) -> bool;
}

/// The sensors one endpoint can read: the built-ins over its host, plus script sensors.
#[derive(Clone)]
pub struct Sensors {
    host: Arc<dyn HostView>,
    history: Option<Arc<dyn crate::history::HistoryView>>,
    actions: Option<Arc<dyn ActionState>>,
    scripts: Vec<ScriptSensor>,
    baseline: Vec<PatchLevel>,
    budget: Budget,
    read_delay: Duration,
}

impl std::fmt::Debug for Sensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sensors({} scripts)", self.scripts.len())
    }
}

/// One sensor's outcome within a question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorOutcome {
    /// Which sensor.
    pub sensor: String,
    /// How long it ran.
    pub runtime_ms: u64,
    /// What went wrong, if anything.
    pub error: Option<SensorError>,
}

/// A machine's answer to a question: its rows (if it matched) and any sensor trouble.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// `None` when the machine did not match the filter; else one row per combination of the
    /// selected sensors' values (a sensor with several values gives a row for each, so the
    /// server counts machines per value), each row one cell per selected sensor.
    pub rows: Option<Vec<Vec<String>>>,
    /// Sensors that failed or blew their budget.
    pub problems: Vec<SensorOutcome>,
}

impl Sensors {
    /// Built-in sensors over `host`, with the default budget.
    pub fn new(host: Arc<dyn HostView>) -> Sensors {
        Sensors {
            host,
            history: None,
            actions: None,
            scripts: Vec::new(),
            baseline: Vec::new(),
            budget: Budget::default(),
            read_delay: Duration::ZERO,
        }
    }

    /// Makes every read take at least `delay` (simulated hosts: a real sensor takes time,
    /// and fleets under test need questions that stay in flight for a while).
    pub fn with_read_delay(mut self, delay: Duration) -> Sensors {
        self.read_delay = delay;
        self
    }

    /// Answers the history sensors from `history` (the endpoint's recorded history).
    pub fn with_history(mut self, history: Arc<dyn crate::history::HistoryView>) -> Sensors {
        self.history = Some(history);
        self
    }

    /// Reads `Action Status`, `Action Output` and `Quarantined` from `actions`.
    pub fn with_actions(mut self, actions: Arc<dyn ActionState>) -> Sensors {
        self.actions = Some(actions);
        self
    }

    fn action_sensor(&self, s: &SensorRef) -> Option<Result<Vec<String>, SensorError>> {
        let which = match s.name.as_str() {
            "Action Status" => 0,
            "Action Output" => 1,
            "Quarantined" => 2,
            "Action Files" => 3,
            _ => return None,
        };
        let Some(actions) = &self.actions else {
            return Some(Err(SensorError::Unsupported(
                "an endpoint that runs no actions".into(),
            )));
        };
        if which == 2 {
            return Some(Ok(vec![actions.quarantined().to_string()]));
        }
        let param = s.args.first().map(String::as_str).unwrap_or("").trim();
        let Ok(id) = param.parse::<u64>() else {
            return Some(Err(SensorError::Failed(format!(
                "{param:?} is not an action id"
            ))));
        };
        if which == 3 {
            return Some(Ok(vec![actions.files(id).unwrap_or_default()]));
        }
        Some(Ok(vec![match (actions.status(id), which) {
            (None, 0) => "not targeted".to_string(),
            (None, _) => String::new(),
            (Some((status, _)), 0) => status,
            (Some((_, output)), _) => output,
        }]))
    }

    /// Sets the budget of every read.
    pub fn with_budget(mut self, budget: Budget) -> Sensors {
        self.budget = budget;
        self
    }

    /// Replaces the script sensors (refusing any whose hash does not match its script).
    pub fn set_scripts(&mut self, scripts: Vec<ScriptSensor>) -> Result<(), SensorError> {
        for s in &scripts {
            if sha256_hex(s.script.as_bytes()) != s.sha256 {
                return Err(SensorError::Failed(format!(
                    "script sensor {} does not match its hash; refused",
                    s.name
                )));
            }
        }
        self.scripts = scripts;
        Ok(())
    }

    /// Replaces the patch baseline that `Missing Patches` compares against.
    pub fn set_baseline(&mut self, baseline: Vec<PatchLevel>) {
        self.baseline = baseline;
    }

    /// Every sensor name questions may use here.
    pub fn catalog(&self) -> Vec<SensorSpec> {
        catalog_with(&self.scripts)
    }

    /// Reads one sensor under the budget.
    pub async fn read(&self, s: &SensorRef) -> (Result<Vec<String>, SensorError>, u64) {
        let started = Instant::now();
        let limit = Duration::from_millis(self.budget.time_limit_ms);
        if !self.read_delay.is_zero() {
            tokio::time::sleep(self.read_delay.min(limit)).await;
        }
        let result = if let Some(r) = self.action_sensor(s) {
            r
        } else if let Some(script) = self.scripts.iter().find(|x| x.name == s.name) {
            run_script(script, limit, self.budget.output_limit_bytes).await
        } else if !self.host.reads_block() {
            builtin(&*self.host, self.history.as_deref(), &self.baseline, s)
        } else {
            let host = self.host.clone();
            let history = self.history.clone();
            let baseline = self.baseline.clone();
            let s2 = s.clone();
            let read = tokio::task::spawn_blocking(move || {
                builtin(&*host, history.as_deref(), &baseline, &s2)
            });
            match tokio::time::timeout(limit, read).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(SensorError::Failed(format!("sensor panicked: {e}"))),
                Err(_) => Err(SensorError::TimedOut {
                    runtime_ms: started.elapsed().as_millis() as u64,
                    limit_ms: self.budget.time_limit_ms,
                }),
            }
        };
        let runtime_ms = started.elapsed().as_millis() as u64;
        let result = result.and_then(|v| cap(v, self.budget.output_limit_bytes));
        (result, runtime_ms)
    }

    /// Whether this machine satisfies `q`'s filter (only the filter's sensors are read; a
    /// failed sensor makes its conditions unknown, and unknown is not a match).
    pub async fn matches(&self, q: &Question) -> bool {
        let Some(f) = &q.filter else {
            return true;
        };
        let sensors = q.filter_sensors();
        let mut values = Vec::with_capacity(sensors.len());
        for s in &sensors {
            values.push(self.read(s).await.0);
        }
        let lookup = |s: &SensorRef| match sensors.iter().position(|x| *x == s).map(|i| &values[i])
        {
            Some(Ok(v)) => Some(v.as_slice()),
            _ => None,
        };
        f.eval(&lookup) == Truth::True
    }

    /// Evaluates `q` on this machine: every sensor read once, the filter applied, the rows
    /// built. A failing sensor gives `[error: …]` in its cell and a problem entry, and makes
    /// the comparisons that need it unknown (so the machine matches only if the filter holds
    /// without them).
    pub async fn answer(&self, q: &Question) -> Answer {
        // Each sensor read once, in the question's order (a handful: looked up linearly).
        let sensors = q.sensors();
        let mut values: Vec<Result<Vec<String>, SensorError>> = Vec::with_capacity(sensors.len());
        let mut problems = Vec::new();
        for s in &sensors {
            let (r, runtime_ms) = self.read(s).await;
            if let Err(e) = &r {
                problems.push(SensorOutcome {
                    sensor: s.to_string(),
                    runtime_ms,
                    error: Some(e.clone()),
                });
            }
            values.push(r);
        }
        let at = |s: &SensorRef| sensors.iter().position(|x| *x == s);
        let lookup = |s: &SensorRef| match at(s).map(|i| &values[i]) {
            Some(Ok(v)) => Some(v.as_slice()),
            _ => None,
        };
        let matched = q
            .filter
            .as_ref()
            .is_none_or(|f| f.eval(&lookup) == Truth::True);
        if !matched {
            return Answer {
                rows: None,
                problems,
            };
        }
        // Most questions select sensors with one value each: one row, each value moved into
        // its cell (a sensor selected twice is read once, so a later column copies it).
        let single = q.select.iter().all(|s| match at(s).map(|i| &values[i]) {
            Some(Ok(v)) => v.len() <= 1,
            _ => true,
        });
        if single {
            let mut cells = Vec::with_capacity(q.select.len());
            for (k, s) in q.select.iter().enumerate() {
                let again = q.select[k + 1..].contains(s);
                let cell = match at(s).map(|i| &mut values[i]) {
                    Some(Ok(v)) if v.is_empty() => "[no results]".to_string(),
                    Some(Ok(v)) if again => v[0].clone(),
                    Some(Ok(v)) => std::mem::take(&mut v[0]),
                    Some(Err(e)) => format!("[error: {e}]"),
                    None => "[no results]".to_string(),
                };
                cells.push(cell);
            }
            return Answer {
                rows: Some(vec![cells]),
                problems,
            };
        }
        // Each selected sensor's cells: its values, or one cell saying why there are none.
        let mut columns: Vec<Vec<String>> = Vec::with_capacity(q.select.len());
        for (k, s) in q.select.iter().enumerate() {
            let again = q.select[k + 1..].contains(s);
            let cells = match at(s).map(|i| &mut values[i]) {
                Some(Ok(v)) if v.is_empty() => vec!["[no results]".to_string()],
                Some(Ok(v)) if again => v.clone(),
                Some(Ok(v)) => std::mem::take(v),
                Some(Err(e)) => vec![format!("[error: {e}]")],
                None => vec!["[no results]".to_string()],
            };
            columns.push(cells);
        }
        let (rows, total) = combinations(&columns, MAX_ROWS_PER_MACHINE);
        if total > rows.len() {
            problems.push(SensorOutcome {
                sensor: q
                    .select
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" and "),
                runtime_ms: 0,
                error: Some(SensorError::Failed(format!(
                    "{total} rows (every combination of the selected sensors' values); the first {} are counted",
                    rows.len()
                ))),
            });
        }
        Answer {
            rows: Some(rows),
            problems,
        }
    }
}

/// Every combination of one cell from each column (in order, the last column varying
/// fastest), at most `max` of them; with how many there are in all.
pub fn combinations(columns: &[Vec<String>], max: usize) -> (Vec<Vec<String>>, usize) {
    let total = columns
        .iter()
        .try_fold(1usize, |n, c| n.checked_mul(c.len()))
        .unwrap_or(usize::MAX);
    let n = total.min(max);
    let mut rows = Vec::with_capacity(n);
    let mut index = vec![0usize; columns.len()];
    for _ in 0..n {
        rows.push(
            columns
                .iter()
                .zip(&index)
                .map(|(c, &i)| c[i].clone())
                .collect(),
        );
        // Odometer step.
        for k in (0..columns.len()).rev() {
            index[k] += 1;
            if index[k] < columns[k].len() {
                break;
            }
            index[k] = 0;
        }
    }
    (rows, total)
}

/// The catalog of built-ins plus `scripts`.
pub fn catalog_with(scripts: &[ScriptSensor]) -> Vec<SensorSpec> {
    builtins()
        .map(|b| SensorSpec {
            name: b.name.to_string(),
            params: usize::from(!b.param.is_empty()),
            param_help: b.param.to_string(),
            kind: b.kind,
            multi: b.multi,
            description: b.description.to_string(),
        })
        .chain(scripts.iter().map(|s| SensorSpec {
            name: s.name.clone(),
            params: 0,
            param_help: String::new(),
            kind: ValueKind::Any,
            multi: true,
            description: "an admin's script sensor: each line it prints is a value".into(),
        }))
        .collect()
}

fn cap(mut v: Vec<String>, limit: usize) -> Result<Vec<String>, SensorError> {
    let total: usize = v.iter().map(String::len).sum();
    if total <= limit {
        return Ok(v);
    }
    let mut used = 0;
    v.retain(|x| {
        used += x.len();
        used <= limit
    });
    Err(SensorError::OutputCapped { limit_bytes: limit })
}

fn builtin(
    host: &dyn HostView,
    history: Option<&dyn crate::history::HistoryView>,
    baseline: &[PatchLevel],
    s: &SensorRef,
) -> Result<Vec<String>, SensorError> {
    // The clock is read only for a history sensor (every machine reads live ones).
    if crate::history::SENSORS.iter().any(|b| b.name == s.name)
        && let Some(r) = crate::history::read(
            history.or_else(|| host.history()),
            s,
            rollcall_runtime::signing::unix_ms(),
        )
    {
        return r;
    }
    let one = |r: Result<String, SensorError>| r.map(|v| vec![v]);
    let arg = || s.args.first().cloned().unwrap_or_default();
    let mut v = match s.name.as_str() {
        "Computer Name" => one(host.computer_name()),
        "Operating System" => one(host.operating_system()),
        "OS Version" => one(host.os_version()),
        "Kernel Version" => one(host.kernel_version()),
        "IP Address" => host.ip_addresses(),
        "MAC Address" => host.mac_addresses(),
        "Uptime" => one(host.uptime_secs().map(|u| u.to_string())),
        "CPU" => one(host.cpu()),
        "Memory" => one(host.memory_bytes().map(|u| u.to_string())),
        "Disk Free" => one(host.disk_free_bytes().map(|u| u.to_string())),
        "Logged In Users" => host.logged_in_users(),
        "Running Processes" => host.processes(),
        "Listening Ports" => host.listening_ports(),
        "Installed Applications" => host
            .packages()
            .map(|p| p.into_iter().map(|(n, _)| n).collect()),
        "Installed Application Version" => {
            let want = arg();
            host.packages().map(|p| {
                p.into_iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(&want))
                    .map(|(_, v)| v)
                    .collect()
            })
        }
        "File Exists" => one(host.file_exists(&arg()).map(|b| b.to_string())),
        "File Hash" => one(host
            .file_sha256(&arg())
            .map(|h| h.unwrap_or_else(|| "file not found".into()))),
        "Missing Patches" => host.packages().map(|installed| {
            baseline
                .iter()
                .filter_map(|p| {
                    installed
                        .iter()
                        .find(|(n, _)| n == &p.package)
                        .filter(|(_, v)| version::compare(v, &p.min_version).is_lt())
                        .map(|(n, v)| format!("{n} {v} < {}", p.min_version))
                })
                .collect()
        }),
        other => Err(SensorError::Unknown(other.to_string())),
    }?;
    v.sort();
    v.dedup();
    Ok(v)
}

async fn run_script(
    script: &ScriptSensor,
    limit: Duration,
    output_limit: usize,
) -> Result<Vec<String>, SensorError> {
    use tokio::io::AsyncReadExt;
    if sha256_hex(script.script.as_bytes()) != script.sha256 {
        return Err(SensorError::Failed("script does not match its hash".into()));
    }
    let started = Instant::now();
    // A clean environment: nothing of the agent's (its join token, its configuration)
    // reaches an admin's script; a fixed search path finds the usual tools.
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&script.script)
        .env_clear()
        .env("PATH", SCRIPT_PATH)
        .env("LANG", "C.UTF-8")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SensorError::Failed(format!("cannot run sh: {e}")))?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| SensorError::Failed("no stdout".into()))?;
    let mut buf = Vec::new();
    let read = async {
        // Read at most one byte past the cap, to know it was exceeded.
        let mut limited = (&mut out).take(output_limit as u64 + 1);
        limited.read_to_end(&mut buf).await
    };
    match tokio::time::timeout(limit, read).await {
        Err(_) => {
            let _ = child.kill().await;
            return Err(SensorError::TimedOut {
                runtime_ms: started.elapsed().as_millis() as u64,
                limit_ms: limit.as_millis() as u64,
            });
        }
        Ok(Err(e)) => return Err(SensorError::Failed(e.to_string())),
        Ok(Ok(_)) => {}
    }
    if buf.len() > output_limit {
        let _ = child.kill().await;
        return Err(SensorError::OutputCapped {
            limit_bytes: output_limit,
        });
    }
    let left = limit.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, child.wait()).await {
        Err(_) => {
            let _ = child.kill().await;
            return Err(SensorError::TimedOut {
                runtime_ms: started.elapsed().as_millis() as u64,
                limit_ms: limit.as_millis() as u64,
            });
        }
        Ok(Err(e)) => return Err(SensorError::Failed(e.to_string())),
        Ok(Ok(status)) if !status.success() => {
            return Err(SensorError::Failed(format!("script exited with {status}")));
        }
        Ok(Ok(_)) => {}
    }
    Ok(String::from_utf8_lossy(&buf)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}
