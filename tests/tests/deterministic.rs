//! The deterministic network: real QUIC (quinn + rustls) over turmoil's simulated UDP, on a
//! virtual clock. Partitions, heals and host bounces happen at exact simulated times, so each
//! run is reproducible from its seed (`ROLLCALL_SEED=n`), and `ROLLCALL_SEEDS=n` sweeps more.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use rollcall_runtime::identity::{NodeSecret, PeerRole};
use rollcall_runtime::node::LinkEvent;
use rollcall_runtime::tls::LinkTimeouts;
use rollcall_runtime::transport::TransportError;
use rollcall_tests::sim::{self, PORT};
use rollcall_tests::*;

const TIMEOUTS: LinkTimeouts = LinkTimeouts {
    keep_alive_ms: 250,
    idle_timeout_ms: 2_000,
    initial_rtt_ms: rollcall_runtime::tls::DEFAULT_INITIAL_RTT_MS,
    max_ack_delay_ms: rollcall_runtime::tls::DEFAULT_MAX_ACK_DELAY_MS,
};
const IDLE: Duration = Duration::from_millis(2_000);

/// One line of a scenario's history: simulated milliseconds and what happened.
type Log = Rc<RefCell<Vec<(u128, String)>>>;

fn describe(e: &LinkEvent) -> String {
    match e {
        LinkEvent::Up { .. } => "up".into(),
        LinkEvent::Down { reason, .. } => format!(
            "down: {}",
            match reason {
                TransportError::TimedOut => "timed out".to_string(),
                TransportError::Reset => "reset".to_string(),
                other => other.to_string(),
            }
        ),
        LinkEvent::DialFailed { .. } => "dial failed".into(),
    }
}

enum Fault {
    /// Cut client from server at `at`, heal at `heal`.
    Partition { at: Duration, heal: Duration },
    /// Restart the server host at `at` (same node secret).
    Bounce { at: Duration },
}

/// Runs a server and a client that keeps a link to it and asks it a question every 100 ms;
/// applies `fault`; returns the history once the client has seen `ups` link-ups.
fn scenario(seed: u64, fault: Fault, ups: usize) -> Vec<(u128, String)> {
    let ca = ca();
    let server_creds = creds(&ca, PeerRole::Server);
    let client_creds = creds(&ca, PeerRole::Endpoint);
    let server_secret = NodeSecret::from_bytes([7; 32]);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(60))
        .rng_seed(seed)
        .build();
    let log: Log = Rc::new(RefCell::new(Vec::new()));

    {
        let log = log.clone();
        sim.host("server", move || {
            let creds = server_creds.clone();
            let secret = server_secret.clone();
            let log = log.clone();
            async move {
                let node = sim::node(&creds, &secret, seed, TIMEOUTS).await?;
                let _probe = start_probe(&node).await;
                log.borrow_mut()
                    .push((sim::now_ms(), "server started".into()));
                std::future::pending::<()>().await;
                Ok(())
            }
        });
    }
    {
        let log = log.clone();
        sim.client("client", async move {
            let node = sim::node(&client_creds, &NodeSecret::from_bytes([9; 32]), seed, TIMEOUTS).await?;
            let mut events = node.link_events();
            let server: SocketAddr = (turmoil::lookup("server"), PORT).into();
            let link = node.connect(server).await?;
            let mut seen_up = 0;
            let mut asked = 0u32;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while seen_up < ups {
                tokio::select! {
                    e = events.recv() => {
                        let e = e?;
                        if matches!(e, LinkEvent::Up { .. }) { seen_up += 1; }
                        log.borrow_mut().push((sim::now_ms(), describe(&e)));
                    }
                    _ = tick.tick() => {
                        // Traffic while up; failures while down are expected and not logged.
                        asked += 1;
                        let _ = link.call::<_, ProbeReply>(PROBE, &Probe::Record(asked), Duration::from_millis(50)).await;
                    }
                }
            }
            Ok(())
        });
    }

    let server_ip: IpAddr = sim.lookup("server");
    let client_ip: IpAddr = sim.lookup("client");
    let (mut cut, mut healed, mut bounced) = (false, false, false);
    loop {
        let done = sim
            .step()
            .unwrap_or_else(|e| panic!("seed {seed}: simulation failed: {e}"));
        if done {
            break;
        }
        let t = sim.elapsed();
        match fault {
            Fault::Partition { at, heal } => {
                if !cut && t >= at {
                    sim.partition(client_ip, server_ip);
                    log.borrow_mut().push((t.as_millis(), "partition".into()));
                    cut = true;
                }
                if !healed && t >= heal {
                    sim.repair(client_ip, server_ip);
                    log.borrow_mut().push((t.as_millis(), "heal".into()));
                    healed = true;
                }
            }
            Fault::Bounce { at } => {
                if !bounced && t >= at {
                    sim.bounce(server_ip);
                    log.borrow_mut().push((t.as_millis(), "bounce".into()));
                    bounced = true;
                }
            }
        }
    }
    log.borrow().clone()
}

