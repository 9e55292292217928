//! The endpoint's side: the packages it knows, the chunks it serves, and one distributor
//! actor per package it is fetching.
//!
//! [`PatchService::obtain`] starts (or joins) a package's [`Distributor`] under the node's
//! supervisor and waits until every chunk is held and verified. The distributor asks the
//! ring neighbours what they hold (and tells them what it gets), drives a [`Fetch`], sends
//! its requests — to neighbours, and to the server only while this machine leads its
//! ring — and hands what comes back to the chunk pool, which checks each chunk against the
//! manifest and keeps it. A restarted distributor starts from what the cache holds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rollcall_runtime::node::{CallError, Deliver, DestinationGone, Incoming, Node, PeerHandle};
use rollcall_runtime::supervisor::{ChildSpec, Restart};
use rollcall_runtime::{NodeId, Roles, WireError};
use tokio::sync::watch;

use crate::cache::ChunkStore;
use crate::manifest::{Hash, Manifest, ManifestError, hex};
use crate::plan::{Arrival, Fetch, FetchConfig, Outcome, Source};
use crate::pool::{self, PoolJob, PoolRef};
use crate::proto::{self, ChunkReply, HoldingsReply, PEER_ROUTE, PatchMsg};

/// Who this machine's ring neighbours are, and whether it leads its ring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The neighbours it may fetch from (its nearest predecessor and successors).
    pub peers: Vec<(NodeId, SocketAddr)>,
    /// It leads its ring's forward end: it alone fetches from the server.
    pub leader: bool,
    /// Its nearest successors: told of each chunk as it comes (they fetch from it next),
    /// the rest of the view once per tick.
    pub near: Vec<NodeId>,
}

/// Where a distributor learns its [`View`] (the ring member, on a real endpoint).
pub trait Neighbourhood: Send + Sync + 'static {
    /// The view now, or `None` if it cannot be had.
    fn view(&self) -> BoxFuture<'static, Option<View>>;
}

/// How an endpoint distributes packages.
#[derive(Debug, Clone)]
pub struct PatchConfig {
    /// The download's pacing.
    pub fetch: FetchConfig,
    /// How often a distributor looks for work and tells its neighbours what it got.
    pub tick: Duration,
    /// How often it asks for its view.
    pub view_every: Duration,
    /// Workers in the chunk pool.
    pub pool_workers: usize,
    /// Jobs waiting in the chunk pool before requests are shed.
    pub pool_queue: usize,
    /// How long one chunk or holdings call may take.
    pub call_timeout: Duration,
    /// Where package work runs (distributors, their fetches, the chunk pools): a runtime
    /// whose threads yield the CPU to the one that answers questions. A served simulation
    /// of a thousand machines sets it: there one package's transfer to all of them would
    /// otherwise hold both cores for seconds, and every machine's question hops wait
    /// behind it (on a real machine only that machine's own transfer competes). `None`:
    /// the caller's runtime.
    pub background: Option<tokio::runtime::Handle>,
}

impl Default for PatchConfig {
    fn default() -> Self {
        PatchConfig {
            fetch: FetchConfig::default(),
            tick: Duration::from_millis(50),
            view_every: Duration::from_millis(500),
            pool_workers: 4,
            pool_queue: 64,
            call_timeout: Duration::from_secs(10),
            background: None,
        }
    }
}

/// Why a package could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PatchError {
    /// A manifest, chunk or file that failed its check.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The endpoint is stopping, or the distributor could not start.
    #[error("package distribution stopped: {0}")]
    Stopped(String),
    /// Writing the files failed.
    #[error("writing the package's files: {0}")]
    Io(String),
}

/// What an endpoint's distribution has done (all packages).
#[derive(Debug, Default)]
pub struct PatchStats {
    /// Chunk bytes received from neighbours (verified).
    pub bytes_from_peers: AtomicU64,
    /// Chunk bytes received from the server (verified).
    pub bytes_from_server: AtomicU64,
    /// Chunks served to neighbours.
    pub chunks_served: AtomicU64,
    /// Chunk requests shed because the pool was full.
    pub chunks_shed: AtomicU64,
    /// Bad chunks received.
    pub chunks_rejected: AtomicU64,
    /// Requests to the server asked again after a failure.
    pub server_retries: AtomicU64,
    /// Chunks received twice (endgame).
    pub duplicates: AtomicU64,
}

