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

/// What a lost frame waits beyond the round trip before it is sent again. QUIC's probe timeout
/// is the smoothed RTT plus max(4 × RTT variance, 1 ms) plus the peer's acknowledgement delay,
/// which links ask to be 2 ms (`tls::DEFAULT_MAX_ACK_DELAY_MS`). Measured on loopback
/// (`a_lost_packet_on_a_loopback_link_costs_what_the_in_memory_network_charges`), a call whose
/// request packet was lost took a median ~5 ms against ~0.6 ms; this charges 4 ms beyond the
/// round trip. (It charged at least 20 ms, an estimate, before that was measured.)
const RETRANSMIT_SLACK: Duration = Duration::from_millis(4);

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
            delay += one_way * 2 + RETRANSMIT_SLACK;
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

mod conn;
use conn::ConnShared;
pub use conn::MemTransport;
