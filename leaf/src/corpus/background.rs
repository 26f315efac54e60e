//! Where a leaf's corpus work runs: on threads of its own at a lower CPU
//! priority (nice +[`NICE`]), never on the threads that search.
//!
//! Loading, merging a candidate version and copying one are bulk work that
//! can take both cores of a small machine for seconds, while queries need a
//! few milliseconds each, now. Run at the same priority, a load makes every
//! query wait behind it (the query p99 during back-to-back loads was ten
//! times the idle one); at nice +10 the scheduler gives a runnable search
//! thread about ten times the share of a corpus thread, so the load takes
//! what the queries leave. Threads inherit their creator's nice value, so
//! the indexing and merge threads tantivy starts for a writer opened here
//! run at the same priority.
//!
//! Only Linux makes nice a per-thread attribute; elsewhere the work runs at
//! normal priority (lowering the whole process would slow its searches too).

use std::fmt;

use tokio::sync::oneshot;

/// How much lower than the searches' the corpus threads' priority is.
pub use searchtree_node::background::NICE;

/// The work's thread ended without an answer (it panicked).
#[derive(Debug)]
pub struct Panicked;

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the corpus worker thread panicked")
    }
}

impl std::error::Error for Panicked {}

/// Runs `op` on a new low-priority thread, started at once; the returned
/// future gives its result (dropping the future leaves the work running,
/// like `spawn_blocking`).
pub fn spawn<T: Send + 'static>(
    op: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T, Panicked>> {
    let (tx, rx) = oneshot::channel();
    detach(move || {
        let _ = tx.send(op());
    });
    // A thread that never started dropped `tx` with `op`: that too is
    // an answer that never comes.
    async move { rx.await.map_err(|_| Panicked) }
}

/// Runs `op` on a new low-priority thread and lets it be: for work that
/// hands its results on by itself (e.g. into a response stream).
pub fn detach(op: impl FnOnce() + Send + 'static) {
    let started = std::thread::Builder::new()
        .name("corpus".into())
        .spawn(move || {
            lower_priority();
            op();
        });
    if let Err(e) = started {
        tracing::error!(%e, "cannot start a corpus thread");
    }
}

use searchtree_node::background::lower_priority;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_at_lower_priority_and_its_result_comes_back() {
        let nice = spawn(|| {
            #[cfg(target_os = "linux")]
            // SAFETY: getpriority reads no memory of ours.
            return unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            #[cfg(not(target_os = "linux"))]
            return NICE;
        })
        .await
        .unwrap();
        assert!(nice >= NICE, "nice {nice}");
        let err = spawn(|| -> () { panic!("boom") }).await.unwrap_err();
        assert_eq!(err.to_string(), "the corpus worker thread panicked");
    }
}
