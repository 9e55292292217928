//! Serving a connection: each stream's frame read (or taken at once on the in-memory transport), checked, admitted to its route, and answered.

use crate::identity::{NodeId, PeerIdentity};
use crate::transport::{Connection, ImmediateStream, InboundStream, RefuseCode, TransportError};
use crate::wire::{self, EnvelopeKind, EnvelopeRef, WireError};
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::oneshot;

#[allow(unused_imports)]
use super::*;

/// Accepts the peer's streams until the connection ends, serving each in its own task, or
/// right here when it needs no waiting (an in-memory stream on a node with no fault in
/// force); returns why it ended.
pub(super) async fn serve_connection(
    shared: Arc<Shared>,
    conn: Arc<dyn Connection>,
) -> TransportError {
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
pub(super) enum AnyStream {
    Task(Box<dyn InboundStream>),
    Now(Box<dyn ImmediateStream>),
}

impl AnyStream {
    pub(super) fn expects_reply(&self) -> bool {
        match self {
            AnyStream::Task(s) => s.expects_reply(),
            AnyStream::Now(s) => s.expects_reply(),
        }
    }

    pub(super) async fn read_frame(&mut self, max: usize) -> Result<Bytes, TransportError> {
        match self {
            AnyStream::Task(s) => s.read_frame(max).await,
            AnyStream::Now(s) => s.take_frame(max),
        }
    }

    pub(super) async fn ack(&mut self) -> Result<(), TransportError> {
        match self {
            AnyStream::Task(s) => s.ack().await,
            AnyStream::Now(s) => {
                s.ack();
                Ok(())
            }
        }
    }

    pub(super) async fn reply(self, frame: Bytes) -> Result<(), TransportError> {
        match self {
            AnyStream::Task(s) => s.reply(frame).await,
            AnyStream::Now(s) => {
                s.reply(frame);
                Ok(())
            }
        }
    }

    pub(super) fn refuse(self, code: RefuseCode) {
        match self {
            AnyStream::Task(s) => s.refuse(code),
            AnyStream::Now(s) => s.refuse(code),
        }
    }
}

pub(super) fn reject(shared: &Shared, peer: &PeerIdentity, stream: AnyStream, e: WireError) {
    shared.stats.count_rejection(&e);
    tracing::warn!(%peer, error = %e, "rejected frame");
    let code = match e {
        WireError::UnknownDestination(_) => RefuseCode::UnknownDestination,
        WireError::Forbidden { .. } => RefuseCode::Forbidden,
        WireError::Revoked(_) => RefuseCode::Revoked,
        _ => RefuseCode::Rejected,
    };
    stream.refuse(code);
}

/// An envelope that passed [`admit`]: itself, its call id (none for a cast), and where it goes.
pub(super) type Admitted<'a> = (EnvelopeRef<'a>, Option<u64>, Arc<dyn Deliver>);

/// Checks one received envelope: it decodes, its sender is the certificate's, its kind fits
/// the stream, and its destination exists. Counts it received if so.
pub(super) fn admit<'a>(
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
    if shared.revoked.contains(&peer.id) {
        return Err(WireError::Revoked(peer.id.to_string()));
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
    let Some((target, roles)) = shared.router.lookup(env.to) else {
        return Err(WireError::UnknownDestination(env.to.to_string()));
    };
    if !roles.allows(peer.role) {
        return Err(WireError::Forbidden {
            role: peer.role.to_string(),
            to: env.to.to_string(),
        });
    }
    shared.stats.incr(|s| &s.envelopes_received);
    shared
        .stats
        .add_n(|s| &s.bytes_received, payload.len() as u64);
    Ok((env, call_id, target))
}

/// Serves a stream that needs no waiting, right in the connection's loop: checked and
/// delivered now; the actor's acknowledgement and answer go straight onto the stream.
pub(super) fn serve_now(
    shared: &Arc<Shared>,
    peer: &PeerIdentity,
    mut stream: Box<dyn ImmediateStream>,
) {
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
pub(super) fn body_of(payload: Bytes, at: std::ops::Range<usize>) -> Bytes {
    if at.end == payload.len() {
        let mut b = payload;
        bytes::Buf::advance(&mut b, at.start);
        b
    } else {
        payload.slice(at)
    }
}

/// Where `body`, a slice of `payload`, lies in it.
pub(super) fn body_at(payload: &[u8], body: &[u8]) -> std::ops::Range<usize> {
    let start = body.as_ptr() as usize - payload.as_ptr() as usize;
    start..start + body.len()
}

/// Reads, checks and delivers one stream's envelope; answers it if it is a call.
pub(super) async fn serve_stream(shared: Arc<Shared>, peer: PeerIdentity, mut stream: AnyStream) {
    let payload = match stream.read_frame(shared.opts.max_frame_bytes).await {
        Ok(p) => p,
        Err(TransportError::Wire(e)) => return reject(&shared, &peer, stream, e),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "stream ended");
            return;
        }
    };
    let (env, call_id, target) = match admit(&shared, &peer, &payload, stream.expects_reply()) {
        Ok(a) => a,
        Err(e) => return reject(&shared, &peer, stream, e),
    };
    // A paused node holds what it received; a slowed one waits (except for the chaos agent,
    // which must hear "resume", and answer it).
    let faulted = env.to != CHAOS_AGENT_ROUTE;
    if faulted {
        shared.faults.pass().await;
    }
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
    answer_stream(shared, to, id, stream, rx, ack_rx, faulted).await;
}

/// Writes the local actor's acknowledgement and answer to call `id` from `to` onto its
/// stream, as they come (an acknowledgement given first goes out first), each after what the
/// node's faults say (`faulted`: false for the chaos agent's route); refuses the call if no answer comes within the serve timeout.
pub(super) async fn answer_stream(
    shared: Arc<Shared>,
    to: NodeId,
    id: u64,
    mut stream: AnyStream,
    mut rx: oneshot::Receiver<Result<Vec<u8>, RefuseCode>>,
    ack_rx: oneshot::Receiver<()>,
    faulted: bool,
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
                        if faulted {
                            shared.faults.pass().await;
                        }
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
    if faulted {
        shared.faults.pass().await;
    }
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
