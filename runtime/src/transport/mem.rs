//! An in-process network for simulations of many nodes in one process.
//!
//! Nothing is authenticated by TLS here: each [`MemTransport`] is created with its identity by
//! the simulation that owns the [`MemNetwork`]. Everything else behaves like the QUIC
//! transport: one frame per stream, frames are bytes that the receiving node decodes and
//! checks, refusals carry the same codes, and links can be slowed, made lossy (a lost frame is
//! retransmitted after a delay, as QUIC would) or partitioned (a partitioned connection times
//! out after the idle timeout, and dials across the partition fail after it). A host can crash
//! silently (everything to and from it vanishes, its connections time out), and frames can be
//! delivered twice (duplication above the transport, as an at-least-once resend would: the
//! receiver handles both copies of a request, the caller gets one reply).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use tokio::sync::oneshot;

use super::{Connection, ImmediateStream, InboundStream, RefuseCode, Transport, TransportError};
use crate::identity::PeerIdentity;
use crate::stats::WireStats;
use crate::wire::WireError;

/// Smallest delay before a lost frame is sent again.
const RETRANSMIT_MIN: Duration = Duration::from_millis(20);

struct Listener {
    identity: PeerIdentity,
    accept: Arc<AcceptQueue>,
}

/// Connections dialed to a node and not accepted yet. Like [`Queue`], it allocates nothing
/// until used (a tokio channel's first block was ~1 KB on every simulated node).
#[derive(Default)]
struct AcceptQueue {
    items: StdMutex<VecDeque<Arc<dyn Connection>>>,
    closed: AtomicBool,
    ready: tokio::sync::Notify,
}

impl AcceptQueue {
    /// Queues `c`; `false` once the node stopped listening.
    fn push(&self, c: Arc<dyn Connection>) -> bool {
        {
            let mut items = crate::sync::lock(&self.items);
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            items.push_back(c);
        }
        self.ready.notify_one();
        true
    }

    /// Stops listening: connections queued before are still taken, then `None`.
    fn close(&self) {
        {
            let _items = crate::sync::lock(&self.items);
            self.closed.store(true, Ordering::Release);
        }
        self.ready.notify_waiters();
        self.ready.notify_one();
    }

