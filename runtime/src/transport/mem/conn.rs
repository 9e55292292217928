//! One node's end of the in-memory network: its transport, connections and streams (a
//! request's frame, its reply or refusal, and the acknowledgement that it was taken).

use super::*;

/// One node's end of the in-memory network.
pub struct MemTransport {
    pub(super) net: MemNetwork,
    pub(super) addr: SocketAddr,
    pub(super) identity: PeerIdentity,
    pub(super) stats: Arc<WireStats>,
    pub(super) accepted: Arc<AcceptQueue>,
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

pub(super) struct ConnShared {
    /// The network it crosses (what its streams' acknowledgements and replies go through).
    net: MemNetwork,
    pub(super) ends: (SocketAddr, SocketAddr),
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
    pub(super) fn close(&self, why: TransportError) {
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
    done: Option<crate::transport::ReplyFn>,
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

pub(super) struct MemConnection {
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
        done: crate::transport::ReplyFn,
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
