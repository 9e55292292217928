//! Running a scenario: heal, measure a fault-free question, strike, keep asking through the fault, heal, and check the eight invariants.

use crate::fleet::{Fleet, SIM_QUESTION};
use anyhow::Result;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use rollcall_actors::action::server::ActRequest;
use rollcall_cluster::proto::{Health, RingsReport};
use rollcall_patchdist::{ChunkStore, Manifest};
use rollcall_runtime::NodeId;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;
use tokio::time::Instant;

#[allow(unused_imports)]
use super::*;

impl Scenario {
    /// Applies the fault; returns what it did and whom it touched.
    pub(super) async fn strike(
        self,
        fleet: &mut Fleet,
        report: &RingsReport,
        opts: &ScenarioOptions,
        rng: &mut SmallRng,
        v: &mut Victims,
        package: Option<&Manifest>,
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
            Scenario::LeadersAndTenthKilled => {
                let leaders: Vec<usize> = report
                    .rings
                    .iter()
                    .flat_map(|r| r.members.iter())
                    .filter(|m| m.leads.any())
                    .filter_map(|m| fleet.index_of(&m.id))
                    .collect();
                let mut rest: Vec<usize> = (0..fleet.endpoints.len())
                    .filter(|i| fleet.endpoints[*i].alive() && !leaders.contains(i))
                    .collect();
                rest.shuffle(rng);
                rest.truncate((fleet.endpoints.len() as f64 * 0.10).round() as usize);
                for &i in leaders.iter().chain(rest.iter()) {
                    fleet.kill(i);
                    v.excused.insert(id(fleet, i));
                    v.lost.insert(id(fleet, i));
                }
                format!(
                    "killed every leader ({}) and {} more at random (10%) silently",
                    leaders.len(),
                    rest.len()
                )
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
                let window = opts.reboot_window.as_millis().max(1) as u64;
                let chosen = reboot_some(fleet, &ring, rng, v, window, 1000..5000);
                format!(
                    "{} of {} machines of a subnet reboot within {:?}, each down 1–5 s",
                    chosen,
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
            Scenario::PackageCorruptPeer => {
                let Some(i) = pick_inner(&ring, rng) else {
                    return Ok("no ring to fault".into());
                };
                fleet.endpoints[i].chunks.tamper_served(true);
                format!(
                    "{} ({}) serves every chunk with a byte flipped",
                    id(fleet, i),
                    fleet.endpoints[i].ip
                )
            }
            Scenario::PackageLeaderKilled => {
                let Some(&leader) = ring.first() else {
                    return Ok("no ring to fault".into());
                };
                // Mid-transfer: once the leader holds a few of this package's chunks (or
                // after 5 s). Counted by the package's own chunks: on a served fleet the
                // cache also holds earlier scenarios' packages.
                let chunks = fleet.endpoints[leader].chunks.clone();
                let wanted: Vec<_> = package.map(|m| m.chunk_hashes()).unwrap_or_default();
                let held = || wanted.iter().filter(|h| chunks.has(h)).count();
                let until = Instant::now() + Duration::from_secs(5);
                while held() < 8 && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let held = held();
                fleet.kill(leader);
                v.excused.insert(id(fleet, leader));
                v.lost.insert(id(fleet, leader));
                format!(
                    "killed forward leader {} silently holding {held} chunks",
                    id(fleet, leader)
                )
            }
            Scenario::PackageTornWrite => {
                let Some(i) = pick_inner(&ring, rng) else {
                    return Ok("no ring to fault".into());
                };
                let chunks = fleet.endpoints[i].chunks.clone();
                chunks.tear_next_write();
                let until = Instant::now() + Duration::from_secs(10);
                while !chunks.torn() && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let torn = chunks.torn();
                fleet.kill(i);
                v.excused.insert(id(fleet, i));
                v.restarts
                    .push((i, Instant::now() + Duration::from_secs(1), true));
                format!(
                    "{} ({}) stopped {} writing a chunk, back after 1 s",
                    id(fleet, i),
                    fleet.endpoints[i].ip,
                    if torn { "while" } else { "(never caught)" }
                )
            }
            Scenario::ActionOfflineRestart => {
                let chosen = reboot_some(fleet, &ring, rng, v, 2_000, 1000..3000);
                format!(
                    "{} of {} machines of a subnet go down within 2 s of an action spread over {} s, each down 1–3 s",
                    chosen,
                    ring.len(),
                    ACTION_SPREAD_SECS
                )
            }
        };
        Ok(desc)
    }
}

/// Takes down 30% of `ring`, each at a random moment within `window_ms` and for a random
/// `down_ms`, then back (two timed steps each, carried out as the scenario samples); returns
/// how many.
fn reboot_some(
    fleet: &Fleet,
    ring: &[usize],
    rng: &mut SmallRng,
    v: &mut Victims,
    window_ms: u64,
    down_ms: std::ops::Range<u64>,
) -> usize {
    let mut chosen = ring.to_vec();
    chosen.shuffle(rng);
    chosen.truncate((ring.len() * 3).div_ceil(10));
    let now = Instant::now();
    for &i in &chosen {
        let down_at = now + Duration::from_millis(rng.random_range(0..window_ms.max(1)));
        let down_for = Duration::from_millis(rng.random_range(down_ms.clone()));
        v.excused.insert(fleet.endpoints[i].id.clone());
        v.restarts.push((i, down_at, false));
        v.restarts.push((i, down_at + down_for, true));
    }
    chosen.len()
}

/// The size of the package the distributing scenarios send: 64 chunks, so that the chunks a
/// leader may hold alone when it dies (`FetchConfig::server_lead`, 2 in fault scenarios)
/// stay within 5% of a copy.
const CHAOS_PACKAGE_BYTES: usize = 64 * rollcall_patchdist::CHUNK_SIZE;

/// The spread of the action in the action-offline-restart scenario.
const ACTION_SPREAD_SECS: u64 = 3;

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
    // An action goes out as the fault strikes (before it, for a server restart, which sends
    // it again): every machine takes it at most once, whatever the fault does. In the
    // scenarios that distribute, it installs a package with a file.
    let package = if scenario.distributes() {
        // Bytes no machine holds yet: the scenarios of one `--scenario all` sweep share a
        // served fleet, and a package it already carries would test no transfer at all
        // (the first package on a fresh fleet is the seed's own, as before).
        let nth = fleet.packages_added();
        let data = bytes::Bytes::from(crate::sim::random_bytes(
            CHAOS_PACKAGE_BYTES,
            opts.seed ^ nth.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ));
        Some(
            fleet
                .add_package("chaos-package", &[("chaos.bin".to_string(), data)], "true")
                .await?,
        )
    } else {
        None
    };
    let action = fleet
        .act(ActRequest {
            expire_secs: Some(opts.ttl.as_secs().max(30)),
            spread_secs: if scenario == Scenario::ActionOfflineRestart {
                ACTION_SPREAD_SECS
            } else {
                0
            },
            ..ActRequest::all(
                if package.is_some() {
                    "chaos-package"
                } else {
                    "release"
                },
                &[],
            )
        })
        .await?;
    let lag = LagMonitor::start();
    let t_fault = Instant::now();
    let fault = scenario
        .strike(
            fleet,
            &report,
            opts,
            &mut rng,
            &mut obs.victims,
            package.as_ref(),
        )
        .await?;
    if scenario == Scenario::ServerRestart {
        for q in &mut obs.questions {
            q.lost_with_server = true;
        }
        obs.seen.clear();
        obs.links.restarted();
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

    let lag_ms = lag.stop();
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
    // 2b. Every member is honest here: faults never make an answer fail its tag, and no
    // member is named as having changed others' answers.
    let mut accused = Vec::new();
    for q in obs.questions.iter().filter(|q| !q.lost_with_server) {
        if let Some(p) = fleet.progress(q.id) {
            accused.extend(
                p.problems
                    .iter()
                    .filter(|(_, w)| {
                        w.starts_with("changed the answers") || w.contains("did not verify")
                    })
                    .map(|(who, w)| format!("question {}: {who} {w}", q.id)),
            );
        }
    }
    checks.push(Check {
        invariant: "no honest member's answers taken for changed".into(),
        pass: accused.is_empty(),
        measured: if accused.is_empty() {
            format!("every chain's answers verified in all {checked} questions")
        } else {
            first(&accused)
        },
    });
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

    // 9 and 10, where a package was distributed: every live machine gets it (waited for,
    // within the question ttl), every completed file matches its hash, and the server sent
    // each ring at most 5% more than one copy.
    if let Some(m) = &package {
        let end = Instant::now() + opts.ttl;
        loop {
            let waiting = fleet
                .endpoints
                .iter()
                .filter(|e| e.alive() && e.executor.runs_of(action) == 0)
                .count();
            if waiting == 0 || Instant::now() >= end {
                break;
            }
            obs.sample(fleet).await?;
            tokio::time::sleep(opts.sample_every).await;
        }
        let mut bad = Vec::new();
        let mut completed = 0;
        for e in &fleet.endpoints {
            if e.executor.runs_of(action) > 0 {
                completed += 1;
                if let Err(err) = rollcall_patchdist::endpoint::verify_files(e.chunks.as_ref(), m) {
                    bad.push(format!("{}: {err}", e.id));
                }
            } else if e.alive() {
                bad.push(format!("{} never completed", e.id));
            }
        }
        checks.push(Check {
            invariant: "every completed file matches its hash".into(),
            pass: bad.is_empty(),
            measured: if bad.is_empty() {
                format!(
                    "{completed} machines completed, each file rebuilt from their chunks hashed right"
                )
            } else {
                format!("{} machines: {}", bad.len(), first(&bad))
            },
        });
        let rings = fleet.expected_rings().max(1) as u64;
        let egress = fleet.egress(m);
        let ratio = egress.bytes as f64 / (m.size() * rings) as f64;
        checks.push(Check {
            invariant: "server egress <= 1.05 x size per ring".into(),
            pass: ratio <= 1.05,
            measured: format!(
                "{} bytes for {rings} rings of a {}-byte package: {ratio:.3} x ({} chunks sent again)",
                egress.bytes,
                m.size(),
                egress.repeats
            ),
        });
    }

    // 8. No action twice.
    let ran: Vec<(String, u32)> = fleet
        .endpoints
        .iter()
        .map(|e| (e.id.to_string(), e.executor.runs_of(action)))
        .collect();
    let twice: Vec<String> = ran
        .iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, n)| format!("{id} ran action {action} {n} times"))
        .collect();
    let once = ran.iter().filter(|(_, n)| *n == 1).count();
    checks.push(Check {
        invariant: "no action ran twice on any machine".into(),
        pass: twice.is_empty(),
        measured: if twice.is_empty() {
            format!(
                "{once} of {} machines ran action {action} once, none twice",
                ran.len()
            )
        } else {
            format!("{} machines: {}", twice.len(), first(&twice))
        },
    });

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
                    let last: Vec<String> = q.waiting_for.iter().map(|id| id.to_string()).collect();
                    late.push(format!(
                        "question {} took {} ms (last to answer: {})",
                        q.id,
                        took.as_millis(),
                        last.join(", ")
                    ));
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
    checks.push(obs.links.check());

    // 6. One chain again.
    checks.push(Check {
        invariant: "every ring one chain again after healing".into(),
        pass: healed.is_some(),
        measured: match healed {
            Some(d) => format!("{} ms after the heal", d.as_millis()),
            None => format!("not after {} s", opts.heal_timeout.as_secs()),
        },
    });

    // How the returning fleet met the new server: spread, or all at once.
    let fault = if scenario == Scenario::ServerRestart {
        format!(
            "{fault}; registrations at the new server peaked at {} in a second",
            obs.peak_registrations_per_second(t_fault)
        )
    } else {
        fault
    };
    Ok(ScenarioReport {
        scenario,
        seed: opts.seed,
        endpoints: fleet.endpoints.len(),
        fault,
        baseline_ms: baseline_time.as_secs_f64() * 1000.0,
        questions: obs.questions.len(),
        checks,
        rings: shape(&fleet.report().await),
        lag_ms: Some(lag_ms),
    })
}

