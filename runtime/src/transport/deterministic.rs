//! The deterministic network: quinn over turmoil's simulated UDP.
//!
//! [`TurmoilUdpSocket`] implements quinn's [`AsyncUdpSocket`] on a `turmoil::net::UdpSocket`,
//! so the real QUIC transport (TLS, streams, keep-alives, idle timeouts, stateless resets)
//! runs on turmoil's virtual clock and network: partitions, per-link latency and loss, and
//! host crashes and bounces are all reproducible from a seed.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;

/// Largest datagram the pump reads.
const MAX_DATAGRAM: usize = 65_535;

/// quinn's socket over turmoil's simulated UDP.
pub struct TurmoilUdpSocket {
    socket: Arc<turmoil::net::UdpSocket>,
    incoming: Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    local: SocketAddr,
}

impl fmt::Debug for TurmoilUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TurmoilUdpSocket({})", self.local)
    }
}

impl TurmoilUdpSocket {
    /// Binds `port` on the current turmoil host. A pump task moves received datagrams into a
    /// queue that quinn polls.
    pub async fn bind(port: u16) -> io::Result<Arc<TurmoilUdpSocket>> {
        let socket = Arc::new(turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).await?);
        let local = socket.local_addr()?;
        let (tx, rx) = mpsc::channel(1024);
        let pump = socket.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                match pump.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        if tx.send((buf[..n].to_vec(), from)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "simulated socket closed");
                        return;
                    }
                }
            }
        });
        Ok(Arc::new(TurmoilUdpSocket {
            socket,
            incoming: Mutex::new(rx),
            local,
        }))
    }
}

#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for TurmoilUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        // One segment per transmit (max_transmit_segments is 1). A datagram turmoil cannot
        // deliver is lost, as on a real network.
        if let Err(e) = self
            .socket
            .try_send_to(transmit.contents, transmit.destination)
        {
            tracing::trace!(error = %e, dest = %transmit.destination, "simulated datagram dropped");
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut rx = crate::sync::lock(&self.incoming);
        match rx.poll_recv(cx) {
            Poll::Ready(Some((data, from))) => {
                let n = data.len().min(bufs[0].len());
                bufs[0][..n].copy_from_slice(&data[..n]);
                meta[0] = RecvMeta {
                    addr: from,
                    len: n,
                    stride: n,
                    ecn: None,
                    dst_ip: None,
                };
                Poll::Ready(Ok(1))
            }
            Poll::Ready(None) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "simulated socket closed",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
