//! Counters a node keeps about its links: what it received, and every rejection by cause.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::wire::WireError;

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// Live counters, shared by a node's transport and links.
        #[derive(Debug, Default)]
        pub struct WireStats {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            changed: Notify,
        }

        /// A copy of [`WireStats`] at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub struct WireStatsSnapshot { $($(#[doc = $doc])* pub $name: u64,)* }

        impl WireStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> WireStatsSnapshot {
                WireStatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl WireStatsSnapshot {
            /// Every counter: (name, what it counts, value).
            pub fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), concat!($($doc),*).trim_ascii(), self.$name),)*]
            }
        }
    };
}

counters! {
    /// Envelopes decoded and accepted.
    envelopes_received,
    /// Envelopes sent.
    envelopes_sent,
    /// Bytes of accepted envelopes received (frames, length prefix excluded).
    bytes_received,
    /// Bytes of envelopes sent (frames, length prefix included).
    bytes_sent,
    /// Frames whose bytes were not a valid envelope.
    rejected_garbage,
    /// Frames longer than the frame limit.
    rejected_oversized,
    /// Envelopes of a wire version this node does not speak.
    rejected_version,
    /// Envelopes whose `from` differs from the authenticated peer.
    rejected_spoofed,
    /// Envelopes addressed to no local actor.
    rejected_unknown_destination,
    /// Envelopes from a role the destination does not accept.
    rejected_forbidden,
    /// Streams that ended before a whole frame arrived.
    rejected_truncated,
    /// Envelopes of a kind that is not valid where they arrived.
    rejected_protocol,
    /// Connections refused during or right after the handshake (bad, foreign or no certificate).
    handshakes_refused,
    /// Connections accepted with a verified certificate.
    connections_accepted,
    /// Endpoints enrolled.
    enrolments,
    /// Enrolment requests refused (bad token, malformed request).
    enrolments_refused,
    /// Endpoint certificates renewed.
    renewals,
    /// Renewal requests refused (malformed, or for another key).
    renewals_refused,
    /// Casts dropped because the link was down.
    casts_dropped_link_down,
    /// Items that would make this node act (questions, sensor configuration) refused because
    /// the server's signature did not verify or they had expired.
    rejected_unsigned,
    /// Answers refused at the server: a late answer from a machine it has not placed, or
    /// answers in a chain's reply for machines outside that chain.
    rejected_answers,
    /// Envelopes from a peer whose certificate is revoked.
    rejected_revoked,
    /// Frames that did not arrive whole within the frame read timeout.
    rejected_slow,
    /// Frames refused because their connection already held its budget of partial frames.
    rejected_over_budget,
    /// Connections refused because their peer already held the most it may.
    rejected_connections,
    /// Actions refused by this endpoint (a bad signature, expired, unreadable).
    actions_refused,
    /// Package chunks received that did not match their hash (the sender is avoided).
    chunks_rejected,
    /// Chunk requests answered "busy" because the chunk pool's queue was full.
    chunks_shed,
    /// Chaos faults this endpoint applied (`--allow-chaos`).
    chaos_applied,
    /// Chaos commands this endpoint refused: chaos not allowed here, a bad or expired
    /// signature, a replay, or a command for another machine.
    chaos_refused,
    /// Bytes of partial frames being read right now (a level, not a count).
    frame_bytes_reading,
}

impl WireStats {
    /// Counts a rejected frame by its cause.
    pub fn count_rejection(&self, err: &WireError) {
        let c = match err {
            WireError::Oversized { .. } => &self.rejected_oversized,
            WireError::Garbage(_) => &self.rejected_garbage,
            WireError::UnknownVersion { .. } => &self.rejected_version,
            WireError::Truncated => &self.rejected_truncated,
            WireError::Spoofed { .. } => &self.rejected_spoofed,
            WireError::UnknownDestination(_) => &self.rejected_unknown_destination,
            WireError::Forbidden { .. } => &self.rejected_forbidden,
            WireError::Protocol(_) => &self.rejected_protocol,
            WireError::Revoked(_) => &self.rejected_revoked,
            WireError::TooSlow { .. } => &self.rejected_slow,
            WireError::OverBudget { .. } => &self.rejected_over_budget,
        };
        self.add(c);
    }

    /// Adds `n` to the counter `field` picks.
    pub fn add_n(&self, field: fn(&WireStats) -> &AtomicU64, n: u64) {
        field(self).fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to the counter `field` picks.
    pub fn incr(&self, field: fn(&WireStats) -> &AtomicU64) {
        self.add(field(self));
    }

    fn add(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Waits until the counters satisfy `pred`, or `timeout` passes; returns the last
    /// snapshot either way, so the caller can assert on it and print it.
    pub async fn wait_for(
        &self,
        timeout: std::time::Duration,
        pred: impl Fn(&WireStatsSnapshot) -> bool,
    ) -> WireStatsSnapshot {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let snap = self.snapshot();
            if pred(&snap) {
                return snap;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.snapshot();
            }
        }
    }
}

impl WireStatsSnapshot {
    /// All rejections of incoming frames, whatever the cause.
    pub fn rejected_total(&self) -> u64 {
        self.rejected_garbage
            + self.rejected_oversized
            + self.rejected_version
            + self.rejected_spoofed
            + self.rejected_unknown_destination
            + self.rejected_truncated
            + self.rejected_protocol
            + self.rejected_slow
            + self.rejected_over_budget
    }
}
