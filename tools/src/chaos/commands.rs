//! The chaos commands operators send (`rollcall chaos`): which endpoints, which fault, and
//! the answers. A simulated fleet (`rollcall sim --serve`) applies them itself; a real
//! server relays faults to the chaos agents of endpoints that allow them.

use serde::{Deserialize, Serialize};

#[allow(unused_imports)]
use super::*;

/// Which endpoints a fault hits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// One endpoint, by id or address.
    Node(String),
    /// A random share of the running endpoints, in percent.
    Random(f64),
    /// Every current leader.
    Leaders,
    /// Every endpoint in a subnet (a ring id such as `127.1.0.0/24`, or an address in it).
    Subnet(String),
    /// Every endpoint.
    All,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Node(n) => write!(f, "--node {n}"),
            Target::Random(p) => write!(f, "--random {p}%"),
            Target::Leaders => f.write_str("--leaders"),
            Target::Subnet(s) => write!(f, "--subnet {s}"),
            Target::All => f.write_str("--all"),
        }
    }
}

/// A fault to apply now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FaultAction {
    /// Kill silently.
    Kill,
    /// Start again (killed ones), with the same identity.
    Restart,
    /// Pause (grey: connections kept, nothing answered).
    Pause,
    /// Resume paused ones.
    Resume,
    /// Delay every envelope in and out by this many milliseconds.
    Slow(u64),
    /// Lose this share (percent) of what they send and receive.
    Loss(f64),
    /// Duplicate this share (percent) of what they send and receive.
    Duplicate(f64),
    /// Cut the targets off from every other endpoint (and from the server too if `true`).
    Partition(bool),
    /// Clear every fault (killed endpoints stay down until restarted).
    Heal,
}

/// Requests to [`CHAOS`] (admin operators only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChaosRequest {
    /// Apply a fault to the targets.
    Fault {
        /// What.
        action: FaultAction,
        /// To whom.
        target: Target,
        /// Seed for random targets.
        seed: u64,
    },
    /// Run a scenario from a healed fleet and report the invariants.
    Scenario {
        /// Which.
        scenario: Scenario,
        /// Its options.
        opts: ScenarioOptions,
    },
    /// The report of a scenario a real server started ([`ChaosReply::Started`]).
    ScenarioResult(u64),
}

/// Answers of [`CHAOS`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChaosReply {
    /// The fault was applied to these endpoints: (id, address).
    Applied(Vec<(String, String)>),
    /// A real server relayed the fault to each targeted endpoint's chaos agent: what each
    /// one said.
    Relayed(Vec<AgentOutcome>),
    /// A scenario's report.
    Scenario(ScenarioReport),
    /// It could not be done.
    Error(String),
    /// The scenario does not run against this kind of fleet: why.
    Skipped(String),
    /// A real server started the scenario as this run (it takes longer than a call may
    /// wait): ask for its result with [`ChaosRequest::ScenarioResult`].
    Started(u64),
    /// The run is still going: where it is.
    Running(String),
}

/// What one targeted endpoint of a real cluster did with a relayed fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentOutcome {
    /// The endpoint's id.
    pub id: String,
    /// Its address.
    pub addr: String,
    /// Whether it applied the fault.
    pub applied: bool,
    /// What it said (or why it could not be reached).
    pub detail: String,
}

/// Whether `ip` lies in `net`/`prefix`.
pub fn in_subnet(ip: std::net::IpAddr, net: std::net::IpAddr, prefix: u8) -> bool {
    use std::net::IpAddr;
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}
