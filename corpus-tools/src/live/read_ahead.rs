//! Reading `searchtree load`'s input on a thread of its own, a bounded
//! number of operations ahead: the batcher can then wait a bounded time
//! for the next line ([`OpSource::next_op_within`]), so that operations
//! from a slow producer (a pipe fed as documents come) are sent when the
//! input goes quiet instead of once a whole batch has been read.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::Duration;

use crate::build::corpus::{CorpusReader, FieldNames, Source};
use crate::live::batches::{OpItem, OpSource, Pulled};

/// Operations read ahead of the batcher, at most: enough to keep a batch
/// filling while the reader parses, few enough that long documents do not
/// pile up in memory.
const AHEAD: usize = 256;

/// The operations of a corpus file, read on a thread of its own.
pub struct ReadAhead {
    items: Receiver<OpItem>,
    bytes_read: Arc<AtomicU64>,
}

impl ReadAhead {
    /// Opens `path` (plain or `.gz`) on a reading thread; the file's size
    /// in bytes comes back with it, for progress.
    pub fn open(path: &Path, names: FieldNames) -> io::Result<(ReadAhead, u64)> {
        let (opened_tx, opened) = sync_channel(1);
        let (tx, items) = sync_channel(AHEAD);
        let bytes_read = Arc::new(AtomicU64::new(0));
        let bytes = Arc::clone(&bytes_read);
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("load-input".into())
            .spawn(move || {
                // The reader is opened here: it is not `Send`.
                let mut reader = match CorpusReader::open(&path, names) {
                    Ok(reader) => {
                        let _ = opened_tx.send(Ok(Source::total_bytes(&reader)));
                        reader
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                while let Some(item) = OpSource::next_op(&mut reader) {
                    bytes.store(Source::bytes_read(&reader), Ordering::Relaxed);
                    let failed = item.is_err();
                    // The batcher went away (the load stopped): stop reading.
                    if tx.send(item).is_err() || failed {
                        return;
                    }
                }
                bytes.store(Source::bytes_read(&reader), Ordering::Relaxed);
            })?;
        let total_bytes = opened
            .recv()
            .map_err(|_| io::Error::other("the input's reading thread ended"))??;
        Ok((ReadAhead { items, bytes_read }, total_bytes))
    }
}

impl OpSource for ReadAhead {
    fn next_op(&mut self) -> Option<OpItem> {
        self.items.recv().ok()
    }

    fn next_op_within(&mut self, wait: Duration) -> Pulled {
        match self.items.recv_timeout(wait) {
            Ok(item) => Pulled::Item(item),
            Err(RecvTimeoutError::Timeout) => Pulled::Quiet,
            Err(RecvTimeoutError::Disconnected) => Pulled::End,
        }
    }

    fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::Command;

    use super::*;
    use crate::live::batches::{Batcher, Next};

    fn batch_ids(next: Next) -> Vec<String> {
        match next {
            Next::Batch(b) => b.batch.ops.into_iter().map(|op| op.id).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn operations_from_a_pipe_are_handed_out_when_the_writer_pauses() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("ops.jsonl");
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let (wrote_more_tx, wrote_more) = sync_channel::<()>(0);
        let (go_on_tx, go_on) = sync_channel::<()>(0);
        let path = fifo.clone();
        let writer = std::thread::spawn(move || {
            let mut pipe = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            writeln!(pipe, r#"{{"id":"a","body":"x"}}"#).unwrap();
            writeln!(pipe, r#"{{"id":"b","body":"x"}}"#).unwrap();
            pipe.flush().unwrap();
            // The pipe stays open, silent, until the batch above is out.
            go_on.recv().unwrap();
            writeln!(pipe, r#"{{"id":"c","body":"x"}}"#).unwrap();
            drop(pipe);
            wrote_more_tx.send(()).unwrap();
        });
        let (source, _) = ReadAhead::open(&fifo, FieldNames::default()).unwrap();
        let mut batcher = Batcher::new(source, 8000, false);
        // Without the linger this would wait for 8,000 operations, or for
        // the writer, which waits for it: a deadlock.
        assert_eq!(batch_ids(batcher.next_batch()), ["a", "b"]);
        go_on_tx.send(()).unwrap();
        wrote_more.recv().unwrap();
        assert_eq!(batch_ids(batcher.next_batch()), ["c"]);
        assert!(matches!(batcher.next_batch(), Next::End));
        assert!(batcher.source().bytes_read() > 0);
        writer.join().unwrap();
    }

    #[test]
    fn a_missing_file_is_refused_at_open() {
        let err = ReadAhead::open(Path::new("/nonexistent/ops.jsonl"), FieldNames::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/ops.jsonl"), "{err}");
    }
}
