//! What one peer can make a node hold: frames read with a deadline and allocated as their
//! bytes arrive, within a budget per connection; streams per connection and connections per
//! peer bounded. Every refusal is counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::stats::WireStats;

/// Limits on what a peer can make a node hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundLimits {
    /// A frame must arrive whole within this long of its stream opening.
    pub frame_read_timeout: Duration,
    /// Bytes of frames being read on one connection at once (the rest are refused until
    /// those finish).
    pub connection_read_budget: usize,
    /// Streams a peer may have open at once on one connection, each direction (QUIC flow
    /// control: a peer cannot open more).
    pub streams_per_connection: u32,
    /// Connections one peer (one certificate) may hold to a node at once.
    pub connections_per_peer: usize,
    /// Handshakes a node carries out at once (before anyone is authenticated).
    pub handshakes_at_once: usize,
    /// Enrolments (no certificate yet) a node serves at once from one address.
    pub enrolments_per_source: usize,
}

impl Default for InboundLimits {
    fn default() -> Self {
        InboundLimits {
            frame_read_timeout: Duration::from_secs(10),
            connection_read_budget: 4 * 1024 * 1024,
            streams_per_connection: 128,
            connections_per_peer: 8,
            handshakes_at_once: 256,
            enrolments_per_source: 4,
        }
    }
}

/// The bytes of partial frames one connection may hold.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    left: AtomicUsize,
    stats: Arc<WireStats>,
}

impl ByteBudget {
    pub(crate) fn new(bytes: usize, stats: Arc<WireStats>) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            left: AtomicUsize::new(bytes),
            stats,
        })
    }

    /// Takes `n` bytes into `held`, or says no (nothing taken).
    pub(crate) fn take(self: &Arc<Self>, held: &mut Held, n: usize) -> bool {
        let ok = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .is_ok();
        if ok {
            held.bytes += n;
            self.stats.add_n(|s| &s.frame_bytes_reading, n as u64);
        }
        ok
    }

    /// An empty holding, given back when dropped.
    pub(crate) fn hold(self: &Arc<Self>) -> Held {
        Held {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

/// Bytes taken from a [`ByteBudget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.left.fetch_add(self.bytes, Ordering::AcqRel);
            self.budget
                .stats
                .frame_bytes_reading
                .fetch_sub(self.bytes as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_taken_up_to_its_size_and_given_back_when_dropped() {
        let stats = Arc::new(WireStats::default());
        let b = ByteBudget::new(100, stats.clone());
        let mut a = b.hold();
        assert!(b.take(&mut a, 60));
        let mut c = b.hold();
        assert!(!b.take(&mut c, 41));
        assert!(b.take(&mut c, 40));
        assert_eq!(stats.snapshot().frame_bytes_reading, 100);
        drop(a);
        assert_eq!(stats.snapshot().frame_bytes_reading, 40);
        let mut d = b.hold();
        assert!(b.take(&mut d, 60));
        drop((c, d));
        assert_eq!(stats.snapshot().frame_bytes_reading, 0);
        assert_eq!(b.left.load(Ordering::Acquire), 100);
    }
}
