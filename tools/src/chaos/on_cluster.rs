//! Scenarios against a real cluster, run by its server: `rollcall chaos --scenario` sent to
//! a `rollcall server` forms, measures, strikes, heals and checks as a simulated fleet's
//! scenario does, but the faults go to the endpoints' chaos agents through the relay (each
//! endpoint started with `--allow-chaos`), and the questions are the server's own.
//!
//! What a server can see for itself is checked: every machine running at the end answered
//! every question (1), each once (2: one row per machine, so the counts add up to the
//! machines that answered), promptly unless faulted itself (3), none that kept answering was
//! evicted (4), the server held connections only to leaders and registrations (5: its own
//! links, sampled), every ring is one chain again after healing (6), and no honest member
//! was named as having changed others' answers (7). A killed endpoint stays down unless its
//! service manager starts it again; one that comes back answers late, and counts.
//!
//! Scenarios that need what only a simulated fleet has (restarting the endpoints it killed,
//! restarting its own server, a peer serving corrupted chunks, reading every machine's
//! executor and chunk cache) are skipped, with the reason.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use rollcall_actors::desk::{DeskReply, DeskRequest};
use rollcall_cluster::proto::{Health, MemberReport, RingsReport};
use rollcall_runtime::{NodeId, PeerIdentity};
use tokio::time::Instant;

use super::relay::ChaosRelay;
use super::*;

/// The question a scenario asks: one row per machine.
const QUESTION: &str = "Get Computer Name from all machines";

/// How long the fault-free question waits for every machine: one silent by then is down.
const BASELINE_WAIT: Duration = Duration::from_secs(10);

/// How an endpoint is slowed in slow-neighbour: per envelope, each way.
const SLOW_MS: u64 = 50;

impl Scenario {
    /// Why the scenario cannot run against a real cluster (`None`: it can).
    pub fn needs_simulation(self) -> Option<&'static str> {
        match self {
            Scenario::SubnetReboot
            | Scenario::ActionOfflineRestart
            | Scenario::PackageTornWrite => Some(
                "it starts the endpoints it stopped again, which on a real cluster their service manager does, not the server",
            ),
            Scenario::ServerRestart => Some(
                "a server cannot restart itself under its own scenario (the process fault suite restarts a real one)",
            ),
            Scenario::PackageCorruptPeer => Some(
                "it needs an endpoint that serves corrupted chunks, a fault only simulated hosts have",
            ),
            Scenario::PackageLeaderKilled => Some(
                "its checks read every machine's chunk cache and executor, which only a simulated fleet shows",
            ),
            _ => None,
        }
    }
}

/// A question the scenario asked.
struct Asked {
    id: u64,
    /// Prompt answers are due within baseline + 1 s of this moment (`None`: not timed).
    due_from: Option<Instant>,
    /// How long after `due_from` every machine due had answered.
    took: Option<Duration>,
}

/// One scenario's run on the cluster.
struct Run<'a> {
    relay: &'a ChaosRelay,
    who: &'a PeerIdentity,
    /// Every machine the server knew, healthy, when the scenario began.
    machines: HashSet<NodeId>,
    /// Faulted: excused from promptness and from eviction.
    excused: HashSet<NodeId>,
    /// Killed: not expected to answer.
    lost: HashSet<NodeId>,
    questions: Vec<Asked>,
    evicted: BTreeMap<NodeId, String>,
    /// The server's own connections (invariant 5).
    links: super::links::LeaderLinks,
}

