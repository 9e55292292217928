//! rollcall-cluster: registration, per-subnet rings, leaders, failure and slowness
//! detection, and rejoin.
//!
//! Endpoints register with the server at a jittered interval and get back the members of
//! their peering range, ordered by address. Each endpoint keeps a link to its first live
//! successor and probes it; the ends of the chain are its leaders, and only they keep a
//! connection to the server. The protocol decisions live in two sans-IO cores driven by
//! actors: [`ring::RingCore`] (one endpoint's view: successors, skips, leadership) and
//! [`membership::Membership`] (the server's view of its rings: registration, suspicion,
//! eviction). [`member::RingMember`] and [`shard::ServerShard`] own the I/O and the clock.
//!
//! It does **not** carry questions or actions yet: those issues will travel on these rings
//! (the rejoin hand-off, [`membership::Backlog`], is their hook).

pub mod config;
pub mod error;
pub mod member;
pub mod membership;
pub mod proto;
pub mod questions;
pub mod relay;
pub mod ring;
pub mod shard;
