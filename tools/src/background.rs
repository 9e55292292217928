//! The background runtime of a served simulation (`rollcall sim --serve`): package work (distributors,
//! their fetches, the chunk pools, the files' final check) runs on threads at the lowest CPU
//! priority, so that the threads that carry questions come first.
//!
//! On real machines each endpoint's package transfer competes only with that machine's own
//! work. In one process simulating a thousand endpoints, a 4 MiB package to all of them is
//! 64,000 chunks received, checked and passed on (measured: about 7 s of CPU), and it would
//! hold both cores of a small machine for seconds, with every simulated machine's question
//! hops queued behind it: a simulation artefact, not the product's behaviour. Here the
//! transfer takes what the question path leaves.

use std::sync::OnceLock;

/// The process's background runtime (started on first use), or `None` if it could not be
/// started (package work then runs with the rest).
pub fn handle() -> Option<tokio::runtime::Handle> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("package-work")
                .on_thread_start(|| {
                    // The lowest priority of the normal policy (nice 19 on Linux: per thread).
                    if let Err(e) = thread_priority::set_current_thread_priority(
                        thread_priority::ThreadPriority::Min,
                    ) {
                        tracing::debug!(error = ?e, "could not lower a package thread's priority");
                    }
                })
                .enable_all()
                .build()
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "no background runtime: package work runs with questions");
                })
                .ok()
        })
        .as_ref()
        .map(|rt| rt.handle().clone())
}
