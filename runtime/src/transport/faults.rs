//! A fault-injecting wrapper for quinn's UDP socket, keyed by peer address: drop everything
//! (a silent kill: not even a close frame leaves), or drop traffic to and from chosen hosts
//! (a firewall). Used by tests and chaos commands on real QUIC.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// The faults in force on one socket; change them at any time.
#[derive(Debug, Default)]
pub struct SocketFaults {
    blackhole: AtomicBool,
    blocked: RwLock<HashSet<IpAddr>>,
    /// Datagrams dropped so far (both directions).
    pub dropped: AtomicU64,
}

impl SocketFaults {
    /// Drop every datagram, both ways (or stop doing so).
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }

    /// Drop every datagram to and from `ip`.
    pub fn block(&self, ip: IpAddr) {
        if let Ok(mut b) = self.blocked.write() {
            b.insert(ip);
        }
    }

    /// Stop dropping traffic of `ip`.
    pub fn unblock(&self, ip: IpAddr) {
        if let Ok(mut b) = self.blocked.write() {
            b.remove(&ip);
        }
    }

    fn drops(&self, peer: SocketAddr) -> bool {
        let drop = self.blackhole.load(Ordering::SeqCst)
            || self
                .blocked
                .read()
                .map(|b| b.contains(&peer.ip()))
                .unwrap_or(false);
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
        self.inner.try_send(transmit)
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