    async fn pop(&self) -> Option<Arc<dyn Connection>> {
        loop {
            {
                let mut items = crate::sync::lock(&self.items);
                if let Some(c) = items.pop_front() {
                    if items.is_empty() && items.capacity() > 4 {
                        items.shrink_to_fit();
                    }
                    return Some(c);
                }
                if self.closed.load(Ordering::Acquire) {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }
}

struct NetState {
    listeners: HashMap<SocketAddr, Listener>,
    latency_default: Duration,
    latency: HashMap<(IpAddr, IpAddr), Duration>,
    loss: f64,
    /// Loss on every link of one host.
    host_loss: HashMap<IpAddr, f64>,
    /// Probability that a cast is delivered twice.
    dup: f64,
    /// Duplication on every link of one host.
    host_dup: HashMap<IpAddr, f64>,
    /// Hosts that crashed: nothing reaches them or leaves them.
    down: HashSet<IpAddr>,
    /// Unordered pairs of hosts that cannot reach each other.
    cut: HashSet<(IpAddr, IpAddr)>,
    rng: SmallRng,
    idle_timeout: Duration,
    /// Open connections by each of their two ends' addresses (a node's close finds its own
    /// without scanning the whole network).
    conns: HashMap<SocketAddr, Vec<std::sync::Weak<ConnShared>>>,
    /// Link rates, if set: each frame occupies its sender's uplink and then its receiver's
    /// downlink for its size over their rates.
    bandwidth: Option<Bandwidth>,
}

/// Frames shorter than this (requests, probes, registrations, answers) pass links without
/// waiting behind bulk transfers.
const CONTROL_FRAME: usize = 4096;

/// Per-host link rates and when each host's links are next free.
struct Bandwidth {
    /// Bytes per second of an ordinary host's uplink and downlink.
    host: f64,
    /// Bytes per second of the server's links, and the server's address.
    server: (IpAddr, f64),
    /// When each host's (uplink, downlink) is next free.
    free: HashMap<IpAddr, (tokio::time::Instant, tokio::time::Instant)>,
}

impl Bandwidth {
    fn rate(&self, ip: IpAddr) -> f64 {
        if ip == self.server.0 {
            self.server.1
        } else {
            self.host
        }
    }

    /// When a frame of `len` bytes sent now from `from` lands at `to`, `wire` after it
    /// leaves `from`'s uplink. A frame under [`CONTROL_FRAME`] bytes is not queued behind
    /// bulk transfers (a link that shares itself fairly between flows lets it through).
    fn carry(&mut self, from: IpAddr, to: IpAddr, len: usize, wire: Duration) -> Duration {
        if len < CONTROL_FRAME {
            return wire;
        }
        let now = tokio::time::Instant::now();
        let up = Duration::from_secs_f64(len as f64 / self.rate(from));
        let down = Duration::from_secs_f64(len as f64 / self.rate(to));
        let sent = {
            let f = self.free.entry(from).or_insert((now, now));
            let start = f.0.max(now);
            f.0 = start + up;
            f.0
        };
        let f = self.free.entry(to).or_insert((now, now));
        let start = f.1.max(sent + wire);
        f.1 = start + down;
        f.1 - now
    }
}

impl NetState {
    fn track(&mut self, c: &Arc<ConnShared>) {
        for end in [c.ends.0, c.ends.1] {
            let list = self.conns.entry(end).or_default();
            // Forget closed ones now and then: amortised O(1) per connection.
            if list.len() >= 16 && list.len().is_power_of_two() {
                list.retain(|w| w.strong_count() > 0);
            }
            list.push(Arc::downgrade(c));
        }
    }
}

/// The shared in-memory network.
#[derive(Clone)]
pub struct MemNetwork {
    inner: Arc<NetInner>,
}

struct NetInner {
    state: StdMutex<NetState>,
    /// No fault is set (no cut, crashed host, latency, loss or duplication): every frame is
    /// delivered at once, and the frames of a fault-free fleet (both threads, every hop) do
    /// not take the network's lock. Kept up to date under the lock by each change.
    quiet: AtomicBool,
}

impl std::fmt::Debug for MemNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemNetwork")
    }
}

fn pair(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

enum Fate {
    Deliver(Duration),
    Cut,
}

impl MemNetwork {
    /// A network whose random choices (loss) come from `seed`; idle connections across a
    /// partition time out after `idle_timeout`.
    pub fn new(seed: u64, idle_timeout: Duration) -> MemNetwork {
        MemNetwork {
            inner: Arc::new(NetInner {
                quiet: AtomicBool::new(true),
                state: StdMutex::new(NetState {
                    listeners: HashMap::new(),
                    latency_default: Duration::ZERO,
                    latency: HashMap::new(),
                    loss: 0.0,
                    host_loss: HashMap::new(),
                    dup: 0.0,
                    host_dup: HashMap::new(),
                    down: HashSet::new(),
                    cut: HashSet::new(),
                    rng: SmallRng::seed_from_u64(seed),
                    idle_timeout,
                    conns: HashMap::new(),
                    bandwidth: None,
                }),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        crate::sync::lock(&self.inner.state)
    }

    /// Changes the faults, keeping [`NetInner::quiet`] true to them.
    fn change<R>(&self, f: impl FnOnce(&mut NetState) -> R) -> R {
        let mut st = self.lock();
        let r = f(&mut st);
        self.inner.quiet.store(st.quiet(), Ordering::Release);
        r
    }

    fn is_quiet(&self) -> bool {
        self.inner.quiet.load(Ordering::Acquire)
    }

    /// Link rates, in megabits per second: every host's uplink and downlink, and the
    /// server's (at `server`). A frame occupies its sender's uplink and then its receiver's
    /// downlink for its size over each rate, frames one after another on each link, so
    /// transfer times mean something in a simulation.
    pub fn set_bandwidth(&self, host_mbps: f64, server: IpAddr, server_mbps: f64) {
        let bps = |mbps: f64| mbps.max(0.001) * 1_000_000.0 / 8.0;
        self.change(|st| {
            st.bandwidth = Some(Bandwidth {
                host: bps(host_mbps),
                server: (server, bps(server_mbps)),
                free: HashMap::new(),
            })
        });
    }

    /// One-way latency of every link without its own setting.
    pub fn set_default_latency(&self, d: Duration) {
        self.change(|st| st.latency_default = d);
    }

    /// One-way latency between two hosts.
    pub fn set_latency(&self, a: IpAddr, b: IpAddr, d: Duration) {
        self.change(|st| st.latency.insert(pair(a, b), d));
    }

    /// Probability that a frame is lost once (and retransmitted).
    pub fn set_loss(&self, p: f64) {
        self.change(|st| st.loss = p.clamp(0.0, 0.99));
    }

    /// Probability that a frame to or from `host` is lost once (and retransmitted); 0 clears.
    pub fn set_host_loss(&self, host: IpAddr, p: f64) {
        self.change(|st| {
            if p <= 0.0 {
                st.host_loss.remove(&host);
            } else {
                st.host_loss.insert(host, p.clamp(0.0, 0.99));
            }
        });
    }

    /// Probability that any frame is delivered twice (a request's second copy is handled
    /// but its reply goes nowhere).
    pub fn set_duplication(&self, p: f64) {
        self.change(|st| st.dup = p.clamp(0.0, 1.0));
    }

    /// Probability that a frame to or from `host` is delivered twice; 0 clears.
    pub fn set_host_duplication(&self, host: IpAddr, p: f64) {
        self.change(|st| {
            if p <= 0.0 {
                st.host_dup.remove(&host);
            } else {
                st.host_dup.insert(host, p.clamp(0.0, 1.0));
            }
        });
    }

    /// `host` crashes silently: from now on nothing reaches it or leaves it (not even a close
    /// when its node shuts down), so its peers notice only by timeouts.
    pub fn crash(&self, host: IpAddr) {
        self.change(|st| st.down.insert(host));
        self.time_out_cut();
    }

    /// `host` may be reached again ([`MemNetwork::bind`] does this for a restarted node).
    pub fn revive(&self, host: IpAddr) {
        self.change(|st| st.down.remove(&host));
    }

    /// Removes every partition, loss and duplication setting (crashed hosts stay down).
    pub fn clear_faults(&self) {
        self.change(|st| {
            st.cut.clear();
            st.loss = 0.0;
            st.host_loss.clear();
            st.dup = 0.0;
            st.host_dup.clear();
        });
    }

    fn duplicates(&self, from: IpAddr, to: IpAddr) -> bool {
        if self.is_quiet() {
            return false;
        }
        let mut st = self.lock();
        let p = [
            st.dup,
            st.host_dup.get(&from).copied().unwrap_or(0.0),
            st.host_dup.get(&to).copied().unwrap_or(0.0),
        ]
        .into_iter()
        .fold(0.0, f64::max);
        p > 0.0 && st.rng.random_bool(p)
    }

    /// Cuts every host in `a` off from every host in `b`.
    pub fn partition(&self, a: &[IpAddr], b: &[IpAddr]) {
        self.change(|st| {
            for x in a {
                for y in b {
                    st.cut.insert(pair(*x, *y));
                }
            }
        });
        self.time_out_cut();
    }

    /// Connections that now cross a cut or touch a crashed host time out after the idle
    /// timeout, unless healed by then.
    fn time_out_cut(&self) {
        let mut st = self.lock();
        let idle = st.idle_timeout;
        for list in st.conns.values_mut() {
            list.retain(|w| w.strong_count() > 0);
        }
        st.conns.retain(|_, list| !list.is_empty());
        // Each connection is listed under both ends: take it under its first.
        let crossing: Vec<Arc<ConnShared>> = st
            .conns
            .iter()
            .flat_map(|(addr, list)| list.iter().map(move |w| (addr, w)))
            .filter_map(|(addr, w)| w.upgrade().filter(|c| c.ends.0 == *addr))
            .filter(|c| st.blocked(c.ends.0.ip(), c.ends.1.ip()))
            .collect();
        drop(st);
        for c in crossing {
            let net = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(idle).await;
                if net.is_cut(c.ends.0.ip(), c.ends.1.ip()) {
                    c.close(TransportError::TimedOut);
                }
            });
        }
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.change(|st| st.cut.clear());
    }

    fn is_cut(&self, a: IpAddr, b: IpAddr) -> bool {
        self.lock().blocked(a, b)
    }

    fn fate(&self, from: IpAddr, to: IpAddr) -> Fate {
        self.fate_sized(from, to, 0)
    }

    /// The fate of a frame of `len` bytes.
    fn fate_sized(&self, from: IpAddr, to: IpAddr, len: usize) -> Fate {
        if self.is_quiet() {
            return Fate::Deliver(Duration::ZERO);
        }
        let mut st = self.lock();
        if st.blocked(from, to) {
            return Fate::Cut;
        }
        let one_way = st
            .latency
            .get(&pair(from, to))
            .copied()
            .unwrap_or(st.latency_default);
        let mut delay = one_way;
        let loss = [
            st.loss,
            st.host_loss.get(&from).copied().unwrap_or(0.0),
            st.host_loss.get(&to).copied().unwrap_or(0.0),
        ]
        .into_iter()
        .fold(0.0, f64::max);
        while loss > 0.0 && st.rng.random_bool(loss) {
            delay += (one_way * 3).max(RETRANSMIT_MIN);
        }
        if let Some(b) = st.bandwidth.as_mut() {
            delay = b.carry(from, to, len, delay);
        }
        Fate::Deliver(delay)
    }

    /// A transport for a node at `addr` with `identity`, listening for connections.
    pub fn bind(
        &self,
        addr: SocketAddr,
        identity: PeerIdentity,
    ) -> Result<Arc<MemTransport>, TransportError> {
        let accept = Arc::new(AcceptQueue::default());
        let mut st = self.lock();
        st.down.remove(&addr.ip());
        self.inner.quiet.store(st.quiet(), Ordering::Release);
        if st.listeners.contains_key(&addr) {
            return Err(TransportError::Connect {
                addr,
                reason: "address in use".into(),
            });
        }
        st.listeners.insert(
            addr,
            Listener {
                identity: identity.clone(),
                accept: accept.clone(),
            },
        );
        Ok(Arc::new(MemTransport {
            net: self.clone(),
            addr,
            identity,
            stats: Arc::new(WireStats::default()),
            accepted: accept,
        }))
    }
}

impl NetState {
    fn blocked(&self, a: IpAddr, b: IpAddr) -> bool {
        self.down.contains(&a) || self.down.contains(&b) || self.cut.contains(&pair(a, b))
    }

    /// No fault of any kind is set.
    fn quiet(&self) -> bool {
        self.cut.is_empty()
            && self.down.is_empty()
            && self.latency.is_empty()
            && self.latency_default.is_zero()
            && self.loss == 0.0
            && self.host_loss.is_empty()
            && self.dup == 0.0
            && self.host_dup.is_empty()
            && self.bandwidth.is_none()
    }
}

/// One node's end of the in-memory network.
pub struct MemTransport {
    net: MemNetwork,
    addr: SocketAddr,
    identity: PeerIdentity,
    stats: Arc<WireStats>,
    accepted: Arc<AcceptQueue>,
}

impl Drop for MemTransport {
    /// Dialing a node whose transport is gone fails at once (as it did when the accept queue
    /// was a channel whose receiver this held).
    fn drop(&mut self) {
        self.accepted.close();
        // Nobody is left to take what was dialed: dropping those closes them for their
        // dialers too. (A transport that is closed but still held, as on a crash, keeps them
        // for its accept loop, as a closed channel kept what was sent before.)
        let queued = std::mem::take(&mut *crate::sync::lock(&self.accepted.items));
        drop(queued);
    }
}

impl std::fmt::Debug for MemTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemTransport({} at {})", self.identity, self.addr)
    }
}

#[async_trait]
impl Transport for MemTransport {
    fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn stats(&self) -> &Arc<WireStats> {
        &self.stats
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Arc<dyn Connection>, TransportError> {
        let fail = |reason: &str| TransportError::Connect {
            addr,
            reason: reason.into(),
        };
        // A handshake is one round trip.
        let (rtt, idle) = match self.net.fate(self.addr.ip(), addr.ip()) {
            Fate::Deliver(d) => (d * 2, Duration::ZERO),
            Fate::Cut => (Duration::ZERO, self.net.lock().idle_timeout),
        };
        if !idle.is_zero() {
            tokio::time::sleep(idle).await;
            return Err(fail("timed out"));
        }
        if !rtt.is_zero() {
            tokio::time::sleep(rtt).await;
        }
        let (peer, accept) = {
            let st = self.net.lock();
            let l = st
                .listeners
                .get(&addr)
                .ok_or_else(|| fail("no node listening"))?;
            (l.identity.clone(), l.accept.clone())
        };
        let shared = Arc::new(ConnShared {
            net: self.net.clone(),
            ends: (self.addr, addr),
            closed: StdMutex::new(None),
            closed_wake: tokio::sync::Notify::new(),
            is_closed: AtomicBool::new(false),
            queues: Default::default(),
        });
        self.net.lock().track(&shared);
        let server_end: Arc<dyn Connection> = Arc::new(MemConnection {
            net: self.net.clone(),
            shared: shared.clone(),
            local: addr,
            remote: self.addr,
            peer: self.identity.clone(),
            to: TO_CLIENT,
        });
        if !accept.push(server_end) {
            return Err(fail("node stopped"));
        }
        Ok(Arc::new(MemConnection {
            net: self.net.clone(),
            shared,
            local: self.addr,
            remote: addr,
            peer,
            to: TO_SERVER,
        }))
    }

    async fn accept(&self) -> Option<Arc<dyn Connection>> {
        self.accepted.pop().await
    }

    fn close(&self) {
        let mut st = self.net.lock();
        // Another node may listen here by now (this one was restarted): leave that one be.
        if st
            .listeners
            .get(&self.addr)
            .is_some_and(|l| Arc::ptr_eq(&l.accept, &self.accepted))
        {
            st.listeners.remove(&self.addr);
        }
        self.accepted.close();
        let crashed = st.down.contains(&self.addr.ip());
        let idle = st.idle_timeout;
        let mine: Vec<_> = st
            .conns
            .remove(&self.addr)
            .unwrap_or_default()
            .iter()
            .filter_map(|w| w.upgrade())
            .collect();
        drop(st);
        if crashed {
            // A crash: no close reaches anyone; the peers' ends time out, even if a new
            // node comes up at this address meanwhile.
            tokio::spawn(async move {
                tokio::time::sleep(idle).await;
                for c in mine {
                    c.close(TransportError::TimedOut);
                }
            });
            return;
        }
        for c in mine {
            c.close(TransportError::LocallyClosed);
        }
    }
}

struct ConnShared {
    /// The network it crosses (what its streams' acknowledgements and replies go through).
    net: MemNetwork,
    ends: (SocketAddr, SocketAddr),
    /// Why it closed, once it did. (A mutex and a `Notify`, not a watch channel: that costs
    /// ~350 bytes, on every connection of a simulated fleet.)
    closed: StdMutex<Option<TransportError>>,
    closed_wake: tokio::sync::Notify,
    /// Set with `closed`; read without a lock by each stream's reader.
    is_closed: AtomicBool,
    /// The streams in flight each way, indexed by [`TO_SERVER`] and [`TO_CLIENT`].
    queues: [Queue; 2],
}

/// The queue of streams the dialing end opened.
const TO_SERVER: usize = 0;
/// The queue of streams the accepting end opened.
const TO_CLIENT: usize = 1;

impl ConnShared {
    fn close(&self, why: TransportError) {
        let closed = {
            let mut c = crate::sync::lock(&self.closed);
            c.is_none() && {
                *c = Some(why);
                true
            }
        };
        if closed {
            self.is_closed.store(true, Ordering::Release);
            for q in &self.queues {
                // Streams never taken are dropped (their callers see the connection gone),
                // and each end's reader wakes and finds it so.
                let pending = std::mem::take(&mut *crate::sync::lock(&q.items));
                q.ready.notify_one();
                drop(pending);
            }
            self.closed_wake.notify_waiters();
        }
    }

