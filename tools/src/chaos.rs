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
//! 6. after healing, every ring is one chain again.
//!
//! Adding a scenario is one arm in [`Scenario::strike`] (the fault) and, if it needs one, in
//! [`Scenario::heal`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use rollcall_cluster::proto::{Health, RingsReport};
use rollcall_runtime::{NodeId, PeerRole};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::fleet::{Fleet, SIM_QUESTION};

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
}

impl Scenario {
    /// Every scenario, in the order the suite runs them.
    pub const ALL: [Scenario; 10] = [
        Scenario::NeighbourKilled,
        Scenario::GreyNeighbour,
        Scenario::SlowNeighbour,
        Scenario::LeaderKilled,
        Scenario::BothLeadersKilled,
        Scenario::RingSplit,
        Scenario::SubnetReboot,
        Scenario::OfflineAndBack,
        Scenario::LossAndDuplication,
        Scenario::ServerRestart,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::NeighbourKilled => "neighbour-killed",
            Scenario::GreyNeighbour => "grey-neighbour",
            Scenario::SlowNeighbour => "slow-neighbour",
            Scenario::LeaderKilled => "leader-killed",
            Scenario::BothLeadersKilled => "both-leaders-killed",
            Scenario::RingSplit => "ring-split",
            Scenario::SubnetReboot => "subnet-reboot",
            Scenario::OfflineAndBack => "offline-and-back",
            Scenario::LossAndDuplication => "loss-and-duplication",
            Scenario::ServerRestart => "server-restart",
        }
    }

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

/// A question the scenario asked.
struct Asked {
    id: u64,
    /// Prompt answers are due within baseline + 1 s of this moment (`None`: not timed).
    due_from: Option<Instant>,
    /// When every endpoint due to answer promptly had answered.
    complete_at: Option<Instant>,
    /// Asked of a server that later restarted (its answers went with it).
    lost_with_server: bool,
}

/// Who a fault touched.
#[derive(Default)]
struct Victims {
    /// May stop answering for a while and may be evicted (killed, paused, rebooting).
    excused: HashSet<NodeId>,
    /// Killed for good: not expected to answer at all.
    lost: HashSet<NodeId>,
    /// Timed kills and restarts still to come: (index, when, restart rather than kill).
    restarts: Vec<(usize, Instant, bool)>,
}

/// Samples the server while the scenario runs.
struct Observer {
    every: Duration,
    seen: HashSet<NodeId>,
    evictions: BTreeMap<NodeId, String>,
    non_leader_since: HashMap<NodeId, Instant>,
    longest_non_leader: (Duration, Option<NodeId>),
    max_endpoint_conns: usize,
    max_leader_links: usize,
    questions: Vec<Asked>,
    victims: Victims,
    samples: u64,
}

fn members(r: &RingsReport) -> impl Iterator<Item = &rollcall_cluster::proto::MemberReport> {
    r.rings
        .iter()
        .flat_map(|x| x.members.iter())
        .chain(r.isolated.iter())
}

impl Observer {
    fn new(every: Duration) -> Observer {
        Observer {
            every,
            seen: HashSet::new(),
            evictions: BTreeMap::new(),
            non_leader_since: HashMap::new(),
            longest_non_leader: (Duration::ZERO, None),
            max_endpoint_conns: 0,
            max_leader_links: 0,
            questions: Vec::new(),
            victims: Victims::default(),
            samples: 0,
        }
    }

