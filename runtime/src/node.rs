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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::{broadcast, oneshot};

use crate::backoff::{Backoff, BackoffConfig};
use crate::identity::{NodeId, OperatorRole, PeerIdentity};
use crate::stats::{WireStats, WireStatsSnapshot};
use crate::supervisor::{
    ChildSpec, Restart, RestartIntensity, Supervisor, SupervisorArgs, SupervisorMsg,
};
use crate::transport::{
    Connection, ImmediateStream, InboundStream, RefuseCode, Transport, TransportError,
};
use crate::wire::{
    self, DEFAULT_MAX_FRAME_BYTES, EnvelopeKind, EnvelopeOut, EnvelopeRef, WIRE_VERSION, WireError,
};

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

/// Faults put on a whole node, on any transport (chaos commands and fault tests use them).
///
/// - **Paused**: a grey node. Its connections stay up (the transport keeps them alive), but
///   nothing it receives is handled and nothing it sends leaves until it resumes; callers see
///   their calls time out.
/// - **Slowed**: every envelope in and out waits `delay` first.
#[derive(Debug, Default)]
pub struct NodeFaults {
    /// Read without a lock on every envelope.
    paused_now: AtomicBool,
    /// Wakes what waits while paused. (A watch channel did this at ~340 bytes per node,
    /// on every simulated endpoint.)
    resumed: tokio::sync::Notify,
    delay_us: AtomicU64,
}

impl NodeFaults {
    /// Pauses (`true`) or resumes (`false`) the node.
    pub fn set_paused(&self, paused: bool) {
        self.paused_now.store(paused, Ordering::SeqCst);
        if !paused {
            self.resumed.notify_waiters();
        }
    }

    /// Whether the node is paused.
    pub fn is_paused(&self) -> bool {
        self.paused_now.load(Ordering::Relaxed)
    }

    /// Whether no fault is in force: envelopes pass without waiting.
    fn quiet(&self) -> bool {
        !self.is_paused() && self.delay_us.load(Ordering::Relaxed) == 0
    }

    /// Delays every envelope in and out by `delay` (zero: no delay).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us.store(
            delay.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// The delay in force.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// Clears every fault.
    pub fn clear(&self) {
        self.set_paused(false);
        self.set_delay(Duration::ZERO);
    }

    /// Waits while the node is paused, then for the delay.
    async fn pass(&self) {
        if self.quiet() {
            return;
        }
        crate::wake::wait_until(&self.resumed, || {
            (!self.paused_now.load(Ordering::SeqCst)).then_some(())
        })
        .await;
        let d = self.delay();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
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

/// A message from a remote peer, delivered to a local actor.
#[derive(Debug)]
pub struct Incoming {
    /// The authenticated sender.
    pub from: PeerIdentity,
    /// The sender's message, still encoded; see [`Incoming::decode`].
    pub body: Bytes,
    /// Where to answer, for calls.
    pub reply: Option<ReplyPort>,
    stats: Arc<WireStats>,
}

impl Incoming {
    /// Decodes the body; a failure is counted as a rejected frame.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, WireError> {
        wire::decode_body(&self.body).inspect_err(|e| {
            self.stats.count_rejection(e);
            tracing::warn!(from = %self.from, error = %e, "rejected message body");
        })
    }

    /// Answers a call (no-op for a cast).
    pub fn answer<T: Serialize>(&mut self, msg: &T) -> Result<(), WireError> {
        match self.reply.take() {
            Some(port) => port.send(msg),
            None => Ok(()),
        }
    }

    /// Tells the caller the call was taken, ahead of its answer (see
    /// [`PeerHandle::call_acked`]); a no-op for a cast, or after the first time.
    pub fn ack(&mut self) {
        if let Some(p) = self.reply.as_mut() {
            p.ack();
        }
    }

    /// Refuses a call (no-op for a cast).
    pub fn refuse(&mut self) {
        if let Some(port) = self.reply.take() {
            port.refuse();
        }
    }
}

/// Where a local actor sends the answer to a remote call. Dropped unanswered, the call is
/// refused with [`RefuseCode::NoAnswer`].
pub struct ReplyPort(Port);

enum Port {
    /// The stream's task writes what the actor sends here.
    Task {
        tx: oneshot::Sender<Result<Vec<u8>, RefuseCode>>,
        ack: Option<oneshot::Sender<()>>,
    },
    /// An inline-served stream (see [`InboundStream::into_immediate`]): written from here.
    Now(NowPort),
    /// Answered, refused, or handed to a task.
    Spent,
}

/// An inline-served call waiting for its answer.
struct NowPort {
    stream: Box<dyn ImmediateStream>,
    shared: Arc<Shared>,
    /// The caller (the reply's `to`).
    to: NodeId,
    id: u64,
}

impl std::fmt::Debug for ReplyPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match &self.0 {
            Port::Task { .. } => "task",
            Port::Now(_) => "inline",
            Port::Spent => "spent",
        };
        f.debug_tuple("ReplyPort").field(&how).finish()
    }
}