    fn error(&self) -> Option<TransportError> {
        crate::sync::lock(&self.closed).clone()
    }

    async fn wait_closed(&self) -> TransportError {
        crate::wake::wait_until(&self.closed_wake, || self.error()).await
    }
}

struct MemStream {
    frame: Bytes,
    reply: Option<ReplyTo>,
    /// Fired by the answerer's acknowledgement (acknowledged requests).
    ack: Option<AckTo>,
}

/// Where a request's reply goes: to the caller's task, or to its callback.
enum ReplyTo {
    Chan(oneshot::Sender<Result<Bytes, RefuseCode>>),
    Call(ReplyCall),
}

/// Where a request's acknowledgement goes.
enum AckTo {
    Chan(oneshot::Sender<()>),
    Flag(Arc<AtomicBool>),
}

impl AckTo {
    fn fire(self) {
        match self {
            AckTo::Chan(tx) => {
                let _ = tx.send(());
            }
            AckTo::Flag(f) => f.store(true, Ordering::Release),
        }
    }
}

/// An exchange's callback ([`Connection::exchange_then`]); called exactly once: with the
/// reply, or, if it is dropped unanswered (the answerer dropped the stream, or the reply was
/// lost on a cut link), with why.
struct ReplyCall {
    done: Option<super::ReplyFn>,
    conn: Arc<ConnShared>,
    max_reply: usize,
}

impl ReplyCall {
    fn answer(mut self, r: Result<Bytes, RefuseCode>) {
        let outcome = match r {
            Ok(frame) => check_reply(frame, self.max_reply),
            Err(code) => Err(TransportError::Refused(code)),
        };
        if let Some(done) = self.done.take() {
            done(outcome);
        }
    }
}

impl Drop for ReplyCall {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(Err(self.conn.error().unwrap_or(TransportError::Lost(
                "peer dropped the stream".into(),
            ))));
        }
    }
}

