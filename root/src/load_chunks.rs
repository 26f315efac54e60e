//! A paced load reaches the leaves in small chunks.
//!
//! A client's batch (8,000 operations by default) reaches every leaf at
//! once, and each indexes its part in one burst that slows the queries it
//! overlaps. Spacing whole batches apart lowers a load's rate but not its
//! bursts. So while the root paces a load (see [`crate::load_pace`]), it
//! cuts each batch into chunks of a tenth of a second's operations at the
//! pace's rate, forwards each as a batch of its own, paced, and answers the
//! client once per batch, merging the chunks' acknowledgements. Unpaced, a
//! batch goes whole, as the client sent it.
//!
//! Chunks are consecutive slices of a batch, sent in order, so operations
//! keep their order within the stream. Every chunk carries a sequence number
//! of the root's own; [`ChunkBook`] maps it back to its batch.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use searchtree_proto::pb::{DocOp, LoadAck, LoadBatch};
use tonic::Status;

use crate::load_pace::LoadPace;

/// Which batch each chunk in flight belongs to, and what its chunks
/// answered so far.
#[derive(Debug, Default)]
pub struct ChunkBook {
    book: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    next_chunk: u64,
    next_batch: u64,
    /// Chunk sequence number → batch number.
    chunks: HashMap<u64, u64>,
    batches: HashMap<u64, Pending>,
}

#[derive(Debug)]
struct Pending {
    /// The acknowledgement so far, under the client's sequence number.
    ack: LoadAck,
    /// Chunks sent, and acknowledged.
    sent: usize,
    acked: usize,
    /// Whether every chunk of the batch was sent.
    sealed: bool,
}

impl Pending {
    fn done(&self) -> bool {
        self.sealed && self.acked == self.sent
    }
}

impl ChunkBook {
    /// A book for one load.
    pub fn new() -> Arc<Self> {
        Arc::new(ChunkBook::default())
    }

    fn open_batch(&self, client_seq: u64) -> u64 {
        let mut book = self.book.lock().expect("chunk book lock");
        let batch = book.next_batch;
        book.next_batch += 1;
        book.batches.insert(
            batch,
            Pending {
                ack: LoadAck {
                    seq: client_seq,
                    ok: true,
                    ..LoadAck::default()
                },
                sent: 0,
                acked: 0,
                sealed: false,
            },
        );
        batch
    }

    /// Numbers a chunk of `batch`; `last` seals the batch.
    fn chunk(&self, batch: u64, last: bool) -> u64 {
        let mut book = self.book.lock().expect("chunk book lock");
        let seq = book.next_chunk;
        book.next_chunk += 1;
        book.chunks.insert(seq, batch);
        let pending = book.batches.get_mut(&batch).expect("batch opened");
        pending.sent += 1;
        pending.sealed = last;
        seq
    }

    /// Counts a chunk's acknowledgement; returns its batch's, merged, once
    /// every chunk of it has answered. An acknowledgement of no chunk in
    /// flight is dropped.
    pub fn on_ack(&self, ack: LoadAck) -> Option<LoadAck> {
        let mut book = self.book.lock().expect("chunk book lock");
        let Some(batch) = book.chunks.remove(&ack.seq) else {
            tracing::debug!(seq = ack.seq, "acknowledgement of no chunk in flight");
            return None;
        };
        let pending = book.batches.get_mut(&batch).expect("batch of a chunk");
        pending.acked += 1;
        merge(&mut pending.ack, ack);
        if !pending.done() {
            return None;
        }
        book.batches.remove(&batch).map(|pending| pending.ack)
    }
}

/// Adds a chunk's acknowledgement to its batch's.
fn merge(into: &mut LoadAck, chunk: LoadAck) {
    into.ok &= chunk.ok;
    into.added += chunk.added;
    into.replaced += chunk.replaced;
    into.deleted += chunk.deleted;
    into.delete_missing += chunk.delete_missing;
    into.refused.extend(chunk.refused);
    for failure in chunk.failures {
        if !into.failures.iter().any(|f| f.shard == failure.shard) {
            into.failures.push(failure);
        }
    }
    for replica in chunk.replicas_missed {
        if !into.replicas_missed.contains(&replica) {
            into.replicas_missed.push(replica);
        }
    }
}