/// Where one package stands on this machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Chunks held (verified).
    pub held: usize,
    /// Chunks in all.
    pub total: usize,
    /// Every chunk held.
    pub complete: bool,
    /// Bytes of this package's chunks received from neighbours since the endpoint started
    /// (each chunk counted once: second copies in the endgame are not).
    pub from_peers: u64,
    /// Bytes of its chunks received from the server since the endpoint started.
    pub from_server: u64,
}

struct Pkg {
    manifest: Arc<Manifest>,
    dist: Option<ActorRef<DistMsg>>,
    progress: watch::Sender<Progress>,
    /// Bytes received from (neighbours, the server), kept here so that a restarted
    /// distributor adds to them.
    got: (u64, u64),
}

/// What the service, its pool's workers and its distributors share.
pub struct Shared {
    node: Node,
    cache: Arc<dyn ChunkStore>,
    hood: Arc<dyn Neighbourhood>,
    advertise: SocketAddr,
    server: (Option<NodeId>, SocketAddr),
    cfg: PatchConfig,
    packages: Mutex<HashMap<Hash, Pkg>>,
    pool: tokio::sync::OnceCell<PoolRef>,
    store_pool: tokio::sync::OnceCell<PoolRef>,
    stats: PatchStats,
    /// Who announced chunks of a package before its distributor ran here.
    heard: Mutex<HashMap<Hash, Vec<(NodeId, SocketAddr)>>>,
    me: Weak<Shared>,
}

/// An endpoint's package distribution (see the module).
#[derive(Clone)]
pub struct PatchService(Arc<Shared>);

impl std::fmt::Debug for PatchService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PatchService({})", self.0.node.identity().id)
    }
}

impl Shared {
    fn manifest(&self, id: &Hash) -> Option<Arc<Manifest>> {
        rollcall_runtime::sync::lock(&self.packages)
            .get(id)
            .map(|p| p.manifest.clone())
    }

    /// Chunk `index` of `package` as served to a neighbour, if held.
    pub(crate) fn chunk(&self, package: &Hash, index: u32) -> Option<Bytes> {
        let c = self.manifest(package)?.chunk(index)?;
        self.cache.serve(&c.hash)
    }

    pub(crate) fn count_served(&self, _bytes: usize) {
        self.stats.chunks_served.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_shed(&self) {
        self.stats.chunks_shed.fetch_add(1, Ordering::Relaxed);
        self.node.wire_stats().incr(|s| &s.chunks_shed);
    }

    /// Checks a fetched chunk and keeps it: what the pool's worker does.
    pub(crate) fn store(
        &self,
        package: &Hash,
        index: u32,
        from: &Source<NodeId>,
        data: Bytes,
    ) -> Outcome {
        let Some(m) = self.manifest(package) else {
            return Outcome::Failed;
        };
        let len = data.len();
        match m.verify(index, data) {
            Ok(v) => match self.cache.put(&v) {
                Ok(()) => {
                    let c = match from {
                        Source::Peer(_) => &self.stats.bytes_from_peers,
                        Source::Server => &self.stats.bytes_from_server,
                    };
                    c.fetch_add(len as u64, Ordering::Relaxed);
                    Outcome::Good
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not keep a chunk");
                    Outcome::Failed
                }
            },
            Err(e) => {
                self.stats.chunks_rejected.fetch_add(1, Ordering::Relaxed);
                self.node.wire_stats().incr(|s| &s.chunks_rejected);
                tracing::warn!(?from, package = %hex(package), error = %e, "refused a chunk");
                Outcome::Corrupt
            }
        }
    }

    fn holdings(&self, package: &Hash) -> Option<Vec<bool>> {
        let m = self.manifest(package)?;
        Some(m.chunk_hashes().iter().map(|h| self.cache.has(h)).collect())
    }

    /// The pool that serves neighbours (bounded: sheds with "busy").
    async fn pool(&self) -> Option<PoolRef> {
        let me = self.me.upgrade()?;
        let parent = self.node.supervisor().await.ok()?.get_cell();
        self.pool
            .get_or_try_init(|| {
                self.on_background(pool::start(
                    me,
                    self.cfg.pool_workers,
                    self.cfg.pool_queue,
                    parent,
                ))
            })
            .await
            .ok()
            .cloned()
    }

    /// The pool that checks and keeps fetched chunks (its queue holds every request a
    /// distributor may have in flight, so a fetched chunk is not thrown away).
    async fn store_pool(&self) -> Option<PoolRef> {
        let me = self.me.upgrade()?;
        let parent = self.node.supervisor().await.ok()?.get_cell();
        self.store_pool
            .get_or_try_init(|| {
                self.on_background(pool::start(me, self.cfg.pool_workers, STORE_QUEUE, parent))
            })
            .await
            .ok()
            .cloned()
    }

    /// Runs `work` on the background runtime if there is one (see
    /// [`PatchConfig::background`]), here otherwise; `Err` only if that runtime stopped.
    async fn in_background<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        match &self.cfg.background {
            Some(rt) => rt
                .spawn(work)
                .await
                .map_err(|e| format!("the package runtime stopped: {e}")),
            None => Ok(work.await),
        }
    }

