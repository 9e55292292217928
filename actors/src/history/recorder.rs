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
    recording: Arc<Mutex<Recording>>,
    busy: bool,
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
        myself.send_interval(interval, || RecorderMsg::Tick);
        // The first sample at once: what runs at start is known from the start.
        let _ = myself.send_message(RecorderMsg::Tick);
        Ok(RecorderState {
            recording,
            busy: false,
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
        let rec = st.recording.clone();
        // Reading /proc and hashing executables blocks: off the runtime's threads.
        let r = tokio::task::spawn_blocking(move || {
            rollcall_runtime::sync::lock(&rec).step(rollcall_runtime::signing::unix_ms())
        })
        .await;
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
