//! The server's durable store (redb): question results, bounded to the newest N, and
//! settings (script sensors, the patch baseline, saved questions).

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use rollcall_cluster::questions::{Progress, QuestionSummary};
use serde::Serialize;
use serde::de::DeserializeOwned;

const RESULTS: TableDefinition<u64, &[u8]> = TableDefinition::new("results");
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const ACTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("actions");

/// One line of the audit log: who did what, and how it went. Each entry's hash covers the
/// previous entry's hash and its own fields, so an edited, removed or reordered entry breaks
/// the chain from there on ([`ServerStore::verify_audit`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// Its place in the log, from 1.
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Who (the operator's name, from the certificate).
    pub who: String,
    /// Their role.
    pub role: String,
    /// What they asked for.
    pub what: String,
    /// How it went.
    pub outcome: String,
    /// The previous entry's hash (hex; zeros for the first).
    pub prev: String,
    /// This entry's hash (hex).
    pub hash: String,
}

impl AuditEntry {
    fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [
            self.prev.as_bytes(),
            &self.seq.to_be_bytes(),
            &self.at_unix_ms.to_be_bytes(),
            self.who.as_bytes(),
            self.role.as_bytes(),
            self.what.as_bytes(),
            self.outcome.as_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        hex::encode(h.finalize())
    }
}

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
        w.open_table(AUDIT).map_err(dberr)?;
        w.open_table(ACTIONS).map_err(dberr)?;
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

    /// Appends an audit entry (chained to the last one); returns it.
    pub fn append_audit(
        &self,
        who: &str,
        role: &str,
        what: &str,
        outcome: &str,
        at_unix_ms: u64,
    ) -> Result<AuditEntry, StoreError> {
        let w = self.db.begin_write().map_err(dberr)?;
        let entry = {
            let mut t = w.open_table(AUDIT).map_err(dberr)?;
            let last: Option<AuditEntry> = match t.last().map_err(dberr)? {
                Some((_, v)) => Some(
                    rmp_serde::from_slice(v.value())
                        .map_err(|e| StoreError::Codec(e.to_string()))?,
                ),
                None => None,
            };
            let mut e = AuditEntry {
                seq: last.as_ref().map(|l| l.seq + 1).unwrap_or(1),
                at_unix_ms,
                who: who.to_string(),
                role: role.to_string(),
                what: what.to_string(),
                outcome: outcome.to_string(),
                prev: last.map(|l| l.hash).unwrap_or_else(|| "0".repeat(64)),
                hash: String::new(),
            };
            e.hash = e.digest();
            let bytes = rmp_serde::to_vec(&e).map_err(|e| StoreError::Codec(e.to_string()))?;
            t.insert(e.seq, bytes.as_slice()).map_err(dberr)?;
            e
        };
        w.commit().map_err(dberr)?;
        Ok(entry)
    }

    /// The last `n` audit entries, oldest first.
    pub fn audit(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let r = self.db.begin_read().map_err(dberr)?;
        let t = r.open_table(AUDIT).map_err(dberr)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(dberr)?.rev().take(n) {
            let (_, v) = item.map_err(dberr)?;
            out.push(
                rmp_serde::from_slice(v.value()).map_err(|e| StoreError::Codec(e.to_string()))?,
            );
        }
        out.reverse();
        Ok(out)
    }

    /// Checks the whole audit chain: `Ok(entries)`, or `Err` naming the first entry whose
    /// hash, link or place does not hold.
    pub fn verify_audit(&self) -> Result<Result<u64, String>, StoreError> {
        let r = self.db.begin_read().map_err(dberr)?;
        let t = r.open_table(AUDIT).map_err(dberr)?;
        let mut prev = "0".repeat(64);
        let mut n = 0u64;
        for item in t.iter().map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            n += 1;
            let e: AuditEntry = match rmp_serde::from_slice(v.value()) {
                Ok(e) => e,
                Err(_) => return Ok(Err(format!("entry {} does not decode", k.value()))),
            };
            if e.seq != n || k.value() != n {
                return Ok(Err(format!(
                    "entry {} is out of place (expected {n})",
                    k.value()
                )));
            }
            if e.prev != prev {
                return Ok(Err(format!("entry {n} does not follow entry {}", n - 1)));
            }
            if e.digest() != e.hash {
                return Ok(Err(format!("entry {n} was changed")));
            }
            prev = e.hash;
        }
        Ok(Ok(n))
    }

    /// Replaces audit entry `seq` as stored (tests: what an attacker with the file could do).
    #[doc(hidden)]
    pub fn overwrite_audit_entry(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let bytes = rmp_serde::to_vec(e).map_err(|e| StoreError::Codec(e.to_string()))?;
        let w = self.db.begin_write().map_err(dberr)?;
        {
            let mut t = w.open_table(AUDIT).map_err(dberr)?;
            t.insert(e.seq, bytes.as_slice()).map_err(dberr)?;
        }
        w.commit().map_err(dberr)?;
        Ok(())
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

    /// Saves action `id`'s record (committed before this returns).
    pub fn put_action<T: Serialize>(&self, id: u64, record: &T) -> Result<(), StoreError> {
        let bytes = rmp_serde::to_vec(record).map_err(|e| StoreError::Codec(e.to_string()))?;
        let w = self.db.begin_write().map_err(dberr)?;
        {
            let mut t = w.open_table(ACTIONS).map_err(dberr)?;
            t.insert(id, bytes.as_slice()).map_err(dberr)?;
        }
        w.commit().map_err(dberr)?;
        Ok(())
    }

    /// Every action record, oldest first.
    pub fn actions<T: DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        let r = self.db.begin_read().map_err(dberr)?;
        let t = r.open_table(ACTIONS).map_err(dberr)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(dberr)? {
            let (_, v) = row.map_err(dberr)?;
            out.push(
                rmp_serde::from_slice(v.value()).map_err(|e| StoreError::Codec(e.to_string()))?,
            );
        }
        Ok(out)
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
    #[test]
    fn the_audit_chain_holds_and_an_edited_or_rehashed_entry_breaks_it() {
        let st = ServerStore::in_memory(10).expect("store");
        for (i, what) in ["ask \"Get OS\"", "add sensor \"X\"", "save \"n\""]
            .iter()
            .enumerate()
        {
            let e = st
                .append_audit("olga", "operator/operator", what, "done", 1000 + i as u64)
                .expect("appended");
            assert_eq!(e.seq, i as u64 + 1);
        }
        assert_eq!(st.verify_audit().expect("read"), Ok(3));
        let entries = st.audit(10).expect("read");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].prev, entries[0].hash);
        // An edited entry.
        let mut e2 = entries[1].clone();
        e2.what = "nothing to see".into();
        st.overwrite_audit_entry(&e2).expect("written");
        assert_eq!(
            st.verify_audit().expect("read"),
            Err("entry 2 was changed".to_string())
        );
        // Edited and re-hashed: the next entry no longer follows it.
        e2.hash = e2.digest();
        st.overwrite_audit_entry(&e2).expect("written");
        assert_eq!(
            st.verify_audit().expect("read"),
            Err("entry 3 does not follow entry 2".to_string())
        );
    }
}
