//! The export queue: events waiting for their sink, in a redb file in the server's state
//! directory, delivered in order per sink by one worker, retried with backoff (0.5 s
//! doubling to 30 s) while the sink fails, and kept across restarts until delivered.
//!
//! It is bounded ([`QueueLimits`]): a batch that would not fit is refused whole, counted,
//! and the refusal returned to whoever queued it — never dropped silently. Delivery is at
//! least once: a batch whose delivery failed midway is sent again whole.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Event, Sink, deliver};

const EVENTS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("events");
const SINKS: TableDefinition<u32, &[u8]> = TableDefinition::new("sinks");

/// Events delivered in one go, at most.
pub const BATCH: usize = 200;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How much the queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Events waiting, at most.
    pub max_events: u64,
    /// Their encoded bytes, at most.
    pub max_bytes: u64,
}

impl Default for QueueLimits {
    fn default() -> QueueLimits {
        QueueLimits {
            max_events: 100_000,
            max_bytes: 64 << 20,
        }
    }
}

/// Where one sink's deliveries stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStatus {
    /// The sink, as written (no token).
    pub sink: String,
    /// Events waiting.
    pub queued: u64,
    /// Delivered since the server started.
    pub delivered: u64,
    /// Failed deliveries since the server started.
    pub failures: u64,
    /// Events refused because the queue was full.
    pub refused: u64,
    /// The last failure, while it has not been delivered since.
    pub last_error: Option<String>,
    /// When the next try is, if events wait (ms from now).
    pub retry_in_ms: u64,
}

#[derive(Debug)]
struct SinkState {
    sink: Sink,
    queued: u64,
    delivered: u64,
    failures: u64,
    refused: u64,
    streak: u32,
    last_error: Option<String>,
    next_try: Instant,
}

#[derive(Debug, Default)]
struct State {
    sinks: BTreeMap<u32, SinkState>,
    next_seq: u64,
    events: u64,
    bytes: u64,
}

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
#[error("export queue: {0}")]
pub struct QueueError(pub String);

fn err(e: impl std::fmt::Display) -> QueueError {
    QueueError(e.to_string())
}

/// The server's export queue.
pub struct ExportQueue {
    db: Database,
    limits: QueueLimits,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for ExportQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportQueue")
    }
}