impl ReplyPort {
    /// Sends the answer.
    pub fn send<T: Serialize>(mut self, msg: &T) -> Result<(), WireError> {
        self.follow_faults();
        // An answer that would not encode: the port goes back, and is refused as unanswered
        // when dropped.
        match std::mem::replace(&mut self.0, Port::Spent) {
            Port::Task { tx, ack } => match wire::with_body(msg, |body| Ok(body.to_vec())) {
                Ok(body) => {
                    let _ = tx.send(Ok(body));
                    Ok(())
                }
                Err(e) => {
                    self.0 = Port::Task { tx, ack };
                    Err(e)
                }
            },
            Port::Now(n) => {
                // Framed first, written once the encoding buffer is free again: on the
                // in-memory transport, writing an answer may run the caller's callback, and
                // with it answer a chain of callers, each encoding its own answer.
                let framed = wire::with_body(msg, |body| {
                    Ok(reply_frame(&n.shared, n.to.as_str(), n.id, body))
                });
                match framed {
                    Ok(frame) => {
                        n.answer(frame);
                        Ok(())
                    }
                    Err(e) => {
                        self.0 = Port::Now(n);
                        Err(e)
                    }
                }
            }
            Port::Spent => Ok(()),
        }
    }

    /// Refuses the call; the caller sees [`RefuseCode::Rejected`].
    pub fn refuse(mut self) {
        match std::mem::replace(&mut self.0, Port::Spent) {
            Port::Task { tx, .. } => {
                let _ = tx.send(Err(RefuseCode::Rejected));
            }
            Port::Now(n) => n.stream.refuse(RefuseCode::Rejected),
            Port::Spent => {}
        }
    }

    /// Acknowledges the call ahead of its answer (at most once).
    fn ack(&mut self) {
        self.follow_faults();
        match &mut self.0 {
            Port::Task { ack, .. } => {
                if let Some(tx) = ack.take() {
                    let _ = tx.send(());
                }
            }
            Port::Now(n) => n.stream.ack(),
            Port::Spent => {}
        }
    }

    /// If a fault came into force while an inline-served call was being handled, a task
    /// writes to the stream from here on, waiting as the fault says.
    fn follow_faults(&mut self) {
        if !matches!(&self.0, Port::Now(n) if !n.shared.faults.quiet()) {
            return;
        }
        if let Port::Now(n) = std::mem::replace(&mut self.0, Port::Spent) {
            let (tx, rx) = oneshot::channel();
            let (ack_tx, ack_rx) = oneshot::channel();
            tokio::spawn(answer_stream(
                n.shared,
                n.to,
                n.id,
                AnyStream::Now(n.stream),
                rx,
                ack_rx,
            ));
            self.0 = Port::Task {
                tx,
                ack: Some(ack_tx),
            };
        }
    }
}

impl Drop for ReplyPort {
    fn drop(&mut self) {
        // A task sees its sender dropped; an inline stream is refused here.
        if let Port::Now(n) = std::mem::replace(&mut self.0, Port::Spent) {
            tracing::warn!(peer = %n.to, "local actor did not answer a call");
            n.stream.refuse(RefuseCode::NoAnswer);
        }
    }
}

impl NowPort {
    fn answer(self, frame: Result<Bytes, WireError>) {
        match frame {
            Ok(frame) => {
                self.stream.reply(frame);
                self.shared.stats.incr(|s| &s.envelopes_sent);
            }
            Err(e) => {
                tracing::warn!(error = %e, "reply could not be encoded");
                self.stream.refuse(RefuseCode::NoAnswer);
            }
        }
    }
}

/// The reply envelope to call `id` from `to`, framed (its bytes counted as sent).
fn reply_frame(shared: &Shared, to: &str, id: u64, body: &[u8]) -> Result<Bytes, WireError> {
    let reply = EnvelopeOut {
        version: WIRE_VERSION,
        from: &shared.identity.id.0,
        to,
        kind: EnvelopeKind::Reply(id),
        body,
    };
    let frame = wire::encode_frame_out(&reply, shared.opts.max_frame_bytes)?;
    shared.stats.add_n(|s| &s.bytes_sent, frame.len() as u64);
    Ok(frame)
}

/// A local destination for remote messages.
pub trait Deliver: Send + Sync + 'static {
    /// Hands the message over; fails if the destination is gone.
    fn deliver(&self, msg: Incoming) -> Result<(), DestinationGone>;
}

/// The local destination of a message has stopped.
#[derive(Debug, Clone, Copy)]
pub struct DestinationGone;

impl<M> Deliver for ActorRef<M>
where
    M: From<Incoming> + ractor::Message,
{
    fn deliver(&self, msg: Incoming) -> Result<(), DestinationGone> {
        self.send_message(M::from(msg)).map_err(|_| DestinationGone)
    }
}

/// Named local destinations of remote messages.
#[derive(Clone, Default)]
pub struct Router {
    /// A node has a handful of routes: a list searched in order beats hashing the name of
    /// every envelope, and short names are kept inline (no pointer to follow per lookup).
    routes: Arc<RwLock<Vec<Route>>>,
}

