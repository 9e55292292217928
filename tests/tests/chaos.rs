//! The fault-scenario suite: every scenario against an in-memory fleet of 3 rings × 8
//! endpoints, in paused time, for `ROLLCALL_SEEDS` seeds each (2 by default; one seed with
//! `ROLLCALL_SEED`). Each run checks the eight invariants of `rollcall::chaos` and prints its
//! table when one fails. `ROLLCALL_CHAOS_FLEET=N[/RING]` runs them against a larger fleet
//! (`1000/100`: ten rings of 100), still in paused time: the protocol at that size, without
//! the CPU of one process running every machine in real time.

use rollcall::chaos::{Scenario, ScenarioOptions, run_scenario};
use rollcall::fleet::{Fleet, FleetConfig, SimTransport};
use rollcall_tests::{SeedGuard, eventually_or, seeds};

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Endpoints and ring size: 24 in rings of 8 unless `ROLLCALL_CHAOS_FLEET` says otherwise.
fn fleet_size() -> (usize, u16) {
    let Ok(v) = std::env::var("ROLLCALL_CHAOS_FLEET") else {
        return (24, 8);
    };
    let (n, ring) = v.split_once('/').unwrap_or((v.as_str(), "100"));
    (
        n.trim().parse().expect("ROLLCALL_CHAOS_FLEET: endpoints"),
        ring.trim()
            .parse()
            .expect("ROLLCALL_CHAOS_FLEET: ring size"),
    )
}

async fn sweep(name: &'static str, scenario: Scenario) {
    rollcall_runtime::telemetry::init("off");
    let base = alive_tasks();
    for seed in seeds(2) {
        let _guard = SeedGuard(name, seed);
        let (endpoints, ring) = fleet_size();
        let mut fleet = Fleet::start(
            FleetConfig::chaos(endpoints, ring, SimTransport::Mem, seed),
            |_| {},
        )
        .await
        .expect("fleet");
        let report = run_scenario(&mut fleet, scenario, &ScenarioOptions::new(seed))
            .await
            .expect("scenario ran");
        fleet.shutdown().await;
        drop(fleet);
        if std::env::var("ROLLCALL_CHAOS_PRINT").is_ok() {
            eprintln!("{}", report.table());
        }
        // A stopped fleet leaves nothing running (a sweep of a thousand seeds runs in one
        // process): every task it spawned ends, held calls included, within the question ttl.
        eventually_or(
            "every task of the stopped fleet ends",
            std::time::Duration::from_secs(180),
            || {
                let n = alive_tasks();
                async move {
                    if n <= base {
                        Ok(())
                    } else {
                        Err(format!("{} tasks left", n - base))
                    }
                }
            },
        )
        .await;
        assert!(report.passed(), "{}", report.table());
    }
}

#[tokio::test(start_paused = true)]
async fn neighbour_killed_mid_question() {
    sweep("neighbour_killed_mid_question", Scenario::NeighbourKilled).await;
}

#[tokio::test(start_paused = true)]
async fn grey_neighbour() {
    sweep("grey_neighbour", Scenario::GreyNeighbour).await;
}

#[tokio::test(start_paused = true)]
async fn slow_neighbour() {
    sweep("slow_neighbour", Scenario::SlowNeighbour).await;
}

#[tokio::test(start_paused = true)]
async fn leader_killed_mid_question() {
    sweep("leader_killed_mid_question", Scenario::LeaderKilled).await;
}

#[tokio::test(start_paused = true)]
async fn both_leaders_killed() {
    sweep("both_leaders_killed", Scenario::BothLeadersKilled).await;
}

#[tokio::test(start_paused = true)]
async fn every_leader_and_a_tenth_killed() {
    sweep(
        "every_leader_and_a_tenth_killed",
        Scenario::LeadersAndTenthKilled,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn ring_split_and_healed() {
    sweep("ring_split_and_healed", Scenario::RingSplit).await;
}

#[tokio::test(start_paused = true)]
async fn subnet_reboot() {
    sweep("subnet_reboot", Scenario::SubnetReboot).await;
}

#[tokio::test(start_paused = true)]
async fn offline_and_back_before_expiry() {
    sweep("offline_and_back_before_expiry", Scenario::OfflineAndBack).await;
}

#[tokio::test(start_paused = true)]
async fn loss_and_duplication() {
    sweep("loss_and_duplication", Scenario::LossAndDuplication).await;
}

#[tokio::test(start_paused = true)]
async fn server_restart() {
    sweep("server_restart", Scenario::ServerRestart).await;
}

/// The same machinery on real QUIC over loopback (each endpoint on its own 127.1.x.y with a
/// fault-injecting socket), in real time: one seed of the ring split, whose partition is
/// made by the sockets' per-peer blocking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_split_on_real_quic() {
    rollcall_runtime::telemetry::init("off");
    let seed = seeds(1)[0];
    let _guard = SeedGuard("ring_split_on_real_quic", seed);
    let mut fleet = Fleet::start(FleetConfig::chaos(12, 6, SimTransport::Quic, seed), |_| {})
        .await
        .expect("fleet");
    let mut opts = ScenarioOptions::new(seed);
    opts.ttl = std::time::Duration::from_secs(60);
    let report = run_scenario(&mut fleet, Scenario::RingSplit, &opts)
        .await
        .expect("scenario ran");
    fleet.shutdown().await;
    eprintln!("{}", report.table());
    assert!(report.passed(), "{}", report.table());
}

#[tokio::test(start_paused = true)]
async fn action_offline_restart() {
    sweep("action_offline_restart", Scenario::ActionOfflineRestart).await;
}

#[tokio::test(start_paused = true)]
async fn package_corrupt_peer() {
    sweep("package_corrupt_peer", Scenario::PackageCorruptPeer).await;
}

#[tokio::test(start_paused = true)]
async fn package_leader_killed() {
    sweep("package_leader_killed", Scenario::PackageLeaderKilled).await;
}

#[tokio::test(start_paused = true)]
async fn package_torn_write() {
    sweep("package_torn_write", Scenario::PackageTornWrite).await;
}