impl ReplyTo {
    fn send(self, r: Result<Bytes, RefuseCode>) {
        match self {
            ReplyTo::Chan(tx) => {
                let _ = tx.send(r);
            }
            ReplyTo::Call(c) => c.answer(r),
        }
    }
}

/// A reply frame's payload, refused if over `max_reply`.
fn check_reply(frame: Bytes, max_reply: usize) -> Result<Bytes, TransportError> {
    let payload = strip_prefix(frame)?;
    if payload.len() > max_reply {
        return Err(WireError::Oversized {
            len: payload.len(),
            max: max_reply,
        }
        .into());
    }
    Ok(payload)
}

/// One direction of a connection: an unbounded queue that allocates nothing until used and
/// then only what is in flight. (A tokio unbounded channel allocates a 32-slot block up front:
/// ~1.5 KB per direction of every connection, which at 100,000 simulated endpoints was the
/// larger part of what a connection cost.)
#[derive(Default)]
struct Queue {
    items: StdMutex<VecDeque<MemStream>>,
    ready: tokio::sync::Notify,
}

impl Queue {
    /// Queues `s`, unless the connection closed: then it is dropped, and a caller waiting on
    /// it sees the connection gone. (Checked under the lock `close` empties the queue with,
    /// so nothing is left behind: a stream's callback holds the connection.)
    fn push(&self, conn: &ConnShared, s: MemStream) {
        {
            let mut items = crate::sync::lock(&self.items);
            if conn.is_closed.load(Ordering::Acquire) {
                drop(items);
                drop(s);
                return;
            }
            items.push_back(s);
        }
        // One reader per direction; a permit is kept if it is not waiting yet.
        self.ready.notify_one();
    }

