//! Chaos against a fleet: the faults, who they hit, the fault scenarios, and the invariants
//! every scenario checks.
//!
//! A scenario forms the fleet, measures one fault-free question (the baseline), applies its
//! fault (for the "mid-question" ones, while a question is in flight), keeps asking questions
//! through the fault, heals, and asks once more. Meanwhile it samples the server every
//! `sample_every`: the rings it reports, the connections it holds, and who has answered each
//! question. At the end it checks:
//!
//! 1. no live endpoint's answer is lost: every endpoint running at the end answered every
//!    question asked by this server (before it expired);
//! 2. no answer is counted twice: each question's row counts add up to the machines that
//!    answered, and equal the host profiles' ground truth over exactly those machines;
//! 3. every endpoint that was not itself faulted answered within the fault-free time + 1 s of
//!    the fault (questions in flight when it struck or asked while it lasted);
//! 4. no endpoint that kept answering was evicted;
//! 5. the server holds connections only to leaders, plus registrations (a connection to a
//!    non-leader that is not itself faulted lasts under 2 s);
//! 6. after healing, every ring is one chain again;
//! 7. no honest member's answers are taken for changed;
//! 8. no action ran twice on any machine (an action goes out as the fault strikes; the
//!    simulated executors count every run).
//!
//! The scenarios that distribute a package (its action goes out as the fault strikes) also
//! check:
//!
//! 9. every completed file matches its hash: each machine that ran the command holds every
//!    chunk, and each file rebuilt from them hashes to what the signed manifest says; every
//!    machine running at the end ran it;
//! 10. server egress ≤ 1.05 × size per ring.
//!
//! Adding a scenario is one arm in [`Scenario::strike`] (the fault) and, if it needs one, in
//! [`Scenario::heal`].

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod agent;
mod formation;
pub use formation::*;
mod commands;
pub use commands::*;
mod links;
#[cfg(feature = "simulation")]
mod observe;
mod on_cluster;
pub use on_cluster::run_on_cluster;
pub mod relay;
#[cfg(feature = "simulation")]
#[allow(unused_imports)]
pub use observe::*;
#[cfg(feature = "simulation")]
mod run;
#[cfg(feature = "simulation")]
#[allow(unused_imports)]
pub use run::*;
#[cfg(feature = "simulation")]
mod control;
#[cfg(feature = "simulation")]
#[allow(unused_imports)]
pub use control::*;

/// The fault scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
pub enum Scenario {
    /// A ring member (not a leader) is killed silently while a question is in flight.
    NeighbourKilled,
    /// A ring member is paused (grey: connections up, nothing answered) mid-question, then
    /// resumes.
    GreyNeighbour,
    /// A ring member gets 10× the hop latency.
    SlowNeighbour,
    /// A ring's forward leader is killed mid-question.
    LeaderKilled,
    /// Both leaders of a ring are killed mid-question.
    BothLeadersKilled,
    /// Every leader of every ring and a random 10% of the other machines are killed, then
    /// questions are asked with those faults standing.
    LeadersAndTenthKilled,
    /// A ring is split in two arcs mid-question (both still reach the server), then healed.
    RingSplit,
    /// 30% of a subnet reboots within the reboot window.
    SubnetReboot,
    /// A machine goes offline, questions are asked, and it comes back before they expire.
    OfflineAndBack,
    /// Every endpoint loses and duplicates 5–20% of what it sends and receives.
    LossAndDuplication,
    /// The server restarts between questions.
    ServerRestart,
    /// An action spread over 3 s is out while 30% of a subnet goes down and comes back
    /// (some machines while waiting their share of the spread, some before it reached them).
    ActionOfflineRestart,
    /// A package is distributed while a ring member serves every chunk corrupted.
    PackageCorruptPeer,
    /// A package is distributed and its ring's forward leader is killed mid-transfer.
    PackageLeaderKilled,
    /// A package is distributed and a machine stops while writing a chunk, then comes back.
    PackageTornWrite,
}

