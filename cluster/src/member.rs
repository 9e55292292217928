//! The endpoint's ring actor: registers with the server, drives its [`RingCore`], probes and
//! splices neighbours, reports suspects, and keeps a server link while it leads an end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use rollcall_runtime::node::{CallError, Incoming, Node, PeerHandle};
use rollcall_runtime::{NodeId, PeerIdentity, PeerRole};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::proto::{
    EncodedAnswer, LeaderSides, MEMBER, MemberInfo, MemberRequest, NodeAnswer, Partial,
    QuestionEnvelope, REGISTRY, Registration, RegistrationReply, RingId, ServerRequest,
};
use crate::relay::{Forward, Round};
use crate::ring::{Input, Output, PeerHealth, RingConfig, RingCore};

/// Answers questions on an endpoint: the bridge to its sensors (which live in
/// `rollcall-actors`; the ring only carries the encoded question and the answers).
pub trait Evaluator: Send + Sync + 'static {
    /// This machine's answer to the encoded question `body`. Called before the question is
    /// passed on: read the question here, and leave the sensors' work to the future (which
    /// the member polls once the question went on).
    fn evaluate(&self, body: &[u8]) -> futures::future::BoxFuture<'static, NodeAnswer>;
}

/// A shareable [`Evaluator`].
#[derive(Clone)]
pub struct EvaluatorHandle(pub std::sync::Arc<dyn Evaluator>);

impl std::fmt::Debug for EvaluatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Evaluator")
    }
}

/// Settings of an endpoint's ring membership.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// Ring timing and shape.
    pub ring: RingConfig,
    /// The server's address.
    pub server: SocketAddr,
    /// The address peers dial (this node's).
    pub advertise: SocketAddr,
    /// Registration interval, picked uniformly in `[min, max]` each time.
    pub register_min: Duration,
    /// See `register_min`.
    pub register_max: Duration,
    /// Timeout of calls to the server.
    pub server_timeout: Duration,
    /// Host name reported at registration.
    pub hostname: String,
    /// Seed for the registration jitter.
    pub seed: u64,
    /// Answers questions (none: the endpoint answers with no row).
    pub evaluator: Option<EvaluatorHandle>,
}

impl MemberConfig {
    /// Defaults for a node at `advertise` registering with `server`: every 30–90 s.
    pub fn new(server: SocketAddr, advertise: SocketAddr, hostname: String) -> MemberConfig {
        MemberConfig {
            ring: RingConfig::default(),
            server,
            advertise,
            register_min: Duration::from_secs(30),
            register_max: Duration::from_secs(90),
            server_timeout: Duration::from_secs(10),
            hostname,
            seed: 0,
            evaluator: None,
        }
    }
}

/// What a member reports about itself (tests and `rollcall endpoint` logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its ring, once registered (`None`: isolated or not yet registered).
    pub ring: Option<RingId>,
    /// Registrations answered so far.
    pub registrations: u64,
    /// Members in the server's last list of its ring (hellos included).
    pub ring_members: usize,
    /// The members it keeps, in ring order: its nearest predecessor and its candidates.
    pub view: Vec<MemberInfo>,
    /// Where questions go next.
    pub route_target: Option<NodeId>,
    /// The ends it leads.
    pub leads: LeaderSides,
    /// Whether its server link is up.
    pub server_link_up: bool,
    /// How it judges each candidate successor.
    pub health: Vec<(NodeId, PeerHealth)>,
    /// Questions it holds that are not answered yet.
    pub questions_pending: usize,
}

/// Messages of a [`RingMember`].
pub enum MemberMsg {
    /// A request from a peer.
    Remote(Incoming),
    /// Probe timer.
    Tick,
    /// Registration timer.
    Register,
    /// Register now, outside the timer (the server came back).
    RegisterNow,
    /// A registration's answer, and when its request went out.
    Registered(std::time::Instant, Result<RegistrationReply, CallError>),
    /// A probe's request went on the wire.
    ProbeStarted(NodeId),
    /// A probe's outcome, with the link it used.
    Probed {
        /// Who.
        id: NodeId,
        /// The address probed (a result for an address the member has since left is stale).
        addr: SocketAddr,
        /// Answered?
        ok: bool,
        /// The link, if one was made.
        link: Option<PeerHandle>,
    },
    /// Report status.
    Status(RpcReplyPort<MemberStatus>),
    /// Members another member told us of (its answer to our hello).
    Learned(Vec<MemberInfo>),
    /// Our hello to this member went unanswered.
    HelloFailed(NodeId),
    /// A question handed to this member was not acknowledged within the hop timeout.
    HopLate(NodeId),
    /// A suspect report was answered (or not).
    Reported(bool),
    /// This machine's own answer to a question is ready.
    Evaluated {
        /// The question.
        id: u64,
        /// The answer.
        answer: NodeAnswer,
    },
    /// The answers from after us came back (or the forward failed).
    Downstream {
        /// The question.
        id: u64,
        /// Which forward attempt.
        generation: u64,
        /// Whom it went to.
        to: NodeId,
        /// What came back.
        result: Result<Partial, CallError>,
    },
}

/// The keys of a member's maps come from authenticated peers (question ids are the server's
/// sequence numbers; neighbours' ids are their certificates' names), and the maps are looked
/// up on every hop: a fast hash will do.
type FastKeys = std::hash::BuildHasherDefault<rustc_hash::FxHasher>;

/// One question in flight on this member: its envelope and expiry, and the round of it
/// (the relay core: forward first, merge on the way back).
struct QState {
    env: QuestionEnvelope,
    deadline: tokio::time::Instant,
    round: Round<Incoming, Partial>,
}

/// A question's state, shared with the callback of the hop that carries it on: the
/// successor's answer finishes the round where it arrives (see [`finish_where_answered`]),
/// without a message to this member and a turn of it for each machine on the way back.
type Shared = Arc<std::sync::Mutex<QState>>;

fn lock(q: &Shared) -> std::sync::MutexGuard<'_, QState> {
    // Nothing that holds the lock leaves the state half-changed on a panic.
    q.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl QState {
    /// When both our answer and the answers after us are in: merges them and answers every
    /// waiter. `Some` if the round finished now, holding our own answer if it is to go to
    /// the server directly.
    fn finish(&mut self, me: &NodeId) -> Option<Option<EncodedAnswer>> {
        let f = self.round.finish(me)?;
        for mut w in f.waiters {
            let _ = w.answer(&f.merged);
        }
        Some(f.send_late)
    }
}

/// How many rounds one thread is finishing inside each other: on the in-memory transport an
/// answer is handed to the predecessor's callback at once, so a chain's way back runs as
/// nested calls. Past this depth the rest goes by message, which bounds the stack.
const MAX_NESTED_FINISHES: u32 = 32;