impl Run<'_> {
    /// The rings; notes any machine outside the excused that the server marked offline.
    async fn sample(&mut self) -> RingsReport {
        let r = self.relay.rings().report(None).await;
        for m in r.machines() {
            if m.health == Health::Offline
                && self.machines.contains(&m.id)
                && !self.excused.contains(&m.id)
            {
                self.evicted
                    .entry(m.id.clone())
                    .or_insert_with(|| format!("{} marked offline", m.addr));
            }
        }
        let conns = self.relay.node().connected_peers();
        self.links.sample(&r, conns, &self.excused, Instant::now());
        let due: Vec<&NodeId> = self
            .machines
            .iter()
            .filter(|m| !self.excused.contains(*m) && !self.lost.contains(*m))
            .collect();
        let now = Instant::now();
        for q in &mut self.questions {
            let Some(from) = q.due_from else { continue };
            if q.took.is_some() {
                continue;
            }
            // Copying who answered costs a list of every machine: only once enough have.
            if self.relay.rings().answered(q.id).unwrap_or(0) < due.len() {
                continue;
            }
            let answered = responders(self.relay, q.id);
            if due.iter().all(|m| answered.contains(*m)) {
                q.took = Some(now.duration_since(from));
            }
        }
        r
    }

    async fn watch(&mut self, for_: Duration) {
        let end = Instant::now() + for_;
        while Instant::now() < end {
            self.sample().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every ring is one chain of the machines not killed; how long it took.
    async fn formed(&mut self, within: Duration) -> Result<Duration, String> {
        let t = Instant::now();
        let mut last = String::new();
        while t.elapsed() < within {
            let mut r = self.sample().await;
            // The machines it killed, or found down, are gone whether or not the server has
            // evicted them yet (nobody reports a dead first member; its registration lapses
            // later).
            let gone =
                |m: &MemberReport| !self.machines.contains(&m.id) || self.lost.contains(&m.id);
            for ring in &mut r.rings {
                ring.members.retain(|m| !gone(m));
            }
            r.isolated.retain(|m| !gone(m));
            let g = FormationGaps::of(&r, self.machines.len() - self.lost.len());
            if g.formed() {
                return Ok(t.elapsed());
            }
            last = g.to_string();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("not one chain each after {within:?}: {last}"))
    }

    async fn ask(&mut self, ttl: Duration, due_from: Option<Instant>) -> Result<u64, String> {
        let req = DeskRequest::Ask {
            text: QUESTION.into(),
            ttl_ms: Some(ttl.as_millis() as u64),
        };
        match self.relay.desk().serve(req, self.who).await {
            DeskReply::Asked { id, .. } => {
                self.questions.push(Asked {
                    id,
                    // Due from the fault, or from its asking if that came later.
                    due_from: due_from.map(|d| d.max(Instant::now())),
                    took: None,
                });
                Ok(id)
            }
            other => Err(format!("the question was not asked: {other:?}")),
        }
    }

    /// Machines running now (not killed) that have not answered question `id`.
    fn unanswered(&self, id: u64) -> Vec<NodeId> {
        let answered = responders(self.relay, id);
        let mut missing: Vec<NodeId> = self
            .machines
            .iter()
            .filter(|m| !self.lost.contains(*m) && !answered.contains(*m))
            .cloned()
            .collect();
        missing.sort();
        missing
    }

    async fn fault(
        &self,
        report: &RingsReport,
        who: &[MemberReport],
        action: FaultAction,
    ) -> String {
        let out = self.relay.relay(report, who, &action).await;
        super::relay::summary(&out)
    }
}

/// The machines that have answered question `id`.
fn responders(relay: &ChaosRelay, id: u64) -> HashSet<NodeId> {
    relay
        .rings()
        .responders(id)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// A ring with at least three members (seeded), in ring order.
fn pick_ring<'r>(
    report: &'r RingsReport,
    up: &HashSet<NodeId>,
    rng: &mut SmallRng,
) -> Option<Vec<&'r MemberReport>> {
    let rings: Vec<Vec<&MemberReport>> = report
        .rings
        .iter()
        .map(|r| {
            r.members
                .iter()
                .filter(|m| m.health != Health::Offline && up.contains(&m.id))
                .collect::<Vec<_>>()
        })
        .filter(|m| m.len() >= 3)
        .collect();
    if rings.is_empty() {
        return None;
    }
    let i = rng.random_range(0..rings.len());
    rings.into_iter().nth(i)
}

