//! The recorder: samples the machine at an interval and writes what started and ended into
//! the history store. [`Recording`] is the step (no runtime: a test drives it sample by
//! sample); [`Recorder`] is the actor that runs it under the node's supervisor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::Record;
use super::linux::{LiveKey, Sampler};
use super::store::{Batch, HistoryError, HistoryStore};

/// How often a checkpoint is written while something is live.
const CHECKPOINT_EVERY_MS: u64 = 60_000;

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Records started.
    pub started: usize,
    /// Records ended.
    pub ended: usize,
    /// Things live now.
    pub live: usize,
}

/// The recorder's state: the sampler, the store, and what is live.
pub struct Recording {
    sampler: Box<dyn Sampler>,
    store: Arc<HistoryStore>,
    live: HashMap<LiveKey, (u64, Record)>,
    checkpointed_ms: u64,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recording({} live)", self.live.len())
    }
}

impl Recording {
    /// Records what `sampler` sees into `store`.
    pub fn new(sampler: Box<dyn Sampler>, store: Arc<HistoryStore>) -> Recording {
        Recording {
            sampler,
            store,
            live: HashMap::new(),
            checkpointed_ms: 0,
        }
    }

    /// One sample at `now_ms`: what appeared is written as started, what is gone as ended.
    pub fn step(&mut self, now_ms: u64) -> Result<Step, HistoryError> {
        let live = &self.live;
        let seen = self.sampler.sample(now_ms, &|k| live.contains_key(k));
        let mut now_live: HashMap<LiveKey, ()> = HashMap::with_capacity(seen.len());
        let mut started_keys = Vec::new();
        let mut batch = Batch::default();
        for (key, rec) in seen {
            if let Some(r) = rec
                && !self.live.contains_key(&key)
            {
                started_keys.push(key.clone());
                batch.started.push(r);
            }
            now_live.insert(key, ());
        }
        let gone: Vec<LiveKey> = self
            .live
            .keys()
            .filter(|k| !now_live.contains_key(*k))
            .cloned()
            .collect();
        for k in &gone {
            if let Some((id, mut r)) = self.live.remove(k) {
                match &mut r {
                    Record::Run(p) => {
                        p.last_ms = now_ms;
                        p.ended = true;
                    }
                    Record::Socket(s) => {
                        s.last_ms = now_ms;
                        s.ended = true;
                    }
                }
                batch.ended.push((id, r));
            }
        }
        let step = Step {
            started: batch.started.len(),
            ended: batch.ended.len(),
            live: 0,
        };
        let started = batch.started.clone();
        let ids = self.store.apply(batch, now_ms)?;
        for ((k, r), id) in started_keys.into_iter().zip(started).zip(ids) {
            self.live.insert(k, (id, r));
        }
        if !self.live.is_empty() && now_ms >= self.checkpointed_ms + CHECKPOINT_EVERY_MS {
            self.store.checkpoint(now_ms)?;
            self.checkpointed_ms = now_ms;
        }
        Ok(Step {
            live: self.live.len(),
            ..step
        })
    }
}

/// The recorder actor: a [`Recording`] stepped every `interval`.
#[derive(Debug, Clone, Copy)]
pub struct Recorder;

/// Its arguments: the recording (shared, so that a restarted actor carries on with what is
/// live) and the interval.
pub type RecorderArgs = (Arc<Mutex<Recording>>, Duration);

/// Its one message.
#[derive(Debug)]
pub enum RecorderMsg {
    /// Take a sample.
    Tick,
}

/// The recorder's state.
pub struct RecorderState {
    busy: bool,
    /// Asks the sampling thread for one sample (dropped with the state: the thread ends).
    sampler: std::sync::mpsc::Sender<SampleJob>,
}

/// One sample to take, and where its outcome goes.
type SampleJob = tokio::sync::oneshot::Sender<Result<Step, HistoryError>>;

/// The thread that samples: reading /proc and hashing executables block, and on a machine
/// that is busy (booting, or running a hundred agents) they wait their turn: the thread runs
/// at the lowest CPU priority, so answers and the machine's own work go first.
fn sampling_thread(recording: Arc<Mutex<Recording>>) -> std::sync::mpsc::Sender<SampleJob> {
    let (tx, rx) = std::sync::mpsc::channel::<SampleJob>();
    let spawned = std::thread::Builder::new()
        .name("history".into())
        .spawn(move || {
            // The lowest priority of the normal policy (nice 19 on Linux: per thread).
            if let Err(e) =
                thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
            {
                tracing::debug!(error = ?e, "could not lower the history thread's priority");
            }
            while let Ok(job) = rx.recv() {
                let r = rollcall_runtime::sync::lock(&recording)
                    .step(rollcall_runtime::signing::unix_ms());
                let _ = job.send(r);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the history thread; history is not recorded");
    }
    tx
}

impl Actor for Recorder {
    type Msg = RecorderMsg;
    type State = RecorderState;
    type Arguments = RecorderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RecorderMsg>,
        (recording, interval): RecorderArgs,
    ) -> Result<RecorderState, ActorProcessingErr> {
        // The first sample one interval after start (a machine's boot and the agent's first
        // answers go first); what started meanwhile and still runs is in it.
        myself.send_interval(interval, || RecorderMsg::Tick);
        Ok(RecorderState {
            busy: false,
            sampler: sampling_thread(recording),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RecorderMsg>,
        RecorderMsg::Tick: RecorderMsg,
        st: &mut RecorderState,
    ) -> Result<(), ActorProcessingErr> {
        if st.busy {
            return Ok(());
        }
        st.busy = true;
        // Reading /proc and hashing executables block: on the sampling thread.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let r = match st.sampler.send(tx) {
            Ok(()) => rx.await.map_err(|_| "the history thread ended"),
            Err(_) => Err("the history thread ended"),
        };
        st.busy = false;
        match r {
            Ok(Ok(step)) if step.started + step.ended > 0 => {
                tracing::debug!(
                    started = step.started,
                    ended = step.ended,
                    live = step.live,
                    "history sampled"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "history sample not kept"),
            Err(e) => tracing::warn!(error = %e, "history sample failed"),
        }
        Ok(())
    }
}
