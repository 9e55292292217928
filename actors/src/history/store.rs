//! The history on disk: a redb file in the endpoint's state directory, bounded by age and
//! size, the oldest records dropped first.
//!
//! Records are keyed by a sequence number, so the oldest are the first keys. A record is
//! written when its process starts (or its connection is first seen) and again when it ends;
//! nothing is written while a machine is idle. What is running now is known in memory: a
//! record live at the last sample reads as "still running". Every minute in which something
//! runs, a checkpoint time is written, so that after a crash the records that were open are
//! closed at the last checkpoint rather than left running forever.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{HistoryView, Record, Sighting, file_name};
use crate::sensors::SensorError;

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Bytes counted per record beyond its encoding (key and table overhead, roughly).
const PER_RECORD: u64 = 32;

/// How much history an endpoint keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Records last seen longer ago than this are dropped.
    pub max_age: Duration,
    /// The records' encoded bytes are kept under this; past it the oldest are dropped
    /// until they are under 90 % of it.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_age: Duration::from_secs(90 * 86_400),
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why the history store failed.
#[derive(Debug, thiserror::Error)]
#[error("history store: {0}")]
pub struct HistoryError(pub String);

fn err(e: impl std::fmt::Display) -> HistoryError {
    HistoryError(e.to_string())
}

#[derive(Debug, Default)]
struct Meta {
    next: u64,
    bytes: u64,
    /// Record ids live at the last sample.
    live: HashSet<u64>,
    /// When the last sample was taken (what "still running" means).
    sampled_ms: u64,
    dropped: u64,
    /// What the history covers: since it was made, or since the newest record dropped.
    since_ms: u64,
}

/// What a sample changed.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// New records (live now).
    pub started: Vec<Record>,
    /// Records that ended, by id, as they stand now.
    pub ended: Vec<(u64, Record)>,
}

/// The history store.
pub struct HistoryStore {
    db: Database,
    limits: Limits,
    meta: Mutex<Meta>,
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HistoryStore")
    }
}

/// The history store's page cache.
const ENDPOINT_CACHE_BYTES: usize = 1 << 20;

