//! A node: peer links over a [`Transport`], a router to named local actors, and remote calls.
//!
//! A connection this node keeps up is owned by a `PeerLink` actor, a child of the node's link
//! supervisor, which redials it; a connection that ends the link with it (accepted, or dialed
//! once) is owned by a task. A link reads every stream its peer opens, decodes and checks the
//! envelope (frame limit, wire version, sender matches certificate, destination exists), and
//! delivers it to the local actor registered under the envelope's `to`. A link kept up
//! redials with jittered exponential backoff when its connection is lost; any other link ends
//! with its connection. Every rejection is counted in [`WireStats`] and logged; it closes that
//! one stream, never the connection or the node.
//!
//! Casts and calls go straight from the caller's task to the connection (a [`PeerHandle`]
//! shares it with the link), so the link's mailbox is never on the request path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use ractor::{Actor, ActorCell, ActorRef, ActorStatus};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::backoff::BackoffConfig;
use crate::identity::{NodeId, PeerIdentity, PeerRole, Roles};
use crate::stats::{WireStats, WireStatsSnapshot};
use crate::supervisor::{
    ChildSpec, Restart, RestartIntensity, Supervisor, SupervisorArgs, SupervisorMsg,
};
use crate::transport::{Transport, TransportError};
use crate::wire::{DEFAULT_MAX_FRAME_BYTES, WireError};

mod faults;
#[allow(unused_imports)]
pub use faults::*;
mod incoming;
#[allow(unused_imports)]
pub use incoming::*;
mod router;
#[allow(unused_imports)]
pub use router::*;
mod peer;
#[allow(unused_imports)]
pub use peer::*;
mod serve;
#[allow(unused_imports)]
pub use serve::*;
mod status;
#[allow(unused_imports)]
pub use status::*;

/// Name of the status actor every node runs.
pub const STATUS_ACTOR: &str = "node.status";

/// Node settings.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Hard limit on one frame, both ways.
    pub max_frame_bytes: usize,
    /// How long a local actor may take to answer a remote call.
    pub serve_timeout: Duration,
    /// Redial backoff for links this node dialed.
    pub reconnect: BackoffConfig,
    /// Seed for the backoff jitter.
    pub seed: u64,
    /// Link events buffered for slow subscribers (a broadcast channel preallocates them, so
    /// this is memory per node: keep it small on endpoints, larger on a busy server).
    pub link_event_capacity: usize,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            serve_timeout: Duration::from_secs(10),
            reconnect: BackoffConfig::default(),
            seed: 0,
            link_event_capacity: 64,
        }
    }
}

/// Errors of casts and calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The link has no connection right now.
    #[error("not connected to {0}")]
    NotConnected(SocketAddr),
    /// No reply within the timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The message or reply could not be encoded or decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The peer's certificate holds another role than the one this call is for (an
    /// endpoint answering at the server's address).
    #[error("the peer at {addr} holds the {got} role, not {expected}")]
    WrongRole {
        /// Where it was dialed.
        addr: SocketAddr,
        /// The role the call needs.
        expected: PeerRole,
        /// The role its certificate holds.
        got: PeerRole,
    },
    /// The peer holds the right role but is not the node this one pinned (another server of
    /// the same CA).
    #[error("the peer at {addr} is {got}, not the pinned {expected}")]
    NotPinned {
        /// Where it was dialed.
        addr: SocketAddr,
        /// The pinned node.
        expected: NodeId,
        /// The node its certificate names.
        got: NodeId,
    },
}

/// Something that happened to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A connection to `peer` at `addr` is up.
    Up {
        /// Who.
        peer: PeerIdentity,
        /// Where.
        addr: SocketAddr,
    },
    /// The connection to `addr` is gone.
    Down {
        /// Who, if known.
        peer: Option<PeerIdentity>,
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: TransportError,
    },
    /// A dial to `addr` failed; another follows after `retry_in`.
    DialFailed {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: TransportError,
        /// Backoff before the next attempt.
        retry_in: Duration,
    },
}

/// A local destination for remote messages.
pub trait Deliver: Send + Sync + 'static {
    /// Hands the message over; fails if the destination is gone.
    fn deliver(&self, msg: Incoming) -> Result<(), DestinationGone>;
}