/// A destination's name and where its messages go.
type Route = (compact_str::CompactString, Arc<dyn Deliver>);

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .routes
            .read()
            .map(|r| r.iter().map(|(n, _)| n.to_string()).collect())
            .unwrap_or_default();
        write!(f, "Router({names:?})")
    }
}

impl Router {
    /// Routes messages addressed to `name` to `target`, replacing any earlier route.
    pub fn register(&self, name: impl Into<String>, target: Arc<dyn Deliver>) {
        let name: String = name.into();
        if let Ok(mut r) = self.routes.write() {
            match r.iter_mut().find(|(n, _)| *n == name) {
                Some(route) => route.1 = target,
                None => r.push((name.into(), target)),
            }
        }
    }

    /// Routes messages addressed to `name` to a ractor actor.
    pub fn register_actor<M>(&self, name: impl Into<String>, actor: ActorRef<M>)
    where
        M: From<Incoming> + ractor::Message,
    {
        self.register(name, Arc::new(actor));
    }

    /// Removes a route.
    pub fn unregister(&self, name: &str) {
        if let Ok(mut r) = self.routes.write() {
            r.retain(|(n, _)| n != name);
        }
    }

    /// Removes every route (a stopping node: routes often hold what holds the node).
    pub fn clear(&self) {
        if let Ok(mut r) = self.routes.write() {
            r.clear();
        }
    }

    fn lookup(&self, name: &str) -> Option<Arc<dyn Deliver>> {
        let routes = self.routes.read().ok()?;
        routes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, target)| target.clone())
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
        });
        shared.router.register(
            STATUS_ACTOR,
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
        let target = self
            .shared
            .router
            .lookup(to)
            .ok_or_else(|| WireError::UnknownDestination(to.to_string()))?;
        target
            .deliver(Incoming {
                from,
                body: Bytes::from(body),
                reply: None,
                stats: self.shared.stats.clone(),
            })
            .map_err(|_| WireError::UnknownDestination(to.to_string()))
    }

    /// The live counters (for [`WireStats::wait_for`]).
    pub fn wire_stats(&self) -> &Arc<WireStats> {
        &self.shared.stats
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
            let slot = self.supervisor.lock().map_err(|_| gone())?;
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
            if let Some(slot) = slot.upgrade()
                && let Ok(mut s) = slot.lock()
                && s.as_ref().is_some_and(|s| s.get_id() == id)
            {
                *s = None;
            }
        });
        let mut slot = self.supervisor.lock().map_err(|_| gone())?;
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
        let links = self.shared.links.read().ok()?;
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
        self.shared
            .links
            .read()
            .ok()
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

    /// [`Node::shutdown`], then waits up to `timeout` for the close to reach the peers.
    pub async fn shutdown_and_wait(&self, timeout: Duration) {
        self.shutdown();
        let _ = tokio::time::timeout(timeout, self.shared.transport.wait_idle()).await;
    }

    /// Closes every link and stops the node's actors.
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.shared.transport.close();
        if let Some(s) = self.supervisor.lock().ok().and_then(|mut s| s.take()) {
            s.stop(Some("node shutting down".into()));
        }
        // Routes hold services that hold this node: drop them so nothing keeps it alive.
        self.shared.router.clear();
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
        if let Ok(mut slot) = handle.actor.lock() {
            *slot = Some(cell);
        }
        Ok(handle)
    }
}