thread_local! {
    static NESTED_FINISHES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Finishes round `generation` of `q` with the successor's answer `down`, right where the
/// answer arrived, if nothing else needs this member: our own answer is in, the round still
/// waits on that successor, the question is not one to answer to the server ourselves, the
/// state is not in use (by this member or a round further up on this thread), and the
/// thread's nesting allows. Hands `down` back otherwise, for the member to take as a message.
fn finish_where_answered(
    q: &Shared,
    generation: u64,
    me: &NodeId,
    down: Partial,
) -> Result<(), Partial> {
    let depth = NESTED_FINISHES.with(|d| d.get());
    if depth >= MAX_NESTED_FINISHES {
        return Err(down);
    }
    let Ok(mut st) = q.try_lock() else {
        return Err(down);
    };
    if !st.round.has_own() || st.round.is_late() {
        return Err(down);
    }
    st.round.downstream(generation, down)?;
    /// Puts the depth back however the finish ends (a panic included).
    struct Nested(u32);
    impl Drop for Nested {
        fn drop(&mut self) {
            NESTED_FINISHES.with(|d| d.set(self.0));
        }
    }
    NESTED_FINISHES.with(|d| d.set(depth + 1));
    let _restore = Nested(depth);
    st.finish(me);
    Ok(())
}

impl From<Incoming> for MemberMsg {
    fn from(i: Incoming) -> Self {
        MemberMsg::Remote(i)
    }
}

/// An endpoint registers a second time within this of its first answer (then every
/// `register_min..register_max`): a fleet starting at once gets lists that hold only the
/// machines registered before each one, and the second fills them in.
pub const FIRST_REREGISTRATION_WITHIN: Duration = Duration::from_secs(5);

/// The endpoint's ring actor.
#[derive(Debug, Clone, Copy)]
pub struct RingMember;

/// Its state.
pub struct MemberState {
    cfg: MemberConfig,
    node: Node,
    core: RingCore,
    /// The links to ring neighbours (a few; looked up on every hop).
    links: HashMap<NodeId, PeerHandle, FastKeys>,
    server_link: Option<PeerHandle>,
    /// Watches the server link for a comeback (aborted with the link or the member).
    server_watch: Option<AbortOnDrop>,
    /// Leadership announcements go out one at a time, newest only: `announce_seq` numbers
    /// them and the lock is held across each call, so the server never hears an older
    /// announcement after a newer one (each call is its own stream and may overtake).
    announce_seq: Arc<std::sync::atomic::AtomicU64>,
    announce_lock: Arc<tokio::sync::Mutex<()>>,
    ring: Option<RingId>,
    registrations: u64,
    /// Registrations that failed in a row: retries back off (a server shedding load must
    /// not face a fleet retrying ever faster).
    reg_failures: u32,
    /// Suspect reports the server left unanswered in a row, and until when further ones
    /// are held back.
    report_failures: u32,
    reports_held_until: Option<std::time::Instant>,
    rng: SmallRng,
    me: MemberInfo,
    /// Each behind a pointer: a member keeps every question until a minute after it
    /// expires, and the map grows by copying its entries.
    questions: HashMap<u64, Shared, FastKeys>,
    /// Each probe's hop-timeout look, cancelled when the probe is answered first (an
    /// answered probe needs no second look).
    probe_timers: HashMap<NodeId, AbortOnDrop>,
}

/// `base` doubled once per earlier failure, at most `cap` (never below `base`).
fn backoff(base: Duration, failures: u32, cap: Duration) -> Duration {
    base.saturating_mul(1 << failures.min(16))
        .min(cap.max(base))
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Calls the server: over the persistent link when this member leads, else over a link made
/// for this one call.
async fn server_call<Q: Serialize, R: DeserializeOwned>(
    node: &Node,
    link: Option<PeerHandle>,
    server: SocketAddr,
    timeout: Duration,
    req: &Q,
) -> Result<R, CallError> {
    if let Some(l) = link.filter(PeerHandle::is_connected) {
        return l.call(REGISTRY, req, timeout).await;
    }
    let l = node.connect_once(server, timeout).await?;
    let r = l.call(REGISTRY, req, timeout).await;
    l.close();
    r
}

/// One hop of a question, handed to a successor: its answer (or failure) comes back to the
/// member as `Downstream`.
struct HopSend {
    id: u64,
    generation: u64,
    to: NodeId,
    hop: Duration,
    me: ActorRef<MemberMsg>,
    /// The question's state and this member's id, to finish the round where the answer
    /// arrives.
    state: Shared,
    my_id: NodeId,
}

impl HopSend {
    /// Sends the question over `link` (closed after the answer if it was `dialed` for it).
    /// The answer comes back from wherever it is known (on the in-memory transport, the
    /// answering side), with no task per hop: only the hop's deadline waits, to route past a
    /// successor that did not take the question in time (the question's expiry bounds the
    /// rest). The deadline starts once the link is there: dialing time never judges a hop.
    fn over(self, link: &PeerHandle, dialed: bool, env: QuestionEnvelope) {
        let HopSend {
            id,
            generation,
            to,
            hop,
            me,
            state,
            my_id,
        } = self;
        let acked = Arc::new(AtomicBool::new(false));
        let (back, answered_by) = (me.clone(), to.clone());
        // Only a link dialed for this question is held by its callback, to be closed.
        let closing = dialed.then(|| link.clone());
        let started = link.call_then(
            MEMBER,
            &MemberRequest::Ask(env),
            acked.clone(),
            move |result: Result<Partial, CallError>| {
                if let Some(l) = closing {
                    l.close();
                }
                let result = match result {
                    Ok(down) => match finish_where_answered(&state, generation, &my_id, down) {
                        Ok(()) => return,
                        Err(down) => Ok(down),
                    },
                    Err(e) => Err(e),
                };
                let _ = back.send_message(MemberMsg::Downstream {
                    id,
                    generation,
                    to: answered_by,
                    result,
                });
            },
        );
        if let Err(e) = started {
            if dialed {
                link.close();
            }
            let _ = me.send_message(MemberMsg::Downstream {
                id,
                generation,
                to,
                result: Err(e),
            });
            return;
        }
        hop_deadlines::watch(hop_deadlines::Deadline {
            at: tokio::time::Instant::now() + hop,
            acked,
            me,
            to,
        });
    }

    /// The question could not be sent.
    fn failed(self, e: CallError) {
        let _ = self.me.send_message(MemberMsg::Downstream {
            id: self.id,
            generation: self.generation,
            to: self.to,
            result: Err(e),
        });
    }
}

/// Hop deadlines, kept per thread and runtime and fired by one watcher task per queue
/// instead of a sleeping task per hop: a hop costs a queue entry under an uncontended lock,
/// not a task, a timer and a wake-up. The queue keeps its room between questions (a new one
/// per question grew by doubling, on fresh memory, on every thread); its watcher ends once
/// nothing is left to watch, so a stopped fleet leaves no task. The same path runs on
/// multi-thread runtimes (production, the simulator) and current-thread ones (the
/// paused-time scenario suite, deterministic network tests).
mod hop_deadlines {
    use std::cmp::{Ordering as CmpOrdering, Reverse};
    use std::collections::{BinaryHeap, VecDeque};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};

    use ractor::ActorRef;
    use rollcall_runtime::NodeId;
    use tokio::time::Instant;

    use super::MemberMsg;

    /// A question handed to `to` at a hop: unless `acked` is set by `at`, `me` hears
    /// [`MemberMsg::HopLate`].
    pub(super) struct Deadline {
        pub(super) at: Instant,
        pub(super) acked: Arc<AtomicBool>,
        pub(super) me: ActorRef<MemberMsg>,
        pub(super) to: NodeId,
    }

    /// Something due at an instant.
    trait At {
        fn at(&self) -> Instant;
    }

    impl At for Deadline {
        fn at(&self) -> Instant {
            self.at
        }
    }

    /// What a watcher does with a deadline that came due.
    trait Expire: At {
        fn expire(self);
    }

    impl Expire for Deadline {
        fn expire(self) {
            if !self.acked.load(Ordering::Acquire) {
                let _ = self.me.send_message(MemberMsg::HopLate(self.to));
            }
        }
    }

    /// Ordered by when it is due.
    struct ByAt<T>(T);

    impl<T: At> PartialEq for ByAt<T> {
        fn eq(&self, other: &Self) -> bool {
            self.0.at() == other.0.at()
        }
    }
    impl<T: At> Eq for ByAt<T> {}
    impl<T: At> PartialOrd for ByAt<T> {
        fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
            Some(self.cmp(other))
        }
    }
    impl<T: At> Ord for ByAt<T> {
        fn cmp(&self, other: &Self) -> CmpOrdering {
            self.0.at().cmp(&other.0.at())
        }
    }

    /// Pending deadlines, soonest first. Deadlines from one thread with one hop timeout come
    /// in order: those queue at the back in O(1); any other goes to a heap.
    struct Due<T> {
        fifo: VecDeque<T>,
        heap: BinaryHeap<Reverse<ByAt<T>>>,
    }

    impl<T: At> Due<T> {
        fn new() -> Self {
            Due {
                fifo: VecDeque::new(),
                heap: BinaryHeap::new(),
            }
        }

        fn push(&mut self, d: T) {
            if self.fifo.back().is_none_or(|b| b.at() <= d.at()) {
                self.fifo.push_back(d);
            } else {
                self.heap.push(Reverse(ByAt(d)));
            }
        }

        fn next(&self) -> Option<Instant> {
            let f = self.fifo.front().map(At::at);
            let h = self.heap.peek().map(|d| d.0.0.at());
            match (f, h) {
                (Some(f), Some(h)) => Some(f.min(h)),
                (f, h) => f.or(h),
            }
        }

        /// The soonest deadline, if it is at or before `now`.
        fn pop_due(&mut self, now: Instant) -> Option<T> {
            let f = self.fifo.front().map(At::at).filter(|&at| at <= now);
            let h = self.heap.peek().map(|d| d.0.0.at()).filter(|&at| at <= now);
            match (f, h) {
                (Some(f), Some(h)) if h < f => self.heap.pop().map(|d| d.0.0),
                (Some(_), _) => self.fifo.pop_front(),
                (None, Some(_)) => self.heap.pop().map(|d| d.0.0),
                (None, None) => None,
            }
        }

        #[cfg(test)]
        fn is_empty(&self) -> bool {
            self.fifo.is_empty() && self.heap.is_empty()
        }
    }

    /// One thread's pending deadlines, shared with the watcher that fires them (a task,
    /// which may run on any thread of the runtime).
    struct Watch<T> {
        state: Mutex<WatchState<T>>,
        wake: tokio::sync::Notify,
    }

    struct WatchState<T> {
        due: Due<T>,
        /// A watcher is running (or started) for these deadlines.
        running: bool,
    }

    impl<T: Expire + Send + 'static> Watch<T> {
        fn new() -> Arc<Self> {
            Arc::new(Watch {
                state: Mutex::new(WatchState {
                    due: Due::new(),
                    running: false,
                }),
                wake: tokio::sync::Notify::new(),
            })
        }

        fn lock(&self) -> MutexGuard<'_, WatchState<T>> {
            // Nothing that holds the lock leaves the queue half-changed on a panic.
            self.state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        /// Adds `d`: starts a watcher if none runs, wakes it if `d` comes due before what it
        /// sleeps until (deadlines with one hop timeout come in order and need neither).
        fn add(self: &Arc<Self>, d: T) {
            let (start, wake) = {
                let mut st = self.lock();
                let before = st.due.next();
                let at = d.at();
                st.due.push(d);
                let start = !st.running;
                st.running = true;
                (start, !start && before.is_none_or(|b| at < b))
            };
            if start {
                tokio::spawn(run(self.clone()));
            } else if wake {
                self.wake.notify_one();
            }
        }
    }

    thread_local! {
        /// This thread's deadline queues, one per runtime whose tasks run here: a
        /// multi-thread runtime's worker has one; current-thread runtimes that take turns
        /// on a thread (each host of a deterministic network test, with its own clock)
        /// each have their own, fired by a watcher on that runtime.
        static WATCHES: std::cell::RefCell<Vec<(tokio::runtime::Id, Arc<Watch<Deadline>>)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Runtimes' queues kept per thread before idle ones are let go.
    const WATCHES_KEPT: usize = 16;

    /// Watches `d` (from a task on a Tokio runtime), on every runtime flavour alike.
    pub(super) fn watch(d: Deadline) {
        let runtime = tokio::runtime::Handle::current().id();
        let w = WATCHES.with(|ws| {
            let mut ws = ws.borrow_mut();
            if let Some((_, w)) = ws.iter().find(|(id, _)| *id == runtime) {
                return w.clone();
            }
            if ws.len() >= WATCHES_KEPT {
                // Queues of runtimes that ended (or sit idle) hold nothing to fire.
                ws.retain(|(_, w)| w.lock().running);
            }
            let w = Watch::new();
            ws.push((runtime, w.clone()));
            w
        });
        w.add(d);
    }

    /// Fires `w`'s deadlines as they come due, until none is left.
    async fn run<T: Expire + Send + 'static>(w: Arc<Watch<T>>) {
        /// A watcher dropped before its end (its runtime shut down): the deadlines it held
        /// are let go (their members went with the runtime), and the next one added starts
        /// a watcher again.
        struct Dropped<T: Expire + Send + 'static>(Option<Arc<Watch<T>>>);
        impl<T: Expire + Send + 'static> Drop for Dropped<T> {
            fn drop(&mut self) {
                if let Some(w) = self.0.take() {
                    let mut st = w.lock();
                    st.running = false;
                    st.due = Due::new();
                }
            }
        }
        let mut guard = Dropped(Some(w.clone()));
        let mut fired = Vec::new();
        loop {
            let next = {
                let mut st = w.lock();
                let now = Instant::now();
                while let Some(d) = st.due.pop_due(now) {
                    fired.push(d);
                }
                let next = st.due.next();
                if next.is_none() {
                    // Nothing left to watch: end, under the lock a new deadline is added
                    // with (which then starts a watcher again).
                    st.running = false;
                    guard.0 = None;
                }
                next
            };
            // Fired outside the lock (a hop that is late tells its member).
            for d in fired.drain(..) {
                d.expire();
            }
            let Some(at) = next else { return };
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = w.wake.notified() => {}
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        impl At for (Instant, u32) {
            fn at(&self) -> Instant {
                self.0
            }
        }

        /// A deadline that records when it expired.
        struct Probe(Instant, u32, std::sync::mpsc::Sender<(u32, Instant)>);

        impl At for Probe {
            fn at(&self) -> Instant {
                self.0
            }
        }

        impl Expire for Probe {
            fn expire(self) {
                let _ = self.2.send((self.1, Instant::now()));
            }
        }

        /// Waits (in paused time) until `w`'s watcher has ended.
        async fn ended(w: &Watch<Probe>) {
            for _ in 0..1000 {
                if !w.lock().running {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("the watcher did not end");
        }

        #[tokio::test(start_paused = true)]
        async fn one_watcher_fires_every_deadline_at_its_time_then_ends_keeping_its_room() {
            let (fired_tx, fired) = std::sync::mpsc::channel();
            let w = Watch::new();
            let t0 = Instant::now();
            let ms = |n: u64| t0 + std::time::Duration::from_millis(n);
            w.add(Probe(ms(100), 0, fired_tx.clone()));
            for i in 1..=5u32 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                w.add(Probe(ms(100 + 10 * u64::from(i)), i, fired_tx.clone()));
            }
            // Out of order (a shorter hop timeout): due before what the watcher sleeps until.
            w.add(Probe(ms(80), 6, fired_tx.clone()));
            ended(&w).await;
            let got: Vec<(u32, u64)> = fired
                .try_iter()
                .map(|(i, at)| (i, (at - t0).as_millis() as u64))
                .collect();
            assert_eq!(
                got,
                [
                    (6, 80),
                    (0, 100),
                    (1, 110),
                    (2, 120),
                    (3, 130),
                    (4, 140),
                    (5, 150)
                ],
                "each deadline fires once, at its time"
            );
            assert!(
                w.lock().due.fifo.capacity() >= 6,
                "the queue keeps its room for the next question"
            );
            // A deadline after the end starts a watcher again.
            w.add(Probe(ms(400), 7, fired_tx));
            ended(&w).await;
            let again: Vec<(u32, u64)> = fired
                .try_iter()
                .map(|(i, at)| (i, (at - t0).as_millis() as u64))
                .collect();
            assert_eq!(again, [(7, 400)]);
        }

        #[test]
        fn a_watcher_dropped_with_its_runtime_lets_its_deadlines_go_and_a_new_one_starts() {
            let (fired_tx, fired) = std::sync::mpsc::channel();
            let w = Watch::new();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let at = Instant::now() + std::time::Duration::from_secs(60);
                w.add(Probe(at, 0, fired_tx.clone()));
                tokio::task::yield_now().await;
            });
            assert!(w.lock().running, "a watcher sleeps on the deadline");
            drop(rt);
            {
                let st = w.lock();
                assert!(!st.running && st.due.next().is_none());
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            rt.block_on(async {
                let t0 = Instant::now();
                w.add(Probe(t0 + std::time::Duration::from_millis(5), 1, fired_tx));
                ended(&w).await;
            });
            let got: Vec<u32> = fired.try_iter().map(|(i, _)| i).collect();
            assert_eq!(
                got,
                [1],
                "the dropped deadline never fires; the new one does"
            );
        }

        #[test]
        fn deadlines_come_due_soonest_first_in_order_or_not() {
            let t0 = Instant::now();
            let ms = |n: u64| t0 + std::time::Duration::from_millis(n);
            let mut due = Due::new();
            // In order (one thread, one hop timeout) and out of it (a shorter timeout).
            for (at, tag) in [(10, 1), (20, 2), (30, 3), (15, 4), (5, 5), (30, 6)] {
                due.push((ms(at), tag));
            }
            assert_eq!(due.next(), Some(ms(5)));
            assert!(due.pop_due(ms(4)).is_none(), "nothing is due before 5 ms");
            let mut got = Vec::new();
            while let Some((_, tag)) = due.pop_due(ms(20)) {
                got.push(tag);
            }
            assert_eq!(got, [5, 1, 4, 2]);
            assert_eq!(due.next(), Some(ms(30)));
            let rest: Vec<u32> = std::iter::from_fn(|| due.pop_due(ms(99)).map(|d| d.1)).collect();
            assert_eq!(rest.len(), 2);
            assert!(rest.contains(&3) && rest.contains(&6));
            assert!(due.is_empty() && due.next().is_none());
        }
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl MemberState {
    /// Takes a question: joins the round under way, or starts one — forward first, then
    /// evaluate (once per question), then merge.
    fn ask(
        &mut self,
        myself: &ActorRef<MemberMsg>,
        env: QuestionEnvelope,
        waiter: Option<Incoming>,
        late: bool,
    ) {
        let id = env.id;
        if let Some(q) = self.questions.get(&id) {
            // Asked again after a round finished (a predecessor rerouted): a new round down
            // the chain, whose members answer from their own state.
            let joined = lock(q).round.join(waiter, late);
            if let Some(own) = joined.send_late {
                self.send_late(id, own);
            }
            if joined.forward_again {
                self.forward(myself, id);
            }
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(env.ttl_ms);
        // The question is read now; the sensors run once it went on.
        let work = self
            .cfg
            .evaluator
            .as_ref()
            .map(|ev| ev.0.evaluate(&env.body));
        self.questions.insert(
            id,
            Arc::new(std::sync::Mutex::new(QState {
                env,
                deadline,
                // A late question is answered alone, straight to the server.
                round: Round::new(waiter, late),
            })),
        );
        if !late {
            self.forward(myself, id);
        }
        let me = myself.clone();
        match work {
            Some(mut work) => {
                // Sensors that answer at once (most do; a simulated host always does) are
                // taken here; only work that waits gets a task of its own, whose answer comes
                // back as a message. The question went on first either way.
                match futures::FutureExt::now_or_never(&mut work) {
                    Some(answer) => self.evaluated(id, answer),
                    None => {
                        tokio::spawn(async move {
                            let answer = work.await;
                            let _ = me.send_message(MemberMsg::Evaluated { id, answer });
                        });
                    }
                }
            }
            None => {
                let _ = me.send_message(MemberMsg::Evaluated {
                    id,
                    answer: NodeAnswer {
                        rows: None,
                        problems: vec!["this endpoint has no sensors".into()],
                    },
                });
            }
        }
    }

    /// Sends question `id` to the current route target (or, with none, ends the chain here).
    fn forward(&mut self, myself: &ActorRef<MemberMsg>, id: u64) {
        let target = self.core.route_target().cloned();
        let Some(state) = self.questions.get(&id) else {
            return;
        };
        let mut q = lock(state);
        let generation = match q.round.forward(target.as_ref().map(|t| &t.id)) {
            // Finished meanwhile (where its answer arrived).
            Forward::Finished => return,
            Forward::EndOfChain => {
                drop(q);
                self.complete(id);
                return;
            }
            Forward::Hop { generation, .. } => generation,
        };
        let Some(target) = target else {
            return;
        };
        tracing::debug!(question = id, to = %target.id, at = ?tokio::time::Instant::now(), "forwarding");
        let left = q
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        let env = QuestionEnvelope {
            ttl_ms: left.as_millis() as u64,
            ..q.env.clone()
        };
        drop(q);
        let state = state.clone();
        let send = HopSend {
            id,
            generation,
            to: target.id,
            hop: self.cfg.ring.hop_timeout,
            me: myself.clone(),
            state,
            my_id: self.me.id.clone(),
        };
        match self.links.get(&send.to).filter(|l| l.is_connected()) {
            Some(link) => send.over(link, false, env),
            // No link held: one dialed for this question alone, closed after it.
            None => {
                let (node, dial) = (self.node.clone(), self.cfg.ring.dial_timeout);
                tokio::spawn(async move {
                    match Box::pin(node.connect_once(target.addr, dial.min(left))).await {
                        Ok(link) => send.over(&link, true, env),
                        Err(e) => send.failed(e),
                    }
                });
            }
        }
    }

    /// Closes links that carry nothing: to members no longer among our candidates (the view
    /// moved on, as it does while a ring forms) or past the route target, with no probe under
    /// way and no question waiting on them. Each is a connection held at both ends.
    fn prune_links(&mut self) {
        if self.links.len() <= 1 {
            return;
        }
        // Links in use: to the candidates up to the route target (those before it are probed
        // while slow or dead), and on to the first after it known to answer (probed too while
        // the target is untried); and to where a question waits. Links further along carry
        // nothing until the route moves there, and then are dialed again: each costs both
        // ends a connection, and a ring of 10^5 simulated members held two extra apiece.
        let core = &self.core;
        let target = core.route_target().map(|m| &m.id);
        let mut keep: Vec<&NodeId> = Vec::new();
        let mut past_target = target.is_none();
        let mut in_use = true;
        for m in core.candidates() {
            // A probe under way keeps its link whatever the route (closing it would fail a
            // healthy member's probe and mark it dead).
            if in_use || core.probing(&m.id) {
                keep.push(&m.id);
            }
            past_target |= target == Some(&m.id);
            if past_target && core.health(&m.id) == PeerHealth::Ok {
                in_use = false;
            }
        }
        let waited_on: Vec<NodeId> = self
            .questions
            .values()
            .filter_map(|q| lock(q).round.waiting_on().cloned())
            .collect();
        keep.extend(waited_on.iter());
        let stale: Vec<NodeId> = self
            .links
            .keys()
            .filter(|id| !keep.contains(id))
            .cloned()
            .collect();
        for id in stale {
            if let Some(l) = self.links.remove(&id) {
                l.close();
            }
        }
    }

    /// Questions waiting on a successor the ring has since routed past go to the new one.
    fn reroute_questions(&mut self, myself: &ActorRef<MemberMsg>) {
        let target = self.core.route_target().map(|m| m.id.clone());
        let now = tokio::time::Instant::now();
        self.questions
            .retain(|_, q| lock(q).deadline + Duration::from_secs(60) > now);
        let stale: Vec<u64> = self
            .questions
            .iter()
            .filter(|(_, q)| {
                let q = lock(q);
                q.round.waits_on_other_than(target.as_ref()) && q.deadline > now
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            tracing::debug!(
                question = id,
                to = ?target,
                me = %self.me.id,
                candidates = ?self
                    .core
                    .candidates()
                    .iter()
                    .map(|m| (m.id.0.clone(), self.core.health(&m.id)))
                    .collect::<Vec<_>>(),
                "rerouting past a late successor"
            );
            self.forward(myself, id);
        }
    }

    /// A question from a predecessor (`Ask`) or handed over by the server (`Late`).
    fn take_question(
        &mut self,
        myself: &ActorRef<MemberMsg>,
        mut inc: Incoming,
        req: MemberRequest,
    ) -> Result<(), ActorProcessingErr> {
        match req {
            MemberRequest::Ask(env) => {
                // Taken: the predecessor stops its hop clock (the answer follows once the
                // rest of the chain has answered).
                inc.ack();
                // Read: the frame goes back to the allocator now, not once the whole chain
                // after us has answered (the call waits here that long, on every member of
                // every chain at once).
                inc.body = Default::default();
                self.ask(myself, env, Some(inc), false);
            }
            MemberRequest::Late(env) => {
                inc.answer(&())?;
                self.ask(myself, env, None, true);
            }
            _ => inc.refuse(),
        }
        Ok(())
    }

    /// What the successor answered to round `generation` of question `id` came back (an
    /// answer to an earlier round, rerouted since, is dropped).
    fn downstream(&mut self, id: u64, generation: u64, answer: Partial) {
        let Some(q) = self.questions.get(&id) else {
            return;
        };
        if lock(q).round.downstream(generation, answer).is_err() {
            return;
        }
        self.complete(id);
    }

    /// Our own answer to question `id` is in.
    fn evaluated(&mut self, id: u64, answer: NodeAnswer) {
        if let Some(q) = self.questions.get(&id) {
            lock(q).round.own_result(EncodedAnswer::new(&answer));
        }
        self.complete(id);
    }

    /// When both our answer and the answers after us are in: merge, cache, reply.
    fn complete(&mut self, id: u64) {
        let Some(q) = self.questions.get(&id) else {
            return;
        };
        let late_own = lock(q).finish(&self.me.id).flatten();
        if let Some(own) = late_own {
            self.send_late(id, own);
        }
    }

    fn send_late(&self, id: u64, answer: EncodedAnswer) {
        let node = self.node.clone();
        let link = self.server_link.clone();
        let (server, t) = (self.cfg.server, self.cfg.server_timeout);
        tokio::spawn(async move {
            let answer = match answer.decode() {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(question = id, error = %e, "own answer undecodable");
                    return;
                }
            };
            let r: Result<(), CallError> = server_call(
                &node,
                link,
                server,
                t,
                &ServerRequest::Answer { id, answer },
            )
            .await;
            if let Err(e) = r {
                tracing::warn!(question = id, error = %e, "could not send a late answer");
            }
        });
    }

    fn registration(&self) -> Registration {
        Registration {
            addr: self.cfg.advertise,
            hostname: self.cfg.hostname.clone(),
            os: std::env::consts::OS.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Feeds the ring core and carries out what it says. Boxed: held inline, its state (and
    /// every output's) would be part of the future of each message the member handles, which
    /// ractor moves and keeps for the member's whole life.
    fn feed<'a>(
        &'a mut self,
        myself: &'a ActorRef<MemberMsg>,
        input: Input,
    ) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            self.core.handle(input, now());
            while let Some(out) = self.core.poll_output() {
                self.act(myself, out).await;
            }
        })
    }

    async fn act(&mut self, myself: &ActorRef<MemberMsg>, out: Output) {
        let timeout = self.cfg.ring.dead_timeout;
        let dial = self.cfg.ring.dial_timeout;
        match out {
            Output::Probe(m) => {
                // Look again right when this attempt's hop timeout runs out, so a late hop is
                // routed past then, not at the next probe tick.
                let look = myself.clone();
                let after = self.cfg.ring.hop_timeout + Duration::from_millis(5);
                self.probe_timers.insert(
                    m.id.clone(),
                    AbortOnDrop(tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = look.send_message(MemberMsg::Tick);
                    })),
                );
                let node = self.node.clone();
                let link = self.links.get(&m.id).filter(|l| l.is_connected()).cloned();
                let me = myself.clone();
                tokio::spawn(async move {
                    // The dial and the call have their own timeouts: never drop a half-made
                    // attempt, whose link would stay open.
                    let attempt = async {
                        let link = match link {
                            Some(l) => l,
                            None => node.connect_once(m.addr, dial).await?,
                        };
                        let _ = me.send_message(MemberMsg::ProbeStarted(m.id.clone()));
                        let r: Result<Vec<MemberInfo>, CallError> =
                            link.call(MEMBER, &MemberRequest::Ping, timeout).await;
                        if let Ok(next) = &r
                            && !next.is_empty()
                        {
                            let _ = me.send_message(MemberMsg::Learned(next.clone()));
                        }
                        let ok = r.is_ok();
                        Ok::<_, CallError>((ok, link))
                    };
                    let msg = match attempt.await {
                        Ok((ok, link)) => MemberMsg::Probed {
                            id: m.id,
                            addr: m.addr,
                            ok,
                            link: Some(link),
                        },
                        _ => MemberMsg::Probed {
                            id: m.id,
                            addr: m.addr,
                            ok: false,
                            link: None,
                        },
                    };
                    let _ = me.send_message(msg);
                });
            }
            Output::Hello(pred) => {
                let node = self.node.clone();
                let hello = MemberRequest::Hello(self.me.clone());
                let me = myself.clone();
                tokio::spawn(async move {
                    let answered = match node.connect_once(pred.addr, dial).await {
                        Ok(l) => {
                            // The answer is the greeted member's view: anyone it knows between
                            // us is our real predecessor, whom we then greet.
                            let r: Result<Vec<MemberInfo>, CallError> =
                                l.call(MEMBER, &hello, timeout).await;
                            l.close();
                            match r {
                                Ok(view) => {
                                    let _ = me.send_message(MemberMsg::Learned(view));
                                    true
                                }
                                Err(e) => {
                                    tracing::debug!(to = %pred.id, error = %e, "hello not answered");
                                    false
                                }
                            }
                        }
                        Err(e) => {
                            tracing::debug!(to = %pred.id, error = %e, "could not reach our predecessor to greet it");
                            false
                        }
                    };
                    if !answered {
                        let _ = me.send_message(MemberMsg::HelloFailed(pred.id));
                    }
                });
            }
            Output::Report { suspect, reason } => {
                // While the server leaves reports unanswered, hold further ones back (the
                // ring core reports again later while the neighbour stays suspect): a server
                // slowed by load must not be buried in reports of the slowness it causes.
                if self.reports_held_until.is_some_and(|t| now() < t) {
                    tracing::debug!(%suspect, ?reason, "report held back: the server is not answering reports");
                    return;
                }
                tracing::info!(%suspect, ?reason, "reporting suspect neighbour");
                let node = self.node.clone();
                let link = self.server_link.clone();
                let (server, t) = (self.cfg.server, self.cfg.server_timeout);
                let me = myself.clone();
                // Warn once per streak of failures: an overloaded server would otherwise get
                // one warning line per member per report interval in every member's log.
                let streak = self.report_failures > 0;
                tokio::spawn(async move {
                    let req = ServerRequest::Suspect { suspect, reason };
                    let r: Result<(), CallError> = server_call(&node, link, server, t, &req).await;
                    match &r {
                        Err(e) if streak => {
                            tracing::debug!(error = %e, "could not report a suspect to the server, again");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not report a suspect to the server")
                        }
                        Ok(()) => {}
                    }
                    let _ = me.send_message(MemberMsg::Reported(r.is_ok()));
                });
            }
            Output::Drop(id) => {
                if let Some(l) = self.links.remove(&id) {
                    l.close();
                }
            }
            // Boxed, as is the announcement below: dialing the server is a large future, and
            // held inline it would be moved with every message the member handles.
            Output::Leader(sides) => Box::pin(self.lead(myself, sides)).await,
        }
    }

    /// Opens or closes the server link as leadership changes, and announces it.
    async fn lead(&mut self, myself: &ActorRef<MemberMsg>, sides: LeaderSides) {
        tracing::info!(
            forward = sides.forward,
            backward = sides.backward,
            "leadership changed"
        );
        if !sides.any() {
            self.server_watch = None;
            if let Some(link) = self.server_link.take() {
                self.resign(link);
            }
            return;
        }
        if self.registrations == 0 {
            // The server does not know us yet; the first registration's answer announces.
            return;
        }
        self.announce(myself, sides).await;
    }

    /// Tells the server, on the leader's link, that we lead nothing any more, then closes the
    /// link. The server also drops a leader whose link closed, but only once no connection
    /// to it is left, and it may hold others (a registration's, its own probe or question):
    /// without this word a former leader stayed one in its eyes. In turn with the other
    /// announcements; skipped if a newer one was made meanwhile.
    fn resign(&self, link: PeerHandle) {
        let t = self.cfg.server_timeout;
        let seq = self.announce_seq.clone();
        let mine = seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let lock = self.announce_lock.clone();
        tokio::spawn(async move {
            {
                let _one_at_a_time = lock.lock().await;
                if seq.load(std::sync::atomic::Ordering::SeqCst) == mine && link.is_connected() {
                    let r: Result<(), CallError> = link
                        .call(REGISTRY, &ServerRequest::Leader(LeaderSides::default()), t)
                        .await;
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "could not tell the server we stopped leading");
                    }
                }
            }
            link.close();
        });
    }

    async fn announce(&mut self, myself: &ActorRef<MemberMsg>, sides: LeaderSides) {
        let (server, t) = (self.cfg.server, self.cfg.server_timeout);
        if self.server_link.is_none() {
            // A redialing link: it survives server restarts. `connect` only starts the link
            // actor; it does not wait for the connection.
            match self.node.connect(server).await {
                Ok(l) => {
                    // When the server comes back after losing us (a restart), register at
                    // once, so it learns its leaders without waiting a whole interval.
                    let (watch, me) = (l.clone(), myself.clone());
                    // Aborted when the link is let go of (`server_watch` with it).
                    self.server_watch = Some(AbortOnDrop(tokio::spawn(async move {
                        loop {
                            watch.wait_reconnected().await;
                            if me.send_message(MemberMsg::RegisterNow).is_err() {
                                return;
                            }
                        }
                    })));
                    self.server_link = Some(l);
                }
                Err(e) => tracing::warn!(error = %e, "could not start the server link"),
            }
        }
        let Some(link) = self.server_link.clone() else {
            return;
        };
        let me = myself.clone();
        let retry = self
            .cfg
            .ring
            .retry_interval
            .mul_f64(self.rng.random_range(0.5..=1.0));
        let seq = self.announce_seq.clone();
        let mine = seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let lock = self.announce_lock.clone();
        tokio::spawn(async move {
            if link.wait_connected(t).await.is_ok() {
                let _one_at_a_time = lock.lock().await;
                if seq.load(std::sync::atomic::Ordering::SeqCst) != mine {
                    // A newer announcement was made while this one waited: it alone goes.
                    return;
                }
                let r: Result<(), CallError> =
                    link.call(REGISTRY, &ServerRequest::Leader(sides), t).await;
                match r {
                    Ok(()) => {}
                    // The node is shutting down, or leadership moved on and the link was
                    // closed (a fleet starting at once hands it on quickly).
                    Err(CallError::Transport(
                        rollcall_runtime::TransportError::LocallyClosed
                        | rollcall_runtime::TransportError::ClosedByPeer(_),
                    )) => tracing::debug!("leadership announcement overtaken by a closed link"),
                    // A server that does not know us (it restarted): register, and the
                    // answer's handler announces again.
                    Err(CallError::Transport(rollcall_runtime::TransportError::Refused(_))) => {
                        tracing::info!("the server does not know this leader; registering now");
                        let _ = me.send_message(MemberMsg::RegisterNow);
                    }
                    // Unanswered (a server busy with a fleet starting at once): register
                    // again after a while; the answer's handler announces again. Until
                    // then the server routes questions by what it last heard.
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?retry, "could not announce leadership");
                        me.send_after(retry, || MemberMsg::RegisterNow);
                    }
                }
            }
        });
    }
}