/// How late the process's timers fire: a task that asks to wake every 10 ms notes how late
/// each wake-up came. A process that keeps up wakes within a millisecond or two; one that
/// falls behind delays every timer its members and server set too (hop deadlines, probes,
/// asks). On virtual time it is always 0.
struct LagMonitor {
    worst_us: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl LagMonitor {
    fn start() -> LagMonitor {
        let worst_us = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let w = worst_us.clone();
        let task = tokio::spawn(async move {
            // Ends when stopped (aborted); it sends nothing.
            loop {
                let due = Instant::now() + Duration::from_millis(10);
                tokio::time::sleep_until(due).await;
                let late = Instant::now().saturating_duration_since(due);
                w.fetch_max(
                    late.as_micros() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        });
        LagMonitor { worst_us, task }
    }

    /// Stops it: the worst lateness seen, in milliseconds.
    fn stop(self) -> f64 {
        self.worst_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0
    }
}

impl Drop for LagMonitor {
    /// Stopped however the scenario ends (an error returned mid-run included).
    fn drop(&mut self) {
        self.task.abort();
    }
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
pub(super) fn unanswered(fleet: &Fleet, id: u64) -> Vec<NodeId> {
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

pub(super) fn first(v: &[String]) -> String {
    match v.len() {
        0 => String::new(),
        1 => v[0].clone(),
        n => format!("{} (and {} more)", v[0], n - 1),
    }
}