fn connected_peers(shared: &Shared) -> Vec<PeerInfo> {
    let Ok(links) = shared.links.read() else {
        return Vec::new();
    };
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

/// A link's current connection (none while down), which tasks can wait on (see
/// [`crate::wake`]).
#[derive(Default)]
struct ConnSlot {
    conn: std::sync::Mutex<Option<Arc<dyn Connection>>>,
    changed: tokio::sync::Notify,
}

impl ConnSlot {
    fn get(&self) -> Option<Arc<dyn Connection>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn is_some(&self) -> bool {
        self.conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn set(&self, c: Option<Arc<dyn Connection>>) {
        let old = std::mem::replace(&mut *self.conn.lock().unwrap_or_else(|p| p.into_inner()), c);
        self.changed.notify_waiters();
        drop(old);
    }

    /// Waits until `pred` holds for the slot, and returns what it holds then.
    async fn wait_for(
        &self,
        pred: impl Fn(&Option<Arc<dyn Connection>>) -> bool,
    ) -> Option<Arc<dyn Connection>> {
        crate::wake::wait_until(&self.changed, || {
            let c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            pred(&c).then(|| c.clone())
        })
        .await
    }
}

/// A link's address, its current connection (none while down) and its actor.
#[derive(Clone)]
struct LinkCell {
    addr: SocketAddr,
    conn: Arc<ConnSlot>,
    actor: Arc<std::sync::Mutex<Option<ractor::ActorCell>>>,
}

/// Sends casts and calls to one peer over its link.
#[derive(Clone)]
pub struct PeerHandle {
    addr: SocketAddr,
    conn: Arc<ConnSlot>,
    actor: Arc<std::sync::Mutex<Option<ractor::ActorCell>>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerHandle({})", self.addr)
    }
}

impl PeerHandle {
    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the link for good (no redial).
    pub fn close(&self) {
        let cell = self.actor.lock().ok().and_then(|mut a| a.take());
        if let Some(cell) = cell {
            cell.stop(Some("closed by owner".into()));
        } else if let Some(conn) = self.conn.get() {
            conn.close("closed by owner");
        }
    }

    /// Whether the link has a connection now.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The peer's identity, while connected.
    pub fn peer(&self) -> Option<PeerIdentity> {
        self.conn.get().map(|c| c.peer().clone())
    }

    fn current(&self) -> Result<Arc<dyn Connection>, CallError> {
        self.conn.get().ok_or(CallError::NotConnected(self.addr))
    }

    /// Waits until the link, connected or not now, has been down and is connected again (a
    /// redialing link that lost its peer and found it again). A closed link never is: drop
    /// the wait.
    pub async fn wait_reconnected(&self) {
        self.conn.wait_for(|c| c.is_none()).await;
        self.conn.wait_for(|c| c.is_some()).await;
    }

    /// Waits until the link is connected, up to `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<PeerIdentity, CallError> {
        let wait = self.conn.wait_for(|c| c.is_some());
        match tokio::time::timeout(timeout, wait).await {
            Ok(Some(c)) => Ok(c.peer().clone()),
            _ => Err(CallError::NotConnected(self.addr)),
        }
    }

    /// `msg` for the actor `to` on the peer, framed.
    fn envelope<T: Serialize>(
        &self,
        to: &str,
        kind: EnvelopeKind,
        msg: &T,
    ) -> Result<Bytes, WireError> {
        wire::with_body(msg, |body| {
            wire::encode_frame_out(
                &EnvelopeOut {
                    version: WIRE_VERSION,
                    from: &self.shared.identity.id.0,
                    to,
                    kind,
                    body,
                },
                self.shared.opts.max_frame_bytes,
            )
        })
    }

    /// Sends `msg` to the actor named `to` on the peer; no answer.
    pub async fn cast<T: Serialize>(&self, to: &str, msg: &T) -> Result<(), CallError> {
        let conn = self
            .current()
            .inspect_err(|_| self.shared.stats.incr(|s| &s.casts_dropped_link_down))?;
        let frame = self.envelope(to, EnvelopeKind::Cast, msg)?;
        let n = frame.len() as u64;
        self.shared.faults.pass().await;
        conn.send_cast(frame).await?;
        self.shared.stats.add_n(|s| &s.bytes_sent, n);
        self.shared.stats.incr(|s| &s.envelopes_sent);
        Ok(())
    }

    /// Sends `msg` to the actor named `to` on the peer and waits up to `timeout` for its answer.
    pub async fn call<Q: Serialize, R: DeserializeOwned>(
        &self,
        to: &str,
        msg: &Q,
        timeout: Duration,
    ) -> Result<R, CallError> {
        self.call_inner(to, msg, timeout, None).await
    }

    /// As [`PeerHandle::call`], and fires `acked` as soon as the peer's actor acknowledges the
    /// call ([`Incoming::ack`]), ahead of its answer: a caller that may wait long for the
    /// answer learns within a round trip that the peer took the call. `acked` is dropped
    /// unfired if no acknowledgement comes.
    pub async fn call_acked<Q: Serialize, R: DeserializeOwned>(
        &self,
        to: &str,
        msg: &Q,
        timeout: Duration,
        acked: oneshot::Sender<()>,
    ) -> Result<R, CallError> {
        self.call_inner(to, msg, timeout, Some(acked)).await
    }

    async fn call_inner<Q: Serialize, R: DeserializeOwned>(
        &self,
        to: &str,
        msg: &Q,
        timeout: Duration,
        acked: Option<oneshot::Sender<()>>,
    ) -> Result<R, CallError> {
        let conn = self.current()?;
        let id = self.shared.next_call.fetch_add(1, Ordering::Relaxed);
        let frame = self.envelope(to, EnvelopeKind::Call(id), msg)?;
        let max = self.shared.opts.max_frame_bytes;
        self.shared.stats.incr(|s| &s.envelopes_sent);
        self.shared
            .stats
            .add_n(|s| &s.bytes_sent, frame.len() as u64);
        let sent = async {
            self.shared.faults.pass().await;
            // The transport's one exchange, called directly (each trait call is a boxed
            // future).
            conn.exchange(frame, max, acked).await
        };
        let payload = tokio::time::timeout(timeout, sent)
            .await
            .map_err(|_| CallError::Timeout(timeout))??;
        read_reply(&self.shared, &conn.peer().id, id, &payload)
    }

    /// Starts a call whose answer is handed to `done` instead of awaited: `acked` is set when
    /// the peer's actor acknowledges it ([`Incoming::ack`]), and `done` gets the answer or the
    /// failure exactly once, from wherever it is known (on the in-memory transport, the
    /// answering side: no task per call). No timeout: the caller keeps its own watch (a
    /// member's hop deadline; the question's expiry). Fails at once, without calling `done`,
    /// if the link has no connection or the message cannot be encoded.
    pub fn call_then<Q, R, F>(
        &self,
        to: &str,
        msg: &Q,
        acked: Arc<AtomicBool>,
        done: F,
    ) -> Result<(), CallError>
    where
        Q: Serialize,
        R: DeserializeOwned,
        F: FnOnce(Result<R, CallError>) + Send + 'static,
    {
        let conn = self.current()?;
        let id = self.shared.next_call.fetch_add(1, Ordering::Relaxed);
        let frame = self.envelope(to, EnvelopeKind::Call(id), msg)?;
        let max = self.shared.opts.max_frame_bytes;
        self.shared.stats.incr(|s| &s.envelopes_sent);
        self.shared
            .stats
            .add_n(|s| &s.bytes_sent, frame.len() as u64);
        let shared = self.shared.clone();
        let peer = conn.peer().id.clone();
        let finish = move |r: Result<Bytes, TransportError>| {
            done(
                r.map_err(CallError::from)
                    .and_then(|payload| read_reply(&shared, &peer, id, &payload)),
            );
        };
        if self.shared.faults.quiet() {
            conn.exchange_then(frame, max, acked, Box::new(finish));
        } else {
            // A paused or slowed node: the call leaves when the fault says.
            let faults = self.shared.faults.clone();
            tokio::spawn(async move {
                faults.pass().await;
                conn.exchange_then(frame, max, acked, Box::new(finish));
            });
        }
        Ok(())
    }
}