    /// Starts a pool, on the background runtime if there is one.
    async fn on_background(
        &self,
        start: impl Future<Output = Result<PoolRef, ractor::SpawnErr>> + Send + 'static,
    ) -> Result<PoolRef, ractor::SpawnErr> {
        self.in_background(start)
            .await
            .map_err(|e| ractor::SpawnErr::StartupFailed(e.into()))?
    }

    fn set_progress(&self, package: &Hash, mut p: Progress) {
        if let Some(pkg) = rollcall_runtime::sync::lock(&self.packages).get(package) {
            (p.from_peers, p.from_server) = pkg.got;
            pkg.progress.send_replace(p);
        }
    }

    /// Counts `bytes` of `package` that came (new) from `from`.
    fn got(&self, package: &Hash, from: &Source<NodeId>, bytes: u64) {
        if let Some(pkg) = rollcall_runtime::sync::lock(&self.packages).get_mut(package) {
            match from {
                Source::Peer(_) => pkg.got.0 += bytes,
                Source::Server => pkg.got.1 += bytes,
            }
        }
    }
}

/// The route: neighbours' requests.
struct PeerRoute(Weak<Shared>);

impl Deliver for PeerRoute {
    fn deliver(&self, mut msg: Incoming) -> Result<(), DestinationGone> {
        let shared = self.0.upgrade().ok_or(DestinationGone)?;
        let Ok(req) = msg.decode::<PatchMsg>() else {
            msg.refuse();
            return Ok(());
        };
        match req {
            PatchMsg::Chunk { package, index } => match shared.pool.get() {
                Some(pool) => {
                    pool::dispatch(
                        pool,
                        PoolJob::Serve {
                            req: msg,
                            package,
                            index,
                        },
                    );
                }
                None => {
                    let _ = msg.answer(&ChunkReply::Missing);
                }
            },
            PatchMsg::Holdings { package } => {
                let bits = shared.holdings(&package).map(|b| proto::pack(&b));
                let _ = msg.answer(&HoldingsReply(bits));
            }
            PatchMsg::Have {
                package,
                indices,
                addr,
            } => {
                tracing::trace!(from = %msg.from.id, n = indices.len(), "heard");
                let dist = rollcall_runtime::sync::lock(&shared.packages)
                    .get(&package)
                    .and_then(|p| p.dist.clone());
                match dist {
                    Some(d) => {
                        let _ = d.send_message(DistMsg::Have(msg.from.id.clone(), addr, indices));
                    }
                    None => {
                        // Remembered (boundedly) for when this package's distributor starts.
                        let mut heard = rollcall_runtime::sync::lock(&shared.heard);
                        if heard.len() < HEARD_PACKAGES || heard.contains_key(&package) {
                            let who = heard.entry(package).or_default();
                            if who.len() < MAX_ANNOUNCERS
                                && who.iter().all(|(w, _)| *w != msg.from.id)
                            {
                                who.push((msg.from.id.clone(), addr));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl PatchService {
    /// The service on an endpoint `node`: chunks kept in `cache`, neighbours from `hood`,
    /// the address its neighbours dial (`advertise`), the server `server` (its id if pinned,
    /// and its address: the origin its ring's leader
    /// fetches from, over the link it holds as leader; it never dials the server for this).
    /// Serves its neighbours at once ([`PEER_ROUTE`], endpoints only).
    pub fn install(
        node: &Node,
        cache: Arc<dyn ChunkStore>,
        hood: Arc<dyn Neighbourhood>,
        advertise: SocketAddr,
        server: (Option<NodeId>, SocketAddr),
        cfg: PatchConfig,
    ) -> PatchService {
        let shared = Arc::new_cyclic(|me| Shared {
            node: node.clone(),
            cache,
            hood,
            advertise,
            server,
            cfg,
            packages: Mutex::new(HashMap::new()),
            pool: tokio::sync::OnceCell::new(),
            store_pool: tokio::sync::OnceCell::new(),
            stats: PatchStats::default(),
            heard: Mutex::new(HashMap::new()),
            me: me.clone(),
        });
        node.router().register(
            PEER_ROUTE,
            Roles::ENDPOINT,
            Arc::new(PeerRoute(Arc::downgrade(&shared))),
        );
        PatchService(shared)
    }

    /// What it has done.
    pub fn stats(&self) -> &PatchStats {
        &self.0.stats
    }

    /// The cache.
    pub fn cache(&self) -> &Arc<dyn ChunkStore> {
        &self.0.cache
    }

    /// Where package `id` stands here, if it is known.
    pub fn progress(&self, id: &Hash) -> Option<Progress> {
        rollcall_runtime::sync::lock(&self.0.packages)
            .get(id)
            .map(|p| p.progress.borrow().clone())
    }

    /// Fetches every chunk of `manifest` this machine lacks, and waits until all are held
    /// and verified. The chunks stay pinned in the cache until [`PatchService::release`].
    /// Returns where the package stands: complete, with the bytes that came from
    /// neighbours and from the server.
    pub async fn obtain(&self, manifest: Arc<Manifest>) -> Result<Progress, PatchError> {
        self.fetch(manifest, true).await
    }

    /// Fetches `manifest`'s chunks as [`PatchService::obtain`] does, without pinning them:
    /// a machine an action does not target still passes its package down the ring.
    pub async fn relay(&self, manifest: Arc<Manifest>) -> Result<Progress, PatchError> {
        self.fetch(manifest, false).await
    }

    async fn fetch(&self, manifest: Arc<Manifest>, pin: bool) -> Result<Progress, PatchError> {
        manifest.check()?;
        let id = manifest.id();
        let mut rx = {
            let mut pk = rollcall_runtime::sync::lock(&self.0.packages);
            let pkg = pk.entry(id).or_insert_with(|| Pkg {
                manifest: manifest.clone(),
                dist: None,
                progress: watch::channel(Progress {
                    held: 0,
                    total: manifest.chunk_count(),
                    complete: false,
                    from_peers: 0,
                    from_server: 0,
                })
                .0,
                got: (0, 0),
            });
            pkg.progress.subscribe()
        };
        if pin {
            self.0.cache.pin(id, &manifest.chunk_hashes());
        }
        if rx.borrow().complete {
            return Ok(rx.borrow().clone());
        }
        let running = rollcall_runtime::sync::lock(&self.0.packages)
            .get(&id)
            .is_some_and(|p| p.dist.is_some());
        if !running {
            self.0
                .pool()
                .await
                .ok_or_else(|| PatchError::Stopped("no chunk pool".into()))?;
            let shared = self.0.clone();
            let m = manifest.clone();
            let spec = ChildSpec::new(
                format!("patch.{}", &hex(&id)[..16]),
                Restart::Transient,
                Distributor,
                move || (shared.clone(), m.clone()),
            )
            .on(self.0.cfg.background.clone());
            // Already started by another caller: that one serves this one too.
            if let Err(e) = self.0.node.start_child(spec).await {
                tracing::debug!(error = %e, "distributor not started here");
            }
        }
        // Waited for until complete, or until the node stops (the waiter holds the service,
        // and with it the sender it waits on).
        loop {
            if rx.borrow_and_update().complete {
                return Ok(rx.borrow().clone());
            }
            if self.0.node.is_shut_down() {
                return Err(PatchError::Stopped("the endpoint stopped".into()));
            }
            if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await {
                return Err(PatchError::Stopped("the package was dropped".into()));
            }
        }
    }

    /// Lets the cache evict `manifest`'s chunks again (no open action needs them).
    pub fn release(&self, manifest: &Manifest) {
        self.0.cache.unpin(&manifest.id());
    }

    /// Checks every file of `manifest` against its hash, from the held chunks.
    pub fn verify_files(&self, manifest: &Manifest) -> Result<(), PatchError> {
        verify_files(self.0.cache.as_ref(), manifest)
    }

    /// [`PatchService::verify_files`] as package work: on the background runtime, if there
    /// is one (see [`PatchConfig::background`]).
    pub async fn check_files(&self, manifest: Arc<Manifest>) -> Result<(), PatchError> {
        let svc = self.clone();
        self.0
            .in_background(async move { svc.verify_files(&manifest) })
            .await
            .map_err(PatchError::Stopped)?
    }

    /// Writes `manifest`'s files into `dir` (created), each checked against its hash.
    pub fn write_files(&self, manifest: &Manifest, dir: &Path) -> Result<PathBuf, PatchError> {
        write_files(self.0.cache.as_ref(), manifest, dir)
    }
}

/// Checks every file of `manifest` against its hash, from the chunks `cache` holds.
pub fn verify_files(cache: &dyn ChunkStore, manifest: &Manifest) -> Result<(), PatchError> {
    let mut index = 0u32;
    for f in &manifest.files {
        let mut h = blake3::Hasher::new();
        for _ in 0..f.chunk_count() {
            let c = manifest
                .chunk(index)
                .and_then(|c| cache.get(&c.hash))
                .ok_or(ManifestError::NoSuchChunk(index))?;
            h.update(c.data());
            index += 1;
        }
        if *h.finalize().as_bytes() != f.hash() {
            return Err(ManifestError::BadFile(f.name.clone()).into());
        }
    }
    Ok(())
}

/// Writes `manifest`'s files from `cache` into `dir`, each checked against its hash.
pub fn write_files(
    cache: &dyn ChunkStore,
    manifest: &Manifest,
    dir: &Path,
) -> Result<PathBuf, PatchError> {
    use std::io::Write;
    let io = |e: std::io::Error| PatchError::Io(e.to_string());
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut index = 0u32;
    for f in &manifest.files {
        let path = dir.join(&f.name);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
        let mut h = blake3::Hasher::new();
        for _ in 0..f.chunk_count() {
            let c = manifest
                .chunk(index)
                .and_then(|c| cache.get(&c.hash))
                .ok_or(ManifestError::NoSuchChunk(index))?;
            h.update(c.data());
            out.write_all(c.data()).map_err(io)?;
            index += 1;
        }
        out.flush().map_err(io)?;
        if *h.finalize().as_bytes() != f.hash() {
            let _ = std::fs::remove_file(&path);
            return Err(ManifestError::BadFile(f.name.clone()).into());
        }
    }
    Ok(dir.to_path_buf())
}

/// One package's download on one endpoint (see the module).
#[derive(Clone)]
pub struct Distributor;

/// A distributor's messages.
pub enum DistMsg {
    /// Look for work; tell the neighbours what came.
    Tick,
    /// Ask for the view.
    Look,
    /// The view.
    View(Option<View>),
    /// A neighbour's whole bitmap.
    Holdings(NodeId, Vec<bool>),
    /// A neighbour (at that address) got these chunks.
    Have(NodeId, SocketAddr, Vec<u32>),
    /// A request ended.
    Fetched {
        /// The chunk.
        index: u32,
        /// Whom it was asked of.
        from: Source<NodeId>,
        /// How it ended.
        outcome: Outcome,
    },
}

/// A distributor's state.
pub struct DistState {
    shared: Arc<Shared>,
    manifest: Arc<Manifest>,
    id: Hash,
    fetch: Fetch<NodeId>,
    addrs: HashMap<NodeId, SocketAddr>,
    /// Links it made itself (to neighbours that had none with it).
    links: HashMap<NodeId, PeerHandle>,
    announce: Vec<u32>,
    /// The nearest successors (see [`View::near`]).
    near: Vec<NodeId>,
    /// The view's machines in ring order (its nearest predecessor first).
    order: Vec<NodeId>,
    /// When a chunk last came, and when the sources were last all asked what they hold.
    progressed: std::time::Instant,
    resynced: std::time::Instant,
    resync_every: Duration,
    /// Machines outside the view that told us what they hold.
    announcers: HashMap<NodeId, SocketAddr>,
    /// Chunk indices that share their bytes with another chunk of the package, by hash.
    twins: HashMap<Hash, Vec<u32>>,
    pool: PoolRef,
}

/// A distributor that got nothing for this long asks every source again what it holds.
const RESYNC: Duration = Duration::from_secs(1);

/// The longest a stalled distributor waits between asking its sources again.
const RESYNC_MAX: Duration = Duration::from_secs(16);

/// How long a finished distributor's links stay open for what is still on them.
const LINGER: Duration = Duration::from_secs(5);

/// Fetched chunks waiting to be checked and kept, at most.
const STORE_QUEUE: usize = 1024;

/// Most machines outside its view a distributor takes as sources.
const MAX_ANNOUNCERS: usize = 8;

/// Most packages, and announcers per package, remembered before their distributor runs.
const HEARD_PACKAGES: usize = 256;

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Actor for Distributor {
    type Msg = DistMsg;
    type State = DistState;
    type Arguments = (Arc<Shared>, Arc<Manifest>);

    async fn pre_start(
        &self,
        myself: ActorRef<DistMsg>,
        (shared, manifest): Self::Arguments,
    ) -> Result<DistState, ActorProcessingErr> {
        let id = manifest.id();
        let have: Vec<bool> = manifest
            .chunk_hashes()
            .iter()
            .map(|h| shared.cache.has(h))
            .collect();
        let fetch = Fetch::new(have, shared.cfg.fetch.clone());
        let pool = shared.store_pool().await.ok_or("no chunk pool")?;
        if let Some(p) = rollcall_runtime::sync::lock(&shared.packages).get_mut(&id) {
            p.dist = Some(myself.clone());
        }
        myself.send_interval(shared.cfg.tick, || DistMsg::Tick);
        myself.send_interval(shared.cfg.view_every, || DistMsg::Look);
        myself.send_message(DistMsg::Look)?;
        let announcers = rollcall_runtime::sync::lock(&shared.heard)
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut twins: HashMap<Hash, Vec<u32>> = HashMap::new();
        for (i, h) in manifest.chunk_hashes().into_iter().enumerate() {
            twins.entry(h).or_default().push(i as u32);
        }
        twins.retain(|_, v| v.len() > 1);
        let st = DistState {
            twins,
            shared,
            manifest,
            id,
            fetch,
            addrs: HashMap::new(),
            links: HashMap::new(),
            announce: Vec::new(),
            near: Vec::new(),
            order: Vec::new(),
            progressed: now(),
            resynced: now(),
            resync_every: RESYNC,
            announcers,
            pool,
        };
        st.report();
        Ok(st)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<DistMsg>,
        st: &mut DistState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(p) = rollcall_runtime::sync::lock(&st.shared.packages).get_mut(&st.id) {
            p.dist = None;
        }
        // Closed after a while, not at once: the last announcements are still on their way
        // over them (a connection closed under them drops them).
        let links: Vec<PeerHandle> = st.links.drain().map(|(_, l)| l).collect();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            for l in links {
                l.close();
            }
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<DistMsg>,
        msg: DistMsg,
        st: &mut DistState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DistMsg::Tick => {
                let t = now();
                st.fetch.expire(t);
                st.flush().await;
                // Stalled (announcements lost while this machine or a neighbour was down):
                // ask every source again what it holds.
                if t.saturating_duration_since(st.progressed) >= st.resync_every
                    && t.saturating_duration_since(st.resynced) >= st.resync_every
                {
                    // Asked again later and later while nothing comes.
                    st.resynced = t;
                    st.resync_every = (st.resync_every * 2).min(RESYNC_MAX);
                    let all: Vec<NodeId> = st
                        .addrs
                        .keys()
                        .chain(st.announcers.keys())
                        .cloned()
                        .collect();
                    for p in all {
                        st.ask_holdings(&myself, p);
                    }
                }
            }
            DistMsg::Look => {
                let hood = st.shared.hood.clone();
                let me = myself.clone();
                tokio::spawn(async move {
                    let _ = me.send_message(DistMsg::View(hood.view().await));
                });
            }
            DistMsg::View(Some(v)) => st.set_view(&myself, v).await,
            DistMsg::View(None) => {}
            DistMsg::Holdings(from, bits) => st.fetch.holdings_all(&from, &bits),
            DistMsg::Have(from, addr, idx) => {
                st.heard_from(&myself, from.clone(), addr).await;
                st.fetch.holdings(&from, idx);
            }
            DistMsg::Fetched {
                index,
                from,
                outcome,
            } => {
                let arrival = st.fetch.done(index, &from, outcome, now());
                tracing::trace!(me = %st.shared.node.identity().id, index, ?from, ?outcome, ?arrival, "fetched");
                let s = &st.shared.stats;
                match (outcome, arrival) {
                    (Outcome::Good, Some(Arrival::New)) => {
                        if let Some(c) = st.manifest.chunk(index) {
                            st.shared.got(&st.id, &from, c.len as u64);
                        }
                        st.progressed = now();
                        st.resync_every = RESYNC;
                        st.announce.push(index);
                        st.tell_near(index).await;
                        // Other chunks with the same bytes (runs of zeros) came with it.
                        if let Some(same) =
                            st.manifest.chunk(index).and_then(|c| st.twins.get(&c.hash))
                        {
                            for &j in same {
                                if j != index && !st.fetch.has(j) {
                                    st.fetch.mark_held(j);
                                    st.announce.push(j);
                                }
                            }
                        }
                        st.report();
                    }
                    (Outcome::Good, Some(Arrival::Duplicate)) => {
                        s.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    (Outcome::Failed, _) if from == Source::Server => {
                        s.server_retries.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }
        if st.fetch.complete() {
            st.flush().await;
            st.report();
            myself.stop(None);
            return Ok(());
        }
        st.pump(&myself);
        Ok(())
    }
}

impl DistState {
    fn report(&self) {
        self.shared.set_progress(
            &self.id,
            Progress {
                held: self.fetch.held(),
                total: self.manifest.chunk_count(),
                complete: self.fetch.complete(),
                from_peers: 0,
                from_server: 0,
            },
        );
    }

    /// The link to `p` this distributor keeps up (its own: the ring member's links to the
    /// same machines may be one-shot ones whose far end is already gone).
    fn link(&self, p: &NodeId) -> Option<PeerHandle> {
        self.links.get(p).cloned()
    }

    async fn set_view(&mut self, myself: &ActorRef<DistMsg>, v: View) {
        self.fetch.allow_server(v.leader);
        self.near = v.near;
        let me = self.shared.node.identity().id.clone();
        let peers: Vec<(NodeId, SocketAddr)> =
            v.peers.into_iter().filter(|(id, _)| *id != me).collect();
        self.order = peers.iter().map(|(id, _)| id.clone()).collect();
        self.addrs = peers.into_iter().collect();
        self.links.retain(|id, l| {
            let keep = self.addrs.contains_key(id) || self.announcers.contains_key(id);
            if !keep {
                l.close();
            }
            keep
        });
        self.refresh_peers(myself).await;
    }

    /// A machine that told us what it holds though it is not in our view (a predecessor's
    /// predecessor: what flows down the ring comes from before us): kept as a source.
    async fn heard_from(&mut self, myself: &ActorRef<DistMsg>, from: NodeId, addr: SocketAddr) {
        if self.addrs.contains_key(&from)
            || self.announcers.contains_key(&from)
            || self.announcers.len() >= MAX_ANNOUNCERS
            || from == self.shared.node.identity().id
        {
            return;
        }
        tracing::debug!(me = %self.shared.node.identity().id, %from, "a machine outside the view announced chunks: taken as a source");
        self.announcers.insert(from, addr);
        self.refresh_peers(myself).await;
    }

    /// The sources: the view's members and those that announced to us; each new one is
    /// asked what it holds.
    async fn refresh_peers(&mut self, myself: &ActorRef<DistMsg>) {
        // In order of preference: the view as the ring orders it (nearest predecessor
        // first), then the machines that announced to us.
        let mut ids: Vec<NodeId> = self.order.clone();
        let fallback: Vec<NodeId> = self
            .announcers
            .keys()
            .filter(|a| !self.addrs.contains_key(*a))
            .cloned()
            .collect();
        ids.extend(fallback.iter().cloned());
        let fresh = self.fetch.set_peers(&ids);
        self.fetch.set_fallback(&fallback);
        tracing::trace!(me = %self.shared.node.identity().id, ?fresh, announcers = self.announcers.len(), "new sources");
        // A link kept up to every source that has no live one.
        for p in &ids {
            if self.link(p).is_some() {
                continue;
            }
            let addr = self
                .addrs
                .get(p)
                .or_else(|| self.announcers.get(p))
                .copied();
            if let Some(addr) = addr
                && let Ok(l) = self.shared.node.connect(addr).await
            {
                self.links.insert(p.clone(), l);
            }
        }
        for p in fresh {
            self.ask_holdings(myself, p);
        }
    }

    /// Asks `p` what it holds (the answer comes back as [`DistMsg::Holdings`]).
    fn ask_holdings(&self, myself: &ActorRef<DistMsg>, p: NodeId) {
        let Some(link) = self.link(&p) else {
            return;
        };
        let (to, pkg, n) = (myself.clone(), self.id, self.manifest.chunk_count());
        let timeout = self.shared.cfg.call_timeout;
        tokio::spawn(async move {
            if link.wait_connected(timeout).await.is_err() {
                return;
            }
            let r: Result<HoldingsReply, _> = link
                .call(PEER_ROUTE, &PatchMsg::Holdings { package: pkg }, timeout)
                .await;
            if let Ok(HoldingsReply(Some(bits))) = r {
                let _ = to.send_message(DistMsg::Holdings(p, proto::unpack(&bits, n)));
            }
        });
    }

    /// Tells the nearest successors of chunk `index` at once.
    async fn tell_near(&self, index: u32) {
        if self.near.is_empty() {
            return;
        }
        let msg = PatchMsg::Have {
            package: self.id,
            indices: vec![index],
            addr: self.shared.advertise,
        };
        for p in &self.near {
            if let Some(l) = self.link(p) {
                let _ = l.cast(PEER_ROUTE, &msg).await;
            }
        }
    }

    /// Tells the neighbours what came since the last time (awaited: a distributor that
    /// finishes closes the links it made right after).
    async fn flush(&mut self) {
        if self.announce.is_empty() {
            return;
        }
        let msg = PatchMsg::Have {
            package: self.id,
            indices: std::mem::take(&mut self.announce),
            addr: self.shared.advertise,
        };
        let peers: Vec<NodeId> = self
            .addrs
            .keys()
            .filter(|p| !self.near.contains(p))
            .cloned()
            .collect();
        tracing::trace!(me = %self.shared.node.identity().id, peers = peers.len(), "announcing");
        for p in peers {
            match self.link(&p) {
                Some(l) => {
                    if let Err(e) = l.cast(PEER_ROUTE, &msg).await {
                        tracing::debug!(%p, error = %e, "announcement not sent");
                    }
                }
                None => tracing::debug!(%p, "no link to announce on"),
            }
        }
    }

    /// Sends what the plan says to send now.
    fn pump(&mut self, myself: &ActorRef<DistMsg>) {
        let sends = self.fetch.next(now());
        if !sends.is_empty() {
            tracing::trace!(me = %self.shared.node.identity().id, ?sends, held = self.fetch.held(), in_flight = self.fetch.in_flight(), "asking");
        }
        for (index, from) in sends {
            let link = match &from {
                Source::Peer(p) => self.link(p),
                Source::Server => match &self.shared.server {
                    (Some(id), _) => self.shared.node.peer(id),
                    (None, addr) => self.shared.node.peer_at(*addr),
                },
            };
            let to = myself.clone();
            let Some(link) = link else {
                let _ = to.send_message(DistMsg::Fetched {
                    index,
                    from,
                    outcome: Outcome::Failed,
                });
                continue;
            };
            let route = match from {
                Source::Peer(_) => PEER_ROUTE,
                Source::Server => proto::ORIGIN_ROUTE,
            };
            let timeout = match from {
                Source::Peer(_) => self.shared.cfg.call_timeout,
                Source::Server => self.shared.cfg.fetch.server_timeout,
            };
            let (pool, package) = (self.pool.clone(), self.id);
            tokio::spawn(async move {
                let r = link
                    .call_body(route, &PatchMsg::Chunk { package, index }, timeout)
                    .await
                    .and_then(|body| {
                        ChunkReply::decode(&body)
                            .map_err(|e| CallError::from(WireError::Garbage(e.to_string())))
                    });
                let outcome = match r {
                    Ok(ChunkReply::Data(data)) => {
                        pool::dispatch(
                            &pool,
                            PoolJob::Store {
                                package,
                                index,
                                from,
                                data,
                                to,
                            },
                        );
                        return;
                    }
                    Ok(ChunkReply::Busy) => Outcome::Busy,
                    Ok(ChunkReply::Missing) => Outcome::Missing,
                    Err(e) => {
                        tracing::debug!(index, ?from, error = %e, "chunk request failed");
                        Outcome::Failed
                    }
                };
                let _ = to.send_message(DistMsg::Fetched {
                    index,
                    from,
                    outcome,
                });
            });
        }
    }
}
