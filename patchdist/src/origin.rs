//! The server's side: the origin of every package's chunks, and what left it.
//!
//! An admin's files are uploaded chunk by chunk ([`Origin::put_chunk`], each hashed by the
//! server as it arrives) and then named by a manifest ([`Origin::add_manifest`], accepted
//! only if every chunk is held and every file hashes to what the manifest says). Ring
//! leaders fetch chunks on [`ORIGIN_ROUTE`]; every byte that leaves is counted per package
//! and per machine that asked, and a chunk asked again by a machine that already had it
//! counts as a retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use rollcall_runtime::node::{Deliver, DestinationGone, Incoming, Node};
use rollcall_runtime::{NodeId, Roles};
use serde::{Deserialize, Serialize};

use crate::cache::ChunkStore;
use crate::endpoint::verify_files;
use crate::manifest::{Hash, Manifest, ManifestError, Verified};
use crate::proto::{ChunkReply, HoldingsReply, ORIGIN_ROUTE, PatchMsg};

/// What left the server for one package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Egress {
    /// Chunk bytes sent.
    pub bytes: u64,
    /// Chunks sent.
    pub chunks: u64,
    /// Chunks sent again to a machine that had been sent them (a retry after a fault).
    pub repeats: u64,
    /// Bytes per machine that asked.
    pub by_machine: Vec<(String, u64)>,
}

#[derive(Default)]
struct Sent {
    bytes: u64,
    chunks: u64,
    repeats: u64,
    by_machine: HashMap<NodeId, (u64, std::collections::HashSet<u32>)>,
}

/// The server's package origin (see the module).
pub struct Origin {
    store: Arc<dyn ChunkStore>,
    manifests: RwLock<HashMap<Hash, Arc<Manifest>>>,
    sent: Mutex<HashMap<Hash, Sent>>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Origin")
    }
}

/// Why the origin refused a package.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OriginError {
    /// The manifest or a file failed its check.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Chunks the manifest names that were never uploaded.
    #[error("{0} chunks of the package were not uploaded")]
    Missing(usize),
    /// The store failed.
    #[error("{0}")]
    Store(String),
}

impl Origin {
    /// An origin keeping chunks in `store` (never evicting: give it no cap).
    pub fn new(store: Arc<dyn ChunkStore>) -> Arc<Origin> {
        Arc::new(Origin {
            store,
            manifests: RwLock::new(HashMap::new()),
            sent: Mutex::new(HashMap::new()),
        })
    }

    /// Serves [`ORIGIN_ROUTE`] on the server `node` (endpoints only).
    pub fn install(self: &Arc<Self>, node: &Node) {
        node.router().register(
            ORIGIN_ROUTE,
            Roles::ENDPOINT,
            Arc::new(OriginRoute(Arc::downgrade(self))),
        );
    }

    /// Chunk bytes and chunks sent to endpoints, every package together.
    pub fn egress_total(&self) -> (u64, u64) {
        rollcall_runtime::sync::lock(&self.sent)
            .values()
            .fold((0, 0), |(b, c), s| (b + s.bytes, c + s.chunks))
    }

    /// Keeps an uploaded chunk; returns its hash.
    pub fn put_chunk(&self, data: Bytes) -> Result<Hash, OriginError> {
        let h = crate::manifest::hash(&data);
        let v = Verified::check(&h, data).ok_or(OriginError::Store("hash".into()))?;
        self.store
            .put(&v)
            .map_err(|e| OriginError::Store(e.to_string()))?;
        Ok(h)
    }

    /// Which of `hashes` it lacks.
    pub fn lacking(&self, hashes: &[Hash]) -> Vec<Hash> {
        hashes
            .iter()
            .filter(|h| !self.store.has(h))
            .copied()
            .collect()
    }

    /// Accepts `m` if every chunk is held and every file matches its hash.
    pub fn add_manifest(&self, m: Manifest) -> Result<Hash, OriginError> {
        m.check()?;
        let missing = self.lacking(&m.chunk_hashes()).len();
        if missing > 0 {
            return Err(OriginError::Missing(missing));
        }
        verify_files(self.store.as_ref(), &m).map_err(|e| match e {
            crate::endpoint::PatchError::Manifest(m) => OriginError::Manifest(m),
            other => OriginError::Store(other.to_string()),
        })?;
        let id = m.id();
        self.store.pin(id, &m.chunk_hashes());
        rollcall_runtime::sync::write(&self.manifests).insert(id, Arc::new(m));
        Ok(id)
    }

    /// Knows `m` already (a restarted server, whose store kept the chunks).
    pub fn knows(&self, id: &Hash) -> bool {
        rollcall_runtime::sync::read(&self.manifests).contains_key(id)
    }

    /// What left for package `id`.
    pub fn egress(&self, id: &Hash) -> Egress {
        let g = rollcall_runtime::sync::lock(&self.sent);
        let Some(s) = g.get(id) else {
            return Egress::default();
        };
        let mut by_machine: Vec<(String, u64)> = s
            .by_machine
            .iter()
            .map(|(k, (b, _))| (k.to_string(), *b))
            .collect();
        by_machine.sort();
        Egress {
            bytes: s.bytes,
            chunks: s.chunks,
            repeats: s.repeats,
            by_machine,
        }
    }

    fn serve(&self, from: &NodeId, package: &Hash, index: u32) -> ChunkReply {
        let m = rollcall_runtime::sync::read(&self.manifests)
            .get(package)
            .cloned();
        let Some(c) = m.and_then(|m| m.chunk(index)) else {
            return ChunkReply::Missing;
        };
        let Some(v) = self.store.get(&c.hash) else {
            return ChunkReply::Missing;
        };
        let mut g = rollcall_runtime::sync::lock(&self.sent);
        let s = g.entry(*package).or_default();
        s.bytes += v.data().len() as u64;
        s.chunks += 1;
        let (b, seen) = s.by_machine.entry(from.clone()).or_default();
        *b += v.data().len() as u64;
        if !seen.insert(index) {
            s.repeats += 1;
        }
        ChunkReply::Data(v.data().clone())
    }
}

struct OriginRoute(Weak<Origin>);

impl Deliver for OriginRoute {
    fn deliver(&self, mut msg: Incoming) -> Result<(), DestinationGone> {
        let origin = self.0.upgrade().ok_or(DestinationGone)?;
        match msg.decode::<PatchMsg>() {
            Ok(PatchMsg::Chunk { package, index }) => {
                let reply = origin.serve(&msg.from.id, &package, index);
                let _ = msg.answer(&reply);
            }
            Ok(PatchMsg::Holdings { .. }) => {
                let _ = msg.answer(&HoldingsReply(None));
            }
            Ok(PatchMsg::Have { .. }) => {}
            Err(_) => msg.refuse(),
        }
        Ok(())
    }
}
