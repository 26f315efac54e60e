//! Streaming batches with at most a few unacknowledged: the next batch is
//! read only when an ack frees a slot, so a slow tree slows the reading
//! instead of growing a queue anywhere. When the stream breaks, the
//! batches still in flight are counted as not acknowledged and reading
//! stops; when the input has an invalid line, reading stops and what was
//! sent is still waited for.

use std::collections::BTreeMap;
use std::time::Duration;

use searchtree_proto::forwarded;
use searchtree_proto::pb::{LoadAck, LoadBatch};
use tonic::Status;

use crate::live::batches::{BatchInfo, Batcher, Next, OpSource};
use crate::live::pace::Pace;
use crate::live::tally::Tally;
use crate::node_call::describe_status;

/// The two directions of one `Corpus.Load` stream.
pub(crate) trait Link {
    /// Waits until the other side took the stream, or refused it.
    fn started(&mut self) -> impl std::future::Future<Output = Result<(), Status>>;
    /// Sends a batch; an error means the stream is gone.
    fn send(&mut self, batch: LoadBatch) -> impl std::future::Future<Output = Result<(), Status>>;
    /// The next ack; `None` when the other side ended the stream.
    /// Cancel-safe: a paced sender stops waiting for it when its next
    /// batch is due, and no ack may be lost then.
    fn next_ack(&mut self) -> impl std::future::Future<Output = Option<Result<LoadAck, Status>>>;
    /// Ends the request stream: nothing more will be sent.
    fn close(&mut self);
}

/// Sends every batch `batcher` yields over `link`, at most `in_flight`
/// unacknowledged and no faster than `pace` allows, recording what happens
/// in `tally`; `progress` is called after each batch sent and each ack.
pub(crate) async fn run_window<S: OpSource, L: Link>(
    batcher: &mut Batcher<S>,
    link: &mut L,
    in_flight: usize,
    pace: &mut Pace,
    tally: &mut Tally,
    mut progress: impl FnMut(&S, &Tally),
) {
    let in_flight = in_flight.max(1);
    let mut outstanding: BTreeMap<u64, BatchInfo> = BTreeMap::new();
    let mut reading = true;
    let mut last_sent_line = 0;
    // A refusal (another load under way, leaves that disagree) before a
    // batch is cut.
    if let Err(status) = link.started().await {
        tally.not_root |= forwarded::is_not_root(&status);
        tally.stop(stream_failed(&status), Some(1));
        link.close();
        return;
    }
    loop {
        // With batches in flight, a paced sender reads their acks while it
        // waits for its next send time.
        let mut send_at = None;
        while reading && outstanding.len() < in_flight {
            if let Some(due) = pace.next_due() {
                if !outstanding.is_empty() {
                    send_at = Some(due);
                    break;
                }
                tokio::time::sleep_until(due).await;
            }
            match batcher.next_batch() {
                Next::Batch(batch) => {
                    let info = batch.info;
                    pace.sent(info.ops);
                    tally.sent(&info);
                    outstanding.insert(info.seq, info);
                    last_sent_line = info.last_line;
                    if let Err(status) = link.send(batch.batch).await {
                        // The stream is gone; its reason comes with the acks.
                        tracing::debug!(status = %describe_status(&status), "load stream closed");
                        reading = false;
                    }
                    progress(batcher.source(), tally);
                }
                Next::End => reading = false,
                // A quiet input: see to the batches in flight, or, with
                // none, whether the root ended the stream meanwhile (it
                // ends a load that sends nothing for a minute).
                Next::Idle if !outstanding.is_empty() => break,
                Next::Idle => {
                    if let Ok(ended) = tokio::time::timeout(Duration::ZERO, link.next_ack()).await {
                        let why = match ended {
                            Some(Ok(ack)) => {
                                tracing::warn!(seq = ack.seq, "an ack for no batch in flight");
                                continue;
                            }
                            Some(Err(status)) => {
                                tally.not_root |= forwarded::is_not_root(&status);
                                stream_failed(&status)
                            }
                            None => "the root ended the load stream".to_string(),
                        };
                        tally.stop(why, Some(last_sent_line + 1));
                        reading = false;
                    }
                }
                Next::Stop {
                    reason,
                    unsent_from,
                    invalid,
                    unreadable,
                } => {
                    tally.invalid_input = invalid;
                    tally.unreadable_input = unreadable;
                    tally.stop(reason, Some(unsent_from));
                    reading = false;
                }
            }
        }
        if outstanding.is_empty() {
            break;
        }
        let next = match send_at {
            None => link.next_ack().await,
            Some(due) => match tokio::time::timeout_at(due, link.next_ack()).await {
                Ok(next) => next,
                // Time for the next batch.
                Err(_) => continue,
            },
        };
        let broken = match next {
            Some(Ok(ack)) => {
                match outstanding.remove(&ack.seq) {
                    Some(info) => tally.acked(&info, ack),
                    None => tracing::warn!(seq = ack.seq, "an ack for no batch in flight"),
                }
                progress(batcher.source(), tally);
                continue;
            }
            Some(Err(status)) => {
                tally.not_root |= forwarded::is_not_root(&status);
                stream_failed(&status)
            }
            None => "the root ended the load stream before acknowledging it".to_string(),
        };
        for info in outstanding.values() {
            tally.lost(info, &broken);
        }
        if reading {
            tally.stop(broken, Some(last_sent_line + 1));
        }
        break;
    }
    tally.skipped = batcher.skipped;
    tally.skipped_examples = batcher.skipped_examples.clone();
    link.close();
}