/// `batches` as the chunks the pace lets go, each numbered in `book` (see
/// the module's doc). A failure of `batches` passes through.
pub fn chunked<S>(
    batches: S,
    pace: Arc<LoadPace>,
    book: Arc<ChunkBook>,
) -> Pin<Box<dyn Stream<Item = Result<LoadBatch, Status>> + Send>>
where
    S: Stream<Item = Result<LoadBatch, Status>> + Unpin + Send + 'static,
{
    struct State<S> {
        batches: S,
        pace: Arc<LoadPace>,
        book: Arc<ChunkBook>,
        /// The batch being cut, and its operations not yet sent.
        current: Option<(u64, VecDeque<DocOp>)>,
    }
    let state = State {
        batches,
        pace,
        book,
        current: None,
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        let (batch, mut ops) = match state.current.take() {
            Some(current) => current,
            None => match state.batches.next().await? {
                Err(status) => return Some((Err(status), state)),
                Ok(batch) => (state.book.open_batch(batch.seq), batch.ops.into()),
            },
        };
        // An empty batch is one empty chunk, acknowledged like any other.
        let size = state.pace.chunk_size(ops.len());
        let chunk: Vec<DocOp> = ops.drain(..size.min(ops.len())).collect();
        let last = ops.is_empty();
        let seq = state.book.chunk(batch, last);
        if !last {
            state.current = Some((batch, ops));
        }
        state.pace.before_batch(chunk.len() as u64).await;
        Some((Ok(LoadBatch { seq, ops: chunk }), state))
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use searchtree_proto::pb::{RefusedOp, ShardFailure};
    use tokio::time::Instant;

    use super::*;
    use crate::load_pace::LoadPaceConfig;

    fn op(line: u64) -> DocOp {
        DocOp {
            id: format!("d{line}"),
            line,
            ..DocOp::default()
        }
    }

    fn batch(seq: u64, lines: std::ops::Range<u64>) -> Result<LoadBatch, Status> {
        Ok(LoadBatch {
            seq,
            ops: lines.map(op).collect(),
        })
    }

    fn stream_of(
        items: Vec<Result<LoadBatch, Status>>,
    ) -> Pin<Box<dyn Stream<Item = Result<LoadBatch, Status>> + Send>> {
        Box::pin(futures::stream::iter(items))
    }

    /// A pace that has cut a load's rate to about 10,000 operations a second.
    async fn paced_at_about_10000() -> (Arc<LoadPace>, impl Drop, impl Drop) {
        let pace = Arc::new(LoadPace::new(LoadPaceConfig::default()));
        for _ in 0..1000 {
            pace.on_query(Duration::from_millis(2));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let busy = pace.busy();
        let loading = pace.loading();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            pace.before_batch(1000).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pace.on_query(Duration::from_millis(20));
        (pace, busy, loading)
    }

    #[tokio::test(start_paused = true)]
    async fn unpaced_batches_go_whole_and_are_acknowledged_as_sent() {
        let pace = Arc::new(LoadPace::new(LoadPaceConfig::default()));
        let book = ChunkBook::new();
        let mut chunks = chunked(
            stream_of(vec![batch(7, 0..5000), batch(8, 0..0)]),
            pace,
            Arc::clone(&book),
        );
        let first = chunks.next().await.unwrap().unwrap();
        assert_eq!(first.ops.len(), 5000);
        let empty = chunks.next().await.unwrap().unwrap();
        assert!(empty.ops.is_empty());
        assert!(chunks.next().await.is_none());
        let ack = |seq| LoadAck {
            seq,
            ok: true,
            added: 3,
            ..LoadAck::default()
        };
        // Acknowledged in any order, each under the client's number.
        assert_eq!(book.on_ack(ack(empty.seq)).unwrap().seq, 8);
        assert_eq!(book.on_ack(ack(first.seq)).unwrap().seq, 7);
        assert_eq!(book.on_ack(ack(first.seq)), None, "no chunk in flight");
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_batch_goes_in_chunks_whose_acks_merge_into_one() {
        let (pace, _busy, _loading) = paced_at_about_10000().await;
        let rate = pace.summary().rate.unwrap();
        let book = ChunkBook::new();
        let broken = Status::invalid_argument("batch 3 does not decode");
        let mut chunks = chunked(
            stream_of(vec![batch(2, 0..3000), Err(broken)]),
            Arc::clone(&pace),
            Arc::clone(&book),
        );
        let mut sent = Vec::new();
        let mut at = Vec::new();
        while let Some(chunk) = chunks.next().await {
            // Queries keep coming, within the threshold.
            pace.on_query(Duration::from_millis(2));
            at.push(Instant::now());
            sent.push(chunk);
        }
        let err = sent.pop().unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let sent: Vec<LoadBatch> = sent.into_iter().map(Result::unwrap).collect();
        // Chunks of a tenth of a second at the rate, in order.
        let size = (rate / 10.0).round() as usize;
        assert!(sent.len() >= 3, "{} chunks at {rate}", sent.len());
        assert!(sent[0].ops.len().abs_diff(size) <= 1, "{size}");
        let lines: Vec<u64> = sent
            .iter()
            .flat_map(|c| c.ops.iter().map(|o| o.line))
            .collect();
        assert_eq!(lines, (0..3000).collect::<Vec<_>>());
        // Spaced by the pace: a tenth of a second apart, about.
        let gap = (at[2] - at[1]).as_secs_f64();
        assert!((0.07..=0.13).contains(&gap), "{gap}");
        // The batch is answered once every chunk is, with their sums.
        let n = sent.len();
        for (i, chunk) in sent.iter().enumerate() {
            let merged = book.on_ack(LoadAck {
                seq: chunk.seq,
                ok: i != 1,
                added: 2,
                replaced: 1,
                refused: vec![RefusedOp {
                    line: i as u64,
                    ..RefusedOp::default()
                }],
                failures: (i != 0)
                    .then(|| ShardFailure {
                        shard: 1,
                        ..ShardFailure::default()
                    })
                    .into_iter()
                    .collect(),
                replicas_missed: vec!["leaf-a".into()],
                ..LoadAck::default()
            });
            if i + 1 < n {
                assert_eq!(merged, None);
                continue;
            }
            let merged = merged.unwrap();
            assert_eq!(merged.seq, 2);
            assert!(!merged.ok, "one chunk failed: the batch did");
            assert_eq!((merged.added, merged.replaced), (2 * n as u32, n as u32));
            assert_eq!(merged.refused.len(), n);
            assert_eq!(merged.failures.len(), 1, "one per shard");
            assert_eq!(merged.replicas_missed, vec!["leaf-a".to_string()]);
        }
    }
}