impl Scenario {
    /// Every scenario, in the order the suite runs them.
    pub const ALL: [Scenario; 15] = [
        Scenario::NeighbourKilled,
        Scenario::GreyNeighbour,
        Scenario::SlowNeighbour,
        Scenario::LeaderKilled,
        Scenario::BothLeadersKilled,
        Scenario::LeadersAndTenthKilled,
        Scenario::RingSplit,
        Scenario::SubnetReboot,
        Scenario::OfflineAndBack,
        Scenario::LossAndDuplication,
        Scenario::ServerRestart,
        Scenario::ActionOfflineRestart,
        Scenario::PackageCorruptPeer,
        Scenario::PackageLeaderKilled,
        Scenario::PackageTornWrite,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::NeighbourKilled => "neighbour-killed",
            Scenario::GreyNeighbour => "grey-neighbour",
            Scenario::SlowNeighbour => "slow-neighbour",
            Scenario::LeaderKilled => "leader-killed",
            Scenario::BothLeadersKilled => "both-leaders-killed",
            Scenario::LeadersAndTenthKilled => "leaders-and-tenth-killed",
            Scenario::RingSplit => "ring-split",
            Scenario::SubnetReboot => "subnet-reboot",
            Scenario::OfflineAndBack => "offline-and-back",
            Scenario::LossAndDuplication => "loss-and-duplication",
            Scenario::ServerRestart => "server-restart",
            Scenario::ActionOfflineRestart => "action-offline-restart",
            Scenario::PackageCorruptPeer => "package-corrupt-peer",
            Scenario::PackageLeaderKilled => "package-leader-killed",
            Scenario::PackageTornWrite => "package-torn-write",
        }
    }

    /// Whether its action distributes a package (invariants 9 and 10).
    pub fn distributes(self) -> bool {
        matches!(
            self,
            Scenario::PackageCorruptPeer
                | Scenario::PackageLeaderKilled
                | Scenario::PackageTornWrite
        )
    }

    #[cfg(feature = "simulation")]
    fn mid_question(self) -> bool {
        matches!(
            self,
            Scenario::NeighbourKilled
                | Scenario::GreyNeighbour
                | Scenario::LeaderKilled
                | Scenario::BothLeadersKilled
                | Scenario::RingSplit
        )
    }
}

/// How a scenario runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioOptions {
    /// Picks the ring, the victims, the moment of the fault and the loss rates.
    pub seed: u64,
    /// How long a fault lasts before it is healed.
    pub fault_for: Duration,
    /// The window in which a subnet's machines reboot.
    pub reboot_window: Duration,
    /// How long rings may take to be one chain again after healing.
    pub heal_timeout: Duration,
    /// Questions' time to live.
    pub ttl: Duration,
    /// How often the server is sampled.
    pub sample_every: Duration,
}

impl ScenarioOptions {
    /// Defaults for the fleet's chaos timing: faults last 4 s, reboots within 60 s, healing
    /// within 30 s, questions live 90 s, samples every 100 ms.
    pub fn new(seed: u64) -> ScenarioOptions {
        ScenarioOptions {
            seed,
            fault_for: Duration::from_secs(4),
            reboot_window: Duration::from_secs(60),
            heal_timeout: Duration::from_secs(30),
            ttl: Duration::from_secs(90),
            sample_every: Duration::from_millis(100),
        }
    }
}

/// One invariant's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// What must hold.
    pub invariant: String,
    /// Whether it held.
    pub pass: bool,
    /// What was measured.
    pub measured: String,
}

/// What a scenario did and found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// Which.
    pub scenario: Scenario,
    /// Its seed.
    pub seed: u64,
    /// Endpoints in the fleet.
    pub endpoints: usize,
    /// The fault as applied.
    pub fault: String,
    /// Fault-free time to every answer, in milliseconds.
    pub baseline_ms: f64,
    /// Questions asked after the baseline.
    pub questions: usize,
    /// The invariants.
    pub checks: Vec<Check>,
    /// The rings as the server saw them at the end, one line each (see [`shape`]).
    pub rings: String,
    /// How far behind its own clock a simulated fleet's process ran while the fault lasted,
    /// at most, in milliseconds (`None`: a real cluster, whose processes each have their own
    /// cores). A fleet simulated in one process on too few cores falls behind, and so does
    /// every timer its members and server set: promptness then measures the machine.
    #[serde(default)]
    pub lag_ms: Option<f64>,
}