/// Checks a reply frame to call `id` made to `peer` and decodes its body.
fn read_reply<R: DeserializeOwned>(
    shared: &Shared,
    peer: &NodeId,
    id: u64,
    payload: &[u8],
) -> Result<R, CallError> {
    let env =
        wire::decode_envelope_ref(payload).inspect_err(|e| shared.stats.count_rejection(e))?;
    if env.kind != EnvelopeKind::Reply(id) || env.from != peer.0 {
        let e = WireError::Protocol(format!(
            "expected reply {id} from {peer}, got {:?} from {}",
            env.kind, env.from
        ));
        shared.stats.count_rejection(&e);
        return Err(e.into());
    }
    shared.stats.incr(|s| &s.envelopes_received);
    shared
        .stats
        .add_n(|s| &s.bytes_received, payload.len() as u64);
    Ok(wire::decode_body(env.body)?)
}

enum LinkMode {
    /// Owns one connection (accepted, or dialed once) and ends with it: a task.
    Single(Arc<dyn Connection>),
    /// Dials, and redials with backoff whenever the connection is lost: a supervised actor.
    Outbound,
}

/// Makes `conn` the link's connection for good: lists it among the node's links, announces
/// it, and serves its streams until it ends; then forgets it.
///
/// A task, not an actor: every accepted connection and every dialed-once one is such a link,
/// so a node holds many of them (an endpoint two or three, a server one per leader and per
/// registration in flight), and a ractor actor costs kilobytes (two mailboxes, a supervision
/// tree) where a task costs a few hundred bytes. Nothing here can fail in a way a restart
/// would mend: the link ends with its connection either way.
fn single_link(handle: PeerHandle, conn: Arc<dyn Connection>) {
    let peer = conn.peer().clone();
    handle.conn.set(Some(conn.clone()));
    list_link(&handle, &peer);
    tokio::spawn(async move {
        let reason = serve_connection(handle.shared.clone(), conn).await;
        tracing::info!(addr = %handle.addr, %peer, error = %reason, "link down");
        handle.conn.set(None);
        unlist_link(&handle, &peer);
        handle.shared.emit(LinkEvent::Down {
            peer: Some(peer),
            addr: handle.addr,
            reason,
        });
    });
}

/// Lists a link that just got its connection among the node's links, and announces it.
fn list_link(handle: &PeerHandle, peer: &PeerIdentity) {
    if let Ok(mut links) = handle.shared.links.write() {
        let cells = links.entry(peer.id.clone()).or_default();
        if !cells.iter().any(|c| Arc::ptr_eq(&c.conn, &handle.conn)) {
            cells.push(LinkCell {
                addr: handle.addr,
                conn: handle.conn.clone(),
                actor: handle.actor.clone(),
            });
        }
    }
    handle.shared.emit(LinkEvent::Up {
        peer: peer.clone(),
        addr: handle.addr,
    });
}

/// Takes a link whose connection is gone off the node's list.
fn unlist_link(handle: &PeerHandle, peer: &PeerIdentity) {
    let Ok(mut links) = handle.shared.links.write() else {
        return;
    };
    if let Some(cells) = links.get_mut(&peer.id) {
        cells.retain(|c| !Arc::ptr_eq(&c.conn, &handle.conn));
        if cells.is_empty() {
            links.remove(&peer.id);
        }
    }
}

struct LinkArgs {
    handle: PeerHandle,
    seed: u64,
}

#[derive(Clone, Copy)]
struct PeerLink;

