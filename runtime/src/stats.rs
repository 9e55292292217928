//! Counters a node keeps about its links: what it received, and every rejection by cause.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::wire::WireError;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters, shared by a node's transport and links.
        #[derive(Debug, Default)]
        pub struct WireStats { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// A copy of [`WireStats`] at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub struct WireStatsSnapshot { $($(#[$doc])* pub $name: u64,)* }

        impl WireStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> WireStatsSnapshot {
                WireStatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Envelopes decoded and accepted.
    envelopes_received,
    /// Envelopes sent.
    envelopes_sent,
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
    /// Casts dropped because the link was down.
    casts_dropped_link_down,
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
            WireError::Protocol(_) => &self.rejected_protocol,
        };
        bump(c);
    }
}

/// Adds one to a counter.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
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
    }
}
