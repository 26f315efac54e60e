//! A load that has gone quiet gives up the root's one corpus slot. A load
//! holds the slot from its first message to its last acknowledgement, so a
//! client that opened a Load stream, sent a batch and then neither sent
//! more nor closed it (a stuck or hostile client; the connection's pings
//! keep it open) would refuse every other load and publish for as long as
//! it liked. After [`LOAD_IDLE`] with no batch arriving and none
//! acknowledged, the load ends as if the client had closed it, with
//! `DEADLINE_EXCEEDED` saying so: the batches acknowledged stand.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tonic::Status;

/// How long a load may go with no batch arriving and none acknowledged.
pub const LOAD_IDLE: Duration = Duration::from_secs(60);

/// When a load last moved: a batch arrived or one was acknowledged.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    /// A load starting now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    /// The load moved now.
    pub fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn since_last(&self) -> Duration {
        let now = self.base.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// `stream`'s batches, ended with `DEADLINE_EXCEEDED` once `activity` has
/// not moved for `idle`.
pub fn idle_limited<S, T>(
    stream: S,
    idle: Duration,
    activity: Arc<Activity>,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>
where
    S: Stream<Item = Result<T, Status>> + Unpin + Send + 'static,
    T: Send + 'static,
{
    Box::pin(futures::stream::unfold(Some(stream), move |state| {
        let activity = Arc::clone(&activity);
        async move {
            let mut stream = state?;
            loop {
                let wait = idle.saturating_sub(activity.since_last());
                if wait.is_zero() {
                    let quiet = Status::deadline_exceeded(format!(
                        "no Load batch arrived and none was acknowledged for {} s: the load \
                         ended so that other loads and publishes may run; the batches \
                         acknowledged stand, send the rest in a new load",
                        idle.as_secs()
                    ));
                    return Some((Err(quiet), None));
                }
                // Not waited out: an acknowledgement may have moved the clock.
                if let Ok(next) = tokio::time::timeout(wait, stream.next()).await {
                    activity.touch();
                    return next.map(|item| (item, Some(stream)));
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_quiet_load_ends_and_one_kept_busy_by_acks_does_not() {
        // A client that sends one batch and then nothing.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<u32, Status>>(4);
        tx.send(Ok(1)).await.unwrap();
        let activity = Activity::new();
        let mut batches = idle_limited(
            tokio_stream_of(rx),
            Duration::from_secs(60),
            Arc::clone(&activity),
        );
        assert_eq!(batches.next().await.unwrap().unwrap(), 1);
        // Acknowledgements keep it alive past the limit...
        let start = Instant::now();
        let acks = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move {
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_secs(40)).await;
                    activity.touch();
                }
            })
        };
        let err = batches.next().await.unwrap().unwrap_err();
        acks.await.unwrap();
        // ...until 60 s after the last one.
        assert_eq!(start.elapsed(), Duration::from_secs(180));
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert!(
            err.message().contains("acknowledged stand"),
            "{}",
            err.message()
        );
        assert!(batches.next().await.is_none(), "nothing after it");
        drop(tx);
    }

    fn tokio_stream_of<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> Pin<Box<dyn Stream<Item = T> + Send>> {
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