impl HistoryStore {
    /// Opens (or creates, at `now_ms`) the store at `path`. Records that were open when the
    /// endpoint stopped are closed at the last checkpoint.
    pub fn open(path: &Path, limits: Limits, now_ms: u64) -> Result<HistoryStore, HistoryError> {
        // A small page cache: an agent reads its history only for the odd history question
        // (redb's default grows towards 1 GiB with use).
        let db = Database::builder()
            .set_cache_size(ENDPOINT_CACHE_BYTES)
            .create(path)
            .map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        let mut meta = Meta {
            sampled_ms: now_ms,
            ..Meta::default()
        };
        {
            let mut t = tx.open_table(RECORDS).map_err(err)?;
            let mut m = tx.open_table(META).map_err(err)?;
            let checkpoint = m.get("checkpoint").map_err(err)?.map(|v| v.value());
            let since = m.get("since").map_err(err)?.map(|v| v.value());
            meta.since_ms = match since {
                Some(s) => s,
                None => {
                    m.insert("since", now_ms).map_err(err)?;
                    now_ms
                }
            };
            let mut open = Vec::new();
            for row in t.iter().map_err(err)? {
                let (k, v) = row.map_err(err)?;
                meta.next = k.value() + 1;
                meta.bytes += v.value().len() as u64 + PER_RECORD;
                if let Ok(r) = rmp_serde::from_slice::<Record>(v.value())
                    && !ended(&r)
                {
                    open.push((k.value(), r));
                }
            }
            for (id, mut r) in open {
                close(&mut r, checkpoint.unwrap_or(0));
                let bytes = rmp_serde::to_vec(&r).map_err(err)?;
                t.insert(id, bytes.as_slice()).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(HistoryStore {
            db,
            limits,
            meta: Mutex::new(meta),
        })
    }

    /// Writes what a sample at `now_ms` changed: returns the ids of `batch.started`, in
    /// order. Drops what is past the limits. Nothing is written for an empty batch.
    pub fn apply(&self, batch: Batch, now_ms: u64) -> Result<Vec<u64>, HistoryError> {
        let mut meta = rollcall_runtime::sync::lock(&self.meta);
        meta.sampled_ms = now_ms;
        if batch.started.is_empty() && batch.ended.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.db.begin_write().map_err(err)?;
        let mut ids = Vec::with_capacity(batch.started.len());
        {
            let mut t = tx.open_table(RECORDS).map_err(err)?;
            for r in &batch.started {
                let id = meta.next;
                meta.next += 1;
                let bytes = rmp_serde::to_vec(r).map_err(err)?;
                meta.bytes += bytes.len() as u64 + PER_RECORD;
                t.insert(id, bytes.as_slice()).map_err(err)?;
                meta.live.insert(id);
                ids.push(id);
            }
            for (id, r) in &batch.ended {
                meta.live.remove(id);
                let bytes = rmp_serde::to_vec(r).map_err(err)?;
                // One dropped meanwhile (past the limits) stays dropped.
                let old = t.get(*id).map_err(err)?.map(|v| v.value().len() as u64);
                if let Some(old) = old {
                    meta.bytes = meta.bytes + bytes.len() as u64 - old;
                    t.insert(*id, bytes.as_slice()).map_err(err)?;
                }
            }
            self.trim(&mut t, &mut meta, now_ms)?;
        }
        {
            let mut m = tx.open_table(META).map_err(err)?;
            m.insert("since", meta.since_ms).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(ids)
    }

    /// Drops the oldest records past the limits (live ones are kept).
    fn trim(
        &self,
        t: &mut redb::Table<u64, &[u8]>,
        meta: &mut Meta,
        now_ms: u64,
    ) -> Result<(), HistoryError> {
        let cutoff = now_ms.saturating_sub(self.limits.max_age.as_millis() as u64);
        let over = meta.bytes > self.limits.max_bytes;
        let target = self.limits.max_bytes / 10 * 9;
        let mut drop = Vec::new();
        let mut freed = 0u64;
        let mut horizon = meta.since_ms;
        for row in t.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            let id = k.value();
            if meta.live.contains(&id) {
                continue;
            }
            let len = v.value().len() as u64 + PER_RECORD;
            let last = rmp_serde::from_slice::<Record>(v.value())
                .map(|r| r.last_ms())
                .unwrap_or(0);
            let old = last < cutoff;
            if over && meta.bytes - freed > target || old {
                drop.push(id);
                freed += len;
                horizon = horizon.max(last);
            } else {
                // The first record that is neither too old nor needed to get under the
                // size: the rest are newer.
                break;
            }
        }
        for id in &drop {
            t.remove(*id).map_err(err)?;
        }
        meta.since_ms = horizon;
        meta.bytes -= freed;
        meta.dropped += drop.len() as u64;
        Ok(())
    }

    /// Notes that records are still open at `now_ms` (written at most once a minute).
    pub fn checkpoint(&self, now_ms: u64) -> Result<(), HistoryError> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(META)
            .map_err(err)?
            .insert("checkpoint", now_ms)
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Notes a sample at `now_ms` that changed nothing.
    pub fn sampled(&self, now_ms: u64) {
        rollcall_runtime::sync::lock(&self.meta).sampled_ms = now_ms;
    }

    /// The records' encoded bytes (what the size limit bounds).
    pub fn bytes(&self) -> u64 {
        rollcall_runtime::sync::lock(&self.meta).bytes
    }

    /// How many records were dropped for the limits since it opened.
    pub fn dropped(&self) -> u64 {
        rollcall_runtime::sync::lock(&self.meta).dropped
    }

    /// Every record, the oldest first, with whether it is live.
    pub fn records(&self) -> Result<Vec<(u64, Record, bool)>, HistoryError> {
        let live = rollcall_runtime::sync::lock(&self.meta).live.clone();
        let tx = self.db.begin_read().map_err(err)?;
        let t = match tx.open_table(RECORDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            if let Ok(r) = rmp_serde::from_slice::<Record>(v.value()) {
                out.push((k.value(), r, live.contains(&k.value())));
            }
        }
        Ok(out)
    }

    /// Folds the records `pick` takes into one sighting.
    fn sight(&self, pick: impl Fn(&Record) -> bool) -> Result<Option<Sighting>, SensorError> {
        let sampled = rollcall_runtime::sync::lock(&self.meta).sampled_ms;
        let records = self
            .records()
            .map_err(|e| SensorError::Failed(e.to_string()))?;
        let mut s = Sighting::default();
        for (_, r, live) in records.iter().filter(|(_, r, _)| pick(r)) {
            let last = if *live {
                sampled.max(r.last_ms())
            } else {
                r.last_ms()
            };
            match r {
                Record::Run(p) => s.add(p.start_ms, last, *live, &p.exe),
                Record::Socket(c) => s.add(c.first_ms, last, *live, &c.exe),
            }
        }
        Ok((s.count > 0).then_some(s))
    }
}

fn ended(r: &Record) -> bool {
    match r {
        Record::Run(p) => p.ended,
        Record::Socket(s) => s.ended,
    }
}

fn close(r: &mut Record, at_ms: u64) {
    match r {
        Record::Run(p) => {
            p.last_ms = p.last_ms.max(at_ms);
            p.ended = true;
        }
        Record::Socket(s) => {
            s.last_ms = s.last_ms.max(at_ms);
            s.ended = true;
        }
    }
}

impl HistoryView for HistoryStore {
    fn by_hash(&self, sha256: &str) -> Result<Option<Sighting>, SensorError> {
        self.sight(|r| matches!(r, Record::Run(p) if p.sha256 == sha256))
    }

    fn by_name(&self, name: &str) -> Result<Option<Sighting>, SensorError> {
        self.sight(|r| matches!(r, Record::Run(p) if file_name(&p.exe).eq_ignore_ascii_case(name)))
    }

    fn connections(&self, to: &str) -> Result<Option<Sighting>, SensorError> {
        let port: Option<u16> = to.parse().ok();
        self.sight(|r| match r {
            Record::Socket(c) if !c.listening => match port {
                Some(p) => c.port == p,
                None => c.remote.eq_ignore_ascii_case(to),
            },
            _ => false,
        })
    }

    fn since_ms(&self) -> Result<u64, SensorError> {
        Ok(rollcall_runtime::sync::lock(&self.meta).since_ms)
    }
}

/// Records by what identifies them while they are live (what the recorder tracks).
pub type LiveIds<K> = HashMap<K, (u64, Record)>;
