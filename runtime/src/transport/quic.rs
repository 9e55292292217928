//! Real QUIC with mutual TLS (quinn), over a real UDP socket or any [`quinn::AsyncUdpSocket`].

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use quinn::{AsyncUdpSocket, Runtime, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Connection, InboundStream, PacketCounts, RefuseCode, Transport, TransportError};
use crate::identity::{Credentials, NODE_SERVER_NAME, NodeSecret, PeerIdentity};
use crate::stats::WireStats;
use crate::tls::{self, ALPN_ENROL, LinkTimeouts};
use crate::wire::WireError;

use super::faults::{FaultyUdpSocket, SocketFaults};
use super::limits::{ByteBudget, InboundLimits};

/// Application close code: the peer's certificate was missing or named no rollcall identity.
pub const CLOSE_REFUSED: u32 = 0x10;
/// Application close code: normal shutdown.
pub const CLOSE_NORMAL: u32 = 0x0;

/// Serves enrolment connections (clients without a certificate, on the enrolment ALPN).
#[async_trait]
pub trait EnrolService: Send + Sync + 'static {
    /// Handles one enrolment connection to its end.
    async fn serve(&self, conn: quinn::Connection, stats: &WireStats);
}

/// Options of a QUIC transport.
#[derive(Clone, Default)]
pub struct QuicOptions {
    /// Keep-alive and idle timeouts.
    pub timeouts: LinkTimeouts,
    /// When set, clients without a certificate may connect to enrol, and only to enrol.
    pub enrolment: Option<Arc<dyn EnrolService>>,
    /// Seed for quinn's internal randomness (deterministic tests).
    pub rng_seed: Option<[u8; 32]>,
    /// Faults to inject on this node's socket (tests and chaos).
    pub faults: Option<Arc<SocketFaults>>,
    /// What one peer can make this node hold.
    pub limits: InboundLimits,
}

impl std::fmt::Debug for QuicOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicOptions")
            .field("timeouts", &self.timeouts)
            .field("enrolment", &self.enrolment.is_some())
            .finish()
    }
}

/// A node's QUIC endpoint: one UDP socket, both client and server.
pub struct QuicTransport {
    endpoint: quinn::Endpoint,
    /// Replaced when the node's certificate is renewed ([`QuicTransport::renew`]).
    client: std::sync::RwLock<quinn::ClientConfig>,
    timeouts: crate::tls::LinkTimeouts,
    limits: InboundLimits,
    accepts_enrolment: bool,
    identity: PeerIdentity,
    stats: Arc<WireStats>,
    local_addr: SocketAddr,
    accepted: Mutex<mpsc::Receiver<Arc<dyn Connection>>>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuicTransport({} at {})", self.identity, self.local_addr)
    }
}

/// The quinn endpoint configuration: stateless-reset key and connection-id key both derive
/// from the node secret, so after a restart this node recognises its old connection ids and
/// answers their packets with a reset that the peer can verify.
pub fn endpoint_config(secret: &NodeSecret, rng_seed: Option<[u8; 32]>) -> quinn::EndpointConfig {
    let reset_key =
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret.derive("stateless-reset"));
    let mut ec = quinn::EndpointConfig::new(Arc::new(reset_key));
    let cid = secret.derive("connection-id");
    let cid_key = u64::from_le_bytes([
        cid[0], cid[1], cid[2], cid[3], cid[4], cid[5], cid[6], cid[7],
    ]);
    ec.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    ec.rng_seed(rng_seed);
    ec
}

impl QuicTransport {
    /// Binds a real UDP socket at `addr`.
    pub fn bind(
        addr: SocketAddr,
        creds: &Credentials,
        secret: &NodeSecret,
        opts: QuicOptions,
    ) -> Result<Arc<QuicTransport>, TransportError> {
        let fail = |reason: String| TransportError::Connect { addr, reason };
        let socket = std::net::UdpSocket::bind(addr).map_err(|e| fail(format!("bind: {e}")))?;
        let runtime: Arc<dyn Runtime> = Arc::new(quinn::TokioRuntime);
        let socket = runtime
            .wrap_udp_socket(socket)
            .map_err(|e| fail(format!("socket: {e}")))?;
        Self::with_socket(socket, runtime, creds, secret, opts)
    }