    async fn sample(&mut self, fleet: &mut Fleet) -> Result<RingsReport> {
        let now = Instant::now();
        // Reboots due now.
        let mut due: Vec<(usize, Instant, bool)> = self
            .victims
            .restarts
            .iter()
            .filter(|(_, at, _)| *at <= now)
            .copied()
            .collect();
        due.sort_by_key(|(_, at, _)| *at);
        self.victims.restarts.retain(|(_, at, _)| *at > now);
        for (i, _, start) in due {
            if start {
                fleet.restart(i).await?;
            } else {
                fleet.kill(i);
            }
        }

        let r = fleet.report().await;
        self.samples += 1;
        let present: HashMap<&NodeId, Health> = members(&r).map(|m| (&m.id, m.health)).collect();
        for id in &self.seen {
            if self.victims.excused.contains(id) || self.evictions.contains_key(id) {
                continue;
            }
            match present.get(id) {
                None => {
                    self.evictions
                        .insert(id.clone(), "dropped from its ring".into());
                }
                Some(Health::Offline) => {
                    self.evictions.insert(id.clone(), "marked offline".into());
                }
                Some(_) => {}
            }
        }
        self.seen.extend(
            present
                .iter()
                .filter(|(_, h)| **h != Health::Offline)
                .map(|(id, _)| (*id).clone()),
        );

        let leaders: HashSet<&NodeId> = members(&r)
            .filter(|m| m.leads.any())
            .map(|m| &m.id)
            .collect();
        let conns: Vec<NodeId> = fleet
            .server()
            .connected_peers()
            .into_iter()
            .filter(|p| p.peer.role == PeerRole::Endpoint)
            .map(|p| p.peer.id)
            .collect();
        self.max_endpoint_conns = self.max_endpoint_conns.max(conns.len());
        let links: usize = r.rings.iter().map(|x| x.leader_links).sum();
        self.max_leader_links = self.max_leader_links.max(links);
        // A faulted machine may hold what it had open when the fault struck (a grey node's
        // half-made registration): only the others' connections are judged.
        let non_leaders: HashSet<&NodeId> = conns
            .iter()
            .filter(|c| !leaders.contains(c) && !self.victims.excused.contains(*c))
            .collect();
        self.non_leader_since
            .retain(|id, _| non_leaders.contains(id));
        for id in non_leaders {
            let since = *self.non_leader_since.entry(id.clone()).or_insert(now);
            let held = now - since;
            if held > self.longest_non_leader.0 {
                self.longest_non_leader = (held, Some(id.clone()));
            }
        }

        let prompt: Vec<&NodeId> = fleet
            .endpoints
            .iter()
            .filter(|e| e.alive() && !self.victims.excused.contains(&e.id))
            .map(|e| &e.id)
            .collect();
        for q in &mut self.questions {
            if q.complete_at.is_some() || q.lost_with_server {
                continue;
            }
            let Some(answered) = fleet.rings().responders(q.id) else {
                continue;
            };
            let answered: HashSet<NodeId> = answered.into_iter().collect();
            if prompt.iter().all(|id| answered.contains(*id)) {
                q.complete_at = Some(now);
            }
        }
        Ok(r)
    }

    /// Samples for `d`.
    async fn watch(&mut self, fleet: &mut Fleet, d: Duration) -> Result<()> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.sample(fleet).await?;
            tokio::time::sleep(self.every.min(end - Instant::now())).await;
        }
        Ok(())
    }

    /// Samples until every ring is one chain (and pending reboots are done), or `timeout`.
    async fn until_formed(
        &mut self,
        fleet: &mut Fleet,
        timeout: Duration,
    ) -> Result<Option<Duration>> {
        let t0 = Instant::now();
        loop {
            let r = self.sample(fleet).await?;
            if self.victims.restarts.is_empty() && fleet.one_chain_each(&r) {
                return Ok(Some(t0.elapsed()));
            }
            if t0.elapsed() > timeout {
                if std::env::var("ROLLCALL_CHAOS_DEBUG").is_ok() {
                    eprintln!("not formed:\n{}", shape(&r));
                    for m in members(&r).filter(|m| m.leads.any()) {
                        if let Some(i) = fleet.index_of(&m.id) {
                            eprintln!("{}: {:?}", m.id, fleet.member_status(i).await);
                            let at_server: Vec<_> = fleet
                                .server()
                                .connected_peers()
                                .into_iter()
                                .filter(|p| p.peer.id == m.id)
                                .collect();
                            let mine = fleet.endpoints[i].node().map(|n| n.connected_peers());
                            eprintln!("  server has {at_server:?}\n  it has {mine:?}");
                        }
                    }
                }
                return Ok(None);
            }
            tokio::time::sleep(self.every).await;
        }
    }

    async fn ask(&mut self, fleet: &Fleet, ttl: Duration, due_from: Option<Instant>) -> Result<()> {
        let id = fleet.ask(SIM_QUESTION, ttl).await?;
        self.questions.push(Asked {
            id,
            due_from: due_from.map(|d| d.max(Instant::now())),
            complete_at: None,
            lost_with_server: false,
        });
        Ok(())
    }
}

