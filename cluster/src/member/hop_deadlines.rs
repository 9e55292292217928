//! Hop deadlines, kept per thread and runtime and fired by one watcher task per queue
//! instead of a sleeping task per hop: a hop costs a queue entry under an uncontended lock,
//! not a task, a timer and a wake-up. The queue keeps its room between questions (a new one
//! per question grew by doubling, on fresh memory, on every thread); its watcher ends once
//! nothing is left to watch, so a stopped fleet leaves no task. The same path runs on
//! multi-thread runtimes (production, the simulator) and current-thread ones (the
//! paused-time scenario suite, deterministic network tests).

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
        rollcall_runtime::sync::lock(&self.state)
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

thread_local! {
    /// The queue of a multi-thread runtime's worker thread: a worker runs that one
    /// runtime's tasks for its whole life, so its queue is found without asking which
    /// runtime is current (that clones the runtime's handle, an atomic on a line every
    /// thread shares, on every hop).
    static WORKER: std::cell::OnceCell<Arc<Watch<Deadline>>> = const { std::cell::OnceCell::new() };
}

/// Watches `d` (from a task on a Tokio runtime), on every runtime flavour alike.
pub(super) fn watch(d: Deadline) {
    let d = match WORKER.with(|w| match w.get() {
        Some(w) => {
            w.add(d);
            None
        }
        None => Some(d),
    }) {
        None => return,
        Some(d) => d,
    };
    let handle = tokio::runtime::Handle::current();
    let runtime = handle.id();
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
    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        WORKER.with(|slot| {
            let _ = slot.set(w.clone());
        });
    }
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