    /// Builds the transport on any UDP-like socket (the deterministic network uses this).
    pub fn with_socket(
        socket: Arc<dyn AsyncUdpSocket>,
        runtime: Arc<dyn Runtime>,
        creds: &Credentials,
        secret: &NodeSecret,
        opts: QuicOptions,
    ) -> Result<Arc<QuicTransport>, TransportError> {
        let socket: Arc<dyn AsyncUdpSocket> = match &opts.faults {
            Some(f) => Arc::new(FaultyUdpSocket::new(socket, f.clone())),
            None => socket,
        };
        let local_addr = socket
            .local_addr()
            .map_err(|e| TransportError::Lost(e.to_string()))?;
        let fail = |reason: String| TransportError::Connect {
            addr: local_addr,
            reason,
        };
        let (server, client) =
            configs(creds, opts.timeouts, opts.enrolment.is_some(), opts.limits).map_err(fail)?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config(secret, opts.rng_seed),
            Some(server),
            socket,
            runtime,
        )
        .map_err(|e| fail(e.to_string()))?;
        let stats = Arc::new(WireStats::default());
        let (tx, rx) = mpsc::channel(1024);
        let peers = Arc::new(PeerCounts::default());
        tokio::spawn(accept_loop(
            endpoint.clone(),
            tx,
            stats.clone(),
            opts.enrolment.clone(),
            (opts.limits, peers.clone()),
        ));
        Ok(Arc::new(QuicTransport {
            endpoint,
            client: std::sync::RwLock::new(client),
            timeouts: opts.timeouts,
            limits: opts.limits,
            accepts_enrolment: opts.enrolment.is_some(),
            identity: creds.identity.clone(),
            stats,
            local_addr,
            accepted: Mutex::new(rx),
        }))
    }

    /// Presents `creds` (a renewed certificate for the same identity) on every connection
    /// from now on, accepted and dialed; connections already open keep theirs.
    pub fn renew(&self, creds: &Credentials) -> Result<(), TransportError> {
        let fail = |reason: String| TransportError::Connect {
            addr: self.local_addr,
            reason,
        };
        if creds.identity != self.identity {
            return Err(fail(format!(
                "a renewed certificate must name {}, not {}",
                self.identity, creds.identity
            )));
        }
        let (server, client) =
            configs(creds, self.timeouts, self.accepts_enrolment, self.limits).map_err(fail)?;
        self.endpoint.set_server_config(Some(server));
        *crate::sync::write(&self.client) = client;
        Ok(())
    }

    /// The underlying quinn endpoint (tests use it to speak raw QUIC to a node).
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }
}

/// The server and client configurations for `creds`, with `limits` in QUIC's flow control.
fn configs(
    creds: &Credentials,
    timeouts: LinkTimeouts,
    accept_enrolment: bool,
    limits: InboundLimits,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), String> {
    let mut server =
        tls::server_config(creds, timeouts, accept_enrolment).map_err(|e| e.to_string())?;
    let mut client = tls::client_config(creds, timeouts).map_err(|e| e.to_string())?;
    let mut tc = timeouts.transport_config().map_err(|e| e.to_string())?;
    let streams = VarInt::from_u32(limits.streams_per_connection);
    tc.max_concurrent_bidi_streams(streams)
        .max_concurrent_uni_streams(streams);
    // What a peer may have in flight on a connection, unread, before it must wait: the
    // budget of partial frames, not quinn's unbounded default.
    let window = u32::try_from(limits.connection_read_budget).unwrap_or(u32::MAX);
    tc.receive_window(VarInt::from_u32(window));
    let tc = Arc::new(tc);
    server.transport_config(tc.clone());
    client.transport_config(tc);
    Ok((server, client))
}

/// Live connections each peer (or, for enrolments, each address) opened to this node, for
/// [`InboundLimits::connections_per_peer`] and [`InboundLimits::enrolments_per_source`].
#[derive(Debug)]
struct PeerCounts<K>(std::sync::Mutex<std::collections::HashMap<K, usize>>);

impl<K> Default for PeerCounts<K> {
    fn default() -> Self {
        PeerCounts(std::sync::Mutex::new(std::collections::HashMap::new()))
    }
}