/// Picks a ring from the report and returns its members' fleet indices in ring order.
fn pick_ring(fleet: &Fleet, r: &RingsReport, rng: &mut SmallRng) -> Vec<usize> {
    if r.rings.is_empty() {
        return Vec::new();
    }
    let ring = &r.rings[rng.random_range(0..r.rings.len())];
    ring.members
        .iter()
        .filter_map(|m| fleet.index_of(&m.id))
        .collect()
}

/// A member of `ring` that leads neither end (or any member of a ring too small for one).
fn pick_inner(ring: &[usize], rng: &mut SmallRng) -> Option<usize> {
    match ring.len() {
        0 => None,
        1 | 2 => Some(ring[rng.random_range(0..ring.len())]),
        n => Some(ring[rng.random_range(1..n - 1)]),
    }
}

impl Scenario {
    /// Applies the fault; returns what it did and whom it touched.
    async fn strike(
        self,
        fleet: &mut Fleet,
        report: &RingsReport,
        opts: &ScenarioOptions,
        rng: &mut SmallRng,
        v: &mut Victims,
    ) -> Result<String> {
        let ring = pick_ring(fleet, report, rng);
        let id = |fleet: &Fleet, i: usize| fleet.endpoints[i].id.clone();
        let desc = match self {
            Scenario::NeighbourKilled => {
                let Some(i) = pick_inner(&ring, rng) else {
                    return Ok("no ring to fault".into());
                };
                fleet.kill(i);
                v.excused.insert(id(fleet, i));
                v.lost.insert(id(fleet, i));
                format!(
                    "killed {} ({}) silently",
                    id(fleet, i),
                    fleet.endpoints[i].ip
                )
            }
            Scenario::GreyNeighbour => {
                let Some(i) = pick_inner(&ring, rng) else {
                    return Ok("no ring to fault".into());
                };
                fleet.pause(i, true);
                v.excused.insert(id(fleet, i));
                format!(
                    "paused {} ({}) for {:?}",
                    id(fleet, i),
                    fleet.endpoints[i].ip,
                    opts.fault_for
                )
            }
            Scenario::SlowNeighbour => {
                let Some(i) = pick_inner(&ring, rng) else {
                    return Ok("no ring to fault".into());
                };
                // Every envelope in and out waits 9 hop latencies: 10× the latency.
                let delay = (fleet.cfg.hop_latency * 9).max(Duration::from_millis(45));
                fleet.slow(i, delay);
                format!(
                    "slowed {} ({}) by {:?} per envelope each way for {:?}",
                    id(fleet, i),
                    fleet.endpoints[i].ip,
                    delay,
                    opts.fault_for
                )
            }
            Scenario::LeaderKilled | Scenario::BothLeadersKilled => {
                let mut who = Vec::new();
                if let Some(&first) = ring.first() {
                    who.push(first);
                }
                if self == Scenario::BothLeadersKilled
                    && let Some(&last) = ring.last()
                    && ring.len() > 1
                {
                    who.push(last);
                }
                for &i in &who {
                    fleet.kill(i);
                    v.excused.insert(id(fleet, i));
                    v.lost.insert(id(fleet, i));
                }
                let names: Vec<String> = who.iter().map(|&i| id(fleet, i).0.to_string()).collect();
                format!("killed leader(s) {} silently", names.join(", "))
            }
            Scenario::RingSplit => {
                if ring.len() < 4 {
                    return Ok("ring too small to split".into());
                }
                let k = rng.random_range(2..=ring.len() - 2);
                fleet.partition(&ring[..k], &ring[k..], false);
                format!(
                    "split a ring of {} into arcs of {} and {} for {:?}",
                    ring.len(),
                    k,
                    ring.len() - k,
                    opts.fault_for
                )
            }
            Scenario::SubnetReboot => {
                let mut chosen = ring.clone();
                chosen.shuffle(rng);
                chosen.truncate((ring.len() * 3).div_ceil(10));
                let now = Instant::now();
                let window = opts.reboot_window.as_millis().max(1) as u64;
                for &i in &chosen {
                    let down_at = now + Duration::from_millis(rng.random_range(0..window));
                    let down_for = Duration::from_millis(rng.random_range(1000..5000));
                    v.excused.insert(id(fleet, i));
                    // Killed at `down_at`, back `down_for` later: two timed steps.
                    v.restarts.push((i, down_at, false));
                    v.restarts.push((i, down_at + down_for, true));
                }
                format!(
                    "{} of {} machines of a subnet reboot within {:?}, each down 1–5 s",
                    chosen.len(),
                    ring.len(),
                    opts.reboot_window
                )
            }
            Scenario::OfflineAndBack => {
                if ring.is_empty() {
                    return Ok("no ring to fault".into());
                }
                let i = ring[rng.random_range(0..ring.len())];
                fleet.kill(i);
                v.excused.insert(id(fleet, i));
                v.restarts.push((
                    i,
                    Instant::now() + opts.fault_for + Duration::from_secs(1),
                    true,
                ));
                format!(
                    "{} ({}) offline for {:?} while questions are asked",
                    id(fleet, i),
                    fleet.endpoints[i].ip,
                    opts.fault_for + Duration::from_secs(1)
                )
            }
            Scenario::LossAndDuplication => {
                let loss = rng.random_range(0.05..=0.20);
                let dup = rng.random_range(0.05..=0.20);
                for i in 0..fleet.endpoints.len() {
                    fleet.loss(i, loss);
                    fleet.duplicate(i, dup);
                }
                format!(
                    "every endpoint loses {:.0}% and duplicates {:.0}% of what it sends and receives for {:?}",
                    loss * 100.0,
                    dup * 100.0,
                    opts.fault_for
                )
            }
            Scenario::ServerRestart => {
                fleet.restart_server().await?;
                "restarted the server".into()
            }
        };
        Ok(desc)
    }
}