    /// The next stream, or why the connection ended (then nothing more is taken).
    async fn pop(&self, conn: &ConnShared) -> Result<MemStream, TransportError> {
        loop {
            if conn.is_closed.load(Ordering::Acquire) {
                return Err(conn.error().unwrap_or(TransportError::LocallyClosed));
            }
            if let Some(s) = crate::sync::lock(&self.items).pop_front() {
                return Ok(s);
            }
            self.ready.notified().await;
        }
    }
}

struct MemConnection {
    net: MemNetwork,
    shared: Arc<ConnShared>,
    local: SocketAddr,
    remote: SocketAddr,
    peer: PeerIdentity,
    /// The queue this end sends on (the other end reads it).
    to: usize,
}

impl Drop for MemConnection {
    /// As with QUIC, a connection whose last handle at one end is dropped is closed for both.
    fn drop(&mut self) {
        self.shared
            .close(TransportError::ClosedByPeer("connection dropped".into()));
    }
}

impl MemConnection {
    /// Sends after the link's delay; frames on a cut link vanish (the connection will time out).
    fn send_delayed(&self, s: MemStream) -> Result<(), TransportError> {
        if self.shared.is_closed.load(Ordering::Acquire)
            && let Some(e) = self.shared.error()
        {
            return Err(e);
        }
        if self.net.duplicates(self.local.ip(), self.remote.ip()) {
            // The copy of a request is handled too, but its reply goes nowhere: an
            // at-least-once resend whose first reply was lost.
            let reply = s
                .reply
                .as_ref()
                .map(|_| ReplyTo::Chan(oneshot::channel().0));
            self.send_once(MemStream {
                frame: s.frame.clone(),
                reply,
                ack: None,
            });
        }
        self.send_once(s);
        Ok(())
    }

