//! Rings on the deterministic network (real QUIC over turmoil, virtual clock), seeded:
//! a ring split into two arcs and healed, and a neighbour with ten times the latency.
//! `ROLLCALL_SEEDS=n` sweeps more seeds, `ROLLCALL_SEED=n` replays one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rollcall::compose::{self, Answering, EndpointPlan};
use rollcall_cluster::member::status;
use rollcall_cluster::proto::{Health, LeaderSides};
use rollcall_cluster::ring::RingConfig;
use rollcall_cluster::shard::RingServerConfig;
use rollcall_runtime::NodeId;
use rollcall_runtime::identity::{Credentials, NodeSecret, PeerRole};
use rollcall_runtime::signing::{ServerSigner, ServerTrust};
use rollcall_tests::rings::RING_TIMEOUTS;
use rollcall_tests::sim::{self, PORT};
use rollcall_tests::{SeedGuard, ca, creds, seeds};

const N: usize = 8;
const BASE_LATENCY: Duration = Duration::from_millis(20);

/// What the server saw at one moment: per member (in ring order) its host, health and the
/// ends it leads; and how many leader links it held.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    t_ms: u128,
    members: Vec<(String, Health, LeaderSides)>,
    ring_links: usize,
}

enum Fault {
    /// Cut ep1–ep4 off from ep5–ep8 at `at`, heal at `heal`.
    Split { at: Duration, heal: Duration },
    /// Every link of `ep{0}` has ten times the base latency.
    Slow(usize),
}

/// Runs the server (sampling its ring view every 200 ms) and eight endpoints until `end`.
/// Returns the samples and each endpoint's last route target (by host name).
/// Ring timing of this suite: probe every 100 ms, hop timeout 250 ms, dead after 750 ms.
fn ring_timing() -> RingConfig {
    RingConfig {
        successors: 4,
        skip_contacts: 2,
        probe_interval: Duration::from_millis(100),
        hop_timeout: Duration::from_millis(250),
        dead_timeout: Duration::from_millis(750),
        dial_timeout: Duration::from_millis(3000),
        pred_timeout: Duration::from_millis(1000),
        retry_interval: Duration::from_millis(1000),
        report_interval: Duration::from_millis(2000),
    }
}

