//! The one lock-poisoning policy: a lock whose holder panicked is taken as it is.
//!
//! Nothing in rollcall holds a lock across a step that could leave what it guards half
//! changed (each critical section is one assignment, one insertion or removal, or a whole
//! update computed before it is stored), so the data behind a poisoned lock is consistent;
//! refusing it would turn one panicked task into a node that no longer routes, counts or
//! links. Every `std::sync` lock in the workspace is taken through these functions.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, poisoned or not.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Read-locks `l`, poisoned or not.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Write-locks `l`, poisoned or not.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_lock_whose_holder_panicked_is_still_taken_with_its_data() {
        let m = Arc::new(Mutex::new(vec![1, 2]));
        let l = Arc::new(RwLock::new(7));
        let (m2, l2) = (m.clone(), l.clone());
        let _ = std::thread::spawn(move || {
            let _g = m2.lock();
            let _w = l2.write();
            panic!("a holder dies");
        })
        .join();
        assert!(m.is_poisoned() && l.is_poisoned());
        lock(&m).push(3);
        assert_eq!(*lock(&m), [1, 2, 3]);
        *write(&l) += 1;
        assert_eq!(*read(&l), 8);
    }
}