    fn send_once(&self, s: MemStream) {
        match self
            .net
            .fate_sized(self.local.ip(), self.remote.ip(), s.frame.len())
        {
            Fate::Cut => {}
            Fate::Deliver(d) if d.is_zero() => self.shared.queues[self.to].push(&self.shared, s),
            Fate::Deliver(d) => {
                let (shared, to) = (self.shared.clone(), self.to);
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    shared.queues[to].push(&shared, s);
                });
            }
        }
    }
}

#[async_trait]
impl Connection for MemConnection {
    fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    async fn send_cast(&self, frame: Bytes) -> Result<(), TransportError> {
        self.send_delayed(MemStream {
            frame,
            reply: None,
            ack: None,
        })
    }

    async fn exchange(
        &self,
        frame: Bytes,
        max_reply: usize,
        ack: Option<oneshot::Sender<()>>,
    ) -> Result<Bytes, TransportError> {
        let (tx, rx) = oneshot::channel();
        self.send_delayed(MemStream {
            frame,
            reply: Some(ReplyTo::Chan(tx)),
            ack: ack.map(AckTo::Chan),
        })?;
        let reply = tokio::select! {
            r = rx => r,
            e = self.shared.wait_closed() => return Err(e),
        };
        match reply {
            Ok(Ok(frame)) => check_reply(frame, max_reply),
            Ok(Err(code)) => Err(TransportError::Refused(code)),
            Err(_) => Err(self
                .shared
                .error()
                .unwrap_or(TransportError::Lost("peer dropped the stream".into()))),
        }
    }

