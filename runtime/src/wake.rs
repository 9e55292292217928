//! Waiting on state behind a lock, woken by a [`Notify`]: what a watch channel does, without
//! its ~350 bytes (a waker list per slot of eight) on every node, link and connection of a
//! simulated fleet.

use tokio::sync::Notify;

/// Waits until `look` finds something, looking again each time `changed` is notified (with
/// `notify_waiters`, after the state changed). Each wait is registered before its look, so a
/// change in between is not missed.
pub(crate) async fn wait_until<T>(changed: &Notify, mut look: impl FnMut() -> Option<T>) -> T {
    loop {
        let woken = changed.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if let Some(t) = look() {
            return t;
        }
        woken.await;
    }
}
