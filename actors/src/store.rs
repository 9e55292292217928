//! The server's durable store (redb): question results, bounded to the newest N, and
//! settings (script sensors, the patch baseline, saved questions).

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use rollcall_cluster::questions::{Progress, QuestionSummary};
use serde::Serialize;
use serde::de::DeserializeOwned;

const RESULTS: TableDefinition<u64, &[u8]> = TableDefinition::new("results");
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// redb failed.
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    /// A record could not be encoded or decoded.
    #[error("store record: {0}")]
    Codec(String),
}

fn dberr<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// The server's redb database.
#[derive(Debug)]
pub struct ServerStore {
    db: Database,
    max_results: usize,
}

impl ServerStore {
    /// Opens (or creates) the store at `path`, keeping at most `max_results` questions.
    pub fn open(path: &Path, max_results: usize) -> Result<ServerStore, StoreError> {
        ServerStore::with_db(Database::create(path).map_err(dberr)?, max_results)
    }

    /// An in-memory store (tests, simulations).
    pub fn in_memory(max_results: usize) -> Result<ServerStore, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(dberr)?;
        ServerStore::with_db(db, max_results)
    }

    fn with_db(db: Database, max_results: usize) -> Result<ServerStore, StoreError> {
        let w = db.begin_write().map_err(dberr)?;
        w.open_table(RESULTS).map_err(dberr)?;
        w.open_table(SETTINGS).map_err(dberr)?;
        w.commit().map_err(dberr)?;
        Ok(ServerStore {
            db,
            max_results: max_results.max(1),
        })
    }

    /// Saves a question's results, dropping the oldest beyond the bound.
    pub fn save_progress(&self, p: &Progress) -> Result<(), StoreError> {
        let bytes = rmp_serde::to_vec(p).map_err(|e| StoreError::Codec(e.to_string()))?;
        let w = self.db.begin_write().map_err(dberr)?;
        {
            let mut t = w.open_table(RESULTS).map_err(dberr)?;
            t.insert(p.id, bytes.as_slice()).map_err(dberr)?;
            while t.len().map_err(dberr)? as usize > self.max_results {
                t.pop_first().map_err(dberr)?;
            }
        }
        w.commit().map_err(dberr)?;
        Ok(())
    }

    /// A question's saved results.
    pub fn progress(&self, id: u64) -> Result<Option<Progress>, StoreError> {
        let r = self.db.begin_read().map_err(dberr)?;
        let t = r.open_table(RESULTS).map_err(dberr)?;
        match t.get(id).map_err(dberr)? {
            Some(v) => rmp_serde::from_slice(v.value())
                .map(Some)
                .map_err(|e| StoreError::Codec(e.to_string())),
            None => Ok(None),
        }
    }

    /// Every saved question, newest first.
    pub fn list(&self) -> Result<Vec<QuestionSummary>, StoreError> {
        let r = self.db.begin_read().map_err(dberr)?;
        let t = r.open_table(RESULTS).map_err(dberr)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(dberr)?.rev() {
            let (_, v) = item.map_err(dberr)?;
            let p: Progress =
                rmp_serde::from_slice(v.value()).map_err(|e| StoreError::Codec(e.to_string()))?;
            out.push(QuestionSummary {
                id: p.id,
                text: p.text,
                answered: p.answered,
                expected: p.expected,
                open: false,
            });
        }
        Ok(out)
    }

    /// The highest question id stored.
    pub fn last_id(&self) -> Result<u64, StoreError> {
        let r = self.db.begin_read().map_err(dberr)?;
        let t = r.open_table(RESULTS).map_err(dberr)?;
        Ok(t.last()
            .map_err(dberr)?
            .map(|(k, _)| k.value())
            .unwrap_or(0))
    }

    /// A setting, if set.
    pub fn setting<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let r = self.db.begin_read().map_err(dberr)?;
        let t = r.open_table(SETTINGS).map_err(dberr)?;
        match t.get(key).map_err(dberr)? {
            Some(v) => rmp_serde::from_slice(v.value())
                .map(Some)
                .map_err(|e| StoreError::Codec(e.to_string())),
            None => Ok(None),
        }
    }

    /// Sets a setting.
    pub fn put_setting<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = rmp_serde::to_vec(value).map_err(|e| StoreError::Codec(e.to_string()))?;
        let w = self.db.begin_write().map_err(dberr)?;
        {
            let mut t = w.open_table(SETTINGS).map_err(dberr)?;
            t.insert(key, bytes.as_slice()).map_err(dberr)?;
        }
        w.commit().map_err(dberr)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(id: u64) -> Progress {
        Progress {
            cut: Default::default(),
            id,
            text: format!("Get Uptime #{id}"),
            columns: vec!["Uptime".into()],
            answered: 2,
            expected: 3,
            matched: 2,
            rows: vec![],
            not_answered: vec![],
            problems: vec![],
            elapsed_ms: 5,
            expires_in_ms: 0,
            fanned_out: true,
        }
    }

    #[test]
    fn results_survive_reopening_and_stay_within_the_bound() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("server.redb");
        {
            let s = ServerStore::open(&path, 3).expect("open");
            for id in 1..=5 {
                s.save_progress(&progress(id)).expect("save");
            }
            s.put_setting("answer", &42u32).expect("setting");
        }
        let s = ServerStore::open(&path, 3).expect("reopen");
        let ids: Vec<u64> = s.list().expect("list").iter().map(|q| q.id).collect();
        assert_eq!(ids, vec![5, 4, 3]);
        assert_eq!(s.progress(4).expect("get"), Some(progress(4)));
        assert_eq!(s.progress(1).expect("get"), None);
        assert_eq!(s.last_id().expect("last"), 5);
        assert_eq!(s.setting::<u32>("answer").expect("setting"), Some(42));
        assert_eq!(s.setting::<u32>("nothing").expect("setting"), None);
    }
}
