//! A fault-injecting wrapper for quinn's UDP socket, keyed by peer address: drop everything
//! (a silent kill: not even a close frame leaves), drop traffic to and from chosen hosts
//! (a firewall, a partition), lose or duplicate a share of datagrams. Used by tests and chaos
//! commands on real QUIC and on the deterministic network (both run quinn over this socket).

use std::collections::HashSet;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use rand::{Rng, SeedableRng, rngs::SmallRng};

/// The faults in force on one socket; change them at any time.
#[derive(Debug)]
pub struct SocketFaults {
    blackhole: AtomicBool,
    blocked: RwLock<HashSet<IpAddr>>,
    /// Share of datagrams lost, each way, in millionths.
    loss_ppm: AtomicU32,
    /// Share of sent datagrams sent twice, in millionths.
    dup_ppm: AtomicU32,
    rng: Mutex<SmallRng>,
    /// Datagrams dropped so far (both directions).
    pub dropped: AtomicU64,
    /// Datagrams sent twice so far.
    pub duplicated: AtomicU64,
}

impl Default for SocketFaults {
    fn default() -> Self {
        SocketFaults::seeded(0)
    }
}

fn ppm(p: f64) -> u32 {
    (p.clamp(0.0, 1.0) * 1e6).round() as u32
}

impl SocketFaults {
    /// No faults yet; random losses and duplicates will be drawn from `seed`.
    pub fn seeded(seed: u64) -> SocketFaults {
        SocketFaults {
            blackhole: AtomicBool::new(false),
            blocked: RwLock::new(HashSet::new()),
            loss_ppm: AtomicU32::new(0),
            dup_ppm: AtomicU32::new(0),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            dropped: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
        }
    }

    /// Loses a share `p` (0 to 1) of datagrams in each direction.
    pub fn set_loss(&self, p: f64) {
        self.loss_ppm.store(ppm(p), Ordering::Relaxed);
    }

    /// Sends a share `p` (0 to 1) of datagrams twice.
    pub fn set_duplication(&self, p: f64) {
        self.dup_ppm.store(ppm(p), Ordering::Relaxed);
    }

    /// Clears every fault.
    pub fn clear(&self) {
        self.set_blackhole(false);
        self.set_loss(0.0);
        self.set_duplication(0.0);
        crate::sync::write(&self.blocked).clear();
    }

    fn roll(&self, ppm: &AtomicU32) -> bool {
        let p = ppm.load(Ordering::Relaxed);
        if p == 0 {
            return false;
        }
        let mut rng = crate::sync::lock(&self.rng);
        rng.random_range(0..1_000_000) < p
    }

    /// Drop every datagram, both ways (or stop doing so).
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }

    /// Drop every datagram to and from `ip`.
    pub fn block(&self, ip: IpAddr) {
        crate::sync::write(&self.blocked).insert(ip);
    }

    /// Stop dropping traffic of `ip`.
    pub fn unblock(&self, ip: IpAddr) {
        crate::sync::write(&self.blocked).remove(&ip);
    }

    fn drops(&self, peer: SocketAddr) -> bool {
        let drop = self.blackhole.load(Ordering::SeqCst)
            || crate::sync::read(&self.blocked).contains(&peer.ip());
        let drop = drop || self.roll(&self.loss_ppm);
        if drop {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop
    }
}

/// quinn's socket with [`SocketFaults`] applied.
pub struct FaultyUdpSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    faults: Arc<SocketFaults>,
}

impl FaultyUdpSocket {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, faults: Arc<SocketFaults>) -> FaultyUdpSocket {
        FaultyUdpSocket { inner, faults }
    }
}

impl fmt::Debug for FaultyUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyUdpSocket({:?})", self.inner)
    }
}

impl AsyncUdpSocket for FaultyUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.faults.drops(transmit.destination) {
            return Ok(());
        }
        self.inner.try_send(transmit)?;
        if self.faults.roll(&self.faults.dup_ppm) {
            self.faults.duplicated.fetch_add(1, Ordering::Relaxed);
            // A second copy the network made; if the socket is busy it is simply not made.
            let _ = self.inner.try_send(transmit);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            // Keep the datagrams we do not drop, packed at the front.
            let mut kept = 0;
            for i in 0..n {
                if self.faults.drops(meta[i].addr) {
                    continue;
                }
                if kept != i {
                    let len = meta[i].len;
                    let (front, back) = bufs.split_at_mut(i);
                    front[kept][..len].copy_from_slice(&back[0][..len]);
                    meta[kept] = meta[i];
                }
                kept += 1;
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
