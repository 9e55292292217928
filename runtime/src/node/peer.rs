//! `PeerHandle`: casts and calls to a peer over its newest live connection; the links a node keeps up (`PeerLink` actors, redialed with backoff) and the ones that end with their connection.

use crate::backoff::Backoff;
use crate::identity::{NodeId, PeerIdentity, PeerRole};
use crate::transport::{Connection, TransportError};
use crate::wire::{self, EnvelopeKind, EnvelopeOut, WIRE_VERSION, WireError};
use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Serialize, de::DeserializeOwned};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

#[allow(unused_imports)]
use super::*;

/// A link's current connection (none while down), which tasks can wait on (see
/// [`crate::wake`]).
#[derive(Default)]
pub(super) struct ConnSlot {
    pub(super) conn: std::sync::Mutex<Option<Arc<dyn Connection>>>,
    pub(super) changed: tokio::sync::Notify,
}

impl ConnSlot {
    pub(super) fn get(&self) -> Option<Arc<dyn Connection>> {
        crate::sync::lock(&self.conn).clone()
    }

    pub(super) fn is_some(&self) -> bool {
        crate::sync::lock(&self.conn).is_some()
    }

    pub(super) fn set(&self, c: Option<Arc<dyn Connection>>) {
        let old = std::mem::replace(&mut *crate::sync::lock(&self.conn), c);
        self.changed.notify_waiters();
        drop(old);
    }

    /// Waits until `pred` holds for the slot, and returns what it holds then.
    pub(super) async fn wait_for(
        &self,
        pred: impl Fn(&Option<Arc<dyn Connection>>) -> bool,
    ) -> Option<Arc<dyn Connection>> {
        crate::wake::wait_until(&self.changed, || {
            let c = crate::sync::lock(&self.conn);
            pred(&c).then(|| c.clone())
        })
        .await
    }
}

/// A link's address, its current connection (none while down) and its actor.
#[derive(Clone)]
pub(super) struct LinkCell {
    pub(super) addr: SocketAddr,
    pub(super) conn: Arc<ConnSlot>,
    pub(super) actor: Arc<std::sync::Mutex<Option<ractor::ActorCell>>>,
}

/// Sends casts and calls to one peer over its link.
#[derive(Clone)]
pub struct PeerHandle {
    pub(super) addr: SocketAddr,
    pub(super) conn: Arc<ConnSlot>,
    pub(super) actor: Arc<std::sync::Mutex<Option<ractor::ActorCell>>>,
    pub(super) shared: Arc<Shared>,
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
        let cell = Some(crate::sync::lock(&self.actor)).and_then(|mut a| a.take());
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

    /// Checks that the connected peer's certificate holds `role` (clients check that the
    /// peer they dialed as the server is one).
    pub fn require_role(&self, role: PeerRole) -> Result<(), CallError> {
        let got = self.current()?.peer().role;
        if got == role {
            Ok(())
        } else {
            Err(CallError::WrongRole {
                addr: self.addr,
                expected: role,
                got,
            })
        }
    }

    /// Like [`PeerHandle::require_role`], and, when `pinned` is given, the peer must be that
    /// node.
    pub fn require_peer(&self, role: PeerRole, pinned: Option<&NodeId>) -> Result<(), CallError> {
        self.require_role(role)?;
        let Some(expected) = pinned else {
            return Ok(());
        };
        let got = self.current()?.peer().id.clone();
        if &got == expected {
            Ok(())
        } else {
            Err(CallError::NotPinned {
                addr: self.addr,
                expected: expected.clone(),
                got,
            })
        }
    }

