//! Where a node's bulk work runs: loads streaming through it, statistics
//! being summed and sent down, versions being copied. Beside the node's
//! main runtime, which serves queries, a second runtime of one thread at a
//! lower CPU priority (nice +[`NICE`]) runs it.
//!
//! Decoding a batch of two thousand documents, or a chunk of sixteen
//! thousand terms, takes milliseconds; on the thread that also answers
//! queries, every query arriving meanwhile waits for it, and the query p99
//! during back-to-back loads was several times the idle one. Here the work
//! neither holds up the query runtime nor competes with it for the CPU at
//! equal weight: the scheduler gives a runnable query thread about ten
//! times the share of a nice +10 thread.
//!
//! Only Linux makes nice a per-thread attribute; elsewhere the runtime runs
//! at normal priority (lowering the process would slow its queries too).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// How much lower than the queries' the bulk work's priority is.
pub const NICE: i32 = 10;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The bulk-work runtime, started on first use.
pub fn handle() -> &'static Handle {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("bulk")
                .on_thread_start(lower_priority)
                .enable_all()
                .build()
                .expect("the bulk-work runtime starts")
        })
        .handle()
}

/// Runs `work` on the bulk-work runtime.
pub fn spawn<F>(work: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    handle().spawn(work)
}

/// Lowers the calling thread's priority by [`NICE`] (Linux; elsewhere a
/// no-op). Threads inherit it from the thread that starts them.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority reads no memory of ours; on Linux, who = 0
        // with PRIO_PROCESS names the calling thread.
        let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) } != 0;
        if failed {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot lower a bulk-work thread's priority"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bulk_work_runs_on_its_own_low_priority_thread() {
        let (name, nice) = spawn(async {
            let name = std::thread::current().name().map(str::to_string);
            #[cfg(target_os = "linux")]
            // SAFETY: getpriority reads no memory of ours.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            #[cfg(not(target_os = "linux"))]
            let nice = NICE;
            (name, nice)
        })
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("bulk"));
        assert!(nice >= NICE, "nice {nice}");
    }
}