enum PeerLinkMsg {
    Dial,
    Connected(Arc<dyn Connection>),
    DialFailed(TransportError),
    Lost {
        generation: u64,
        reason: TransportError,
    },
}

struct LinkState {
    handle: PeerHandle,
    generation: u64,
    backoff: Backoff,
    peer: Option<PeerIdentity>,
}

impl LinkState {
    fn install(&mut self, myself: &ActorRef<PeerLinkMsg>, conn: Arc<dyn Connection>) {
        self.generation += 1;
        self.backoff.reset();
        let peer = conn.peer().clone();
        self.peer = Some(peer.clone());
        self.handle.conn.set(Some(conn.clone()));
        list_link(&self.handle, &peer);
        let (shared, link, generation) =
            (self.handle.shared.clone(), myself.clone(), self.generation);
        tokio::spawn(async move {
            let reason = serve_connection(shared, conn).await;
            let _ = link.send_message(PeerLinkMsg::Lost { generation, reason });
        });
    }

    fn forget(&mut self) {
        self.handle.conn.set(None);
        if let Some(peer) = &self.peer {
            unlist_link(&self.handle, peer);
        }
    }
}

impl Actor for PeerLink {
    type Msg = PeerLinkMsg;
    type State = LinkState;
    type Arguments = LinkArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: LinkArgs,
    ) -> Result<LinkState, ActorProcessingErr> {
        let state = LinkState {
            backoff: Backoff::new(args.handle.shared.opts.reconnect, args.seed),
            handle: args.handle,
            generation: 0,
            peer: None,
        };
        myself.send_message(PeerLinkMsg::Dial)?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut LinkState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PeerLinkMsg::Dial => {
                let transport = state.handle.shared.transport.clone();
                let faults = state.handle.shared.faults.clone();
                let addr = state.handle.addr;
                let me = myself.clone();
                tokio::spawn(async move {
                    // A paused node dials nothing.
                    faults.pass().await;
                    let msg = match transport.connect(addr).await {
                        Ok(c) => PeerLinkMsg::Connected(c),
                        Err(e) => PeerLinkMsg::DialFailed(e),
                    };
                    let _ = me.send_message(msg);
                });
            }
            PeerLinkMsg::Connected(conn) => state.install(&myself, conn),
            PeerLinkMsg::DialFailed(reason) => {
                let retry_in = state.backoff.next_delay();
                tracing::debug!(addr = %state.handle.addr, error = %reason, ?retry_in, "dial failed");
                state.handle.shared.emit(LinkEvent::DialFailed {
                    addr: state.handle.addr,
                    reason,
                    retry_in,
                });
                myself.send_after(retry_in, || PeerLinkMsg::Dial);
            }
            PeerLinkMsg::Lost { generation, reason } => {
                if generation != state.generation {
                    return Ok(());
                }
                tracing::info!(addr = %state.handle.addr, peer = ?state.peer, error = %reason, "link down");
                state.forget();
                state.handle.shared.emit(LinkEvent::Down {
                    peer: state.peer.clone(),
                    addr: state.handle.addr,
                    reason: reason.clone(),
                });
                let retry_in = state.backoff.next_delay();
                myself.send_after(retry_in, || PeerLinkMsg::Dial);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut LinkState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(conn) = state.handle.conn.get() {
            conn.close("link stopped");
        }
        state.forget();
        Ok(())
    }
}

/// Accepts the peer's streams until the connection ends, serving each in its own task, or
/// right here when it needs no waiting (an in-memory stream on a node with no fault in
/// force); returns why it ended.
async fn serve_connection(shared: Arc<Shared>, conn: Arc<dyn Connection>) -> TransportError {
    let peer = conn.peer().clone();
    loop {
        match conn.accept_stream().await {
            Ok(stream) => match stream.into_immediate() {
                Ok(now) if shared.faults.quiet() => serve_now(&shared, &peer, now),
                Ok(now) => {
                    tokio::spawn(serve_stream(
                        shared.clone(),
                        peer.clone(),
                        AnyStream::Now(now),
                    ));
                }
                Err(stream) => {
                    tokio::spawn(serve_stream(
                        shared.clone(),
                        peer.clone(),
                        AnyStream::Task(stream),
                    ));
                }
            },
            Err(reason) => return reason,
        }
    }
}

/// A stream being served: read and written in a task, or without waiting.
enum AnyStream {
    Task(Box<dyn InboundStream>),
    Now(Box<dyn ImmediateStream>),
}

impl AnyStream {
    fn expects_reply(&self) -> bool {
        match self {
            AnyStream::Task(s) => s.expects_reply(),
            AnyStream::Now(s) => s.expects_reply(),
        }
    }

    async fn read_frame(&mut self, max: usize) -> Result<Bytes, TransportError> {
        match self {
            AnyStream::Task(s) => s.read_frame(max).await,
            AnyStream::Now(s) => s.take_frame(max),
        }
    }

    async fn ack(&mut self) -> Result<(), TransportError> {
        match self {
            AnyStream::Task(s) => s.ack().await,
            AnyStream::Now(s) => {
                s.ack();
                Ok(())
            }
        }
    }