fn scenario(
    seed: u64,
    fault: Fault,
    end: Duration,
) -> (Vec<Sample>, HashMap<String, Option<String>>) {
    let ca = ca();
    let server_creds = creds(&ca, PeerRole::Server);
    let signer = Arc::new(ServerSigner::generate().expect("signing key"));
    let trust = Arc::new(ServerTrust::new(
        Some(server_creds.identity.id.clone()),
        signer.public_key(),
    ));
    let eps: Vec<(String, Credentials)> = (1..=N)
        .map(|i| (format!("ep{i}"), creds(&ca, PeerRole::Endpoint)))
        .collect();
    let names: Rc<HashMap<NodeId, String>> = Rc::new(
        eps.iter()
            .map(|(n, c)| (c.identity.id.clone(), n.clone()))
            .collect(),
    );
    let mut sim = turmoil::Builder::new()
        .simulation_duration(end + Duration::from_secs(10))
        .min_message_latency(BASE_LATENCY)
        .max_message_latency(BASE_LATENCY)
        .rng_seed(seed)
        .build();
    let samples: Rc<RefCell<Vec<Sample>>> = Rc::default();
    let routes: Rc<RefCell<HashMap<String, Option<String>>>> = Rc::default();

    {
        let samples = samples.clone();
        let names = names.clone();
        let signer = signer.clone();
        sim.client("server", async move {
            let node = sim::node(
                &server_creds,
                &NodeSecret::from_bytes([1; 32]),
                seed,
                RING_TIMEOUTS,
            )
            .await?;
            let cfg = RingServerConfig {
                tick: Duration::from_millis(100),
                ..RingServerConfig::for_ring(&ring_timing(), Default::default(), 4)
            };
            let rings = compose::start_server_services(&node, cfg, None, None, signer.clone())
                .await
                .map_err(|e| e.to_string())?
                .rings;
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while turmoil::sim_elapsed().unwrap_or_default() < end {
                tick.tick().await;
                let r = rings.report(None).await;
                let members = r
                    .rings
                    .first()
                    .map(|ring| {
                        ring.members
                            .iter()
                            .map(|m| {
                                (
                                    names.get(&m.id).cloned().unwrap_or_default(),
                                    m.health,
                                    m.leads,
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                samples.borrow_mut().push(Sample {
                    t_ms: sim::now_ms(),
                    members,
                    ring_links: r.ring_connections,
                });
            }
            Ok(())
        });
    }
    for (i, (name, creds)) in eps.into_iter().enumerate() {
        let routes = routes.clone();
        let names = names.clone();
        let trust = trust.clone();
        sim.host(name.clone(), move || {
            let (creds, name, routes, names, trust) = (
                creds.clone(),
                name.clone(),
                routes.clone(),
                names.clone(),
                trust.clone(),
            );
            async move {
                let node = sim::node(
                    &creds,
                    &NodeSecret::from_bytes([i as u8 + 10; 32]),
                    seed,
                    RING_TIMEOUTS,
                )
                .await?;
                let server: SocketAddr = (turmoil::lookup("server"), PORT).into();
                let me: SocketAddr = (turmoil::lookup(name.as_str()), PORT).into();
                let member = compose::start_endpoint(
                    &node,
                    EndpointPlan {
                        server,
                        advertise: me,
                        hostname: name.clone(),
                        ring: ring_timing(),
                        register_min: Duration::from_secs(1),
                        register_max: Duration::from_secs(2),
                        server_timeout: Duration::from_secs(5),
                        seed: seed ^ (i as u64 + 1),
                        answering: Answering::Nothing,
                        trust: trust.clone(),
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tick.tick().await;
                    if let Some(s) = status(&member).await {
                        let target = s.route_target.and_then(|id| names.get(&id).cloned());
                        routes.borrow_mut().insert(name.clone(), target);
                    }
                }
            }
        });
    }

    let (arc_a, arc_b): (Vec<String>, Vec<String>) = (
        (1..=4).map(|i| format!("ep{i}")).collect(),
        (5..=8).map(|i| format!("ep{i}")).collect(),
    );
    if let Fault::Slow(who) = fault {
        let slow = format!("ep{who}");
        let slow_ip = sim.lookup(slow.as_str());
        for other in (1..=N)
            .map(|i| format!("ep{i}"))
            .chain(["server".to_string()])
        {
            if other != slow {
                sim.set_link_latency(slow_ip, sim.lookup(other.as_str()), BASE_LATENCY * 10);
            }
        }
    }
    let (mut cut, mut healed) = (false, false);
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => panic!("seed {seed}: simulation failed: {e}"),
        }
        if let Fault::Split { at, heal } = fault {
            let t = sim.elapsed();
            if !cut && t >= at {
                for a in &arc_a {
                    for b in &arc_b {
                        sim.partition(sim.lookup(a.as_str()), sim.lookup(b.as_str()));
                    }
                }
                cut = true;
            }
            if !healed && t >= heal {
                for a in &arc_a {
                    for b in &arc_b {
                        sim.repair(sim.lookup(a.as_str()), sim.lookup(b.as_str()));
                    }
                }
                healed = true;
            }
        }
    }
    let samples = samples.borrow().clone();
    let routes = routes.borrow().clone();
    (samples, routes)
}

fn leads(forward: bool, backward: bool) -> LeaderSides {
    LeaderSides { forward, backward }
}

/// Hosts leading (forward, backward) in a sample, in ring order.
fn leaders(s: &Sample) -> Vec<(String, LeaderSides)> {
    s.members
        .iter()
        .filter(|m| m.2.any())
        .map(|m| (m.0.clone(), m.2))
        .collect()
}

fn one_chain(s: &Sample) -> bool {
    s.members.len() == N
        && s.ring_links == 2
        && leaders(s)
            == vec![
                ("ep1".to_string(), leads(true, false)),
                (format!("ep{N}"), leads(false, true)),
            ]
}

#[test]
fn a_ring_split_in_two_arcs_keeps_both_linked_and_heals_into_one_chain() {
    for seed in seeds(2) {
        let _guard = SeedGuard(
            "a_ring_split_in_two_arcs_keeps_both_linked_and_heals_into_one_chain",
            seed,
        );
        let (samples, _) = scenario(
            seed,
            Fault::Split {
                at: Duration::from_secs(8),
                heal: Duration::from_secs(16),
            },
            Duration::from_secs(26),
        );
        let window = |from: u128, to: u128| {
            samples
                .iter()
                .filter(move |s| s.t_ms >= from && s.t_ms < to)
        };
        let before = window(0, 8_000)
            .next_back()
            .expect("samples before the split");
        assert!(
            one_chain(before),
            "seed {seed}: not one chain before the split: {before:?}"
        );
        // While split, each arc has both its leaders linked to the server: four links.
        let expect_split = vec![
            ("ep1".to_string(), leads(true, false)),
            ("ep4".to_string(), leads(false, true)),
            ("ep5".to_string(), leads(true, false)),
            ("ep8".to_string(), leads(false, true)),
        ];
        for s in window(11_000, 16_000) {
            assert_eq!(
                (leaders(s), s.ring_links),
                (expect_split.clone(), 4),
                "seed {seed}: at {} ms: {s:?}",
                s.t_ms
            );
        }
        // Nobody stopped answering the server, so nobody was evicted, ever.
        for s in &samples {
            assert!(
                s.members.iter().all(|m| m.1 != Health::Offline),
                "seed {seed}: eviction at {} ms: {s:?}",
                s.t_ms
            );
        }
        // After the heal: one chain again, everyone healthy.
        for s in window(22_000, 26_000) {
            assert!(
                one_chain(s),
                "seed {seed}: not one chain at {} ms after the heal: {s:?}",
                s.t_ms
            );
            assert!(
                s.members.iter().all(|m| m.1 == Health::Ok),
                "seed {seed}: {s:?}"
            );
        }
    }
}

#[test]
fn a_neighbour_with_ten_times_the_latency_is_routed_around_and_not_evicted() {
    for seed in seeds(2) {
        let _guard = SeedGuard(
            "a_neighbour_with_ten_times_the_latency_is_routed_around_and_not_evicted",
            seed,
        );
        let (samples, routes) = scenario(seed, Fault::Slow(4), Duration::from_secs(20));
        for s in samples.iter().filter(|s| s.t_ms >= 10_000) {
            assert!(one_chain(s), "seed {seed}: at {} ms: {s:?}", s.t_ms);
            for (host, health, _) in &s.members {
                let want = if host == "ep4" {
                    Health::Slow
                } else {
                    Health::Ok
                };
                assert_eq!(*health, want, "seed {seed}: {host} at {} ms: {s:?}", s.t_ms);
            }
        }
        assert!(
            samples
                .iter()
                .all(|s| s.members.iter().all(|m| m.1 != Health::Offline)),
            "seed {seed}"
        );
        // Its predecessor routes around it; everyone else routes to their next.
        assert_eq!(
            routes.get("ep3"),
            Some(&Some("ep5".to_string())),
            "seed {seed}: {routes:?}"
        );
        assert_eq!(
            routes.get("ep2"),
            Some(&Some("ep3".to_string())),
            "seed {seed}: {routes:?}"
        );
        assert_eq!(
            routes.get("ep5"),
            Some(&Some("ep6".to_string())),
            "seed {seed}: {routes:?}"
        );
    }
}
