//! `NodeFaults`: a grey node (connections up, nothing handled) and slow envelopes, the same on every transport.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[allow(unused_imports)]
use super::*;

/// The one route faults never hold or delay: the chaos agent's on a real endpoint, so that a
/// paused or slowed machine can still be told to resume or heal (socket faults still apply:
/// a partition from the server also cuts the agent off, which is why its faults expire).
pub const CHAOS_AGENT_ROUTE: &str = "chaos.agent";

/// Faults put on a whole node, on any transport (chaos commands and fault tests use them).
///
/// - **Paused**: a grey node. Its connections stay up (the transport keeps them alive), but
///   nothing it receives is handled and nothing it sends leaves until it resumes; callers see
///   their calls time out.
/// - **Slowed**: every envelope in and out waits `delay` first.
#[derive(Debug, Default)]
pub struct NodeFaults {
    /// Read without a lock on every envelope.
    pub(super) paused_now: AtomicBool,
    /// Wakes what waits while paused. (A watch channel did this at ~340 bytes per node,
    /// on every simulated endpoint.)
    pub(super) resumed: tokio::sync::Notify,
    pub(super) delay_us: AtomicU64,
}

impl NodeFaults {
    /// Pauses (`true`) or resumes (`false`) the node.
    pub fn set_paused(&self, paused: bool) {
        self.paused_now.store(paused, Ordering::SeqCst);
        if !paused {
            self.resumed.notify_waiters();
        }
    }

    /// Whether the node is paused.
    pub fn is_paused(&self) -> bool {
        self.paused_now.load(Ordering::Relaxed)
    }

    /// Whether no fault is in force: envelopes pass without waiting.
    pub(super) fn quiet(&self) -> bool {
        !self.is_paused() && self.delay_us.load(Ordering::Relaxed) == 0
    }

    /// Delays every envelope in and out by `delay` (zero: no delay).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us.store(
            delay.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// The delay in force.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// Clears every fault.
    pub fn clear(&self) {
        self.set_paused(false);
        self.set_delay(Duration::ZERO);
    }

    /// Waits while the node is paused, then for the delay.
    pub(super) async fn pass(&self) {
        if self.quiet() {
            return;
        }
        crate::wake::wait_until(&self.resumed, || {
            (!self.paused_now.load(Ordering::SeqCst)).then_some(())
        })
        .await;
        let d = self.delay();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}