/// Runs `scenario` against `fleet` (which should be freshly started) and checks the
/// invariants.
pub async fn run_scenario(
    fleet: &mut Fleet,
    scenario: Scenario,
    opts: &ScenarioOptions,
) -> Result<ScenarioReport> {
    let mut rng = SmallRng::seed_from_u64(opts.seed ^ 0x0063_6861_6f73);
    let mut obs = Observer::new(opts.sample_every);
    let mut checks = Vec::new();

    // Formed, then one fault-free question.
    let formed = obs.until_formed(fleet, Duration::from_secs(120)).await?;
    if formed.is_none() {
        checks.push(Check {
            invariant: "rings formed before the fault".into(),
            pass: false,
            measured: "not one chain each after 120 s".into(),
        });
    }
    // Settle: a few probe rounds, so successor lists have spread along each chain.
    let settle = fleet.cfg.ring.probe_interval * 4;
    obs.watch(fleet, settle).await?;
    let t = Instant::now();
    let baseline = fleet.ask(SIM_QUESTION, opts.ttl).await?;
    let all = fleet.endpoints.len();
    loop {
        obs.sample(fleet).await?;
        if fleet.rings().answered(baseline).unwrap_or(0) >= all || t.elapsed() > opts.ttl {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let baseline_time = t.elapsed();
    let promptness = baseline_time + Duration::from_secs(1);

    // The fault, mid-question for those that say so.
    let report = fleet.report().await;
    if scenario.mid_question() {
        obs.ask(fleet, opts.ttl, None).await?;
        let ms = (baseline_time.as_millis() as u64 / 2).max(1);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..ms))).await;
    }
    let t_fault = Instant::now();
    let fault = scenario
        .strike(fleet, &report, opts, &mut rng, &mut obs.victims)
        .await?;
    if scenario == Scenario::ServerRestart {
        for q in &mut obs.questions {
            q.lost_with_server = true;
        }
        obs.seen.clear();
        obs.non_leader_since.clear();
    }
    if let Some(q) = obs.questions.last_mut() {
        q.due_from = Some(t_fault);
    }

    // Questions through the fault.
    let during = if scenario == Scenario::SubnetReboot {
        opts.reboot_window
    } else {
        opts.fault_for
    };
    let step = during / 3;
    // While the server restarts, endpoints must first register again: those questions reach
    // them as hand-offs, not promptly.
    let timed = (scenario != Scenario::ServerRestart).then_some(t_fault);
    for _ in 0..3 {
        obs.ask(fleet, opts.ttl, timed).await?;
        obs.watch(fleet, step).await?;
    }

    // Heal: clear faults, and restart nobody who is lost for good.
    fleet.heal();
    let healed = obs.until_formed(fleet, opts.heal_timeout).await?;

    // One more question on the healed fleet, then wait for answers (bounded by the ttl).
    obs.ask(fleet, opts.ttl, Some(Instant::now())).await?;
    let end = Instant::now() + opts.ttl;
    loop {
        // Looked at before the sample, which then sees at least these answers: answers land
        // while we look, and one that came between a sample and this check would end the
        // wait with its question never marked complete.
        let done = obs
            .questions
            .iter()
            .filter(|q| !q.lost_with_server)
            .all(|q| unanswered(fleet, q.id).is_empty());
        // A restart this sample carries out has not answered yet: look again after it.
        let restarting = !obs.victims.restarts.is_empty();
        obs.sample(fleet).await?;
        let done = done && !restarting;
        if done || Instant::now() >= end {
            break;
        }
        tokio::time::sleep(opts.sample_every).await;
    }

    // 1. Nothing lost.
    let live: Vec<&NodeId> = fleet
        .endpoints
        .iter()
        .filter(|e| e.alive())
        .map(|e| &e.id)
        .collect();
    let mut missing = Vec::new();
    let mut checked = 0;
    for q in obs.questions.iter().filter(|q| !q.lost_with_server) {
        checked += 1;
        for id in unanswered(fleet, q.id) {
            missing.push(format!("{} missing from question {}", id, q.id));
        }
    }
    let lost: Vec<String> = obs.victims.lost.iter().map(|i| i.0.to_string()).collect();
    checks.push(Check {
        invariant: "no live endpoint's answer lost".into(),
        pass: missing.is_empty(),
        measured: if missing.is_empty() {
            format!(
                "{} of {} live endpoints answered all {checked} questions{}",
                live.len(),
                live.len(),
                if lost.is_empty() {
                    String::new()
                } else {
                    format!(" (killed for good: {})", lost.join(", "))
                }
            )
        } else {
            format!("{} missing: {}", missing.len(), first(&missing))
        },
    });

    // 2. Nothing counted twice.
    let mut twice = Vec::new();
    for q in obs.questions.iter().filter(|q| !q.lost_with_server) {
        let (Some(p), Some(who)) = (fleet.progress(q.id), fleet.rings().responders(q.id)) else {
            continue;
        };
        if let Err(e) = counted_once(&p, who.len(), &fleet.ground_truth(&who)) {
            twice.push(format!("question {}: {e}", q.id));
        }
    }
    checks.push(Check {
        invariant: "no answer counted twice".into(),
        pass: twice.is_empty(),
        measured: if twice.is_empty() {
            format!("counts equal the ground truth in all {checked} questions")
        } else {
            first(&twice)
        },
    });

    if std::env::var("ROLLCALL_CHAOS_DEBUG").is_ok() {
        for q in &obs.questions {
            eprintln!(
                "question {}: due from {:?} after the fault, complete {:?} after the fault",
                q.id,
                q.due_from.map(|d| d.saturating_duration_since(t_fault)),
                q.complete_at.map(|d| d.saturating_duration_since(t_fault)),
            );
        }
    }

    // 3. Prompt answers after the fault.
    let mut worst = Duration::ZERO;
    let mut late = Vec::new();
    for q in obs.questions.iter().filter(|q| !q.lost_with_server) {
        let Some(from) = q.due_from else { continue };
        match q.complete_at {
            Some(at) => {
                let took = at.saturating_duration_since(from);
                worst = worst.max(took);
                if took > promptness {
                    late.push(format!("question {} took {} ms", q.id, took.as_millis()));
                }
            }
            None => late.push(format!("question {} never complete", q.id)),
        }
    }
    checks.push(Check {
        invariant: "live endpoints answered within fault-free time + 1 s".into(),
        pass: late.is_empty(),
        measured: if late.is_empty() {
            format!(
                "slowest {} ms (bound {} ms)",
                worst.as_millis(),
                promptness.as_millis()
            )
        } else {
            format!("{} (bound {} ms)", first(&late), promptness.as_millis())
        },
    });

    // 4. No wrongful eviction.
    checks.push(Check {
        invariant: "no answering endpoint evicted".into(),
        pass: obs.evictions.is_empty(),
        measured: match obs.evictions.iter().next() {
            None => format!("{} samples, none", obs.samples),
            Some((id, why)) => format!("{} evicted; first: {id} {why}", obs.evictions.len()),
        },
    });

    // 5. Server connections at the leaders.
    let (held, who) = &obs.longest_non_leader;
    checks.push(Check {
        invariant: "server connections only to leaders and registrations".into(),
        pass: *held < Duration::from_secs(2),
        measured: format!(
            "at most {} endpoint connections ({} leader links); longest to a non-leader {} ms{}",
            obs.max_endpoint_conns,
            obs.max_leader_links,
            held.as_millis(),
            who.as_ref().map(|w| format!(" ({w})")).unwrap_or_default()
        ),
    });

    // 6. One chain again.
    checks.push(Check {
        invariant: "every ring one chain again after healing".into(),
        pass: healed.is_some(),
        measured: match healed {
            Some(d) => format!("{} ms after the heal", d.as_millis()),
            None => format!("not after {} s", opts.heal_timeout.as_secs()),
        },
    });

    Ok(ScenarioReport {
        scenario,
        seed: opts.seed,
        endpoints: fleet.endpoints.len(),
        fault,
        baseline_ms: baseline_time.as_secs_f64() * 1000.0,
        questions: obs.questions.len(),
        checks,
        rings: shape(&fleet.report().await),
    })
}

