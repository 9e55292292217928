//! What endpoints and the server say to each other about packages.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::manifest::Hash;

/// The route on every endpoint: its neighbours' requests (endpoint role only).
pub const PEER_ROUTE: &str = "patch.peer";

/// The route on the server: chunks from the origin (endpoint role only; only a ring's
/// leader asks).
pub const ORIGIN_ROUTE: &str = "patch.origin";

/// A request to [`PEER_ROUTE`] or [`ORIGIN_ROUTE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatchMsg {
    /// Call: chunk `index` of package `package` (answered with a [`ChunkReply`]).
    Chunk {
        /// The manifest's id.
        package: Hash,
        /// The chunk's index in the package.
        index: u32,
    },
    /// Call: which chunks of `package` do you hold? (answered with a [`HoldingsReply`]).
    Holdings {
        /// The manifest's id.
        package: Hash,
    },
    /// Cast: I now hold these chunks of `package` too.
    Have {
        /// The manifest's id.
        package: Hash,
        /// Chunk indices.
        indices: Vec<u32>,
        /// Where the sender takes calls (a machine past our nearest predecessor is not in
        /// our view: this lets us ask it).
        addr: std::net::SocketAddr,
    },
}

/// The answer to [`PatchMsg::Chunk`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkReply {
    /// The chunk's bytes (served from the cache without a copy).
    Data(Bytes),
    /// The chunk pool's queue is full: ask someone else.
    Busy,
    /// Not held here.
    Missing,
}

/// [`ChunkReply`] as it is written, borrowing the chunk from the frame it came in.
#[derive(Deserialize)]
#[serde(rename = "ChunkReply")]
enum ChunkReplyIn<'a> {
    Data(#[serde(borrow, with = "serde_bytes")] &'a [u8]),
    Busy,
    Missing,
}

impl ChunkReply {
    /// Decodes an encoded reply; the chunk is a slice of `body`, not a copy.
    pub fn decode(body: &Bytes) -> Result<ChunkReply, rmp_serde::decode::Error> {
        Ok(match rmp_serde::from_slice::<ChunkReplyIn<'_>>(body)? {
            ChunkReplyIn::Data(d) => ChunkReply::Data(body.slice_ref(d)),
            ChunkReplyIn::Busy => ChunkReply::Busy,
            ChunkReplyIn::Missing => ChunkReply::Missing,
        })
    }
}

/// The answer to [`PatchMsg::Holdings`]: a bitmap (bit `i` of byte `i / 8`, least
/// significant first), or `None` for a package this node does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldingsReply(pub Option<ByteBuf>);

/// Packs a bitmap.
pub fn pack(bits: &[bool]) -> ByteBuf {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, b) in bits.iter().enumerate() {
        if *b {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    ByteBuf::from(out)
}

/// Unpacks a bitmap of `n` bits (missing bytes read as zero; extra ones are ignored).
pub fn unpack(bytes: &[u8], n: usize) -> Vec<bool> {
    (0..n)
        .map(|i| bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .collect()
}