    pub(super) fn current(&self) -> Result<Arc<dyn Connection>, CallError> {
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
    pub(super) fn envelope<T: Serialize>(
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

    /// The connection, a new call id and the call's frame, counted as sent.
    fn start_call<Q: Serialize>(
        &self,
        to: &str,
        msg: &Q,
    ) -> Result<(Arc<dyn Connection>, u64, Bytes), CallError> {
        let conn = self.current()?;
        let id = self.shared.next_call.fetch_add(1, Ordering::Relaxed);
        let frame = self.envelope(to, EnvelopeKind::Call(id), msg)?;
        self.shared.stats.incr(|s| &s.envelopes_sent);
        self.shared
            .stats
            .add_n(|s| &s.bytes_sent, frame.len() as u64);
        Ok((conn, id, frame))
    }

    /// As [`PeerHandle::call`], but hands back the answer's encoded body as a slice of the
    /// frame it came in, for the caller to decode without copying what it borrows (a
    /// 64 KiB chunk).
    pub async fn call_body<Q: Serialize>(
        &self,
        to: &str,
        msg: &Q,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        let (conn, id, payload) = self.exchange(to, msg, timeout, None).await?;
        read_reply_body(&self.shared, &conn.peer().id, id, &payload)
    }

    pub(super) async fn call_inner<Q: Serialize, R: DeserializeOwned>(
        &self,
        to: &str,
        msg: &Q,
        timeout: Duration,
        acked: Option<oneshot::Sender<()>>,
    ) -> Result<R, CallError> {
        let (conn, id, payload) = self.exchange(to, msg, timeout, acked).await?;
        read_reply(&self.shared, &conn.peer().id, id, &payload)
    }

    /// Sends a call and waits up to `timeout` for the reply frame.
    async fn exchange<Q: Serialize>(
        &self,
        to: &str,
        msg: &Q,
        timeout: Duration,
        acked: Option<oneshot::Sender<()>>,
    ) -> Result<(Arc<dyn Connection>, u64, Bytes), CallError> {
        let (conn, id, frame) = self.start_call(to, msg)?;
        let max = self.shared.opts.max_frame_bytes;
        let sent = async {
            self.shared.faults.pass().await;
            // The transport's one exchange, called directly (each trait call is a boxed
            // future).
            conn.exchange(frame, max, acked).await
        };
        let payload = tokio::time::timeout(timeout, sent)
            .await
            .map_err(|_| CallError::Timeout(timeout))??;
        Ok((conn, id, payload))
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
        let (conn, id, frame) = self.start_call(to, msg)?;
        let max = self.shared.opts.max_frame_bytes;
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
pub(super) fn read_reply<R: DeserializeOwned>(
    shared: &Shared,
    peer: &NodeId,
    id: u64,
    payload: &[u8],
) -> Result<R, CallError> {
    Ok(wire::decode_body(reply_body(shared, peer, id, payload)?)?)
}

/// [`read_reply`]'s body, undecoded: a slice of `payload`.
fn read_reply_body(
    shared: &Shared,
    peer: &NodeId,
    id: u64,
    payload: &Bytes,
) -> Result<Bytes, CallError> {
    let body = reply_body(shared, peer, id, payload)?;
    Ok(payload.slice_ref(body))
}

/// Checks a reply frame to call `id` made to `peer` and counts it: its body.
fn reply_body<'a>(
    shared: &Shared,
    peer: &NodeId,
    id: u64,
    payload: &'a [u8],
) -> Result<&'a [u8], CallError> {
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
    Ok(env.body)
}

pub(super) enum LinkMode {
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
pub(super) fn single_link(handle: PeerHandle, conn: Arc<dyn Connection>) {
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
pub(super) fn list_link(handle: &PeerHandle, peer: &PeerIdentity) {
    {
        let mut links = crate::sync::write(&handle.shared.links);
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
pub(super) fn unlist_link(handle: &PeerHandle, peer: &PeerIdentity) {
    let mut links = crate::sync::write(&handle.shared.links);
    if let Some(cells) = links.get_mut(&peer.id) {
        cells.retain(|c| !Arc::ptr_eq(&c.conn, &handle.conn));
        if cells.is_empty() {
            links.remove(&peer.id);
        }
    }
}

pub(super) struct LinkArgs {
    pub(super) handle: PeerHandle,
    pub(super) seed: u64,
}

#[derive(Clone, Copy)]
pub(super) struct PeerLink;

pub(super) enum PeerLinkMsg {
    Dial,
    Connected(Arc<dyn Connection>),
    DialFailed(TransportError),
    Lost {
        generation: u64,
        reason: TransportError,
    },
}

pub(super) struct LinkState {
    pub(super) handle: PeerHandle,
    pub(super) generation: u64,
    pub(super) backoff: Backoff,
    pub(super) peer: Option<PeerIdentity>,
}

impl LinkState {
    pub(super) fn install(&mut self, myself: &ActorRef<PeerLinkMsg>, conn: Arc<dyn Connection>) {
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

    pub(super) fn forget(&mut self) {
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