/// One line per ring: `ring [leader links] 1F 2 3s 4? 5X … 8B` (s slow, ? suspect, X offline,
/// F/B the ends it leads), hosts by the last part of their address.
pub fn shape(report: &RingsReport) -> String {
    let mut out = String::new();
    for ring in &report.rings {
        let members: Vec<String> = ring
            .members
            .iter()
            .map(|m| {
                let host = match m.addr.ip() {
                    std::net::IpAddr::V4(v) => v.octets()[3].to_string(),
                    std::net::IpAddr::V6(v) => v.to_string(),
                };
                let health = match m.health {
                    Health::Ok => "",
                    Health::Slow => "s",
                    Health::Suspect => "?",
                    Health::Offline => "X",
                };
                let leads = match (m.leads.forward, m.leads.backward) {
                    (true, true) => "FB",
                    (true, false) => "F",
                    (false, true) => "B",
                    _ => "",
                };
                format!("{host}{health}{leads}")
            })
            .collect();
        let _ = writeln!(
            out,
            "  {} [{}] {}",
            ring.ring,
            ring.leader_links,
            members.join(" ")
        );
    }
    out
}

/// Whether a question's counts are right: every machine that answered counted once, and the
/// rows equal the ground truth over exactly those machines.
pub fn counted_once(
    p: &rollcall_cluster::questions::Progress,
    responders: usize,
    truth: &BTreeMap<Vec<String>, u64>,
) -> Result<(), String> {
    let counted: u64 = p.rows.iter().map(|r| r.count).sum();
    if counted != responders as u64 || p.answered != responders {
        return Err(format!(
            "{counted} answers counted ({} reported answered) for {responders} machines",
            p.answered
        ));
    }
    let rows: BTreeMap<Vec<String>, u64> =
        p.rows.iter().map(|r| (r.cells.clone(), r.count)).collect();
    if &rows != truth {
        return Err(format!(
            "rows {rows:?} differ from the ground truth {truth:?}"
        ));
    }
    Ok(())
}

