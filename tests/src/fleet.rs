//! What the simulated-fleet suites share: a formed fleet, and waiting for an action.

use std::time::Duration;

use rollcall::fleet::{Fleet, FleetConfig, SimTransport};

use crate::eventually_or;

/// A fleet of `n` endpoints in rings of `ring` on the in-memory network, formed (run it in
/// paused time).
pub async fn formed(n: usize, ring: u16, seed: u64) -> Fleet {
    rollcall_runtime::telemetry::init("off");
    let fleet = Fleet::start(FleetConfig::chaos(n, ring, SimTransport::Mem, seed), |_| {})
        .await
        .expect("fleet");
    fleet
        .wait_formed(Duration::from_secs(120), Duration::from_millis(100))
        .await
        .expect("formed");
    fleet
}

/// Waits until every machine action `id` targeted is done, at most `within`.
pub async fn action_done(fleet: &Fleet, id: u64, within: Duration) {
    eventually_or("every targeted machine done", within, || {
        let r = fleet.action(id);
        let done = fleet.desk().actions().is_done(id);
        async move { if done { Ok(()) } else { Err(format!("{r:?}")) } }
    })
    .await;
}
