//! Panics a node caught and lived through. A panic in a request's task or
//! a search thread does not take the node down (tokio and the search's own
//! guard catch it, and the caller gets `INTERNAL`), so without a count it
//! would be seen only in a log line; every one is a defect worth an alert.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static CAUGHT: AtomicU64 = AtomicU64::new(0);

/// Counts every panic of the process from now on, then reports it as the
/// default hook does (the message and where, on stderr). Idempotent.
pub fn count_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            CAUGHT.fetch_add(1, Ordering::Relaxed);
            report(info);
        }));
    });
}

/// Panics counted since [`count_panics`]: served as the counter `panics`
/// and the metric `searchtree_panics_total`.
pub fn caught() -> u64 {
    CAUGHT.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_is_counted() {
        count_panics();
        count_panics();
        let before = caught();
        let outcome = std::thread::spawn(|| panic!("a defect")).join();
        assert!(outcome.is_err());
        assert_eq!(caught(), before + 1);
    }
}
