//! The endpoint's chunk cache: verified chunks keyed by their hash, within a size cap,
//! least recently used evicted first, chunks an open action still needs pinned.
//!
//! [`FileCache`] keeps them in a redb file in the endpoint's state folder (a restarted
//! endpoint fetches only what it lacks); [`MemCache`] keeps them in memory (simulated hosts,
//! which may share one copy of each identical chunk through a [`SharedChunks`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::manifest::{Hash, Verified};

const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("chunks");
const USED: TableDefinition<&[u8], u64> = TableDefinition::new("last_used");

/// Why the cache could not keep a chunk.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The store failed.
    #[error("chunk store: {0}")]
    Store(String),
    /// Everything in it is pinned and the chunk does not fit.
    #[error("the chunk cache is full of chunks that open actions need ({used} of {cap} bytes)")]
    Full {
        /// Bytes held.
        used: u64,
        /// The cap.
        cap: u64,
    },
}

fn store_err(e: impl std::fmt::Display) -> CacheError {
    CacheError::Store(e.to_string())
}

/// Where verified chunks are kept.
pub trait ChunkStore: Send + Sync + 'static {
    /// The chunk with hash `h`, if held (marks it used).
    fn get(&self, h: &Hash) -> Option<Verified>;
    /// Whether it holds `h`.
    fn has(&self, h: &Hash) -> bool;
    /// Keeps a verified chunk, evicting the least recently used unpinned ones past the cap.
    fn put(&self, c: &Verified) -> Result<(), CacheError>;
    /// Keeps `chunks` from eviction while `package` is pinned.
    fn pin(&self, package: Hash, chunks: &[Hash]);
    /// Lets `package`'s chunks go (those of other pinned packages stay).
    fn unpin(&self, package: &Hash);
    /// Bytes held.
    fn used(&self) -> u64;

    /// The chunk as this machine serves it to a neighbour (what [`ChunkStore::get`] returns,
    /// unless a test made this machine a compromised one: see [`MemCache::tamper_served`]).
    fn serve(&self, h: &Hash) -> Option<Bytes> {
        self.get(h).map(|v| v.data().clone())
    }
}

/// The recency order and the pins: what both caches decide eviction by.
#[derive(Default)]
struct Lru {
    tick: u64,
    /// Hash → (last use, length).
    entries: HashMap<Hash, (u64, u64)>,
    order: BTreeMap<u64, Hash>,
    used: u64,
    /// Package → its chunks.
    pins: HashMap<Hash, Vec<Hash>>,
    /// Chunk → how many pinned packages need it.
    pinned: HashMap<Hash, u32>,
}

impl Lru {
    fn touch(&mut self, h: &Hash) -> Option<u64> {
        self.tick += 1;
        let tick = self.tick;
        let (at, _) = self.entries.get_mut(h)?;
        self.order.remove(at);
        *at = tick;
        self.order.insert(tick, *h);
        Some(tick)
    }

    fn insert(&mut self, h: Hash, len: u64) -> u64 {
        if let Some(t) = self.touch(&h) {
            return t;
        }
        self.tick += 1;
        self.entries.insert(h, (self.tick, len));
        self.order.insert(self.tick, h);
        self.used += len;
        self.tick
    }

    /// The chunks to evict so that `extra` more bytes fit under `cap` (none pinned).
    fn victims(&self, extra: u64, cap: u64) -> Result<Vec<Hash>, CacheError> {
        let mut over = (self.used + extra).saturating_sub(cap);
        let mut out = Vec::new();
        for h in self.order.values() {
            if over == 0 {
                break;
            }
            if self.pinned.contains_key(h) {
                continue;
            }
            let len = self.entries.get(h).map_or(0, |e| e.1);
            over = over.saturating_sub(len);
            out.push(*h);
        }
        if over > 0 {
            return Err(CacheError::Full {
                used: self.used,
                cap,
            });
        }
        Ok(out)
    }

    fn remove(&mut self, h: &Hash) {
        if let Some((at, len)) = self.entries.remove(h) {
            self.order.remove(&at);
            self.used -= len;
        }
    }

    fn pin(&mut self, package: Hash, chunks: &[Hash]) {
        if self.pins.contains_key(&package) {
            return;
        }
        for h in chunks {
            *self.pinned.entry(*h).or_default() += 1;
        }
        self.pins.insert(package, chunks.to_vec());
    }

    fn unpin(&mut self, package: &Hash) {
        for h in self.pins.remove(package).unwrap_or_default() {
            if let Some(n) = self.pinned.get_mut(&h) {
                *n -= 1;
                if *n == 0 {
                    self.pinned.remove(&h);
                }
            }
        }
    }
}