impl<M> Deliver for ActorRef<M>
where
    M: From<Incoming> + ractor::Message,
{
    fn deliver(&self, msg: Incoming) -> Result<(), DestinationGone> {
        self.send_message(M::from(msg)).map_err(|_| DestinationGone)
    }
}

/// What a request handler needs, shared by all links of a node.
struct Shared {
    identity: PeerIdentity,
    transport: Arc<dyn Transport>,
    router: Router,
    stats: Arc<WireStats>,
    opts: NodeOptions,
    /// Made when the first subscriber comes: most nodes never have one, and a broadcast
    /// channel preallocates its whole buffer.
    events: std::sync::OnceLock<broadcast::Sender<LinkEvent>>,
    /// Live links by peer. Holds the links' connection cells, not [`PeerHandle`]s, which
    /// point back at this struct: a cycle would keep a stopped node's socket bound.
    /// A peer may have several at once (a persistent link and a short-lived one).
    links: RwLock<HashMap<NodeId, Vec<LinkCell>>>,
    next_call: AtomicU64,
    next_seed: AtomicU64,
    faults: Arc<NodeFaults>,
    /// Peers whose certificates are revoked: everything they send is refused.
    revoked: Arc<crate::revocation::Revocations>,
    /// What adds the services' figures to the node's own (rings, questions, chunks).
    /// Cleared at shutdown: the services it reads hold this node.
    figures: std::sync::RwLock<Option<Arc<dyn crate::figures::FigureSource>>>,
}

impl Shared {
    /// Tells the link-event subscribers, if any.
    fn emit(&self, e: LinkEvent) {
        if let Some(tx) = self.events.get() {
            let _ = tx.send(e);
        }
    }
}

/// A running node.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
    /// Started on first use (a redialing link, or an actor put under it) and stopped when its
    /// last child is gone: most endpoints need one only while they lead (a leader's server
    /// link), and a ractor actor costs kilobytes.
    supervisor: Arc<std::sync::Mutex<Option<ActorRef<SupervisorMsg>>>>,
    /// Set by [`Node::shutdown`]: no supervisor is started after it.
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({} at {})", self.shared.identity, self.local_addr())
    }
}

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// An actor could not be spawned.
    #[error("spawn: {0}")]
    Spawn(String),
}

impl Node {
    /// Starts a node on `transport`: its status service and its accept loop (its link
    /// supervisor starts when first needed).
    pub async fn start(
        transport: Arc<dyn Transport>,
        opts: NodeOptions,
    ) -> Result<Node, NodeError> {
        let shared = Arc::new(Shared {
            identity: transport.identity().clone(),
            stats: transport.stats().clone(),
            router: Router::default(),
            transport: transport.clone(),
            next_seed: AtomicU64::new(opts.seed),
            opts,
            events: std::sync::OnceLock::new(),
            links: RwLock::new(HashMap::new()),
            next_call: AtomicU64::new(1),
            faults: Arc::new(NodeFaults::default()),
            revoked: Arc::default(),
            figures: std::sync::RwLock::new(None),
        });
        shared.router.register(
            STATUS_ACTOR,
            Roles::ANY,
            Arc::new(StatusService(Arc::downgrade(&shared))),
        );
        let node = Node {
            shared,
            supervisor: Arc::default(),
            stopped: Arc::default(),
        };
        let accepting = node.clone();
        tokio::spawn(async move {
            while let Some(conn) = accepting.shared.transport.accept().await {
                let addr = conn.remote_addr();
                // Boxed: starting a link is a large future, and this loop runs on every node.
                let link = Box::pin(accepting.spawn_link(LinkMode::Single(conn), addr));
                if let Err(e) = link.await {
                    tracing::error!(%addr, error = %e, "could not start link");
                }
            }
        });
        Ok(node)
    }

    /// The faults in force on this node (pause, slow); clear by default.
    pub fn faults(&self) -> &Arc<NodeFaults> {
        &self.shared.faults
    }

    /// Who this node is.
    pub fn identity(&self) -> &PeerIdentity {
        &self.shared.identity
    }

