//! rollcall-patchdist: packages cut into 64 KiB chunks and shared peer to peer along the
//! rings.
//!
//! - [`manifest`]: chunking and the [`Manifest`] (each chunk's and each file's BLAKE3); the
//!   server signs it inside the action that carries it.
//! - [`cache`]: the endpoint's chunk cache ([`FileCache`] in redb, [`MemCache`]), with a
//!   size cap, least-recently-used eviction and pins; it only ever holds verified chunks.
//! - [`plan`]: the sans-IO [`Fetch`] (pipelining, rarest first, the server only for the
//!   ring's leader, endgame, peers avoided after a bad chunk).
//! - [`pool`]: the chunk pool (ractor's factory, bounded, sheds with "busy").
//! - [`endpoint`]: the [`PatchService`] and one supervised [`endpoint::Distributor`] per
//!   package being fetched.
//! - [`origin`]: the server's [`Origin`] (uploads, manifests, chunks served to leaders,
//!   egress counted).
//! - [`proto`]: the messages.

pub mod cache;
pub mod endpoint;
pub mod manifest;
pub mod origin;
pub mod plan;
pub mod pool;
pub mod proto;

pub use cache::{ChunkStore, FileCache, MemCache, SharedChunks};
pub use endpoint::{Neighbourhood, PatchConfig, PatchError, PatchService, Progress, View};
pub use manifest::{CHUNK_SIZE, Hash, Manifest, ManifestError};
pub use origin::{Egress, Origin};
pub use plan::{Fetch, FetchConfig};

#[cfg(test)]
mod tests;