impl<K: std::hash::Hash + Eq + Clone> PeerCounts<K> {
    /// Counts one more connection of `peer`, unless it holds `max` already.
    fn admit(&self, peer: &K, max: usize) -> bool {
        let mut m = crate::sync::lock(&self.0);
        let n = m.entry(peer.clone()).or_default();
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, peer: &K) {
        let mut m = crate::sync::lock(&self.0);
        if let Some(n) = m.get_mut(peer) {
            *n -= 1;
            if *n == 0 {
                m.remove(peer);
            }
        }
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    tx: mpsc::Sender<Arc<dyn Connection>>,
    stats: Arc<WireStats>,
    enrolment: Option<Arc<dyn EnrolService>>,
    (limits, peers): (InboundLimits, Arc<PeerCounts<crate::identity::NodeId>>),
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(limits.handshakes_at_once));
    let enrolling: Arc<PeerCounts<std::net::IpAddr>> = Arc::new(PeerCounts::default());
    while let Some(incoming) = endpoint.accept().await {
        // Handshakes cost memory and CPU before anyone is authenticated: a bounded number at
        // once, the rest refused at the first packet.
        let Ok(turn) = handshakes.clone().try_acquire_owned() else {
            stats.incr(|s| &s.rejected_connections);
            tracing::warn!(remote = %incoming.remote_address(), limit = limits.handshakes_at_once, "refused connection: too many handshakes under way");
            incoming.refuse();
            continue;
        };
        let tx = tx.clone();
        let stats = stats.clone();
        let enrolment = enrolment.clone();
        let peers = peers.clone();
        let enrolling = enrolling.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = incoming.await;
            drop(turn);
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    stats.incr(|s| &s.handshakes_refused);
                    tracing::warn!(%remote, error = %e, "refused connection: handshake failed");
                    return;
                }
            };
            let alpn = conn
                .handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.protocol);
            if alpn.as_deref() == Some(ALPN_ENROL) {
                // Unauthenticated: a few at once from one address.
                let source = remote.ip().to_canonical();
                if !enrolling.admit(&source, limits.enrolments_per_source) {
                    stats.incr(|s| &s.enrolments_refused);
                    tracing::warn!(%remote, limit = limits.enrolments_per_source, "refused an enrolment: too many under way from this address");
                    conn.close(VarInt::from_u32(CLOSE_REFUSED), b"too many enrolments");
                    return;
                }
                match enrolment {
                    Some(svc) => svc.serve(conn, &stats).await,
                    None => conn.close(
                        VarInt::from_u32(CLOSE_REFUSED),
                        b"enrolment not served here",
                    ),
                }
                enrolling.release(&source);
                return;
            }
            match peer_identity(&conn) {
                Ok(peer) if !peers.admit(&peer.id, limits.connections_per_peer) => {
                    stats.incr(|s| &s.rejected_connections);
                    tracing::warn!(%remote, %peer, limit = limits.connections_per_peer, "refused connection: the peer holds the most connections it may");
                    conn.close(VarInt::from_u32(CLOSE_REFUSED), b"too many connections");
                }
                Ok(peer) => {
                    stats.incr(|s| &s.connections_accepted);
                    tracing::debug!(%remote, %peer, "accepted connection");
                    let (watch, id) = (conn.clone(), peer.id.clone());
                    tokio::spawn(async move {
                        watch.closed().await;
                        peers.release(&id);
                    });
                    let c: Arc<dyn Connection> = Arc::new(QuicConnection {
                        conn,
                        peer,
                        budget: ByteBudget::new(limits.connection_read_budget, stats.clone()),
                        limits,
                    });
                    let _ = tx.send(c).await;
                }
                Err(reason) => {
                    stats.incr(|s| &s.handshakes_refused);
                    tracing::warn!(%remote, %reason, "refused connection");
                    conn.close(VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
                }
            }
        });
    }
}