impl ScenarioReport {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {} (seed {}), {} endpoints",
            self.scenario.name(),
            self.seed,
            self.endpoints
        );
        let _ = writeln!(out, "fault: {}", self.fault);
        let _ = writeln!(
            out,
            "fault-free time to every answer: {:.0} ms; {} questions through the fault",
            self.baseline_ms, self.questions
        );
        if let Some(lag) = self.lag_ms {
            let _ = writeln!(
                out,
                "the simulation ran at most {lag:.0} ms behind its clock during the fault"
            );
        }
        let w = self
            .checks
            .iter()
            .map(|c| c.invariant.len())
            .max()
            .unwrap_or(0);
        let _ = writeln!(out, "{:<w$}  result  measured", "invariant");
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{:<w$}  {:<6}  {}",
                c.invariant,
                if c.pass { "pass" } else { "FAIL" },
                c.measured
            );
        }
        if !self.passed() {
            let _ = write!(out, "rings at the end:\n{}", self.rings);
        }
        let _ = writeln!(
            out,
            "{}",
            if self.passed() {
                "all invariants held"
            } else {
                "INVARIANTS VIOLATED"
            }
        );
        out
    }
}

/// The chaos route operators call: on a simulation's operator-facing node it applies faults
/// to the simulated fleet; on a real server it relays them to endpoints' chaos agents.
pub const CHAOS: &str = "chaos.control";

#[cfg(all(test, feature = "simulation"))]
mod tests {
    use super::*;
    use rollcall_cluster::questions::{Progress, RowCount};
    use std::collections::BTreeMap;

    fn progress(rows: &[(&str, u64)], answered: usize) -> Progress {
        Progress {
            cut: Default::default(),
            id: 1,
            text: String::new(),
            columns: vec!["Operating System".into()],
            answered,
            expected: answered,
            matched: rows.iter().map(|r| r.1).sum(),
            rows: rows
                .iter()
                .map(|(c, n)| RowCount {
                    cells: vec![c.to_string()],
                    count: *n,
                })
                .collect(),
            not_answered: Vec::new(),
            problems: Vec::new(),
            elapsed_ms: 0,
            expires_in_ms: 0,
            fanned_out: true,
        }
    }

    fn truth(rows: &[(&str, u64)]) -> BTreeMap<Vec<String>, u64> {
        rows.iter()
            .map(|(c, n)| (vec![c.to_string()], *n))
            .collect()
    }

    #[test]
    fn the_count_check_passes_exact_counts_and_catches_a_machine_counted_twice() {
        let t = truth(&[("Linux", 2), ("Windows", 1)]);
        assert_eq!(
            counted_once(&progress(&[("Linux", 2), ("Windows", 1)], 3), 3, &t),
            Ok(())
        );
        // One machine's answer merged twice: 4 counted for 3 machines.
        let e = counted_once(&progress(&[("Linux", 3), ("Windows", 1)], 4), 3, &t)
            .expect_err("counted twice");
        assert!(e.contains("4 answers counted"), "{e}");
        // The right total, the wrong rows.
        let e = counted_once(&progress(&[("Linux", 1), ("Windows", 2)], 3), 3, &t)
            .expect_err("wrong rows");
        assert!(e.contains("ground truth"), "{e}");
    }

    #[test]
    fn scenario_names_round_trip_and_targets_resolve_by_share() {
        for s in Scenario::ALL {
            assert_eq!(
                <Scenario as clap::ValueEnum>::from_str(s.name(), true).ok(),
                Some(s)
            );
        }
        assert!(in_subnet(
            "127.1.2.9".parse().expect("ip"),
            "127.1.2.0".parse().expect("ip"),
            24
        ));
        assert!(!in_subnet(
            "127.1.3.9".parse().expect("ip"),
            "127.1.2.0".parse().expect("ip"),
            24
        ));
    }
}
