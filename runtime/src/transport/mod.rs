//! The transport abstraction the actors use, and its implementations.
//!
//! A [`Transport`] dials and accepts [`Connection`]s to authenticated peers. A connection
//! carries one frame per stream: a cast (one frame, no answer) or a request (one frame, one
//! reply frame, or a refusal code). The answerer of a request may first acknowledge it with
//! an empty frame ("received, working on it"): a caller that waits long for an answer (a
//! question handed down a ring) learns within a round trip whether it was taken, without a
//! second request to find out. Three implementations sit behind these traits:
//!
//! - [`quic::QuicTransport`]: real QUIC with mutual TLS (quinn), on a real UDP socket;
//! - the same QUIC code over turmoil's simulated UDP ([`deterministic`], feature
//!   `deterministic`), for seeded tests with partitions, latency, loss and host bounces;
//! - [`mem::MemTransport`]: an in-process network for very large simulations, in which every
//!   envelope is still encoded and decoded, with per-link latency, loss and partitions.
//!
//! Transports do not decode envelopes or route them: that is [`crate::node`]'s job, so every
//! transport rejects bad input in exactly the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::identity::PeerIdentity;
use crate::stats::WireStats;
use crate::wire::WireError;

#[cfg(feature = "deterministic")]
pub mod deterministic;
pub mod faults;
pub mod limits;
#[cfg(feature = "simulation")]
pub mod mem;
pub mod quic;

/// Why the receiving node refused a stream, sent back to the caller as the stream's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseCode {
    /// No actor of that name.
    UnknownDestination,
    /// The frame was malformed, oversized, of another version, or spoofed.
    Rejected,
    /// The local actor dropped the request without answering, or did not answer in time.
    NoAnswer,
    /// The sender's role may not send to that destination.
    Forbidden,
    /// The sender's certificate is revoked.
    Revoked,
    /// A code this build does not know.
    Other(u64),
}

impl RefuseCode {
    /// The numeric code on the wire.
    pub fn to_u64(self) -> u64 {
        match self {
            RefuseCode::UnknownDestination => 1,
            RefuseCode::Rejected => 2,
            RefuseCode::NoAnswer => 3,
            RefuseCode::Forbidden => 4,
            RefuseCode::Revoked => 5,
            RefuseCode::Other(c) => c,
        }
    }

    /// Reads a numeric code.
    pub fn from_u64(c: u64) -> RefuseCode {
        match c {
            1 => RefuseCode::UnknownDestination,
            2 => RefuseCode::Rejected,
            3 => RefuseCode::NoAnswer,
            4 => RefuseCode::Forbidden,
            5 => RefuseCode::Revoked,
            c => RefuseCode::Other(c),
        }
    }
}

impl std::fmt::Display for RefuseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefuseCode::UnknownDestination => f.write_str("no such actor"),
            RefuseCode::Rejected => f.write_str("frame rejected"),
            RefuseCode::NoAnswer => f.write_str("no answer"),
            RefuseCode::Forbidden => f.write_str("not allowed for this role"),
            RefuseCode::Revoked => f.write_str("this certificate is revoked"),
            RefuseCode::Other(c) => write!(f, "code {c}"),
        }
    }
}

/// Errors of dialing, sending and receiving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The dial failed (handshake refused, no route, address in use).
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// Where we dialed.
        addr: SocketAddr,
        /// Why it failed.
        reason: String,
    },
    /// Nothing was heard from the peer for the idle timeout.
    #[error("peer timed out")]
    TimedOut,
    /// The peer answered with a stateless reset: it restarted and lost the connection.
    #[error("peer restarted (stateless reset)")]
    Reset,
    /// The peer closed the connection.
    #[error("closed by peer: {0}")]
    ClosedByPeer(String),
    /// This node closed the connection.
    #[error("closed locally")]
    LocallyClosed,
    /// The connection failed for another reason.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The peer refused this stream.
    #[error("refused by peer: {0}")]
    Refused(RefuseCode),
    /// The frame itself was bad.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// A dialer and acceptor of authenticated connections.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Who this node is.
    fn identity(&self) -> &PeerIdentity;
    /// The address peers dial.
    fn local_addr(&self) -> SocketAddr;
    /// Counters shared with the node on top.
    fn stats(&self) -> &Arc<WireStats>;
    /// Dials `addr` and authenticates the peer.
    async fn connect(&self, addr: SocketAddr) -> Result<Arc<dyn Connection>, TransportError>;
    /// The next authenticated inbound connection; `None` once the transport is closed.
    /// Refused handshakes are counted and logged here, never returned.
    async fn accept(&self) -> Option<Arc<dyn Connection>>;
    /// Closes every connection and stops accepting.
    fn close(&self);
    /// After [`Transport::close`], waits until the peers have been told (a process about to
    /// exit calls this so its close frames leave).
    async fn wait_idle(&self) {}
}

