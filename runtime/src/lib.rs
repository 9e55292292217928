//! rollcall's actor substrate.
//!
//! This crate gives every rollcall node (server, endpoint, operator CLI) the same foundation:
//! certificate identity issued by a cluster CA ([`identity`]), mutually authenticated TLS 1.3
//! over QUIC ([`tls`], [`transport`]), a versioned wire envelope with a hard frame limit
//! ([`wire`]), peer links that deliver envelopes to named local ractor actors and make remote
//! calls with a timeout ([`node`]), a one-for-one supervisor with a restart-intensity window
//! ([`supervisor`]), and typed configuration and logging ([`config`], [`telemetry`]).
//!
//! It does **not** know about rings, questions, sensors or packages: those live in
//! `rollcall-cluster`, `rollcall-actors` and `rollcall-patchdist`, which use this crate.

pub mod answer_tags;
pub mod backoff;
pub mod config;
pub mod enrol;
pub mod figures;
pub mod identity;
pub mod join_tokens;
pub mod node;
pub mod renewal;
pub mod revocation;
pub mod signing;
pub mod stats;
pub mod supervisor;
pub mod sync;
pub mod telemetry;
pub mod tls;
pub mod transport;
mod wake;
pub mod wire;

pub use identity::{NodeId, OperatorRole, PeerIdentity, PeerRole, Roles};
pub use node::{Incoming, Node, NodeOptions, PeerHandle, ReplyPort};
pub use stats::{WireStats, WireStatsSnapshot};
pub use transport::{Connection, Transport, TransportError};
pub use wire::{Envelope, EnvelopeKind, WireError};