    /// The address peers dial.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.transport.local_addr()
    }

    /// Where remote messages are routed to local actors.
    pub fn router(&self) -> &Router {
        &self.shared.router
    }

    /// Counters of this node's links.
    pub fn stats(&self) -> WireStatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Delivers `body` to the local actor `to` as a cast from `from` (work handed over by the
    /// server at registration arrives this way).
    pub fn deliver_local(
        &self,
        to: &str,
        from: PeerIdentity,
        body: Vec<u8>,
    ) -> Result<(), WireError> {
        let (target, roles) = self
            .shared
            .router
            .lookup(to)
            .ok_or_else(|| WireError::UnknownDestination(to.to_string()))?;
        if self.shared.revoked.contains(&from.id) {
            let e = WireError::Revoked(from.id.to_string());
            self.shared.stats.count_rejection(&e);
            return Err(e);
        }
        if !roles.allows(from.role) {
            let e = WireError::Forbidden {
                role: from.role.to_string(),
                to: to.to_string(),
            };
            self.shared.stats.count_rejection(&e);
            return Err(e);
        }
        target
            .deliver(Incoming {
                from,
                body: Bytes::from(body),
                reply: None,
                stats: self.shared.stats.clone(),
            })
            .map_err(|_| WireError::UnknownDestination(to.to_string()))
    }

    /// The identities this node refuses (replace them with
    /// [`Revocations::set`](crate::revocation::Revocations::set)); in force from the next
    /// message, on open connections too.
    pub fn revocations(&self) -> &Arc<crate::revocation::Revocations> {
        &self.shared.revoked
    }

    /// The live counters (for [`WireStats::wait_for`]).
    pub fn wire_stats(&self) -> &Arc<WireStats> {
        &self.shared.stats
    }

    /// Adds `source`'s figures to this node's own (replacing any set before).
    pub fn set_figures(&self, source: Arc<dyn crate::figures::FigureSource>) {
        *crate::sync::write(&self.shared.figures) = Some(source);
    }

    /// Every figure of this node: the process's, its link counters, and its services'.
    pub fn figures(&self) -> futures::future::BoxFuture<'static, Vec<crate::figures::Figure>> {
        shared_figures(&self.shared)
    }

    /// The node's supervisor (of its redialing links, and of what the caller puts under
    /// it), started on first use and stopped once its last child is gone (the next use
    /// starts another); an error once the node is shut down.
    pub async fn supervisor(&self) -> Result<ActorRef<SupervisorMsg>, NodeError> {
        let live = |s: &ActorRef<SupervisorMsg>| {
            matches!(
                s.get_status(),
                ActorStatus::Unstarted | ActorStatus::Starting | ActorStatus::Running
            )
        };
        let gone = || NodeError::Spawn("the node is shut down".into());
        {
            let slot = crate::sync::lock(&self.supervisor);
            if let Some(s) = slot.as_ref().filter(|s| live(s)) {
                return Ok(s.clone());
            }
        }
        if self.stopped.load(Ordering::SeqCst) {
            return Err(gone());
        }
        let (supervisor, ended) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                intensity: RestartIntensity::default(),
                children: Vec::new(),
                stop_when_idle: true,
            },
        )
        .await
        .map_err(|e| NodeError::Spawn(e.to_string()))?;
        // Once it stops, the slot lets go of it: a stopped actor's reference holds its
        // mailboxes (~3.4 KB), which only the next use would otherwise free.
        let (slot, id) = (Arc::downgrade(&self.supervisor), supervisor.get_id());
        tokio::spawn(async move {
            let _ = ended.await;
            if let Some(slot) = slot.upgrade() {
                let mut s = crate::sync::lock(&slot);
                if s.as_ref().is_some_and(|s| s.get_id() == id) {
                    *s = None;
                }
            }
        });
        let mut slot = crate::sync::lock(&self.supervisor);
        // Another caller started one meanwhile: use that one.
        if let Some(s) = slot.as_ref().filter(|s| live(s)) {
            supervisor.stop(None);
            return Ok(s.clone());
        }
        // Shut down while it started: `shutdown` may not have seen it.
        if self.stopped.load(Ordering::SeqCst) {
            supervisor.stop(Some("node shutting down".into()));
            return Err(gone());
        }
        *slot = Some(supervisor.clone());
        Ok(supervisor)
    }

    /// Starts `spec` under the node's supervisor. One that stopped (its last child ended)
    /// just as the request reached it is replaced once.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<ActorCell, NodeError> {
        let mut retried = false;
        loop {
            let sup = self.supervisor().await?;
            let s = spec.clone();
            match sup
                .call(|port| SupervisorMsg::StartChild(s, port), None)
                .await
            {
                // Started, or refused by the supervisor (a child of that name exists, or it
                // failed to start).
                Ok(ractor::rpc::CallResult::Success(r)) => return r.map_err(NodeError::Spawn),
                // The request was dropped unanswered: the supervisor stopped.
                _ if !retried => retried = true,
                Ok(_) => return Err(NodeError::Spawn("supervisor did not answer".into())),
                Err(e) => return Err(NodeError::Spawn(format!("supervisor is gone: {e}"))),
            }
        }
    }

    /// Link events from now on.
    pub fn link_events(&self) -> broadcast::Receiver<LinkEvent> {
        let cap = self.shared.opts.link_event_capacity.max(1);
        self.shared
            .events
            .get_or_init(|| broadcast::channel(cap).0)
            .subscribe()
    }

    /// A link to `addr` that this node keeps up, redialing with backoff when it drops. The
    /// handle is returned at once; see [`PeerHandle::wait_connected`].
    pub async fn connect(&self, addr: SocketAddr) -> Result<PeerHandle, NodeError> {
        self.spawn_link(LinkMode::Outbound, addr).await
    }

    /// Dials `addr` once, within `timeout`: a link that ends with its connection and is never
    /// redialed. For short exchanges (registration) and for neighbours whose liveness the
    /// caller judges itself.
    pub async fn connect_once(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<PeerHandle, CallError> {
        let dial = async {
            // A paused node dials nothing.
            self.shared.faults.pass().await;
            self.shared.transport.connect(addr).await
        };
        let conn = tokio::time::timeout(timeout, dial)
            .await
            .map_err(|_| CallError::Timeout(timeout))??;
        self.spawn_link(LinkMode::Single(conn), addr)
            .await
            .map_err(|e| CallError::Transport(TransportError::Lost(e.to_string())))
    }

    /// The link to a connected peer, whichever side dialed.
    pub fn peer(&self, id: &NodeId) -> Option<PeerHandle> {
        let links = crate::sync::read(&self.shared.links);
        let cells = links.get(id)?;
        // The newest live connection: a peer that connected again may have lost its end of
        // an older one without a word reaching us (a restart, a close lost in a burst), and
        // this side learns of that only when the older one idles out.
        let cell = cells
            .iter()
            .rev()
            .find(|c| c.conn.is_some())
            .or_else(|| cells.last())?
            .clone();
        Some(PeerHandle {
            addr: cell.addr,
            conn: cell.conn,
            actor: cell.actor,
            shared: self.shared.clone(),
        })
    }

    /// A live link to the peer at `addr`, whichever side dialed (the server's, for a node
    /// that pinned no server id).
    pub fn peer_at(&self, addr: SocketAddr) -> Option<PeerHandle> {
        let links = crate::sync::read(&self.shared.links);
        let cell = links
            .values()
            .flat_map(|cells| cells.iter().rev())
            .find(|c| c.addr == addr && c.conn.is_some())?
            .clone();
        Some(PeerHandle {
            addr: cell.addr,
            conn: cell.conn,
            actor: cell.actor,
            shared: self.shared.clone(),
        })
    }

    /// Waits up to `timeout` for a live link to peer `id`.
    pub async fn wait_peer(&self, id: &NodeId, timeout: Duration) -> Option<PeerHandle> {
        let mut events = self.link_events();
        let wait = async {
            loop {
                if let Some(h) = self.peer(id).filter(|h| h.peer().is_some()) {
                    return Some(h);
                }
                match events.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Whether some live connection to `id` exists.
    pub fn is_connected_to(&self, id: &NodeId) -> bool {
        Some(crate::sync::read(&self.shared.links))
            .and_then(|l| {
                l.get(id)
                    .map(|cells| cells.iter().any(|c| c.conn.is_some()))
            })
            .unwrap_or(false)
    }

    /// Every live connection, by peer id (a peer may appear more than once).
    pub fn connected_peers(&self) -> Vec<PeerInfo> {
        connected_peers(&self.shared)
    }

    /// The address this node sees peer `id`'s connection come from, while it has one.
    pub fn observed_addr(&self, id: &NodeId) -> Option<SocketAddr> {
        let links = crate::sync::read(&self.shared.links);
        links
            .get(id)?
            .iter()
            .find_map(|cell| cell.conn.get().map(|c| c.remote_addr()))
    }

    /// Whether [`Node::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// [`Node::shutdown`], then waits up to `timeout` for the close to reach the peers.
    pub async fn shutdown_and_wait(&self, timeout: Duration) {
        self.shutdown();
        let _ = tokio::time::timeout(timeout, self.shared.transport.wait_idle()).await;
    }

    /// Closes every link and stops the node's actors.
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.shared.transport.close();
        if let Some(s) = Some(crate::sync::lock(&self.supervisor)).and_then(|mut s| s.take()) {
            s.stop(Some("node shutting down".into()));
        }
        // Routes and the figures' source hold services that hold this node: drop them so
        // nothing keeps it alive.
        self.shared.router.clear();
        crate::sync::write(&self.shared.figures).take();
    }

    async fn spawn_link(&self, mode: LinkMode, addr: SocketAddr) -> Result<PeerHandle, NodeError> {
        let handle = PeerHandle {
            addr,
            conn: Arc::default(),
            actor: Arc::new(std::sync::Mutex::new(None)),
            shared: self.shared.clone(),
        };
        if let LinkMode::Single(conn) = mode {
            single_link(handle.clone(), conn);
            return Ok(handle);
        }
        let seed = self.shared.next_seed.fetch_add(1, Ordering::Relaxed);
        let args_handle = handle.clone();
        let spec = ChildSpec::new(
            format!("link-{addr}-{seed}"),
            Restart::Transient,
            PeerLink,
            move || LinkArgs {
                handle: args_handle.clone(),
                seed,
            },
        );
        let cell = self.start_child(spec).await?;
        *crate::sync::lock(&handle.actor) = Some(cell);
        Ok(handle)
    }
}

fn connected_peers(shared: &Shared) -> Vec<PeerInfo> {
    let links = crate::sync::read(&shared.links);
    let mut out: Vec<PeerInfo> = links
        .values()
        .flatten()
        .filter_map(|cell| {
            let c = cell.conn.get()?;
            Some(PeerInfo {
                peer: c.peer().clone(),
                addr: c.remote_addr(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.peer.id.cmp(&b.peer.id));
    out
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Who.
    pub peer: PeerIdentity,
    /// Where.
    pub addr: SocketAddr,
}

/// See [`Node::figures`].
fn shared_figures(
    shared: &Shared,
) -> futures::future::BoxFuture<'static, Vec<crate::figures::Figure>> {
    let mut own = crate::figures::process();
    own.extend(shared.stats.snapshot().figures());
    own.push(crate::figures::Figure::gauge(
        "rollcall_links",
        "Peers with a live link",
        crate::sync::read(&shared.links).len() as f64,
    ));
    let more = crate::sync::read(&shared.figures)
        .as_ref()
        .map(|s| s.figures());
    Box::pin(async move {
        if let Some(more) = more {
            own.extend(more.await);
        }
        own
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Gone;

    impl Deliver for Gone {
        fn deliver(&self, _msg: Incoming) -> Result<(), DestinationGone> {
            Err(DestinationGone)
        }
    }

    fn same(a: &Option<(Arc<dyn Deliver>, Roles)>, b: &Arc<dyn Deliver>) -> bool {
        a.as_ref().is_some_and(|(a, _)| Arc::ptr_eq(a, b))
    }

    #[test]
    fn a_route_registered_again_replaces_the_first_and_removing_one_leaves_the_others() {
        let router = Router::default();
        let (first, second, other): (Arc<dyn Deliver>, Arc<dyn Deliver>, Arc<dyn Deliver>) =
            (Arc::new(Gone), Arc::new(Gone), Arc::new(Gone));
        router.register("member", Roles::ANY, first.clone());
        router.register(
            "a-name-longer-than-twenty-four-bytes",
            Roles::ENDPOINT,
            other.clone(),
        );
        assert!(same(&router.lookup("member"), &first));
        router.register("member", Roles::SERVER, second.clone());
        assert_eq!(router.lookup("member").map(|(_, r)| r), Some(Roles::SERVER));
        assert!(same(&router.lookup("member"), &second));
        assert_eq!(format!("{router:?}").matches("member").count(), 1);
        assert!(router.lookup("membe").is_none());
        assert!(router.lookup("members").is_none());
        router.unregister("member");
        assert!(router.lookup("member").is_none());
        assert!(same(
            &router.lookup("a-name-longer-than-twenty-four-bytes"),
            &other
        ));
        router.clear();
        assert!(
            router
                .lookup("a-name-longer-than-twenty-four-bytes")
                .is_none()
        );
    }
}