fn time_of(log: &[(u128, String)], what: &str, after: u128) -> u128 {
    log.iter()
        .find(|(t, w)| *t >= after && w == what)
        .map(|(t, _)| *t)
        .unwrap_or_else(|| panic!("no {what:?} after {after} ms in {log:#?}"))
}

#[test]
fn a_partition_is_noticed_within_the_idle_timeout_and_the_link_heals() {
    for seed in seeds(3) {
        let _guard = SeedGuard(
            "a_partition_is_noticed_within_the_idle_timeout_and_the_link_heals",
            seed,
        );
        let log = scenario(
            seed,
            Fault::Partition {
                at: Duration::from_secs(5),
                heal: Duration::from_secs(12),
            },
            2,
        );
        let cut = time_of(&log, "partition", 0);
        let down = time_of(&log, "down: timed out", cut);
        assert!(
            down - cut <= IDLE.as_millis(),
            "seed {seed}: noticed after {} ms: {log:#?}",
            down - cut
        );
        let healed = time_of(&log, "heal", cut);
        assert!(down < healed, "seed {seed}: {log:#?}");
        let up = time_of(&log, "up", healed);
        // The next dial starts within the backoff ceiling (1 s); a dial already in flight
        // completes on quinn's retransmission timer.
        assert!(
            up - healed <= 3_000,
            "seed {seed}: relinked after {} ms: {log:#?}",
            up - healed
        );
        assert_eq!(
            log.iter().filter(|(_, w)| w.starts_with("down")).count(),
            1,
            "seed {seed}: {log:#?}"
        );
    }
}

#[test]
fn a_bounced_peer_is_noticed_by_stateless_reset_well_before_the_idle_timeout() {
    for seed in seeds(3) {
        let _guard = SeedGuard(
            "a_bounced_peer_is_noticed_by_stateless_reset_well_before_the_idle_timeout",
            seed,
        );
        let log = scenario(
            seed,
            Fault::Bounce {
                at: Duration::from_secs(5),
            },
            2,
        );
        let bounce = time_of(&log, "bounce", 0);
        let down = time_of(&log, "down: reset", bounce);
        assert!(
            down - bounce < IDLE.as_millis() / 4,
            "seed {seed}: noticed after {} ms (idle timeout {} ms): {log:#?}",
            down - bounce,
            IDLE.as_millis()
        );
        let up = time_of(&log, "up", down);
        assert!(
            up - down <= 2_000,
            "seed {seed}: relinked after {} ms: {log:#?}",
            up - down
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_history() {
    for seed in seeds(2) {
        let _guard = SeedGuard("the_same_seed_gives_the_same_history", seed);
        let fault = || Fault::Partition {
            at: Duration::from_secs(3),
            heal: Duration::from_secs(8),
        };
        let first = scenario(seed, fault(), 2);
        let second = scenario(seed, fault(), 2);
        assert_eq!(first, second, "seed {seed}");
        let b1 = scenario(
            seed,
            Fault::Bounce {
                at: Duration::from_secs(3),
            },
            2,
        );
        let b2 = scenario(
            seed,
            Fault::Bounce {
                at: Duration::from_secs(3),
            },
            2,
        );
        assert_eq!(b1, b2, "seed {seed}");
    }
}
