//! The endpoint's action journal: what it has accepted, and where each stands.
//!
//! An action is written in ("waiting") before anything of it runs, and moved to "running"
//! (durably) before its executor starts: a second delivery, a retry, a late hand-off or a
//! restart finds it there and never runs it again. An action found "running" when the
//! journal opens was cut off by a stop and becomes "interrupted".

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{FileSources, SignedAction, Status, cut};

/// One action as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it stands.
    pub status: Status,
    /// Its output so far (cut at the package's cap).
    pub output: String,
    /// The signed action (to resume one that waited when the endpoint stopped).
    pub action: SignedAction,
    /// How many times an executor was started for it (at most once, by construction; the
    /// chaos suite checks it).
    pub runs: u32,
    /// Cancelled before it arrived (held so that it never runs; the machine is not known to
    /// be among its targets).
    #[serde(default)]
    pub before_arrival: bool,
    /// Where its package's files came from, once they are all here.
    #[serde(default)]
    pub files: Option<FileSources>,
}

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
#[error("action journal: {0}")]
pub struct JournalError(pub String);

fn err(e: impl std::fmt::Display) -> JournalError {
    JournalError(e.to_string())
}

/// Where an endpoint keeps its actions.
pub trait Journal: Send + Sync + 'static {
    /// Writes `action` in as waiting, unless the journal already has its id: then returns
    /// what it has (and writes nothing).
    fn begin(&self, action: &SignedAction) -> Result<Option<Entry>, JournalError>;
    /// Moves action `id` to `status` (and `output`, cut to `cap` bytes); moving to running
    /// counts a run.
    fn set(&self, id: u64, status: Status, output: &str, cap: usize) -> Result<(), JournalError>;
    /// Moves action `id` from waiting to running, counting a run, if it is waiting: whether
    /// it did (one caller wins, however many race).
    fn start(&self, id: u64) -> Result<bool, JournalError>;
    /// Notes where action `id`'s package files came from.
    fn set_files(&self, id: u64, files: FileSources) -> Result<(), JournalError>;
    /// Cancels action `id` unless it has started: one that waits becomes cancelled, and one
    /// the journal does not hold yet is written in as cancelled (with the signed cancel
    /// `by`), so that it never runs when it comes. Returns where it stands after.
    fn cancel(&self, id: u64, by: &SignedAction) -> Result<Status, JournalError>;
    /// Action `id`'s entry.
    fn get(&self, id: u64) -> Option<Entry>;
    /// Where action `id` stands, and its output (without copying the signed action);
    /// `None` for one it does not hold or that was cancelled before it arrived.
    fn status(&self, id: u64) -> Option<(Status, String)> {
        self.get(id)
            .filter(|e| !e.before_arrival)
            .map(|e| (e.status, e.output))
    }
    /// Every entry (the oldest first).
    fn all(&self) -> Vec<(u64, Entry)>;
}

/// An entry for an action cancelled before it arrived.
fn cancelled(by: &SignedAction) -> Entry {
    Entry {
        status: Status::Cancelled,
        output: "cancelled before it arrived".into(),
        action: by.clone(),
        runs: 0,
        before_arrival: true,
        files: None,
    }
}

fn moved(e: &mut Entry, status: Status, output: &str, cap: usize) {
    if status == Status::Running {
        e.runs += 1;
    }
    e.status = status;
    e.output = cut(output, cap).to_string();
}

/// A journal in memory (simulated hosts; they "restart" within the process).
#[derive(Debug, Default)]
pub struct MemJournal {
    entries: Mutex<HashMap<u64, Entry>>,
}

impl MemJournal {
    /// Marks what was running as interrupted, as a restart of the endpoint would.
    pub fn restarted(&self) {
        for e in rollcall_runtime::sync::lock(&self.entries).values_mut() {
            if e.status == Status::Running {
                e.status = Status::Interrupted;
            }
        }
    }
}