    async fn reply(self, frame: Bytes) -> Result<(), TransportError> {
        match self {
            AnyStream::Task(s) => s.reply(frame).await,
            AnyStream::Now(s) => {
                s.reply(frame);
                Ok(())
            }
        }
    }

    fn refuse(self, code: RefuseCode) {
        match self {
            AnyStream::Task(s) => s.refuse(code),
            AnyStream::Now(s) => s.refuse(code),
        }
    }
}

fn reject(shared: &Shared, peer: &PeerIdentity, stream: AnyStream, e: WireError) {
    shared.stats.count_rejection(&e);
    tracing::warn!(%peer, error = %e, "rejected frame");
    let code = match e {
        WireError::UnknownDestination(_) => RefuseCode::UnknownDestination,
        _ => RefuseCode::Rejected,
    };
    stream.refuse(code);
}

/// An envelope that passed [`admit`]: itself, its call id (none for a cast), and where it goes.
type Admitted<'a> = (EnvelopeRef<'a>, Option<u64>, Arc<dyn Deliver>);

/// Checks one received envelope: it decodes, its sender is the certificate's, its kind fits
/// the stream, and its destination exists. Counts it received if so.
fn admit<'a>(
    shared: &Shared,
    peer: &PeerIdentity,
    payload: &'a [u8],
    expects_reply: bool,
) -> Result<Admitted<'a>, WireError> {
    let env = wire::decode_envelope_ref(payload)?;
    if env.from != peer.id.0 {
        return Err(WireError::Spoofed {
            claimed: env.from.to_string(),
            actual: peer.id.0.to_string(),
        });
    }
    let call_id = match (env.kind, expects_reply) {
        (EnvelopeKind::Cast, false) => None,
        (EnvelopeKind::Call(id), true) => Some(id),
        (kind, _) => {
            return Err(WireError::Protocol(format!(
                "{kind:?} on a stream that {} a reply",
                if expects_reply {
                    "expects"
                } else {
                    "cannot carry"
                }
            )));
        }
    };
    let Some(target) = shared.router.lookup(env.to) else {
        return Err(WireError::UnknownDestination(env.to.to_string()));
    };
    shared.stats.incr(|s| &s.envelopes_received);
    shared
        .stats
        .add_n(|s| &s.bytes_received, payload.len() as u64);
    Ok((env, call_id, target))
}

/// Serves a stream that needs no waiting, right in the connection's loop: checked and
/// delivered now; the actor's acknowledgement and answer go straight onto the stream.
fn serve_now(shared: &Arc<Shared>, peer: &PeerIdentity, mut stream: Box<dyn ImmediateStream>) {
    let payload = match stream.take_frame(shared.opts.max_frame_bytes) {
        Ok(p) => p,
        Err(TransportError::Wire(e)) => return reject(shared, peer, AnyStream::Now(stream), e),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "stream ended");
            return;
        }
    };
    let (env, call_id, target) = match admit(shared, peer, &payload, stream.expects_reply()) {
        Ok(a) => a,
        Err(e) => return reject(shared, peer, AnyStream::Now(stream), e),
    };
    let to = compact_str::CompactString::from(env.to);
    let at = body_at(&payload, env.body);
    let body = body_of(payload, at);
    let incoming = Incoming {
        from: peer.clone(),
        body,
        reply: call_id.map(|id| {
            ReplyPort(Port::Now(NowPort {
                stream,
                shared: shared.clone(),
                to: peer.id.clone(),
                id,
            }))
        }),
        stats: shared.stats.clone(),
    };
    // A destination that stopped since the lookup drops the call with it: the caller sees
    // it refused unanswered.
    if target.deliver(incoming).is_err() {
        tracing::debug!(%peer, %to, "destination stopped before delivery");
    }
}

/// The envelope's body, `body` (a slice of `payload`), as its own `Bytes`: the frame itself,
/// advanced past the header, when the body ends it (it does: it is the envelope's last field).
/// A slice would make a frame built from one buffer allocate a shared header on every
/// message.
fn body_of(payload: Bytes, at: std::ops::Range<usize>) -> Bytes {
    if at.end == payload.len() {
        let mut b = payload;
        bytes::Buf::advance(&mut b, at.start);
        b
    } else {
        payload.slice(at)
    }
}

/// Where `body`, a slice of `payload`, lies in it.
fn body_at(payload: &[u8], body: &[u8]) -> std::ops::Range<usize> {
    let start = body.as_ptr() as usize - payload.as_ptr() as usize;
    start..start + body.len()
}