impl ExportQueue {
    /// Opens (or creates) the queue at `path`; what waited before is delivered again.
    pub fn open(path: &Path, limits: QueueLimits) -> Result<ExportQueue, QueueError> {
        let db = Database::create(path).map_err(err)?;
        let mut st = State::default();
        let tx = db.begin_write().map_err(err)?;
        {
            let sinks = tx.open_table(SINKS).map_err(err)?;
            for row in sinks.iter().map_err(err)? {
                let (k, v) = row.map_err(err)?;
                let sink: Sink = rmp_serde::from_slice(v.value()).map_err(err)?;
                st.sinks.insert(k.value(), fresh(sink));
            }
            let events = tx.open_table(EVENTS).map_err(err)?;
            for row in events.iter().map_err(err)? {
                let (k, v) = row.map_err(err)?;
                let (sink, seq) = k.value();
                st.next_seq = st.next_seq.max(seq + 1);
                st.events += 1;
                st.bytes += v.value().len() as u64;
                if let Some(s) = st.sinks.get_mut(&sink) {
                    s.queued += 1;
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(ExportQueue {
            db,
            limits,
            state: Mutex::new(st),
            wake: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        rollcall_runtime::sync::lock(&self.state)
    }

    /// Queues `events` for `sink`: all of them, or none (the queue is full: the refusal is
    /// counted and returned).
    pub fn enqueue(&self, sink: Sink, events: &[Event]) -> Result<usize, String> {
        let encoded: Vec<Vec<u8>> = events
            .iter()
            .map(rmp_serde::to_vec)
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let bytes: u64 = encoded.iter().map(|e| e.len() as u64).sum();
        let mut st = self.lock();
        let id = match st.sinks.iter().find(|(_, s)| s.sink == sink) {
            Some((id, _)) => *id,
            None => st.sinks.keys().next_back().map_or(1, |k| k + 1),
        };
        let is_new = !st.sinks.contains_key(&id);
        if st.events + events.len() as u64 > self.limits.max_events
            || st.bytes + bytes > self.limits.max_bytes
        {
            let waiting = st.events;
            let s = st.sinks.entry(id).or_insert_with(|| fresh(sink.clone()));
            s.refused += events.len() as u64;
            tracing::error!(sink = %sink, events = events.len(), waiting, "export queue full: events refused");
            return Err(format!(
                "the export queue is full ({waiting} events wait for delivery): {} events for {sink} not queued",
                events.len()
            ));
        }
        let write = || -> Result<(), QueueError> {
            let tx = self.db.begin_write().map_err(err)?;
            {
                if is_new {
                    let mut sinks = tx.open_table(SINKS).map_err(err)?;
                    let s = rmp_serde::to_vec(&sink).map_err(err)?;
                    sinks.insert(id, s.as_slice()).map_err(err)?;
                }
                let mut t = tx.open_table(EVENTS).map_err(err)?;
                for (i, e) in encoded.iter().enumerate() {
                    t.insert((id, st.next_seq + i as u64), e.as_slice())
                        .map_err(err)?;
                }
            }
            tx.commit().map_err(err)
        };
        write().map_err(|e| e.to_string())?;
        st.next_seq += encoded.len() as u64;
        st.events += encoded.len() as u64;
        st.bytes += bytes;
        let s = st.sinks.entry(id).or_insert_with(|| fresh(sink));
        s.queued += encoded.len() as u64;
        drop(st);
        self.wake.notify_one();
        Ok(events.len())
    }

    /// Every sink's deliveries.
    pub fn status(&self) -> Vec<SinkStatus> {
        let now = Instant::now();
        self.lock()
            .sinks
            .values()
            .map(|s| SinkStatus {
                sink: s.sink.to_string(),
                queued: s.queued,
                delivered: s.delivered,
                failures: s.failures,
                refused: s.refused,
                last_error: s.last_error.clone(),
                retry_in_ms: if s.queued > 0 {
                    s.next_try.saturating_duration_since(now).as_millis() as u64
                } else {
                    0
                },
            })
            .collect()
    }

    /// Tries every waiting sink again now, whatever its backoff (an operator who fixed the
    /// receiver need not wait).
    pub fn retry_now(&self) {
        let now = Instant::now();
        for s in self.lock().sinks.values_mut() {
            s.next_try = now;
        }
        self.wake.notify_one();
    }

    /// Delivers until the process ends (spawn it once per queue).
    pub async fn run(self: std::sync::Arc<Self>) {
        loop {
            let wait = self.pump().await;
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One batch for every sink that is due; returns how long until one is due again.
    pub async fn pump(self: &std::sync::Arc<Self>) -> Duration {
        let due: Vec<(u32, Sink)> = {
            let now = Instant::now();
            self.lock()
                .sinks
                .iter()
                .filter(|(_, s)| s.queued > 0 && s.next_try <= now)
                .map(|(id, s)| (*id, s.sink.clone()))
                .collect()
        };
        for (id, sink) in due {
            let me = self.clone();
            let r = tokio::task::spawn_blocking(move || me.deliver_batch(id, &sink)).await;
            let r = r.unwrap_or_else(|e| Err(format!("delivery panicked: {e}")));
            let mut st = self.lock();
            let Some(s) = st.sinks.get_mut(&id) else {
                continue;
            };
            match r {
                Ok((n, bytes)) => {
                    s.queued -= n;
                    s.delivered += n;
                    s.streak = 0;
                    s.last_error = None;
                    st.events -= n;
                    st.bytes -= bytes;
                }
                Err(e) => {
                    s.failures += 1;
                    s.streak += 1;
                    let backoff = BACKOFF_MIN
                        .saturating_mul(1 << s.streak.min(8))
                        .min(BACKOFF_MAX);
                    s.next_try = Instant::now() + backoff;
                    tracing::warn!(sink = %s.sink, error = %e, retry_in = ?backoff, waiting = s.queued, "export delivery failed");
                    s.last_error = Some(e);
                }
            }
        }
        let now = Instant::now();
        self.lock()
            .sinks
            .values()
            .filter(|s| s.queued > 0)
            .map(|s| s.next_try.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600))
    }

    /// Delivers sink `id`'s oldest batch; removes it once delivered. Returns how many
    /// events, and their bytes.
    fn deliver_batch(&self, id: u32, sink: &Sink) -> Result<(u64, u64), String> {
        let mut keys = Vec::new();
        let mut events = Vec::new();
        let mut bytes = 0u64;
        {
            let tx = self.db.begin_read().map_err(|e| e.to_string())?;
            let t = tx.open_table(EVENTS).map_err(|e| e.to_string())?;
            for row in t
                .range((id, 0)..=(id, u64::MAX))
                .map_err(|e| e.to_string())?
                .take(BATCH)
            {
                let (k, v) = row.map_err(|e| e.to_string())?;
                bytes += v.value().len() as u64;
                events.push(rmp_serde::from_slice::<Event>(v.value()).map_err(|e| e.to_string())?);
                keys.push(k.value());
            }
        }
        if events.is_empty() {
            return Ok((0, 0));
        }
        deliver(sink, &events)?;
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut t = tx.open_table(EVENTS).map_err(|e| e.to_string())?;
            for k in &keys {
                t.remove(*k).map_err(|e| e.to_string())?;
            }
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok((keys.len() as u64, bytes))
    }
}

fn fresh(sink: Sink) -> SinkState {
    SinkState {
        sink,
        queued: 0,
        delivered: 0,
        failures: 0,
        refused: 0,
        streak: 0,
        last_error: None,
        next_try: Instant::now(),
    }
}