impl Actor for RingMember {
    type Msg = MemberMsg;
    type State = MemberState;
    type Arguments = (Node, MemberConfig);

    async fn pre_start(
        &self,
        myself: ActorRef<MemberMsg>,
        (node, cfg): Self::Arguments,
    ) -> Result<MemberState, ActorProcessingErr> {
        node.router().register_actor(MEMBER, myself.clone());
        let me = MemberInfo {
            id: node.identity().id.clone(),
            addr: cfg.advertise,
        };
        myself.send_message(MemberMsg::Register)?;
        myself.send_interval(cfg.ring.probe_interval, || MemberMsg::Tick);
        Ok(MemberState {
            core: RingCore::new(cfg.ring, me.clone(), now()),
            rng: SmallRng::seed_from_u64(cfg.seed),
            cfg,
            node,
            links: HashMap::default(),
            server_link: None,
            server_watch: None,
            announce_seq: Arc::default(),
            announce_lock: Arc::default(),
            ring: None,
            registrations: 0,
            reg_failures: 0,
            report_failures: 0,
            reports_held_until: None,
            me,
            questions: HashMap::default(),
            probe_timers: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<MemberMsg>,
        msg: MemberMsg,
        st: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        // A question's messages at each hop need no waiting: taken at once. The rest go to
        // a boxed future: ractor keeps room for this future in each actor's loop for the
        // actor's whole life (on every endpoint), so it holds nothing but that box.
        match take_now(myself, msg, st)? {
            Some(work) => work.await,
            None => Ok(()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MemberMsg>,
        st: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        st.node.router().unregister(MEMBER);
        for (_, l) in st.links.drain() {
            l.close();
        }
        if let Some(l) = st.server_link.take() {
            l.close();
        }
        Ok(())
    }
}

/// Work that waits, boxed (see [`RingMember`]'s `handle`).
type Waiting<'a> = futures::future::BoxFuture<'a, Result<(), ActorProcessingErr>>;

/// Does the work of a message that needs no waiting (a hop of a question); hands back the
/// rest's, boxed.
fn take_now(
    myself: ActorRef<MemberMsg>,
    msg: MemberMsg,
    st: &mut MemberState,
) -> Result<Option<Waiting<'_>>, ActorProcessingErr> {
    match msg {
        MemberMsg::Evaluated { id, answer } => st.evaluated(id, answer),
        MemberMsg::Downstream {
            id,
            generation,
            result: Ok(p),
            ..
        } => st.downstream(id, generation, p),
        MemberMsg::Remote(mut inc) => {
            let Some(req) = admit(&mut inc) else {
                return Ok(None);
            };
            match req {
                req @ (MemberRequest::Ask(_) | MemberRequest::Late(_)) => {
                    st.take_question(&myself, inc, req)?
                }
                req => return Ok(Some(Box::pin(remote(myself, inc, req, st)))),
            }
        }
        other => return Ok(Some(Box::pin(dispatch(myself, other, st)))),
    }
    Ok(None)
}

/// One message's work.
async fn dispatch(
    myself: ActorRef<MemberMsg>,
    msg: MemberMsg,
    st: &mut MemberState,
) -> Result<(), ActorProcessingErr> {
    match msg {
        MemberMsg::Tick => {
            st.feed(&myself, Input::Tick).await;
            st.reroute_questions(&myself);
            st.prune_links();
        }
        MemberMsg::Register | MemberMsg::RegisterNow => {
            let timer = matches!(msg, MemberMsg::Register);
            let sent = now();
            st.feed(&myself, Input::RegistrationSent).await;
            let node = st.node.clone();
            let link = st.server_link.clone();
            let (server, t) = (st.cfg.server, st.cfg.server_timeout);
            let req = ServerRequest::Register(st.registration());
            let me = myself.clone();
            tokio::spawn(async move {
                let r = server_call(&node, link, server, t, &req).await;
                let _ = me.send_message(MemberMsg::Registered(sent, r));
            });
            let (lo, hi) = (
                st.cfg.register_min,
                st.cfg.register_max.max(st.cfg.register_min),
            );
            // Right after starting, register again soon: when a whole fleet starts at once,
            // the first answers hold only the machines registered before each one.
            let (lo, hi) = if st.registrations == 0 {
                (
                    lo.min(Duration::from_secs(1)),
                    hi.min(FIRST_REREGISTRATION_WITHIN),
                )
            } else {
                (lo, hi)
            };
            let next = backoff(
                st.rng.random_range(lo..=hi),
                st.reg_failures,
                st.cfg.register_max,
            );
            if timer {
                myself.send_after(next, || MemberMsg::Register);
            }
        }
        MemberMsg::Registered(sent, Ok(reply)) => {
            st.core.registration_answered(sent);
            st.registrations += 1;
            st.reg_failures = 0;
            st.ring = reply.ring.clone();
            let isolated = reply.ring.is_none();
            for h in reply.handoffs {
                let from = PeerIdentity {
                    id: NodeId("server".into()),
                    role: PeerRole::Server,
                };
                if let Err(e) = st.node.deliver_local(&h.to, from, h.body) {
                    tracing::warn!(to = %h.to, error = %e, "could not deliver missed work");
                }
            }
            st.feed(
                &myself,
                Input::Members {
                    members: reply.members,
                    isolated,
                },
            )
            .await;
            let sides = st.core.leader();
            if sides.any() {
                // Re-announce on every registration: a restarted server learns its
                // leaders within one interval.
                Box::pin(st.announce(&myself, sides)).await;
            }
        }
        MemberMsg::Registered(_, Err(e)) => {
            st.reg_failures = st.reg_failures.saturating_add(1);
            // A leader must not stay unknown to a server that just came back (its ring
            // service may not have been up yet), and a member whose answer was lost must
            // not wait a whole interval for its ring's members: try again soon, backing
            // off while failures repeat so a server shedding load is not buried.
            let jitter = st.rng.random_range(0.5..=1.0);
            let wait = backoff(
                st.cfg.ring.retry_interval.mul_f64(jitter),
                st.reg_failures - 1,
                st.cfg.register_max,
            );
            if st.reg_failures == 1 {
                tracing::info!(error = %e, retry_in = ?wait, "registration failed; trying again");
            } else {
                tracing::warn!(error = %e, failures = st.reg_failures, retry_in = ?wait, "registration failed again");
            }
            myself.send_after(wait, || MemberMsg::RegisterNow);
        }
        MemberMsg::ProbeStarted(id) => st.feed(&myself, Input::ProbeStarted(id)).await,
        MemberMsg::Probed { id, addr, .. }
            if st.core.member(&id).is_some_and(|m| m.addr != addr) =>
        {
            // The member moved (it restarted elsewhere and said hello): a stale result.
        }
        MemberMsg::Probed { id, ok, link, .. } => {
            if ok {
                // Answered: the look at its hop timeout is not needed (dropping aborts it).
                st.probe_timers.remove(&id);
            }
            if let Some(l) = link
                && let Some(old) = st.links.insert(id.clone(), l.clone())
                && (old.addr() != l.addr() || !old.is_connected())
            {
                old.close();
            }
            st.feed(
                &myself,
                if ok {
                    Input::Ack(id)
                } else {
                    Input::ProbeFailed(id)
                },
            )
            .await;
        }
        MemberMsg::Remote(mut inc) => {
            if let Some(req) = admit(&mut inc) {
                remote(myself, inc, req, st).await?;
            }
        }
        MemberMsg::Evaluated { id, answer } => st.evaluated(id, answer),
        MemberMsg::Downstream {
            id,
            generation,
            to,
            result,
        } => match result {
            Ok(p) => st.downstream(id, generation, p),
            Err(e) => {
                if st
                    .questions
                    .get(&id)
                    .is_some_and(|q| lock(q).round.awaits(generation))
                {
                    // A failed hop: the successor is treated as unreachable, and the
                    // question goes to the next one.
                    tracing::info!(question = id, %to, error = %e, "forward failed; rerouting");
                    st.feed(&myself, Input::ForwardFailed(to)).await;
                    st.forward(&myself, id);
                }
            }
        },
        MemberMsg::Learned(view) => st.feed(&myself, Input::Learned(view)).await,
        MemberMsg::HelloFailed(id) => st.feed(&myself, Input::HelloFailed(id)).await,
        MemberMsg::HopLate(id) => {
            tracing::info!(successor = %id, "a question was not acknowledged within the hop timeout; routing past");
            st.feed(&myself, Input::HopLate(id)).await;
            st.reroute_questions(&myself);
        }
        MemberMsg::Reported(true) => {
            st.report_failures = 0;
            st.reports_held_until = None;
        }
        MemberMsg::Reported(false) => {
            st.report_failures = st.report_failures.saturating_add(1);
            let hold = backoff(
                st.cfg.ring.report_interval,
                st.report_failures,
                st.cfg.ring.retry_interval,
            );
            st.reports_held_until = Some(now() + hold);
        }
        MemberMsg::Status(reply) => {
            let core = &st.core;
            let _ = reply.send(MemberStatus {
                ring: st.ring.clone(),
                registrations: st.registrations,
                ring_members: core.ring_members(),
                view: core.view().to_vec(),
                route_target: core.route_target().map(|m| m.id.clone()),
                leads: core.leader(),
                server_link_up: st
                    .server_link
                    .as_ref()
                    .is_some_and(PeerHandle::is_connected),
                health: core
                    .candidates()
                    .into_iter()
                    .map(|m| (m.id.clone(), core.health(&m.id)))
                    .collect(),
                questions_pending: st
                    .questions
                    .values()
                    .filter(|q| !lock(q).round.is_done())
                    .count(),
            });
        }
    }
    Ok(())
}

/// A peer's request, decoded; refused (and `None`) if it is not one or the peer is neither an
/// endpoint nor the server.
fn admit(inc: &mut Incoming) -> Option<MemberRequest> {
    let Ok(req) = inc.decode::<MemberRequest>() else {
        inc.refuse();
        return None;
    };
    if inc.from.role != PeerRole::Endpoint && inc.from.role != PeerRole::Server {
        inc.refuse();
        return None;
    }
    Some(req)
}

/// Serves a peer's request.
async fn remote(
    myself: ActorRef<MemberMsg>,
    mut inc: Incoming,
    req: MemberRequest,
    st: &mut MemberState,
) -> Result<(), ActorProcessingErr> {
    match req {
        MemberRequest::Ping => {
            let from = inc.from.id.clone();
            inc.answer(&st.core.successors())?;
            if inc.from.role == PeerRole::Endpoint {
                st.feed(&myself, Input::ProbedBy(from)).await;
            }
        }
        MemberRequest::Probe => {
            let from = inc.from.id.clone();
            let endpoint = inc.from.role == PeerRole::Endpoint;
            inc.answer(&())?;
            // The server's direct probes of suspects say nothing of our
            // predecessors; only endpoints' probes count as theirs.
            if endpoint {
                st.feed(&myself, Input::ProbedBy(from)).await;
            }
        }
        MemberRequest::Hello(info) => {
            // A peer can only introduce itself.
            if info.id != inc.from.id {
                inc.refuse();
                return Ok(());
            }
            st.feed(&myself, Input::Hello(info)).await;
            inc.answer(&st.core.view())?;
        }
        req @ (MemberRequest::Ask(_) | MemberRequest::Late(_)) => {
            st.take_question(&myself, inc, req)?
        }
    }
    Ok(())
}

/// Asks a member for its status.
pub async fn status(member: &ActorRef<MemberMsg>) -> Option<MemberStatus> {
    match member
        .call(MemberMsg::Status, Some(Duration::from_secs(5)))
        .await
    {
        Ok(ractor::rpc::CallResult::Success(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(generation: u64, own: bool, late: bool) -> Shared {
        let mut round = Round::new(None, late);
        for _ in 0..generation {
            round.forward(Some(&NodeId("next".into())));
        }
        if own {
            round.own_result(EncodedAnswer::new(&NodeAnswer {
                rows: Some(vec![vec!["Debian".into()]]),
                problems: vec![],
            }));
        }
        Arc::new(std::sync::Mutex::new(QState {
            env: QuestionEnvelope {
                id: 1,
                body: vec![],
                ttl_ms: 60_000,
            },
            deadline: tokio::time::Instant::now() + Duration::from_secs(60),
            round,
        }))
    }

    fn from_below() -> Partial {
        let mut p = Partial::default();
        let a = EncodedAnswer::new(&NodeAnswer {
            rows: Some(vec![vec!["Ubuntu".into()]]),
            problems: vec![],
        });
        p.add(&NodeId("below".into()), &a);
        p
    }

    #[test]
    fn a_round_is_finished_where_its_answer_arrives_only_when_nothing_else_needs_the_member() {
        let me = NodeId("me".into());
        // Our answer in, round 2 waiting: finished on the spot, only our own answer kept.
        let q = waiting(2, true, false);
        assert!(finish_where_answered(&q, 2, &me, from_below()).is_ok());
        {
            let st = lock(&q);
            assert!(st.round.is_done() && st.round.waiting_on().is_none());
            assert!(st.round.has_own());
        }
        // Finished once: a second answer to the same round is the member's to drop.
        assert_eq!(
            finish_where_answered(&q, 2, &me, from_below()),
            Err(from_below())
        );
        // Each case that needs the member hands the answer back untouched and the state
        // as it was: an earlier round (rerouted since), our own answer not in yet, a
        // question to answer to the server ourselves, the state in use.
        for (q, generation) in [
            (waiting(3, true, false), 2),
            (waiting(2, false, false), 2),
            (waiting(2, true, true), 2),
        ] {
            assert_eq!(
                finish_where_answered(&q, generation, &me, from_below()),
                Err(from_below())
            );
            let st = lock(&q);
            assert!(!st.round.is_done() && st.round.waiting_on().is_some());
        }
        let q = waiting(2, true, false);
        let held = lock(&q);
        assert_eq!(
            finish_where_answered(&q, 2, &me, from_below()),
            Err(from_below())
        );
        drop(held);
        // Nested too deep on this thread: by message.
        NESTED_FINISHES.with(|d| d.set(MAX_NESTED_FINISHES));
        let deep = finish_where_answered(&q, 2, &me, from_below());
        NESTED_FINISHES.with(|d| d.set(0));
        assert_eq!(deep, Err(from_below()));
        assert!(finish_where_answered(&q, 2, &me, from_below()).is_ok());
        assert_eq!(
            NESTED_FINISHES.with(|d| d.get()),
            0,
            "the depth is restored"
        );
    }

    #[test]
    fn retries_double_per_failure_up_to_the_cap_and_never_below_the_base() {
        let s = Duration::from_secs;
        let waits: Vec<Duration> = (0..6).map(|f| backoff(s(5), f, s(60))).collect();
        assert_eq!(waits, [s(5), s(10), s(20), s(40), s(60), s(60)]);
        // A cap under the base (a short registration interval) leaves the base.
        assert_eq!(backoff(s(5), 3, s(1)), s(5));
        // Many failures do not overflow.
        assert_eq!(backoff(s(5), u32::MAX, s(90)), s(90));
    }
}
