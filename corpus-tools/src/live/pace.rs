//! A ceiling on a load's rate, for a tree whose queries matter more than
//! how fast a load lands.
//!
//! A load streams as fast as the tree acknowledges it, and the leaves'
//! indexing then shares the cores with every query. `searchtree load
//! --max-rate N` spaces its batches instead: a batch of n operations is
//! followed by the next no sooner than n ÷ N seconds later, as
//! Elasticsearch's `requests_per_second` paces a reindex. A sender held up
//! (by a full window) does not make up for it in a burst. The window of
//! unacknowledged batches still applies, so a slower tree still slows the
//! sender below the ceiling.

use tokio::time::{Duration, Instant};

/// When the next batch may be sent.
#[derive(Debug)]
pub struct Pace {
    /// Operations a second at most; `None`: as fast as the tree takes them.
    max_rate: Option<f64>,
    /// When the next batch may go (`None`: at once).
    next: Option<Instant>,
}

/// Batches a second a paced load aims at, so that its work reaches the
/// leaves in small steps rather than one large batch now and then.
pub const PACED_BATCHES_PER_SECOND: f64 = 10.0;

impl Pace {
    /// A pace of at most `max_rate` operations a second (`None`: no ceiling).
    pub fn new(max_rate: Option<f64>) -> Pace {
        Pace {
            max_rate,
            next: None,
        }
    }

    /// The batch size a load at this pace uses when not told one:
    /// [`PACED_BATCHES_PER_SECOND`] batches a second, at most `default`.
    pub fn batch_size(&self, default: u32) -> u32 {
        match self.max_rate {
            None => default,
            Some(rate) => ((rate / PACED_BATCHES_PER_SECOND).ceil() as u32).clamp(1, default),
        }
    }

    /// When the next batch may go, if that is still to come.
    pub fn next_due(&self) -> Option<Instant> {
        self.next.filter(|&due| due > Instant::now())
    }

    /// Counts a batch of `ops` operations as sent now: the next may go
    /// `ops` ÷ the ceiling later.
    pub fn sent(&mut self, ops: u64) {
        if let Some(rate) = self.max_rate {
            self.next = Some(Instant::now() + Duration::from_secs_f64(ops as f64 / rate));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Pace {
        /// What the window does: waits for the send time, then sends.
        async fn wait_to_send(&mut self, ops: u64) {
            if let Some(due) = self.next_due() {
                tokio::time::sleep_until(due).await;
            }
            self.sent(ops);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_leave_on_the_schedule_of_the_ceiling() {
        let mut pace = Pace::new(Some(1000.0));
        let start = Instant::now();
        let mut sent_at = Vec::new();
        for _ in 0..5 {
            pace.wait_to_send(100).await;
            sent_at.push(start.elapsed().as_millis());
        }
        // The first at once, then one every 100 operations ÷ 1000/s.
        assert_eq!(sent_at, [0, 100, 200, 300, 400]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_held_up_does_not_make_up_for_it_in_a_burst() {
        let mut pace = Pace::new(Some(100.0));
        let start = Instant::now();
        pace.wait_to_send(10).await;
        // The tree held the sender up for a second (its window was full).
        tokio::time::sleep(Duration::from_secs(1)).await;
        pace.wait_to_send(10).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1), "it was due");
        // Then 10 operations ÷ 100/s apart again, not the second's backlog.
        pace.wait_to_send(10).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1100));
        pace.wait_to_send(10).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1200));
    }

    #[tokio::test(start_paused = true)]
    async fn no_ceiling_never_waits() {
        let mut pace = Pace::new(None);
        let start = Instant::now();
        for _ in 0..100 {
            pace.wait_to_send(8000).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[test]
    fn a_paced_load_cuts_about_ten_batches_a_second() {
        assert_eq!(Pace::new(None).batch_size(8000), 8000);
        assert_eq!(Pace::new(Some(20_000.0)).batch_size(8000), 2000);
        assert_eq!(Pace::new(Some(1_000_000.0)).batch_size(8000), 8000);
        assert_eq!(Pace::new(Some(5.0)).batch_size(8000), 1);
    }
}