/// What the summary says of a load stream that failed with `status`.
fn stream_failed(status: &Status) -> String {
    format!("the load stream failed: {}", describe_status(status))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::live::batches::tests::{Lines, QUIET};

    /// A tree that acknowledges each batch `delay` after it arrives (all
    /// batches ok, one document added each), or breaks after `fail_after`
    /// batches; it records the most batches it ever held unacknowledged.
    struct FakeTree {
        delay: Duration,
        pending: VecDeque<(tokio::time::Instant, u64)>,
        max_pending: usize,
        received: Vec<u64>,
        fail_after: Option<usize>,
        /// What it breaks with.
        failure: Status,
        /// Refuses the stream before any batch.
        refuse: Option<Status>,
        /// With nothing pending, keeps the stream open (waits) rather than
        /// ending it.
        idle_open: bool,
        closed: bool,
    }

    impl FakeTree {
        fn new(delay: Duration) -> Self {
            FakeTree {
                delay,
                pending: VecDeque::new(),
                max_pending: 0,
                received: Vec::new(),
                fail_after: None,
                failure: Status::unavailable("leaf gone"),
                refuse: None,
                idle_open: false,
                closed: false,
            }
        }
    }

    impl Link for FakeTree {
        async fn started(&mut self) -> Result<(), Status> {
            self.refuse.clone().map_or(Ok(()), Err)
        }

        async fn send(&mut self, batch: LoadBatch) -> Result<(), Status> {
            self.received.push(batch.seq);
            self.pending
                .push_back((tokio::time::Instant::now() + self.delay, batch.seq));
            self.max_pending = self.max_pending.max(self.pending.len());
            Ok(())
        }

        async fn next_ack(&mut self) -> Option<Result<LoadAck, Status>> {
            if self.fail_after.is_some_and(|n| self.received.len() > n) {
                return Some(Err(self.failure.clone()));
            }
            if self.pending.is_empty() && self.idle_open {
                std::future::pending::<()>().await;
            }
            // Cancel-safe, as the real stream: taken off only once due.
            let &(at, _) = self.pending.front()?;
            tokio::time::sleep_until(at).await;
            let (_, seq) = self.pending.pop_front()?;
            Some(Ok(LoadAck {
                seq,
                ok: true,
                added: 1,
                ..LoadAck::default()
            }))
        }

        fn close(&mut self) {
            self.closed = true;
        }
    }

    /// `run_window` with no ceiling on the rate and no progress callback.
    async fn run_unpaced<S: OpSource>(
        batcher: &mut Batcher<S>,
        tree: &mut FakeTree,
        in_flight: usize,
        tally: &mut Tally,
    ) {
        let mut pace = Pace::new(None);
        run_window(batcher, tree, in_flight, &mut pace, tally, |_, _| {}).await;
    }

    fn docs(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!(r#"{{"id":"d{i}","body":"b"}}"#))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_in_flight_batches_unacknowledged() {
        let lines = docs(20);
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut batcher = Batcher::new(Lines::new(&refs), 1, false);
        let mut tree = FakeTree::new(Duration::from_millis(100));
        let mut tally = Tally::default();
        let started = tokio::time::Instant::now();
        run_unpaced(&mut batcher, &mut tree, 4, &mut tally).await;
        assert_eq!(tree.max_pending, 4);
        assert_eq!(tree.received, (1..=20).collect::<Vec<_>>());
        assert!(tree.closed);
        assert!(tally.complete(), "{tally:?}");
        assert_eq!((tally.batches_ok, tally.added), (20, 20));
        // Five windows of four, each acknowledged 100 ms after it was
        // sent: the sender waited for acks rather than sending ahead.
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_ceiling_on_the_rate_spaces_the_batches_under_the_window() {
        let lines = docs(20);
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut batcher = Batcher::new(Lines::new(&refs), 2, false);
        let mut tree = FakeTree::new(Duration::from_millis(1));
        let mut tally = Tally::default();
        let started = tokio::time::Instant::now();
        let mut pace = Pace::new(Some(20.0));
        run_window(&mut batcher, &mut tree, 4, &mut pace, &mut tally, |_, _| {}).await;
        assert!(tally.complete(), "{tally:?}");
        assert_eq!((tally.batches_ok, tally.ops_sent), (10, 20));
        // Ten batches of two at 20 operations a second: one every 100 ms,
        // each acknowledged 1 ms later, so the window never filled; the
        // input's end is read when an eleventh batch would have been due.
        assert_eq!(started.elapsed(), Duration::from_millis(1000));
        assert_eq!(tree.max_pending, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_sender_with_slow_acks_keeps_its_window_and_loses_no_ack() {
        let lines = docs(20);
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut batcher = Batcher::new(Lines::new(&refs), 2, false);
        // Acks take 250 ms; batches are due every 100 ms.
        let mut tree = FakeTree::new(Duration::from_millis(250));
        let mut tally = Tally::default();
        let mut pace = Pace::new(Some(20.0));
        run_window(&mut batcher, &mut tree, 2, &mut pace, &mut tally, |_, _| {}).await;
        assert!(tally.complete(), "{tally:?}");
        assert_eq!(tally.batches_ok, 10, "every ack counted");
        assert_eq!(tree.max_pending, 2, "the window, not the pace, held it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_stream_fails_the_batches_in_flight_and_stops_reading() {
        let lines = docs(10);
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut batcher = Batcher::new(Lines::new(&refs), 2, false);
        let mut tree = FakeTree::new(Duration::from_millis(10));
        tree.fail_after = Some(2);
        let mut tally = Tally::default();
        run_unpaced(&mut batcher, &mut tree, 3, &mut tally).await;
        assert_eq!(tree.received, [1, 2, 3]);
        let failed: Vec<u64> = tally.failed.iter().map(|f| f.info.seq).collect();
        assert_eq!(failed, [1, 2, 3]);
        assert_eq!(
            tally.failed[0].reasons,
            ["the load stream failed: Unavailable: leaf gone"]
        );
        assert_eq!(tally.unsent_from, Some(7));
        assert!(!tally.complete());
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalid_line_stops_reading_but_what_was_sent_is_acknowledged() {
        let mut lines = docs(6);
        lines.insert(4, r#"{"id":"x","op":"merge"}"#.into());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut batcher = Batcher::new(Lines::new(&refs), 2, false);
        let mut tree = FakeTree::new(Duration::from_millis(10));
        let mut tally = Tally::default();
        run_unpaced(&mut batcher, &mut tree, 4, &mut tally).await;
        assert_eq!(tree.received, [1, 2]);
        assert_eq!(tally.batches_ok, 2);
        assert!(tally.failed.is_empty());
        let why = tally.stopped.as_deref().unwrap();
        assert!(why.starts_with("in.jsonl:5: \"op\" must be"), "{why}");
        assert_eq!(tally.unsent_from, Some(5));
        assert!(tally.invalid_input);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_below_the_root_refusing_the_load_is_not_advised_to_be_retried() {
        let lines = docs(4);
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut batcher = Batcher::new(Lines::new(&refs), 2, false);
        let mut tree = FakeTree::new(Duration::from_millis(10));
        tree.fail_after = Some(0);
        tree.failure = forwarded::not_root("a leaf (shard 1)", "load");
        let mut tally = Tally::default();
        run_unpaced(&mut batcher, &mut tree, 2, &mut tally).await;
        assert!(!tally.complete());
        assert!(tally.not_root);
        let advice = tally.advice();
        assert!(!advice.contains("rerun the same command"), "{advice}");
        assert!(advice.contains("rerun with the root's address"), "{advice}");

        // Any other broken stream is worth rerunning as it was.
        let mut batcher = Batcher::new(Lines::new(&refs), 2, false);
        let mut tree = FakeTree::new(Duration::from_millis(10));
        tree.fail_after = Some(0);
        let mut tally = Tally::default();
        run_unpaced(&mut batcher, &mut tree, 2, &mut tally).await;
        assert!(!tally.not_root);
        assert!(tally.advice().contains("rerun the same command"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_refused_at_once_reads_and_sends_nothing() {
        let lines = docs(4);
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut batcher = Batcher::new(Lines::new(&refs), 2, false);
        let mut tree = FakeTree::new(Duration::from_millis(10));
        tree.refuse = Some(Status::aborted("another load or publish is running"));
        let mut tally = Tally::default();
        run_unpaced(&mut batcher, &mut tree, 2, &mut tally).await;
        assert!(tree.received.is_empty() && tree.closed);
        assert_eq!(batcher.source().0.len(), 4, "no line was read");
        assert_eq!(
            tally.stopped.as_deref(),
            Some("the load stream failed: Aborted: another load or publish is running")
        );
        assert_eq!(tally.unsent_from, Some(1));
        assert!(!tally.complete());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_input_goes_on_while_the_stream_is_open_and_stops_once_it_ended() {
        let mut lines = docs(3);
        lines.insert(2, QUIET.into());
        lines.insert(2, QUIET.into());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut batcher = Batcher::new(Lines::new(&refs), 2, false);
        let mut tree = FakeTree::new(Duration::from_millis(10));
        tree.idle_open = true;
        let mut tally = Tally::default();
        run_unpaced(&mut batcher, &mut tree, 1, &mut tally).await;
        assert!(tally.complete(), "{tally:?}");
        assert_eq!(tree.received, [1, 2], "the quiet input was waited out");
        assert_eq!(tally.ops_sent, 3);

        // The root ended the stream while the input was quiet (it ends a
        // load that sends nothing for a minute): said, and nothing more
        // is read.
        let mut batcher = Batcher::new(Lines::new(&refs), 2, false);
        let mut tree = FakeTree::new(Duration::from_millis(10));
        let mut tally = Tally::default();
        run_unpaced(&mut batcher, &mut tree, 1, &mut tally).await;
        assert_eq!(tree.received, [1]);
        assert_eq!(
            tally.stopped.as_deref(),
            Some("the root ended the load stream")
        );
        assert_eq!(tally.unsent_from, Some(3));
        assert_eq!(batcher.source().0.len(), 2, "the rest was not read");
    }
}