impl Journal for MemJournal {
    fn begin(&self, action: &SignedAction) -> Result<Option<Entry>, JournalError> {
        let mut m = rollcall_runtime::sync::lock(&self.entries);
        // The deliberately broken build forgets what it took (the chaos suite shows the
        // "never twice" check failing with it).
        if let Some(e) = m.get(&action.id)
            && !cfg!(feature = "broken-journal")
        {
            return Ok(Some(e.clone()));
        }
        m.insert(
            action.id,
            Entry {
                status: Status::Waiting,
                output: String::new(),
                action: action.clone(),
                runs: 0,
                before_arrival: false,
                files: None,
            },
        );
        Ok(None)
    }

    fn set(&self, id: u64, status: Status, output: &str, cap: usize) -> Result<(), JournalError> {
        let mut m = rollcall_runtime::sync::lock(&self.entries);
        let e = m
            .get_mut(&id)
            .ok_or_else(|| JournalError(format!("no action {id}")))?;
        moved(e, status, output, cap);
        Ok(())
    }

    fn set_files(&self, id: u64, files: FileSources) -> Result<(), JournalError> {
        let mut m = rollcall_runtime::sync::lock(&self.entries);
        let e = m
            .get_mut(&id)
            .ok_or_else(|| JournalError(format!("no action {id}")))?;
        e.files = Some(files);
        Ok(())
    }

    fn cancel(&self, id: u64, by: &SignedAction) -> Result<Status, JournalError> {
        let mut m = rollcall_runtime::sync::lock(&self.entries);
        let e = m.entry(id).or_insert_with(|| cancelled(by));
        if e.status == Status::Waiting {
            e.status = Status::Cancelled;
        }
        Ok(e.status.clone())
    }

    fn start(&self, id: u64) -> Result<bool, JournalError> {
        let mut m = rollcall_runtime::sync::lock(&self.entries);
        match m.get_mut(&id) {
            // The broken build starts whatever it is handed, as a journal that forgot would.
            Some(e) if e.status == Status::Waiting || cfg!(feature = "broken-journal") => {
                moved(e, Status::Running, "", 0);
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(JournalError(format!("no action {id}"))),
        }
    }

    fn get(&self, id: u64) -> Option<Entry> {
        rollcall_runtime::sync::lock(&self.entries)
            .get(&id)
            .cloned()
    }

    fn status(&self, id: u64) -> Option<(Status, String)> {
        rollcall_runtime::sync::lock(&self.entries)
            .get(&id)
            .filter(|e| !e.before_arrival)
            .map(|e| (e.status.clone(), e.output.clone()))
    }

    fn all(&self) -> Vec<(u64, Entry)> {
        let mut v: Vec<(u64, Entry)> = rollcall_runtime::sync::lock(&self.entries)
            .iter()
            .map(|(k, e)| (*k, e.clone()))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

const ACTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("actions");

/// The journal in a redb file in the endpoint's state directory; every change is committed
/// before the call returns.
pub struct FileJournal {
    db: Database,
}

impl std::fmt::Debug for FileJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileJournal")
    }
}

impl FileJournal {
    /// Opens (or creates) the journal at `path`; actions found running become interrupted.
    pub fn open(path: &Path) -> Result<FileJournal, JournalError> {
        // A few records a day: a small page cache (redb's default grows towards 1 GiB).
        let db = Database::builder()
            .set_cache_size(256 * 1024)
            .create(path)
            .map_err(err)?;
        let j = FileJournal { db };
        let tx = j.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(ACTIONS).map_err(err)?;
            let mut cut_off = Vec::new();
            for row in t.iter().map_err(err)? {
                let (k, v) = row.map_err(err)?;
                let e: Entry = rmp_serde::from_slice(v.value()).map_err(err)?;
                if e.status == Status::Running {
                    cut_off.push((k.value(), e));
                }
            }
            for (id, mut e) in cut_off {
                tracing::warn!(
                    action = id,
                    "an action was running when the endpoint stopped: interrupted, not run again"
                );
                e.status = Status::Interrupted;
                let bytes = rmp_serde::to_vec(&e).map_err(err)?;
                t.insert(id, bytes.as_slice()).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(j)
    }

    fn write(&self, id: u64, e: &Entry) -> Result<(), JournalError> {
        let bytes = rmp_serde::to_vec(e).map_err(err)?;
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(ACTIONS)
            .map_err(err)?
            .insert(id, bytes.as_slice())
            .map_err(err)?;
        tx.commit().map_err(err)
    }
}

impl Journal for FileJournal {
    fn begin(&self, action: &SignedAction) -> Result<Option<Entry>, JournalError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(ACTIONS).map_err(err)?;
            if let Some(v) = t.get(action.id).map_err(err)? {
                return rmp_serde::from_slice(v.value()).map(Some).map_err(err);
            }
            let e = Entry {
                status: Status::Waiting,
                output: String::new(),
                action: action.clone(),
                runs: 0,
                before_arrival: false,
                files: None,
            };
            let bytes = rmp_serde::to_vec(&e).map_err(err)?;
            t.insert(action.id, bytes.as_slice()).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(None)
    }

