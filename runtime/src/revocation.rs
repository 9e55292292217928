//! Revoked certificates: the CA directory's list, and the set a node refuses.
//!
//! `rollcall ca revoke ID` adds a node id (an endpoint's, or an operator's name) to the CA
//! directory's `revoked` file. A running server watches that file and refuses everything a
//! revoked peer sends from the next message on, on connections already open too (counted as
//! `rejected_revoked`); it hands the list to endpoints in its signed configuration, so they
//! refuse a revoked endpoint's ring messages the same way.
//!
//! A certificate is revoked by the identity it names: every certificate naming that node id
//! (or operator name) is refused, so a revoked operator gets a certificate under a new name.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::identity::{IdentityError, NodeId, write_file};

/// The file in a CA directory that lists revoked identities, one per line.
pub const REVOKED_FILE: &str = "revoked";

/// The identities revoked in the CA directory `dir` (none if it has no list).
pub fn load(dir: &Path) -> Result<Vec<NodeId>, IdentityError> {
    let path = dir.join(REVOKED_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(IdentityError::Io { path, source }),
    }
}

fn parse(text: &str) -> Vec<NodeId> {
    let mut seen = HashSet::new();
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter(|l| seen.insert(l.to_string()))
        .map(NodeId::new)
        .collect()
}

/// Adds `id` to the CA directory's list; returns whether it was not there already.
pub fn revoke(dir: &Path, id: &str) -> Result<bool, IdentityError> {
    let id = id.trim();
    if id.is_empty() || id.contains(['\n', '#']) || id.chars().any(char::is_control) {
        return Err(IdentityError::NotRollcall(format!(
            "{id:?} is not a node id or operator name"
        )));
    }
    let mut list = load(dir)?;
    if list.iter().any(|n| n.as_str() == id) {
        return Ok(false);
    }
    list.push(NodeId::new(id));
    let text: String = list.iter().map(|n| format!("{n}\n")).collect();
    write_file(&dir.join(REVOKED_FILE), &text, false)?;
    Ok(true)
}

/// The identities a node refuses. Checked on every envelope it admits, so cheap when empty.
#[derive(Debug, Default)]
pub struct Revocations {
    any: AtomicBool,
    set: RwLock<Arc<HashSet<NodeId>>>,
}

impl Revocations {
    /// Replaces the set.
    pub fn set(&self, ids: impl IntoIterator<Item = NodeId>) {
        let set: HashSet<NodeId> = ids.into_iter().collect();
        let any = !set.is_empty();
        *crate::sync::write(&self.set) = Arc::new(set);
        self.any.store(any, Ordering::Release);
    }

    /// Whether `id` is revoked.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.any.load(Ordering::Acquire) && crate::sync::read(&self.set).contains(id)
    }

    /// How many identities are revoked.
    pub fn len(&self) -> usize {
        crate::sync::read(&self.set).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_keeps_each_identity_once_and_refuses_what_is_not_an_identity() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(load(dir.path()).expect("empty").is_empty());
        assert!(revoke(dir.path(), "0123456789abcdef").expect("revoked"));
        assert!(!revoke(dir.path(), " 0123456789abcdef ").expect("again"));
        assert!(revoke(dir.path(), "alice").expect("an operator"));
        assert!(revoke(dir.path(), "a\nb").is_err());
        assert!(revoke(dir.path(), "").is_err());
        assert!(revoke(dir.path(), "x\u{1b}[31m").is_err());
        let ids: Vec<String> = load(dir.path())
            .expect("list")
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(ids, ["0123456789abcdef", "alice"]);
        let r = Revocations::default();
        assert!(!r.contains(&NodeId::new("alice")));
        r.set(load(dir.path()).expect("list"));
        assert!(r.contains(&NodeId::new("alice")));
        assert!(!r.contains(&NodeId::new("bob")));
        assert_eq!(r.len(), 2);
        r.set([]);
        assert!(r.is_empty());
        assert!(!r.contains(&NodeId::new("alice")));
    }
}