    fn exchange_then(
        self: Arc<Self>,
        frame: Bytes,
        max_reply: usize,
        acked: Arc<AtomicBool>,
        done: super::ReplyFn,
    ) {
        let call = ReplyCall {
            done: Some(done),
            conn: self.shared.clone(),
            max_reply,
        };
        // On failure here, the stream (and with it the callback, which then reports why) is
        // dropped.
        let _ = self.send_delayed(MemStream {
            frame,
            reply: Some(ReplyTo::Call(call)),
            ack: Some(AckTo::Flag(acked)),
        });
    }

    async fn accept_stream(&self) -> Result<Box<dyn InboundStream>, TransportError> {
        let s = self.shared.queues[1 - self.to].pop(&self.shared).await?;
        Ok(Box::new(MemInbound {
            frame: Some(s.frame),
            reply: s.reply,
            ack: s.ack,
            acked: None,
            // The connection's own counter, not the network's (which every stream of
            // every simulated endpoint would share, on both threads).
            conn: self.shared.clone(),
            ends: (self.local.ip(), self.remote.ip()),
        }))
    }

    async fn closed(&self) -> TransportError {
        self.shared.wait_closed().await
    }

    fn close(&self, reason: &str) {
        self.shared
            .close(TransportError::ClosedByPeer(reason.to_string()));
    }
}

