//! Reading `searchtree load`'s input: a regular file in place, anything
//! else (a pipe, a terminal) on a thread of its own, a bounded number of
//! operations ahead. The batcher can then wait a bounded time for a pipe's
//! next line ([`OpSource::next_op_within`]), so that operations from a slow
//! producer (a pipe fed as documents come) are sent within a second rather
//! than once a whole batch has been read. A file's next line is always at
//! hand; reading it in place spares the hand-off of every operation between
//! threads, which cost loads from a file about 14 % of their throughput
//! (BENCHMARKS, "Loading into a running tree").

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

/// `searchtree load`'s input: a regular file, read in place, or a pipe,
/// read ahead.
pub enum LoadInput {
    /// A regular file (plain or `.gz`).
    File(CorpusReader),
    /// Anything else.
    Pipe(ReadAhead),
}

impl LoadInput {
    /// Opens `path` as what it is; its size in bytes comes back with it,
    /// for progress (0 for a pipe).
    pub fn open(path: &Path, names: FieldNames) -> io::Result<(LoadInput, u64)> {
        let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file());
        if regular {
            let reader = CorpusReader::open(path, names)?;
            let total = Source::total_bytes(&reader);
            Ok((LoadInput::File(reader), total))
        } else {
            let (ahead, total) = ReadAhead::open(path, names)?;
            Ok((LoadInput::Pipe(ahead), total))
        }
    }
}

impl OpSource for LoadInput {
    fn next_op(&mut self) -> Option<OpItem> {
        match self {
            LoadInput::File(reader) => OpSource::next_op(reader),
            LoadInput::Pipe(ahead) => ahead.next_op(),
        }
    }

    fn next_op_within(&mut self, wait: Duration) -> Pulled {
        match self {
            LoadInput::File(reader) => reader.next_op_within(wait),
            LoadInput::Pipe(ahead) => ahead.next_op_within(wait),
        }
    }

    fn bytes_read(&self) -> u64 {
        match self {
            LoadInput::File(reader) => OpSource::bytes_read(reader),
            LoadInput::Pipe(ahead) => ahead.bytes_read(),
        }
    }
}

/// The operations of a pipe, read on a thread of its own.
pub struct ReadAhead {
    /// Items, then `None` once the input has ended: a thread that stops
    /// without saying so (it panicked) is an error, not the end.
    items: Receiver<Option<OpItem>>,
    ended: bool,
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
                    if tx.send(Some(item)).is_err() || failed {
                        return;
                    }
                }
                bytes.store(Source::bytes_read(&reader), Ordering::Relaxed);
                let _ = tx.send(None);
            })?;
        let total_bytes = opened
            .recv()
            .map_err(|_| io::Error::other("the input's reading thread ended"))??;
        let source = ReadAhead {
            items,
            ended: false,
            bytes_read,
        };
        Ok((source, total_bytes))
    }

    /// What the channel said: an item, the end, or (the thread gone
    /// without saying the input ended) an error.
    fn received(&mut self, message: Option<Option<OpItem>>) -> Option<OpItem> {
        match message {
            Some(Some(item)) => Some(item),
            Some(None) => {
                self.ended = true;
                None
            }
            None if self.ended => None,
            None => {
                self.ended = true;
                Some(Err(io::Error::other(
                    "reading the input stopped unexpectedly (see the log above)",
                )))
            }
        }
    }
}

impl OpSource for ReadAhead {
    fn next_op(&mut self) -> Option<OpItem> {
        let message = self.items.recv().ok();
        self.received(message)
    }

    fn next_op_within(&mut self, wait: Duration) -> Pulled {
        let message = match self.items.recv_timeout(wait) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => return Pulled::Quiet,
            Err(RecvTimeoutError::Disconnected) => None,
        };
        match self.received(message) {
            Some(item) => Pulled::Item(item),
            None => Pulled::End,
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

    /// The ids of the next batch, however long the input is idle first.
    fn batch_ids(batcher: &mut Batcher<LoadInput>) -> Vec<String> {
        loop {
            match batcher.next_batch() {
                Next::Idle => continue,
                Next::Batch(b) => return b.batch.ops.into_iter().map(|op| op.id).collect(),
                other => panic!("expected a batch, got {other:?}"),
            }
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
        let (source, size) = LoadInput::open(&fifo, FieldNames::default()).unwrap();
        assert!(matches!(source, LoadInput::Pipe(_)) && size == 0);
        let mut batcher = Batcher::new(source, 8000, false);
        // Without the linger this would wait for 8,000 operations, or for
        // the writer, which waits for it: a deadlock.
        assert_eq!(batch_ids(&mut batcher), ["a", "b"]);
        go_on_tx.send(()).unwrap();
        wrote_more.recv().unwrap();
        assert_eq!(batch_ids(&mut batcher), ["c"]);
        assert!(matches!(batcher.next_batch(), Next::End));
        assert!(batcher.source().bytes_read() > 0);
        writer.join().unwrap();
    }

    #[test]
    fn a_file_is_read_in_place_and_a_missing_one_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ops.jsonl");
        let text = "{\"id\":\"a\",\"body\":\"x\"}\n";
        std::fs::write(&file, text).unwrap();
        let (source, size) = LoadInput::open(&file, FieldNames::default()).unwrap();
        assert!(matches!(source, LoadInput::File(_)) && size == text.len() as u64);
        let err = LoadInput::open(Path::new("/nonexistent/ops.jsonl"), FieldNames::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/ops.jsonl"), "{err}");
    }

    #[test]
    fn a_reading_thread_gone_without_an_end_is_an_error_not_the_end() {
        let (tx, items) = sync_channel(1);
        let mut source = ReadAhead {
            items,
            ended: false,
            bytes_read: Arc::new(AtomicU64::new(0)),
        };
        drop(tx);
        let err = source.next_op().unwrap().unwrap_err();
        assert!(err.to_string().contains("stopped unexpectedly"), "{err}");
        assert!(source.next_op().is_none());

        let (tx, items) = sync_channel(1);
        let mut source = ReadAhead {
            items,
            ended: false,
            bytes_read: Arc::new(AtomicU64::new(0)),
        };
        tx.send(None).unwrap();
        drop(tx);
        assert!(matches!(
            source.next_op_within(Duration::from_secs(1)),
            Pulled::End
        ));
        assert!(source.next_op().is_none());
    }
}