/// Runs `scenario` against the cluster `relay` serves, as `who`, and checks the invariants.
pub async fn run_on_cluster(
    relay: &ChaosRelay,
    who: &PeerIdentity,
    scenario: Scenario,
    opts: &ScenarioOptions,
) -> Result<ScenarioReport, String> {
    let mut rng = SmallRng::seed_from_u64(opts.seed ^ 0x0063_6c75_7374);
    let first = relay.rings().report(None).await;
    let mut run = Run {
        relay,
        who,
        machines: first
            .machines()
            .filter(|m| m.health != Health::Offline)
            .map(|m| m.id.clone())
            .collect(),
        excused: HashSet::new(),
        lost: HashSet::new(),
        questions: Vec::new(),
        evicted: BTreeMap::new(),
        links: Default::default(),
    };
    if run.machines.is_empty() {
        return Err("the server knows no running endpoint".into());
    }
    let mut checks = Vec::new();
    // From a healed cluster, formed.
    run.fault(
        &first,
        &first.machines().cloned().collect::<Vec<_>>(),
        FaultAction::Heal,
    )
    .await;
    run.watch(Duration::from_secs(2)).await;
    // One fault-free question. A machine that does not answer it within the wait is down
    // already (killed by an earlier scenario, say, and not evicted yet): it is left out.
    let t = Instant::now();
    let baseline = run.ask(opts.ttl, None).await?;
    let (mut seen, mut baseline_time) = (0, Duration::ZERO);
    loop {
        run.sample().await;
        let n = run.relay.rings().answered(baseline).unwrap_or(0);
        if n > seen {
            (seen, baseline_time) = (n, t.elapsed());
        }
        if run.unanswered(baseline).is_empty() || t.elapsed() >= BASELINE_WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let down = run.unanswered(baseline);
    for m in &down {
        run.machines.remove(m);
        run.evicted.remove(m);
    }
    if let Err(e) = run.formed(Duration::from_secs(120)).await {
        checks.push(Check {
            invariant: "rings formed before the fault".into(),
            pass: false,
            measured: e,
        });
    }
    let bound = baseline_time + Duration::from_secs(1);

    // The fault, mid-question for those that say so.
    let report = run.sample().await;
    let mid = matches!(
        scenario,
        Scenario::NeighbourKilled
            | Scenario::GreyNeighbour
            | Scenario::LeaderKilled
            | Scenario::BothLeadersKilled
            | Scenario::RingSplit
    );
    if mid {
        run.ask(opts.ttl, None).await?;
        let ms = (baseline_time.as_millis() as u64 / 2).max(1);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..ms))).await;
    }
    let t_fault = Instant::now();
    let ring = pick_ring(&report, &run.machines, &mut rng);
    let inner = |rng: &mut SmallRng| -> Option<MemberReport> {
        let r = ring.as_ref()?;
        Some(r[rng.random_range(1..r.len() - 1)].clone())
    };
    let fault = match scenario {
        Scenario::NeighbourKilled | Scenario::GreyNeighbour | Scenario::SlowNeighbour => {
            let Some(m) = inner(&mut rng) else {
                return Err("no ring of three or more to fault".into());
            };
            let action = match scenario {
                Scenario::NeighbourKilled => FaultAction::Kill,
                Scenario::GreyNeighbour => FaultAction::Pause,
                _ => FaultAction::Slow(SLOW_MS),
            };
            if scenario != Scenario::SlowNeighbour {
                run.excused.insert(m.id.clone());
            }
            if scenario == Scenario::NeighbourKilled {
                run.lost.insert(m.id.clone());
            }
            let said = run
                .fault(&report, std::slice::from_ref(&m), action.clone())
                .await;
            format!("{action:?} on {} ({}): {said}", m.id, m.addr)
        }
        Scenario::LeaderKilled | Scenario::BothLeadersKilled => {
            let Some(r) = ring.as_ref() else {
                return Err("no ring of three or more to fault".into());
            };
            let mut who: Vec<MemberReport> = vec![r[0].clone()];
            if scenario == Scenario::BothLeadersKilled {
                who.push(r[r.len() - 1].clone());
            }
            for m in &who {
                run.excused.insert(m.id.clone());
                run.lost.insert(m.id.clone());
            }
            let said = run.fault(&report, &who, FaultAction::Kill).await;
            let names: Vec<String> = who.iter().map(|m| m.id.to_string()).collect();
            format!("killed leader(s) {}: {said}", names.join(", "))
        }
        Scenario::LeadersAndTenthKilled => {
            let mut leaders: Vec<MemberReport> = report
                .machines()
                .filter(|m| run.machines.contains(&m.id) && m.leads.any())
                .cloned()
                .collect();
            let mut rest: Vec<MemberReport> = report
                .machines()
                .filter(|m| run.machines.contains(&m.id) && !m.leads.any())
                .cloned()
                .collect();
            rest.sort_by(|a, b| a.id.cmp(&b.id));
            rest.shuffle(&mut rng);
            rest.truncate(rest.len().div_ceil(10));
            let n = (leaders.len(), rest.len());
            leaders.extend(rest);
            let mut seen = HashSet::new();
            leaders.retain(|m| seen.insert(m.id.clone()));
            for m in &leaders {
                run.excused.insert(m.id.clone());
                run.lost.insert(m.id.clone());
            }
            let said = run.fault(&report, &leaders, FaultAction::Kill).await;
            format!("killed {} leaders and {} others: {said}", n.0, n.1)
        }
        Scenario::RingSplit => {
            let Some(r) = ring.as_ref() else {
                return Err("no ring of three or more to split".into());
            };
            let cut = rng.random_range(1..r.len());
            let arc: Vec<MemberReport> = r[..cut].iter().map(|m| (*m).clone()).collect();
            let said = run
                .fault(&report, &arc, FaultAction::Partition(false))
                .await;
            format!(
                "cut the first {cut} of {} members of ring {} off from every other endpoint: {said}",
                r.len(),
                report
                    .rings
                    .iter()
                    .find(|x| x.members.iter().any(|m| m.id == r[0].id))
                    .map(|x| x.ring.0.clone())
                    .unwrap_or_default()
            )
        }
        Scenario::OfflineAndBack => {
            let mut all: Vec<&MemberReport> = report
                .machines()
                .filter(|m| m.health != Health::Offline && run.machines.contains(&m.id))
                .collect();
            all.sort_by(|a, b| a.id.cmp(&b.id));
            all.dedup_by(|a, b| a.id == b.id);
            let Some(m) = all
                .get(rng.random_range(0..all.len().max(1)))
                .map(|m| (*m).clone())
            else {
                return Err("no running endpoint to take offline".into());
            };
            run.excused.insert(m.id.clone());
            let said = run
                .fault(
                    &report,
                    std::slice::from_ref(&m),
                    FaultAction::Partition(true),
                )
                .await;
            // Cut off from the server, it cannot hear the heal either (nor, often, say that
            // it applied the cut): it ends the fault itself after its `[chaos]
            // fault_limit_secs`, and must then answer what it missed.
            format!(
                "cut {} ({}) off from everyone, server included (it ends the cut itself after its fault limit): {said}",
                m.id, m.addr
            )
        }
        Scenario::LossAndDuplication => {
            let all: Vec<MemberReport> = report
                .machines()
                .filter(|m| m.health != Health::Offline && run.machines.contains(&m.id))
                .cloned()
                .collect();
            let loss = rng.random_range(5..=20);
            let dup = rng.random_range(5..=20);
            let a = run
                .fault(&report, &all, FaultAction::Loss(f64::from(loss)))
                .await;
            let b = run
                .fault(&report, &all, FaultAction::Duplicate(f64::from(dup)))
                .await;
            format!("every endpoint loses {loss}% and duplicates {dup}% of its datagrams: {a}; {b}")
        }
        other => {
            return Err(format!(
                "scenario {} does not run against a real cluster",
                other.name()
            ));
        }
    };
    let fault = if down.is_empty() {
        fault
    } else {
        format!(
            "{fault} ({} machine(s) already down were left out, e.g. {})",
            down.len(),
            down[0]
        )
    };
    if let Some(q) = run.questions.last_mut()
        && mid
    {
        q.due_from = Some(t_fault);
    }

    // Questions through the fault.
    for _ in 0..3 {
        run.ask(opts.ttl, Some(t_fault)).await?;
        run.watch(opts.fault_for / 3).await;
    }

    // Heal (killed endpoints stay down), then one more question on the healed cluster.
    let now = run.sample().await;
    run.fault(
        &now,
        &now.machines().cloned().collect::<Vec<_>>(),
        FaultAction::Heal,
    )
    .await;
    let healed = run.formed(opts.heal_timeout).await;
    run.ask(opts.ttl, Some(Instant::now())).await?;
    let end = Instant::now() + opts.ttl;
    loop {
        let done = run
            .questions
            .iter()
            .all(|q| run.unanswered(q.id).is_empty());
        run.sample().await;
        if done || Instant::now() >= end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 1. Nothing lost.
    let mut missing = Vec::new();
    for q in &run.questions {
        for m in run.unanswered(q.id) {
            missing.push(format!("{m} missing from question {}", q.id));
        }
    }
    let live = run.machines.len() - run.lost.len();
    checks.push(Check {
        invariant: "no live endpoint's answer lost".into(),
        pass: missing.is_empty(),
        measured: if missing.is_empty() {
            format!(
                "{live} of {live} live endpoints answered all {} questions{}",
                run.questions.len(),
                if run.lost.is_empty() {
                    String::new()
                } else {
                    format!(" ({} killed)", run.lost.len())
                }
            )
        } else {
            format!("{} missing: {}", missing.len(), missing[0])
        },
    });
    // 2. Each counted once: one row per machine, so the counts add up to who answered.
    let mut twice = Vec::new();
    let mut accused = Vec::new();
    for q in &run.questions {
        if let Some(p) = relay.rings().progress(q.id) {
            let counted: u64 = p.rows.iter().map(|r| r.count).sum();
            if counted != p.answered as u64 {
                twice.push(format!(
                    "question {}: {counted} answers counted for {} machines",
                    q.id, p.answered
                ));
            }
            accused.extend(
                p.problems
                    .iter()
                    .filter(|(_, w)| {
                        w.starts_with("changed the answers") || w.contains("did not verify")
                    })
                    .map(|(m, w)| format!("question {}: {m} {w}", q.id)),
            );
        }
    }
    checks.push(Check {
        invariant: "no answer counted twice".into(),
        pass: twice.is_empty(),
        measured: twice.first().cloned().unwrap_or_else(|| {
            format!(
                "counts equal the machines that answered in all {} questions",
                run.questions.len()
            )
        }),
    });
    checks.push(Check {
        invariant: "no honest member's answers taken for changed".into(),
        pass: accused.is_empty(),
        measured: accused
            .first()
            .cloned()
            .unwrap_or_else(|| "every chain's answers verified".into()),
    });
    // 3. Prompt.
    let timed: Vec<&Asked> = run
        .questions
        .iter()
        .filter(|q| q.due_from.is_some())
        .collect();
    let slowest = timed
        .iter()
        .map(|q| q.took.map(|t| (t, q.id)))
        .try_fold((Duration::ZERO, 0), |a, t| t.map(|t| a.max(t)));
    checks.push(Check {
        invariant: "live endpoints answered within fault-free time + 1 s".into(),
        pass: slowest.is_some_and(|(s, _)| s <= bound),
        measured: match slowest {
            Some((s, q)) => format!(
                "slowest {} ms (question {q}; {} questions timed; bound {} ms)",
                s.as_millis(),
                timed.len(),
                bound.as_millis()
            ),
            None => format!(
                "question {} never reached every machine due to answer",
                timed.iter().find(|q| q.took.is_none()).map_or(0, |q| q.id)
            ),
        },
    });
    // 4. Nobody answering evicted.
    checks.push(Check {
        invariant: "no answering endpoint evicted".into(),
        pass: run.evicted.is_empty(),
        measured: match run.evicted.iter().next() {
            None => "none".into(),
            Some((m, why)) => format!("{} evicted; first: {m} {why}", run.evicted.len()),
        },
    });
    // 5. Server connections at the leaders.
    checks.push(run.links.check());
    // 6. One chain again.
    checks.push(Check {
        invariant: "every ring one chain again after healing".into(),
        pass: healed.is_ok(),
        measured: match &healed {
            Ok(d) => format!("{} ms after healing", d.as_millis()),
            Err(e) => e.clone(),
        },
    });
    let rings = relay.rings().report(None).await;
    Ok(ScenarioReport {
        scenario,
        seed: opts.seed,
        endpoints: run.machines.len(),
        fault,
        baseline_ms: baseline_time.as_secs_f64() * 1000.0,
        questions: run.questions.len() - 1,
        checks,
        rings: rings
            .rings
            .iter()
            .map(|r| {
                format!(
                    "{}: {} members, {} leader links\n",
                    r.ring.0,
                    r.members.len(),
                    r.leader_links
                )
            })
            .collect(),
        lag_ms: None,
    })
}