/// Running endpoints that have not answered question `id`.
fn unanswered(fleet: &Fleet, id: u64) -> Vec<NodeId> {
    let answered: HashSet<NodeId> = fleet
        .rings()
        .responders(id)
        .unwrap_or_default()
        .into_iter()
        .collect();
    fleet
        .endpoints
        .iter()
        .filter(|e| e.alive() && !answered.contains(&e.id))
        .map(|e| e.id.clone())
        .collect()
}

fn first(v: &[String]) -> String {
    match v.len() {
        0 => String::new(),
        1 => v[0].clone(),
        n => format!("{} (and {} more)", v[0], n - 1),
    }
}

/// Name of the chaos actor on a simulation's operator-facing node.
pub const CHAOS: &str = "chaos.control";

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
}

/// Answers of [`CHAOS`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChaosReply {
    /// The fault was applied to these endpoints: (id, address).
    Applied(Vec<(String, String)>),
    /// A scenario's report.
    Scenario(ScenarioReport),
    /// It could not be done.
    Error(String),
}

/// Resolves a target to fleet indices.
pub fn resolve(
    fleet: &Fleet,
    report: &RingsReport,
    target: &Target,
    seed: u64,
) -> Result<Vec<usize>> {
    let all = 0..fleet.endpoints.len();
    let picked: Vec<usize> = match target {
        Target::All => all.collect(),
        Target::Node(who) => all
            .filter(|&i| {
                let e = &fleet.endpoints[i];
                e.id.0 == *who || e.ip.to_string() == *who
            })
            .collect(),
        Target::Leaders => members(report)
            .filter(|m| m.leads.any())
            .filter_map(|m| fleet.index_of(&m.id))
            .collect(),
        Target::Random(pct) => {
            if !(0.0..=100.0).contains(pct) {
                anyhow::bail!("--random takes a share from 0% to 100%, not {pct}%");
            }
            let mut running: Vec<usize> = all.filter(|&i| fleet.endpoints[i].alive()).collect();
            running.shuffle(&mut SmallRng::seed_from_u64(seed));
            let n = ((running.len() as f64) * pct / 100.0).round() as usize;
            running.truncate(n);
            running.sort_unstable();
            running
        }
        Target::Subnet(s) => {
            let (net, prefix) = rollcall_cluster::membership::parse_cidr(s)
                .or_else(|_| rollcall_cluster::membership::parse_cidr(&format!("{s}/24")))
                .map_err(anyhow::Error::msg)?;
            all.filter(|&i| in_subnet(fleet.endpoints[i].ip, net, prefix))
                .collect()
        }
    };
    if picked.is_empty() {
        anyhow::bail!("no endpoint matches {target}");
    }
    Ok(picked)
}

