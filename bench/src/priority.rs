//! The tester's own place in the queue for a core.
//!
//! An open-loop tester measures each request from its intended send time
//! to the moment one of its threads reads the answer. When the tester
//! shares a machine's cores with the tree and with bulk work (a load
//! streaming in), that moment includes the tester's own wait for a core,
//! and the report charges it to the tree. On two cores, with a load
//! running, `perf sched` showed the tester's threads waiting up to 66–105
//! ms for a core while the tree's own threads waited at most 35 ms: the
//! p99 it reported (108 ms) was mostly its own. Linux's autogroups make
//! this worst when the tester runs in another terminal (session) than the
//! tree: each session gets an equal share of the cores, whatever the nice
//! values inside it. Real clients run on other machines and never wait
//! for the tree's cores, so by default the tester's threads run at a
//! real-time priority (`SCHED_FIFO`) for open-loop runs: they take a core
//! the moment an answer arrives. Their CPU is small (a few percent of a
//! core at hundreds of requests a second), and the kernel caps real-time
//! threads at 95% of each second in any case.
//!
//! Closed-loop runs, which keep the tester as busy as the tree, and
//! searches in the tester's own process (`--direct`), stay at normal
//! priority.

use std::io;

/// The real-time priority the tester's threads take (of `SCHED_FIFO`'s
/// 1–99): above every normal thread, below the kernel's own (50 and up).
pub const REALTIME_PRIORITY: i32 = 10;

/// What the tester's priority is, as its report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Priority {
    /// Every thread at `SCHED_FIFO` [`REALTIME_PRIORITY`].
    Realtime,
    /// Normal priority, as asked.
    Normal,
    /// Normal priority: real-time was refused, for this reason.
    Refused(String),
}

impl Priority {
    /// One line for the report.
    pub fn describe(&self) -> String {
        match self {
            Priority::Realtime => format!(
                "real-time (SCHED_FIFO {REALTIME_PRIORITY}): its own wait for a core is not counted as the tree's"
            ),
            Priority::Normal => "normal".to_string(),
            Priority::Refused(why) => format!(
                "normal (real-time refused: {why}; without root or CAP_SYS_NICE, the latencies include the tester's own wait for a core)"
            ),
        }
    }
}

/// Moves every thread of this process to `SCHED_FIFO` at
/// [`REALTIME_PRIORITY`]; threads started later inherit it from the thread
/// that starts them.
pub fn raise_to_realtime() -> io::Result<()> {
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        match set_policy(tid, true) {
            // A thread that ended since the directory was read.
            Err(e) if e.raw_os_error() != Some(libc::ESRCH) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Puts thread `tid` (0: the calling thread) at `SCHED_FIFO`
/// [`REALTIME_PRIORITY`], or back at normal priority.
fn set_policy(tid: i32, realtime: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let (policy, priority) = if realtime {
            (libc::SCHED_FIFO, REALTIME_PRIORITY)
        } else {
            (libc::SCHED_OTHER, 0)
        };
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: `param` is a valid sched_param that outlives the call; on
        // Linux a thread id names that one thread.
        if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (tid, realtime);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "real-time priority is set on Linux only",
        ))
    }
}

/// Raises the tester to real-time, or says why it stays at normal priority.
pub fn try_realtime() -> Priority {
    match raise_to_realtime() {
        Ok(()) => Priority::Realtime,
        Err(e) => Priority::Refused(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's scheduling policy.
    fn policy() -> i32 {
        // SAFETY: sched_getscheduler reads no memory of ours.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn a_raised_thread_and_the_threads_it_starts_run_at_real_time_or_the_refusal_is_said() {
        // One thread of its own is raised (not the whole test process) and
        // put back before it ends.
        let (raised, own, child) = std::thread::spawn(|| {
            let raised = set_policy(0, true);
            let own = policy();
            let child = std::thread::spawn(policy).join().unwrap();
            if raised.is_ok() {
                set_policy(0, false).unwrap();
                assert_eq!(policy(), libc::SCHED_OTHER);
            }
            (raised, own, child)
        })
        .join()
        .unwrap();
        match raised {
            Ok(()) => {
                assert_eq!(own, libc::SCHED_FIFO);
                assert_eq!(child, libc::SCHED_FIFO, "a new thread inherits it");
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
                assert_eq!(own, libc::SCHED_OTHER);
                let said = Priority::Refused(e.to_string()).describe();
                assert!(said.contains("CAP_SYS_NICE"), "{said}");
            }
        }
    }

    #[test]
    fn the_report_says_which_priority_the_tester_ran_at() {
        assert!(
            Priority::Realtime
                .describe()
                .starts_with("real-time (SCHED_FIFO 10)")
        );
        assert_eq!(Priority::Normal.describe(), "normal");
    }
}