/// Reads, checks and delivers one stream's envelope; answers it if it is a call.
async fn serve_stream(shared: Arc<Shared>, peer: PeerIdentity, mut stream: AnyStream) {
    let payload = match stream.read_frame(shared.opts.max_frame_bytes).await {
        Ok(p) => p,
        Err(TransportError::Wire(e)) => return reject(&shared, &peer, stream, e),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "stream ended");
            return;
        }
    };
    // A paused node holds what it received; a slowed one waits.
    shared.faults.pass().await;
    let (env, call_id, target) = match admit(&shared, &peer, &payload, stream.expects_reply()) {
        Ok(a) => a,
        Err(e) => return reject(&shared, &peer, stream, e),
    };
    let (tx, rx) = oneshot::channel();
    let (ack_tx, ack_rx) = oneshot::channel();
    let incoming = Incoming {
        from: peer.clone(),
        body: payload.slice_ref(env.body),
        reply: call_id.map(|_| {
            ReplyPort(Port::Task {
                tx,
                ack: Some(ack_tx),
            })
        }),
        stats: shared.stats.clone(),
    };
    if target.deliver(incoming).is_err() {
        return reject(
            &shared,
            &peer,
            stream,
            WireError::UnknownDestination(env.to.to_string()),
        );
    }
    let Some(id) = call_id else { return };
    let to = peer.id.clone();
    answer_stream(shared, to, id, stream, rx, ack_rx).await;
}

/// Writes the local actor's acknowledgement and answer to call `id` from `to` onto its
/// stream, as they come (an acknowledgement given first goes out first), each after what the
/// node's faults say; refuses the call if no answer comes within the serve timeout.
async fn answer_stream(
    shared: Arc<Shared>,
    to: NodeId,
    id: u64,
    mut stream: AnyStream,
    mut rx: oneshot::Receiver<Result<Vec<u8>, RefuseCode>>,
    ack_rx: oneshot::Receiver<()>,
) {
    let answered = async {
        let mut ack_rx = Some(ack_rx);
        loop {
            tokio::select! {
                // An acknowledgement given before the answer goes out before it.
                biased;
                a = async {
                    match ack_rx.as_mut() {
                        Some(ack) => ack.await,
                        None => std::future::pending().await,
                    }
                }, if ack_rx.is_some() => {
                    ack_rx = None;
                    if a.is_ok() {
                        shared.faults.pass().await;
                        if let Err(e) = stream.ack().await {
                            tracing::debug!(peer = %to, error = %e, "acknowledgement not delivered");
                        }
                    }
                }
                r = &mut rx => return r,
            }
        }
    };
    let answer = match tokio::time::timeout(shared.opts.serve_timeout, answered).await {
        Ok(Ok(Ok(body))) => body,
        Ok(Ok(Err(code))) => return stream.refuse(code),
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(peer = %to, "local actor did not answer a call");
            return stream.refuse(RefuseCode::NoAnswer);
        }
    };
    shared.faults.pass().await;
    match reply_frame(&shared, to.as_str(), id, &answer) {
        Ok(frame) => {
            if let Err(e) = stream.reply(frame).await {
                tracing::debug!(peer = %to, error = %e, "reply not delivered");
            } else {
                shared.stats.incr(|s| &s.envelopes_sent);
            }
        }
        Err(e) => {
            tracing::warn!(peer = %to, error = %e, "reply could not be encoded");
            stream.refuse(RefuseCode::NoAnswer);
        }
    }
}

/// Asks a node for its status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusRequest;

/// A node's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub identity: PeerIdentity,
    /// Its address.
    pub addr: SocketAddr,
    /// Its connected peers.
    pub peers: Vec<PeerInfo>,
    /// Its counters.
    pub stats: WireStatsSnapshot,
    /// The identity of whoever asked, as this node read it from their certificate.
    pub asked_by: PeerIdentity,
}

/// Answers [`StatusRequest`] from servers and operators (any role), right in the stream's
/// task: the answer is a read of shared state, so it needs no mailbox (an actor would cost
/// every node kilobytes for it).
struct StatusService(std::sync::Weak<Shared>);

impl Deliver for StatusService {
    fn deliver(&self, mut msg: Incoming) -> Result<(), DestinationGone> {
        let shared = self.0.upgrade().ok_or(DestinationGone)?;
        if msg.decode::<StatusRequest>().is_err() || !msg.from.role.allows(OperatorRole::Viewer) {
            msg.refuse();
            return Ok(());
        }
        let peers = connected_peers(&shared);
        let status = NodeStatus {
            identity: shared.identity.clone(),
            addr: shared.transport.local_addr(),
            peers,
            stats: shared.stats.snapshot(),
            asked_by: msg.from.clone(),
        };
        if let Err(e) = msg.answer(&status) {
            tracing::warn!(error = %e, "status could not be encoded");
        }
        Ok(())
    }
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

    fn same(a: &Option<Arc<dyn Deliver>>, b: &Arc<dyn Deliver>) -> bool {
        a.as_ref().is_some_and(|a| Arc::ptr_eq(a, b))
    }

    #[test]
    fn a_route_registered_again_replaces_the_first_and_removing_one_leaves_the_others() {
        let router = Router::default();
        let (first, second, other): (Arc<dyn Deliver>, Arc<dyn Deliver>, Arc<dyn Deliver>) =
            (Arc::new(Gone), Arc::new(Gone), Arc::new(Gone));
        router.register("member", first.clone());
        router.register("a-name-longer-than-twenty-four-bytes", other.clone());
        assert!(same(&router.lookup("member"), &first));
        router.register("member", second.clone());
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