    fn set(&self, id: u64, status: Status, output: &str, cap: usize) -> Result<(), JournalError> {
        let mut e = self
            .get(id)
            .ok_or_else(|| JournalError(format!("no action {id}")))?;
        moved(&mut e, status, output, cap);
        self.write(id, &e)
    }

    fn set_files(&self, id: u64, files: FileSources) -> Result<(), JournalError> {
        let mut e = self
            .get(id)
            .ok_or_else(|| JournalError(format!("no action {id}")))?;
        e.files = Some(files);
        self.write(id, &e)
    }

    fn cancel(&self, id: u64, by: &SignedAction) -> Result<Status, JournalError> {
        let tx = self.db.begin_write().map_err(err)?;
        let status = {
            let mut t = tx.open_table(ACTIONS).map_err(err)?;
            let mut e: Entry = match t.get(id).map_err(err)? {
                Some(v) => rmp_serde::from_slice(v.value()).map_err(err)?,
                None => cancelled(by),
            };
            if e.status == Status::Waiting {
                e.status = Status::Cancelled;
            }
            let bytes = rmp_serde::to_vec(&e).map_err(err)?;
            t.insert(id, bytes.as_slice()).map_err(err)?;
            e.status
        };
        tx.commit().map_err(err)?;
        Ok(status)
    }

    fn start(&self, id: u64) -> Result<bool, JournalError> {
        // One write transaction at a time: the check and the move are one step.
        let tx = self.db.begin_write().map_err(err)?;
        let started = {
            let mut t = tx.open_table(ACTIONS).map_err(err)?;
            let mut e: Entry = match t.get(id).map_err(err)? {
                Some(v) => rmp_serde::from_slice(v.value()).map_err(err)?,
                None => return Err(JournalError(format!("no action {id}"))),
            };
            if e.status == Status::Waiting {
                moved(&mut e, Status::Running, "", 0);
                let bytes = rmp_serde::to_vec(&e).map_err(err)?;
                t.insert(id, bytes.as_slice()).map_err(err)?;
                true
            } else {
                false
            }
        };
        tx.commit().map_err(err)?;
        Ok(started)
    }

    fn get(&self, id: u64) -> Option<Entry> {
        let tx = self.db.begin_read().ok()?;
        let t = tx.open_table(ACTIONS).ok()?;
        let v = t.get(id).ok()??;
        rmp_serde::from_slice(v.value()).ok()
    }

    fn all(&self) -> Vec<(u64, Entry)> {
        let Ok(tx) = self.db.begin_read() else {
            return Vec::new();
        };
        let Ok(t) = tx.open_table(ACTIONS) else {
            return Vec::new();
        };
        let Ok(rows) = t.iter() else {
            return Vec::new();
        };
        rows.filter_map(|r| r.ok())
            .filter_map(|(k, v)| Some((k.value(), rmp_serde::from_slice(v.value()).ok()?)))
            .collect()
    }
}
