//! Actions on a simulated host: its profile changes as the real machine would (uninstall
//! removes the package, delete-file the file, quarantine sets a flag the `Quarantined`
//! sensor shows), so find → act → ask again works on a simulated fleet.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;

use super::{ActionSpec, Executor, Outcome, PackageKind};
use crate::sensors::sim::SimulatedHost;

/// The output a simulated `run-script` gives.
pub const SIM_SCRIPT_OUTPUT: &str = "simulated script ran";

/// Runs packages against a [`SimulatedHost`].
#[derive(Debug)]
pub struct SimExecutor {
    host: Arc<SimulatedHost>,
    quarantined: AtomicBool,
    /// Runs started per action (for the "never twice" check of the chaos suite).
    runs: Mutex<HashMap<u64, u32>>,
}

impl SimExecutor {
    /// An executor for `host`.
    pub fn new(host: Arc<SimulatedHost>) -> SimExecutor {
        SimExecutor {
            host,
            quarantined: AtomicBool::new(false),
            runs: Mutex::new(HashMap::new()),
        }
    }

    /// How many runs it started in all.
    pub fn runs(&self) -> u32 {
        rollcall_runtime::sync::lock(&self.runs).values().sum()
    }

    /// How many times it ran action `id`.
    pub fn runs_of(&self, id: u64) -> u32 {
        rollcall_runtime::sync::lock(&self.runs)
            .get(&id)
            .copied()
            .unwrap_or(0)
    }

    fn apply(&self, spec: &ActionSpec) -> Outcome {
        let param = spec.params.first().map(String::as_str).unwrap_or("");
        let dry = spec.dry_run;
        match &spec.package.kind {
            PackageKind::DeleteFile => {
                let found = self.host.profile().files.iter().any(|(p, _)| p == param);
                if !found {
                    return Outcome::failed(format!("{param}: no such file"));
                }
                if dry {
                    return Outcome::done(format!("dry run: would remove {param}"));
                }
                self.host.change(|p| p.files.retain(|(f, _)| f != param));
                Outcome::done(format!("removed {param}"))
            }
            PackageKind::Uninstall => {
                let found = self.host.profile().packages.iter().any(|(n, _)| n == param);
                if !found {
                    return Outcome::failed(format!("{param} is not installed"));
                }
                if dry {
                    return Outcome::done(format!("dry run: would remove {param}"));
                }
                self.host.change(|p| p.packages.retain(|(n, _)| n != param));
                Outcome::done(format!("removed {param}"))
            }
            PackageKind::KillProcess => {
                let found = self.host.profile().processes.iter().any(|n| n == param);
                if !found {
                    return Outcome::done(format!("no process {param}"));
                }
                if dry {
                    return Outcome::done(format!("dry run: would kill {param}"));
                }
                self.host.change(|p| p.processes.retain(|n| n != param));
                Outcome::done(format!("killed {param}"))
            }
            PackageKind::Quarantine | PackageKind::Release => {
                let on = spec.package.kind == PackageKind::Quarantine;
                if dry {
                    return Outcome::done(format!(
                        "dry run: would {}",
                        if on { "quarantine" } else { "release" }
                    ));
                }
                self.quarantined.store(on, Ordering::Relaxed);
                Outcome::done(if on { "quarantined" } else { "released" })
            }
            PackageKind::Cancel(_) => {
                Outcome::refused("a cancel is applied by the runner, not run")
            }
            PackageKind::RunScript | PackageKind::Command(_) => {
                if dry {
                    return Outcome::done("dry run: would run the script");
                }
                Outcome::done(SIM_SCRIPT_OUTPUT)
            }
        }
    }
}

impl Executor for SimExecutor {
    fn run(&self, spec: &ActionSpec) -> BoxFuture<'static, Outcome> {
        *rollcall_runtime::sync::lock(&self.runs)
            .entry(spec.id)
            .or_default() += 1;
        let out = self.apply(spec);
        Box::pin(std::future::ready(out))
    }

    fn immediate(&self) -> bool {
        true
    }

    fn quarantined(&self) -> bool {
        self.quarantined.load(Ordering::Relaxed)
    }
}
