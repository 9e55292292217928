//! A simulated machine's history: deterministic from its seed and profile, drawn at the
//! first history question and kept with the host (drawn again after its profile changes),
//! so that history questions run at 100,000 endpoints and tests can compute the ground
//! truth.
//!
//! Each machine ran some of [`APPS`] now and then over the last 180 days, runs its packages'
//! processes since boot, keeps a connection to its resolver, and one in a hundred ran a
//! coin miner ([`MINER_PATH`], hash [`miner_sha256`]) that talked to [`MINER_POOL`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{HistoryView, Sighting, file_name};
use crate::sensors::SensorError;
use crate::sensors::sim::{HostProfile, SimulatedHost};

/// Applications simulated machines run now and then: (path, percent of machines).
pub const APPS: &[(&str, u32)] = &[
    ("/usr/bin/libreoffice", 40),
    ("/usr/bin/gimp", 15),
    ("/opt/zoom/zoom", 30),
    ("/usr/bin/slack", 25),
    ("/opt/wine/visio", 8),
    ("/usr/bin/curl", 90),
    ("/usr/bin/ssh", 70),
];

/// Where the simulated miner ran from.
pub const MINER_PATH: &str = "/tmp/.cache/xmrig";
/// The pool it connected to (address, port).
pub const MINER_POOL: (&str, u16) = ("203.0.113.66", 3333);
/// Machines in a thousand that ran it.
pub const MINER_PER_MILLE: u32 = 10;
/// How far back simulated history reaches.
pub const SIM_HISTORY_DAYS: u64 = 180;

const DAY_MS: u64 = 86_400_000;

/// The miner's SHA-256 (the same bytes wherever it ran).
pub fn miner_sha256() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| crate::sensors::sha256_hex(b"rollcall simulated coin miner"))
}

/// The SHA-256 of executable `path` on a simulated machine running `os` (the same bytes on
/// every machine with that OS and version).
pub fn exe_sha256(path: &str, os: &str, os_version: &str) -> String {
    crate::sensors::sha256_hex(format!("{path}|{os} {os_version}").as_bytes())
}

type Exes = HashMap<String, HashMap<String, HashMap<String, (Arc<str>, Arc<str>)>>>;

thread_local! {
    /// (OS, version, executable) → (path, SHA-256): a fleet has a few dozen of each, and
    /// every machine of a question would otherwise hash them again.
    static EXES: RefCell<Exes> = RefCell::new(HashMap::new());
}

/// Executable `path` (or, with `sbin`, the process `path` under `/usr/sbin`) on `os`
/// `version`: its path and SHA-256, remembered per thread.
fn exe(path: &str, sbin: bool, os: &str, version: &str) -> (Arc<str>, Arc<str>) {
    EXES.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(e) = m
            .get(os)
            .and_then(|v| v.get(version))
            .and_then(|n| n.get(path))
        {
            return e.clone();
        }
        let full = if sbin {
            format!("/usr/sbin/{path}")
        } else {
            path.to_string()
        };
        let e: (Arc<str>, Arc<str>) = (
            Arc::from(full.as_str()),
            Arc::from(exe_sha256(&full, os, version).as_str()),
        );
        m.entry(os.to_string())
            .or_default()
            .entry(version.to_string())
            .or_default()
            .insert(path.to_string(), e.clone());
        e
    })
}

/// When simulated history is measured from: the first time any machine was asked.
fn epoch_ms() -> u64 {
    static E: OnceLock<u64> = OnceLock::new();
    *E.get_or_init(rollcall_runtime::signing::unix_ms)
}

/// One thing a simulated machine remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRun {
    /// The executable.
    pub path: Arc<str>,
    /// Its SHA-256.
    pub sha256: Arc<str>,
    /// First and last run (ms since the Unix epoch).
    pub first_ms: u64,
    /// See `first_ms`.
    pub last_ms: u64,
    /// Runs.
    pub count: u64,
    /// Running now.
    pub live: bool,
    /// Where it connected (address, port), if anywhere.
    pub connects: Option<(String, u16)>,
}

/// Everything simulated machine `p` remembers, at the simulation's epoch.
pub fn runs(p: &HostProfile) -> Vec<SimRun> {
    let epoch = epoch_ms();
    let mut rng = SmallRng::seed_from_u64(p.seed ^ 0x0415_7012_7e57);
    let mut out = Vec::new();
    for (path, percent) in APPS {
        let ran = rng.random_range(0..100) < *percent;
        let back = rng.random_range(1..SIM_HISTORY_DAYS * DAY_MS);
        let since_last = rng.random_range(0..=back);
        let count = rng.random_range(1..50);
        if ran {
            let (path, sha256) = exe(path, false, &p.os, &p.os_version);
            out.push(SimRun {
                connects: (file_name(&path) == "curl").then(|| ("198.51.100.10".to_string(), 443)),
                path,
                sha256,
                first_ms: epoch - back,
                last_ms: epoch - since_last,
                count,
                live: false,
            });
        }
    }
    let booted = epoch - p.uptime_secs * 1000;
    for name in &p.processes {
        let (path, sha256) = exe(name, true, &p.os, &p.os_version);
        out.push(SimRun {
            sha256,
            path,
            first_ms: booted,
            last_ms: epoch,
            count: 1,
            live: true,
            connects: None,
        });
    }
    let (path, sha256) = exe(
        "/usr/lib/systemd/systemd-resolved",
        false,
        &p.os,
        &p.os_version,
    );
    out.push(SimRun {
        path,
        sha256,
        first_ms: booted,
        last_ms: epoch,
        count: 1,
        live: true,
        connects: Some(("10.0.0.53".into(), 53)),
    });
    if rng.random_range(0..1000) < MINER_PER_MILLE {
        let back = rng.random_range(DAY_MS..30 * DAY_MS);
        out.push(SimRun {
            path: MINER_PATH.into(),
            sha256: miner_sha256().into(),
            first_ms: epoch - back,
            last_ms: epoch - back + rng.random_range(60_000..3_600_000),
            count: 1,
            live: false,
            connects: Some((MINER_POOL.0.into(), MINER_POOL.1)),
        });
    }
    out
}

fn sight<'a>(runs: impl Iterator<Item = &'a SimRun>) -> Option<Sighting> {
    let mut s = Sighting::default();
    for r in runs {
        s.add(r.first_ms, r.last_ms, r.live, &r.path);
        s.count += r.count - 1;
    }
    (s.count > 0).then_some(s)
}

impl HistoryView for SimulatedHost {
    fn by_hash(&self, sha256: &str) -> Result<Option<Sighting>, SensorError> {
        let runs = self.history_runs();
        Ok(sight(runs.iter().filter(|r| &*r.sha256 == sha256)))
    }

    fn by_name(&self, name: &str) -> Result<Option<Sighting>, SensorError> {
        let runs = self.history_runs();
        Ok(sight(
            runs.iter()
                .filter(|r| file_name(&r.path).eq_ignore_ascii_case(name)),
        ))
    }

    fn connections(&self, to: &str) -> Result<Option<Sighting>, SensorError> {
        let port: Option<u16> = to.parse().ok();
        let runs = self.history_runs();
        Ok(sight(runs.iter().filter(|r| match (&r.connects, port) {
            (Some((_, p)), Some(want)) => *p == want,
            (Some((a, _)), None) => a == to,
            (None, _) => false,
        })))
    }

    fn since_ms(&self) -> Result<u64, SensorError> {
        Ok(epoch_ms() - SIM_HISTORY_DAYS * DAY_MS)
    }
}
