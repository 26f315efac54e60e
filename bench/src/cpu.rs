//! The load tester's own CPU use.
//!
//! On a small machine the load tester competes with the tree for the same
//! cores; a run whose tester was busy most of the time may have measured the
//! tester rather than the tree. So every run reports how much CPU this
//! process used over the measured window, as a fraction of one core.

use std::time::{Duration, Instant};

/// Above this fraction of one core, the report warns that the load tester,
/// not the tree, may have limited the run.
pub const WARN_FRACTION: f64 = 0.8;

/// This process's CPU time so far, user plus system, from
/// `getrusage(RUSAGE_SELF)`; `None` where that is not available.
pub fn process_cpu() -> Option<Duration> {
    #[cfg(unix)]
    {
        // SAFETY: getrusage only writes into the struct we hand it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return None;
        }
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Some(tv(usage.ru_utime) + tv(usage.ru_stime))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Measures this process's CPU use from when it is started to when it is
/// read: the loops start one when the measured window opens.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    cpu: Option<Duration>,
    wall: Instant,
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start() -> Self {
        CpuMeter {
            cpu: process_cpu(),
            wall: Instant::now(),
        }
    }

    /// CPU seconds used since [`CpuMeter::start`] divided by the wall-clock
    /// seconds since then: 1.0 is one core busy all the time (a
    /// multi-threaded tester can exceed it).
    pub fn fraction(&self) -> Option<f64> {
        let used = process_cpu()?.checked_sub(self.cpu?)?;
        let wall = self.wall.elapsed().as_secs_f64();
        (wall > 0.0).then(|| used.as_secs_f64() / wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_busy_loop_shows_up_as_about_one_core() {
        let meter = CpuMeter::start();
        let until = Instant::now() + Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let f = meter.fraction().unwrap();
        // Other tests may run on other threads of this process meanwhile.
        assert!(f > 0.5, "{f}");
    }

    #[cfg(unix)]
    #[test]
    fn cpu_time_never_goes_backwards() {
        let before = process_cpu().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(process_cpu().unwrap() >= before);
    }
}