/// One copy of each identical verified chunk, shared by the simulated hosts of one process
/// (each host's holdings are still its own: a chunk is in a host's cache only once that
/// host received and verified it).
#[derive(Default)]
pub struct SharedChunks(Mutex<HashMap<Hash, Bytes>>);

impl SharedChunks {
    fn intern(&self, c: &Verified) -> Bytes {
        rollcall_runtime::sync::lock(&self.0)
            .entry(*c.hash())
            .or_insert_with(|| c.data().clone())
            .clone()
    }
}

/// Chunks in memory.
pub struct MemCache {
    cap: u64,
    shared: Option<Arc<SharedChunks>>,
    inner: Mutex<(Lru, HashMap<Hash, Bytes>)>,
    /// Chunks taken in (not already held).
    inserted: std::sync::atomic::AtomicU64,
    /// Chunks handed to it that it already held.
    again: std::sync::atomic::AtomicU64,
    tampered: std::sync::atomic::AtomicBool,
    /// The next put is lost, as if the machine stopped while writing it.
    tear_next: std::sync::atomic::AtomicBool,
    torn: std::sync::atomic::AtomicBool,
}

impl MemCache {
    /// A cache of at most `cap` bytes.
    pub fn new(cap: u64) -> MemCache {
        MemCache {
            cap,
            shared: None,
            inner: Mutex::new((Lru::default(), HashMap::new())),
            inserted: std::sync::atomic::AtomicU64::new(0),
            again: std::sync::atomic::AtomicU64::new(0),
            tampered: std::sync::atomic::AtomicBool::new(false),
            tear_next: std::sync::atomic::AtomicBool::new(false),
            torn: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A cache of at most `cap` bytes that keeps the process's one copy of each chunk.
    pub fn sharing(cap: u64, shared: Arc<SharedChunks>) -> MemCache {
        MemCache {
            shared: Some(shared),
            ..MemCache::new(cap)
        }
    }

    /// Chunks it has taken in so far (a chunk it already held is not counted again).
    pub fn inserted(&self) -> u64 {
        self.inserted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The next chunk handed to it is lost while being written, as when the machine stops
    /// mid-write (a redb transaction leaves it whole or absent; so does this). For fault
    /// tests: stop the machine once [`MemCache::torn`] says it happened.
    pub fn tear_next_write(&self) {
        self.torn.store(false, std::sync::atomic::Ordering::Relaxed);
        self.tear_next
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the write [`MemCache::tear_next_write`] armed was lost.
    pub fn torn(&self) -> bool {
        self.torn.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Chunks handed to it that it already held (fetched twice).
    pub fn again(&self) -> u64 {
        self.again.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Chunks held.
    pub fn len(&self) -> usize {
        rollcall_runtime::sync::lock(&self.inner).1.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes this a compromised machine's cache: every chunk it serves to a neighbour has
    /// one byte flipped (what it keeps and checks for itself is unchanged). For fault tests.
    pub fn tamper_served(&self, on: bool) {
        self.tampered
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ChunkStore for MemCache {
    fn get(&self, h: &Hash) -> Option<Verified> {
        let mut g = rollcall_runtime::sync::lock(&self.inner);
        g.0.touch(h)?;
        g.1.get(h).map(|d| Verified::trusted(*h, d.clone()))
    }

    fn has(&self, h: &Hash) -> bool {
        rollcall_runtime::sync::lock(&self.inner).1.contains_key(h)
    }

    fn put(&self, c: &Verified) -> Result<(), CacheError> {
        if self
            .tear_next
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.torn.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(CacheError::Store(
                "the machine stopped while writing the chunk".into(),
            ));
        }
        let data = match &self.shared {
            Some(s) => s.intern(c),
            None => c.data().clone(),
        };
        let mut g = rollcall_runtime::sync::lock(&self.inner);
        if g.1.contains_key(c.hash()) {
            g.0.touch(c.hash());
            self.again
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        for v in g.0.victims(data.len() as u64, self.cap)? {
            g.0.remove(&v);
            g.1.remove(&v);
        }
        g.0.insert(*c.hash(), data.len() as u64);
        g.1.insert(*c.hash(), data);
        self.inserted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn serve(&self, h: &Hash) -> Option<Bytes> {
        let data = self.get(h)?.data().clone();
        if !self.tampered.load(std::sync::atomic::Ordering::Relaxed) || data.is_empty() {
            return Some(data);
        }
        let mut bad = data.to_vec();
        bad[0] ^= 0xff;
        Some(Bytes::from(bad))
    }

    fn pin(&self, package: Hash, chunks: &[Hash]) {
        rollcall_runtime::sync::lock(&self.inner)
            .0
            .pin(package, chunks);
    }

    fn unpin(&self, package: &Hash) {
        rollcall_runtime::sync::lock(&self.inner).0.unpin(package);
    }

    fn used(&self) -> u64 {
        rollcall_runtime::sync::lock(&self.inner).0.used
    }
}

/// Chunks in a redb file. Each chunk is written in one transaction (a crash leaves it
/// whole or absent); recency is kept in memory and written with each new chunk, so after
/// a restart the order is that of the last writes.
pub struct FileCache {
    db: Database,
    cap: u64,
    lru: Mutex<Lru>,
}

impl FileCache {
    /// Opens (or creates) the cache at `path`, of at most `cap` bytes.
    pub fn open(path: &Path, cap: u64) -> Result<FileCache, CacheError> {
        // Chunks are read once or twice each (to rebuild a file, to serve a neighbour): the
        // kernel's page cache serves repeats; redb's own cache stays small.
        let db = Database::builder()
            .set_cache_size(4 << 20)
            .create(path)
            .map_err(store_err)?;
        let w = db.begin_write().map_err(store_err)?;
        w.open_table(CHUNKS).map_err(store_err)?;
        w.open_table(USED).map_err(store_err)?;
        w.commit().map_err(store_err)?;
        let mut lru = Lru::default();
        {
            let r = db.begin_read().map_err(store_err)?;
            let chunks = r.open_table(CHUNKS).map_err(store_err)?;
            let used = r.open_table(USED).map_err(store_err)?;
            let mut seen: Vec<(u64, Hash, u64)> = Vec::new();
            for row in chunks.iter().map_err(store_err)? {
                let (k, v) = row.map_err(store_err)?;
                let Ok(h) = <Hash>::try_from(k.value()) else {
                    continue;
                };
                let at = used
                    .get(k.value())
                    .map_err(store_err)?
                    .map_or(0, |a| a.value());
                seen.push((at, h, v.value().len() as u64));
            }
            seen.sort();
            for (at, h, len) in seen {
                lru.tick = lru.tick.max(at);
                lru.insert(h, len);
            }
        }
        Ok(FileCache {
            db,
            cap,
            lru: Mutex::new(lru),
        })
    }
}

impl ChunkStore for FileCache {
    fn get(&self, h: &Hash) -> Option<Verified> {
        rollcall_runtime::sync::lock(&self.lru).touch(h)?;
        let r = self.db.begin_read().ok()?;
        let t = r.open_table(CHUNKS).ok()?;
        let v = t.get(h.as_slice()).ok()??;
        Some(Verified::trusted(*h, Bytes::copy_from_slice(v.value())))
    }

    fn has(&self, h: &Hash) -> bool {
        rollcall_runtime::sync::lock(&self.lru)
            .entries
            .contains_key(h)
    }

    fn put(&self, c: &Verified) -> Result<(), CacheError> {
        let mut lru = rollcall_runtime::sync::lock(&self.lru);
        if lru.entries.contains_key(c.hash()) {
            lru.touch(c.hash());
            return Ok(());
        }
        let victims = lru.victims(c.data().len() as u64, self.cap)?;
        let w = self.db.begin_write().map_err(store_err)?;
        {
            let mut chunks = w.open_table(CHUNKS).map_err(store_err)?;
            let mut used = w.open_table(USED).map_err(store_err)?;
            for v in &victims {
                chunks.remove(v.as_slice()).map_err(store_err)?;
                used.remove(v.as_slice()).map_err(store_err)?;
            }
            chunks
                .insert(c.hash().as_slice(), c.data().as_ref())
                .map_err(store_err)?;
            used.insert(c.hash().as_slice(), lru.tick + 1)
                .map_err(store_err)?;
        }
        w.commit().map_err(store_err)?;
        for v in &victims {
            lru.remove(v);
        }
        lru.insert(*c.hash(), c.data().len() as u64);
        Ok(())
    }

    fn pin(&self, package: Hash, chunks: &[Hash]) {
        rollcall_runtime::sync::lock(&self.lru).pin(package, chunks);
    }

    fn unpin(&self, package: &Hash) {
        rollcall_runtime::sync::lock(&self.lru).unpin(package);
    }

    fn used(&self) -> u64 {
        rollcall_runtime::sync::lock(&self.lru).used
    }
}