/// An authenticated connection to one peer.
#[async_trait]
pub trait Connection: Send + Sync + 'static {
    /// Who is on the other end (from their certificate).
    fn peer(&self) -> &PeerIdentity;
    /// Their address.
    fn remote_addr(&self) -> SocketAddr;
    /// Sends one frame on its own stream, with no answer.
    async fn send_cast(&self, frame: Bytes) -> Result<(), TransportError>;
    /// Sends one frame on its own stream and reads the reply frame, after at most one
    /// acknowledgement (see [`InboundStream::ack`]), which fires `acked` if given (dropped
    /// unfired if none comes).
    async fn exchange(
        &self,
        frame: Bytes,
        max_reply: usize,
        acked: Option<oneshot::Sender<()>>,
    ) -> Result<Bytes, TransportError>;
    /// Sends one frame on its own stream and reads the reply frame (skipping an
    /// acknowledgement).
    async fn request(&self, frame: Bytes, max_reply: usize) -> Result<Bytes, TransportError> {
        self.exchange(frame, max_reply, None).await
    }
    /// As [`Connection::request`], and fires `acked` when the answerer acknowledges the
    /// request; `acked` is dropped unfired if it never does.
    async fn request_acked(
        &self,
        frame: Bytes,
        max_reply: usize,
        acked: oneshot::Sender<()>,
    ) -> Result<Bytes, TransportError> {
        self.exchange(frame, max_reply, Some(acked)).await
    }
    /// Starts an exchange whose outcome is handed to `done` wherever it is known, instead of
    /// awaited: `acked` is set when the answerer acknowledges, `done` gets the reply frame or
    /// the failure (a refusal, the stream dropped, the connection gone) exactly once. No
    /// timeout: the caller keeps its own watch. The default runs [`Connection::exchange`] in
    /// a task; the in-memory transport calls `done` from the answering side, with no task.
    fn exchange_then(
        self: Arc<Self>,
        frame: Bytes,
        max_reply: usize,
        acked: Arc<AtomicBool>,
        done: ReplyFn,
    ) {
        tokio::spawn(async move {
            let (tx, rx) = oneshot::channel();
            let ack = async {
                if rx.await.is_ok() {
                    acked.store(true, Ordering::Release);
                }
            };
            let (r, ()) = tokio::join!(self.exchange(frame, max_reply, Some(tx)), ack);
            done(r);
        });
    }
    /// The next stream the peer opened; an error means the connection is gone.
    async fn accept_stream(&self) -> Result<Box<dyn InboundStream>, TransportError>;
    /// Resolves when the connection is gone, with why.
    async fn closed(&self) -> TransportError;
    /// Closes the connection.
    fn close(&self, reason: &str);
    /// What went over the wire on this connection, where the transport counts it.
    fn packets(&self) -> Option<PacketCounts> {
        None
    }
}

/// Datagrams and control frames one connection carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketCounts {
    /// UDP datagrams sent.
    pub datagrams_sent: u64,
    /// UDP datagrams received.
    pub datagrams_received: u64,
    /// STOP_SENDING frames sent: each asks the peer to stop a stream we dropped unread.
    pub stop_sending_sent: u64,
}

/// Where [`Connection::exchange_then`] hands an exchange's outcome.
pub type ReplyFn = Box<dyn FnOnce(Result<Bytes, TransportError>) + Send>;

/// One stream the peer opened.
#[async_trait]
pub trait InboundStream: Send {
    /// Whether the peer waits for a reply (a request) or not (a cast).
    fn expects_reply(&self) -> bool;
    /// Reads the stream's one frame, refusing it if longer than `max`.
    async fn read_frame(&mut self, max: usize) -> Result<Bytes, TransportError>;
    /// Acknowledges a request before its reply (an empty frame; at most once; a no-op on a
    /// cast).
    async fn ack(&mut self) -> Result<(), TransportError>;
    /// Sends the reply frame.
    async fn reply(self: Box<Self>, frame: Bytes) -> Result<(), TransportError>;
    /// Refuses the stream with a code the caller will see.
    fn refuse(self: Box<Self>, code: RefuseCode);
    /// The stream as an [`ImmediateStream`], if its frame is already here and its
    /// acknowledgement and reply need no waiting (an in-memory stream): the node then serves
    /// it inline, without a task of its own; a stream that must be waited on (QUIC) is given
    /// back. (This path stays out of the `simulation` feature on purpose: on QUIC it is one
    /// `Err` per stream and never taken, while gating it would put feature switches into
    /// every match of the node's serving and reply code, the hottest in the workspace.)
    fn into_immediate(self: Box<Self>) -> Result<Box<dyn ImmediateStream>, Box<dyn InboundStream>>;
}

/// A stream that is read, acknowledged and answered without waiting (see
/// [`InboundStream::into_immediate`]). Link latency, loss and partitions still apply: they
/// are the transport's to play out after the call returns.
pub trait ImmediateStream: Send {
    /// Whether the peer waits for a reply (a request) or not (a cast).
    fn expects_reply(&self) -> bool;
    /// Takes the stream's one frame, refusing it if longer than `max`.
    fn take_frame(&mut self, max: usize) -> Result<Bytes, TransportError>;
    /// Acknowledges a request before its reply (at most once; a no-op on a cast).
    fn ack(&mut self);
    /// Sends the reply frame.
    fn reply(self: Box<Self>, frame: Bytes);
    /// Refuses the stream with a code the caller will see.
    fn refuse(self: Box<Self>, code: RefuseCode);
}