fn peer_identity(conn: &quinn::Connection) -> Result<PeerIdentity, String> {
    let certs = conn
        .peer_identity()
        .and_then(|p| p.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or("no client certificate")?;
    let leaf = certs.first().ok_or("no client certificate")?;
    PeerIdentity::from_cert_der(leaf).map_err(|e| e.to_string())
}

#[async_trait]
impl Transport for QuicTransport {
    fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn stats(&self) -> &Arc<WireStats> {
        &self.stats
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Arc<dyn Connection>, TransportError> {
        let fail = |reason: String| TransportError::Connect { addr, reason };
        let connecting = self
            .endpoint
            .connect_with(
                crate::sync::read(&self.client).clone(),
                addr,
                NODE_SERVER_NAME,
            )
            .map_err(|e| fail(e.to_string()))?;
        let conn = connecting.await.map_err(|e| fail(e.to_string()))?;
        let peer = peer_identity(&conn).map_err(fail)?;
        Ok(Arc::new(QuicConnection {
            conn,
            peer,
            budget: ByteBudget::new(self.limits.connection_read_budget, self.stats.clone()),
            limits: self.limits,
        }))
    }

    async fn accept(&self) -> Option<Arc<dyn Connection>> {
        self.accepted.lock().await.recv().await
    }

    fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(CLOSE_NORMAL), b"node shutting down");
    }

    async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

/// One authenticated QUIC connection.
pub struct QuicConnection {
    conn: quinn::Connection,
    peer: PeerIdentity,
    /// Bytes of partial frames the peer's streams may hold at once.
    budget: Arc<ByteBudget>,
    limits: InboundLimits,
}

/// Maps quinn's connection errors onto ours.
pub fn map_connection_error(e: &quinn::ConnectionError) -> TransportError {
    use quinn::ConnectionError as E;
    match e {
        E::TimedOut => TransportError::TimedOut,
        E::Reset => TransportError::Reset,
        E::LocallyClosed => TransportError::LocallyClosed,
        E::ApplicationClosed(c) => {
            TransportError::ClosedByPeer(String::from_utf8_lossy(&c.reason).into_owned())
        }
        E::ConnectionClosed(c) => {
            TransportError::ClosedByPeer(String::from_utf8_lossy(&c.reason).into_owned())
        }
        other => TransportError::Lost(other.to_string()),
    }
}

fn map_read(e: quinn::ReadError) -> TransportError {
    match e {
        quinn::ReadError::Reset(code) => {
            TransportError::Refused(RefuseCode::from_u64(code.into_inner()))
        }
        quinn::ReadError::ConnectionLost(c) => map_connection_error(&c),
        other => TransportError::Lost(other.to_string()),
    }
}

fn map_write(e: quinn::WriteError) -> TransportError {
    match e {
        quinn::WriteError::Stopped(code) => {
            TransportError::Refused(RefuseCode::from_u64(code.into_inner()))
        }
        quinn::WriteError::ConnectionLost(c) => map_connection_error(&c),
        other => TransportError::Lost(other.to_string()),
    }
}

/// Reads one length-prefixed frame from a QUIC stream, refusing (and stopping the stream)
/// before reading the body if it is longer than `max`.
/// Reads one frame. Its buffer grows as its bytes arrive (an announced length is a claim,
/// not an allocation), and with `budget` the bytes count against the connection's budget
/// until the read ends, and the whole frame must arrive within the limits' timeout.
async fn read_quic_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
    budget: Option<(&Arc<ByteBudget>, &InboundLimits)>,
) -> Result<Bytes, TransportError> {
    let read = async {
        let mut len = [0u8; 4];
        read_exact(recv, &mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > max {
            let _ = recv.stop(
                VarInt::from_u64(RefuseCode::Rejected.to_u64()).unwrap_or(VarInt::from_u32(2)),
            );
            return Err(WireError::Oversized { len, max }.into());
        }
        let mut held = budget.map(|(b, _)| b.hold());
        let mut buf = Vec::with_capacity(len.min(FIRST_READ));
        while buf.len() < len {
            let chunk = match recv.read_chunk(len - buf.len(), true).await {
                Ok(Some(c)) => c.bytes,
                Ok(None) => return Err(WireError::Truncated.into()),
                Err(e) => return Err(map_read(e)),
            };
            if let (Some((b, limits)), Some(h)) = (budget, held.as_mut())
                && !b.take(h, chunk.len())
            {
                return Err(WireError::OverBudget {
                    budget: limits.connection_read_budget,
                }
                .into());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    };
    match budget {
        None => read.await,
        Some((_, limits)) => match tokio::time::timeout(limits.frame_read_timeout, read).await {
            Ok(r) => r,
            Err(_) => Err(WireError::TooSlow {
                ms: limits.frame_read_timeout.as_millis() as u64,
            }
            .into()),
        },
    }
}

/// Reads a stream's end after its one frame. A stream dropped before its end was read sends
/// the peer STOP_SENDING, which the peer must acknowledge: on every request and cast, one
/// more packet each way and a wake-up on each side, which is most of what an idle ring
/// costs. The sender finishes the stream right after the frame, so the end is there or a
/// packet away; a peer that holds it back costs this stream at most [`END_WAIT`].
async fn take_end(recv: &mut quinn::RecvStream) {
    let _ = tokio::time::timeout(END_WAIT, recv.read_chunk(1, true)).await;
}

/// How long a stream's end is awaited after its frame.
const END_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// What a frame's buffer starts with; it grows with the bytes that arrive.
const FIRST_READ: usize = 64 * 1024;

async fn read_exact(recv: &mut quinn::RecvStream, buf: &mut [u8]) -> Result<(), TransportError> {
    match recv.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(quinn::ReadExactError::FinishedEarly(_)) => Err(WireError::Truncated.into()),
        Err(quinn::ReadExactError::ReadError(e)) => Err(map_read(e)),
    }
}

#[async_trait]
impl Connection for QuicConnection {
    fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    async fn send_cast(&self, frame: Bytes) -> Result<(), TransportError> {
        let mut send = self
            .conn
            .open_uni()
            .await
            .map_err(|e| map_connection_error(&e))?;
        send.write_chunk(frame).await.map_err(map_write)?;
        send.finish()
            .map_err(|e| TransportError::Lost(e.to_string()))?;
        Ok(())
    }

    /// One request on its own stream: the reply frame, after at most one empty
    /// acknowledgement frame (told to `acked`).
    async fn exchange(
        &self,
        frame: Bytes,
        max_reply: usize,
        mut acked: Option<oneshot::Sender<()>>,
    ) -> Result<Bytes, TransportError> {
        let (mut send, mut recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| map_connection_error(&e))?;
        send.write_chunk(frame).await.map_err(map_write)?;
        send.finish()
            .map_err(|e| TransportError::Lost(e.to_string()))?;
        let mut acks = 0;
        loop {
            let reply = read_quic_frame(&mut recv, max_reply, None).await?;
            if !reply.is_empty() {
                take_end(&mut recv).await;
                return Ok(reply);
            }
            acks += 1;
            if acks > 1 {
                return Err(WireError::Protocol("a request acknowledged twice".into()).into());
            }
            if let Some(tx) = acked.take() {
                let _ = tx.send(());
            }
        }
    }

    async fn accept_stream(&self) -> Result<Box<dyn InboundStream>, TransportError> {
        tokio::select! {
            uni = self.conn.accept_uni() => {
                let recv = uni.map_err(|e| map_connection_error(&e))?;
                Ok(Box::new(QuicInbound { recv, send: None, acked: false, budget: self.budget.clone(), limits: self.limits }))
            }
            bi = self.conn.accept_bi() => {
                let (send, recv) = bi.map_err(|e| map_connection_error(&e))?;
                Ok(Box::new(QuicInbound { recv, send: Some(send), acked: false, budget: self.budget.clone(), limits: self.limits }))
            }
        }
    }

    async fn closed(&self) -> TransportError {
        map_connection_error(&self.conn.closed().await)
    }

    fn close(&self, reason: &str) {
        self.conn
            .close(VarInt::from_u32(CLOSE_NORMAL), reason.as_bytes());
    }

    fn packets(&self) -> Option<PacketCounts> {
        let s = self.conn.stats();
        Some(PacketCounts {
            datagrams_sent: s.udp_tx.datagrams,
            datagrams_received: s.udp_rx.datagrams,
            stop_sending_sent: s.frame_tx.stop_sending,
        })
    }
}

struct QuicInbound {
    recv: quinn::RecvStream,
    send: Option<quinn::SendStream>,
    acked: bool,
    budget: Arc<ByteBudget>,
    limits: InboundLimits,
}

#[async_trait]
impl InboundStream for QuicInbound {
    fn expects_reply(&self) -> bool {
        self.send.is_some()
    }

    async fn read_frame(&mut self, max: usize) -> Result<Bytes, TransportError> {
        // One frame per stream: its end follows it.
        let frame =
            read_quic_frame(&mut self.recv, max, Some((&self.budget, &self.limits))).await?;
        take_end(&mut self.recv).await;
        Ok(frame)
    }

    async fn ack(&mut self) -> Result<(), TransportError> {
        let Some(send) = self.send.as_mut().filter(|_| !self.acked) else {
            return Ok(());
        };
        self.acked = true;
        send.write_chunk(Bytes::from_static(&[0, 0, 0, 0]))
            .await
            .map_err(map_write)
    }

    async fn reply(self: Box<Self>, frame: Bytes) -> Result<(), TransportError> {
        let Some(mut send) = self.send else {
            return Ok(());
        };
        send.write_chunk(frame).await.map_err(map_write)?;
        send.finish()
            .map_err(|e| TransportError::Lost(e.to_string()))?;
        Ok(())
    }

    fn refuse(mut self: Box<Self>, code: RefuseCode) {
        let code = VarInt::from_u64(code.to_u64()).unwrap_or(VarInt::from_u32(2));
        let _ = self.recv.stop(code);
        if let Some(mut send) = self.send.take() {
            let _ = send.reset(code);
        }
    }

    fn into_immediate(
        self: Box<Self>,
    ) -> Result<Box<dyn super::ImmediateStream>, Box<dyn InboundStream>> {
        // Its frame is read off the network, and its answer written back, as they can.
        Err(self)
    }
}