fn in_subnet(ip: std::net::IpAddr, net: std::net::IpAddr, prefix: u8) -> bool {
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

/// Applies `action` to the endpoints at `who`.
pub async fn apply(fleet: &mut Fleet, action: &FaultAction, who: &[usize]) -> Result<()> {
    match action {
        FaultAction::Kill => who.iter().for_each(|&i| {
            fleet.kill(i);
        }),
        FaultAction::Restart => {
            for &i in who {
                fleet.restart(i).await?;
            }
        }
        FaultAction::Pause | FaultAction::Resume => who.iter().for_each(|&i| {
            fleet.pause(i, *action == FaultAction::Pause);
        }),
        FaultAction::Slow(ms) => who.iter().for_each(|&i| {
            fleet.slow(i, Duration::from_millis(*ms));
        }),
        FaultAction::Loss(p) => who.iter().for_each(|&i| fleet.loss(i, p / 100.0)),
        FaultAction::Duplicate(p) => who.iter().for_each(|&i| fleet.duplicate(i, p / 100.0)),
        FaultAction::Partition(with_server) => {
            let set: HashSet<usize> = who.iter().copied().collect();
            let rest: Vec<usize> = (0..fleet.endpoints.len())
                .filter(|i| !set.contains(i))
                .collect();
            fleet.partition(who, &rest, *with_server);
        }
        FaultAction::Heal => fleet.heal(),
    }
    Ok(())
}

/// Serves [`ChaosRequest`]s against a fleet, one at a time.
pub struct ChaosControl {
    fleet: std::sync::Arc<tokio::sync::Mutex<Fleet>>,
}

impl ChaosControl {
    /// Controls `fleet`.
    pub fn new(fleet: std::sync::Arc<tokio::sync::Mutex<Fleet>>) -> ChaosControl {
        ChaosControl { fleet }
    }

    /// Handles one request.
    pub async fn serve(&self, req: ChaosRequest) -> ChaosReply {
        let mut fleet = self.fleet.lock().await;
        let r: Result<ChaosReply> = async {
            match req {
                ChaosRequest::Fault {
                    action,
                    target,
                    seed,
                } => {
                    let report = fleet.report().await;
                    let who = if action == FaultAction::Heal {
                        (0..fleet.endpoints.len()).collect()
                    } else {
                        resolve(&fleet, &report, &target, seed)?
                    };
                    apply(&mut fleet, &action, &who).await?;
                    Ok(ChaosReply::Applied(
                        who.iter()
                            .map(|&i| {
                                let e = &fleet.endpoints[i];
                                (e.id.0.to_string(), e.ip.to_string())
                            })
                            .collect(),
                    ))
                }
                ChaosRequest::Scenario { scenario, opts } => {
                    fleet.reset().await?;
                    Ok(ChaosReply::Scenario(
                        run_scenario(&mut fleet, scenario, &opts).await?,
                    ))
                }
            }
        }
        .await;
        r.unwrap_or_else(|e| ChaosReply::Error(format!("{e:#}")))
    }

    /// Serves [`CHAOS`] on `node` for admin operators.
    pub fn install(self, node: &rollcall_runtime::Node) {
        node.router().register(
            CHAOS,
            std::sync::Arc::new(ChaosRoute(std::sync::Arc::new(self))),
        );
    }
}

struct ChaosRoute(std::sync::Arc<ChaosControl>);

impl rollcall_runtime::node::Deliver for ChaosRoute {
    fn deliver(
        &self,
        mut incoming: rollcall_runtime::Incoming,
    ) -> Result<(), rollcall_runtime::node::DestinationGone> {
        if !incoming
            .from
            .role
            .allows(rollcall_runtime::OperatorRole::Admin)
        {
            let _ = incoming.answer(&ChaosReply::Error(format!(
                "chaos needs the admin role; {} is {}",
                incoming.from.id, incoming.from.role
            )));
            return Ok(());
        }
        let req = match incoming.decode::<ChaosRequest>() {
            Ok(r) => r,
            Err(e) => {
                // Counted as a rejected frame by `decode`.
                let _ = incoming.answer(&ChaosReply::Error(format!("bad chaos request: {e}")));
                return Ok(());
            }
        };
        let control = self.0.clone();
        tokio::spawn(async move {
            let reply = control.serve(req).await;
            let _ = incoming.answer(&reply);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_cluster::questions::{Progress, RowCount};

    fn progress(rows: &[(&str, u64)], answered: usize) -> Progress {
        Progress {
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