fn strip_prefix(frame: Bytes) -> Result<Bytes, TransportError> {
    if frame.len() < 4 {
        return Err(WireError::Truncated.into());
    }
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    if frame.len() - 4 != len {
        return Err(WireError::Truncated.into());
    }
    // Advanced, not sliced: a slice of a frame built from one buffer allocates a shared
    // header for it.
    let mut payload = frame;
    bytes::Buf::advance(&mut payload, 4);
    Ok(payload)
}

struct MemInbound {
    frame: Option<Bytes>,
    reply: Option<ReplyTo>,
    ack: Option<AckTo>,
    /// The caller's flag, once acknowledged: set again as the reply lands, so a reply that
    /// overtakes its acknowledgement on a link with latency never arrives unacknowledged.
    acked: Option<Arc<AtomicBool>>,
    conn: Arc<ConnShared>,
    ends: (IpAddr, IpAddr),
}

impl MemInbound {
    /// Sends `msg` back to the caller as the link delivers (late, or never over a cut link).
    fn send_back(&self, len: usize, deliver: impl FnOnce() + Send + 'static) {
        match self.conn.net.fate_sized(self.ends.0, self.ends.1, len) {
            // Lost: what would have carried it is dropped (a caller waiting on it sees the
            // stream gone).
            Fate::Cut => {}
            Fate::Deliver(d) if d.is_zero() => deliver(),
            Fate::Deliver(d) => {
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    deliver();
                });
            }
        }
    }

    fn answer(mut self, r: Result<Bytes, RefuseCode>) {
        if let Some(to) = self.reply.take() {
            let acked = self.acked.take();
            let len = r.as_ref().map_or(0, Bytes::len);
            self.send_back(len, move || {
                if let Some(flag) = acked {
                    flag.store(true, Ordering::Release);
                }
                to.send(r)
            });
        }
    }
}

impl ImmediateStream for MemInbound {
    fn expects_reply(&self) -> bool {
        self.reply.is_some()
    }

    fn take_frame(&mut self, max: usize) -> Result<Bytes, TransportError> {
        let frame = self.frame.take().ok_or(WireError::Truncated)?;
        if frame.len() >= 4 {
            let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            if len > max {
                return Err(WireError::Oversized { len, max }.into());
            }
        }
        strip_prefix(frame)
    }

    fn ack(&mut self) {
        if let Some(a) = self.ack.take() {
            if let AckTo::Flag(f) = &a {
                self.acked = Some(f.clone());
            }
            self.send_back(0, move || a.fire());
        }
    }

    fn reply(self: Box<Self>, frame: Bytes) {
        self.answer(Ok(frame));
    }

    fn refuse(self: Box<Self>, code: RefuseCode) {
        self.answer(Err(code));
    }
}

#[async_trait]
impl InboundStream for MemInbound {
    fn expects_reply(&self) -> bool {
        self.reply.is_some()
    }

    async fn read_frame(&mut self, max: usize) -> Result<Bytes, TransportError> {
        self.take_frame(max)
    }

    async fn ack(&mut self) -> Result<(), TransportError> {
        ImmediateStream::ack(self);
        Ok(())
    }

    async fn reply(self: Box<Self>, frame: Bytes) -> Result<(), TransportError> {
        ImmediateStream::reply(self, frame);
        Ok(())
    }

    fn refuse(self: Box<Self>, code: RefuseCode) {
        ImmediateStream::refuse(self, code);
    }

    fn into_immediate(self: Box<Self>) -> Result<Box<dyn ImmediateStream>, Box<dyn InboundStream>> {
        Ok(self)
    }
}
