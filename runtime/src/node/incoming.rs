//! What an actor receives (`Incoming`) and how it answers (`ReplyPort`), and the `Deliver` trait a route implements.

use crate::identity::{NodeId, PeerIdentity};
use crate::stats::WireStats;
use crate::transport::{ImmediateStream, RefuseCode};
use crate::wire::{self, EnvelopeKind, EnvelopeOut, WIRE_VERSION, WireError};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use std::sync::Arc;
use tokio::sync::oneshot;

#[allow(unused_imports)]
use super::*;

/// A message from a remote peer, delivered to a local actor.
#[derive(Debug)]
pub struct Incoming {
    /// The authenticated sender.
    pub from: PeerIdentity,
    /// The sender's message, still encoded; see [`Incoming::decode`].
    pub body: Bytes,
    /// Where to answer, for calls.
    pub reply: Option<ReplyPort>,
    pub(super) stats: Arc<WireStats>,
}

impl Incoming {
    /// Decodes the body; a failure is counted as a rejected frame.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, WireError> {
        wire::decode_body(&self.body).inspect_err(|e| {
            self.stats.count_rejection(e);
            tracing::warn!(from = %self.from, error = %e, "rejected message body");
        })
    }

    /// The receiving node's counters (for a route that refuses what passed the node's
    /// checks but not its own).
    pub fn stats(&self) -> &Arc<WireStats> {
        &self.stats
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
pub struct ReplyPort(pub(super) Port);

pub(super) enum Port {
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
pub(super) struct NowPort {
    pub(super) stream: Box<dyn ImmediateStream>,
    pub(super) shared: Arc<Shared>,
    /// The caller (the reply's `to`).
    pub(super) to: NodeId,
    pub(super) id: u64,
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
    pub(super) fn ack(&mut self) {
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
    pub(super) fn follow_faults(&mut self) {
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
                true,
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
    pub(super) fn answer(self, frame: Result<Bytes, WireError>) {
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
pub(super) fn reply_frame(
    shared: &Shared,
    to: &str,
    id: u64,
    body: &[u8],
) -> Result<Bytes, WireError> {
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

/// The local destination of a message has stopped.
#[derive(Debug, Clone, Copy)]
pub struct DestinationGone;
