//! Cutting the operations of `searchtree load`'s input into numbered
//! batches, each remembering the lines it came from so that a batch the
//! tree did not acknowledge can be named by its lines.

use std::io;
use std::time::{Duration, Instant};

use searchtree_proto::pb::{DocOp, LoadBatch};

use crate::build::corpus::{CorpusReader, LineError};
use crate::live::ops::parse_op;

/// The most bytes of document text in one batch, whatever `--batch-size`
/// says: far below the tree's 64 MiB message cap, so that a batch of long
/// documents still fits in one message with room for its framing.
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// Invalid lines remembered as examples for the summary.
pub const SKIPPED_EXAMPLES: usize = 10;
/// The oldest a batch under way gets before it is sent as it is: from a
/// slow producer (a pipe fed as documents come), operations reach the tree
/// within about this long of being read, rather than once `--batch-size`
/// of them have been. Also how long the batcher waits for a batch's first
/// line before it says the input is idle ([`Next::Idle`]).
pub const LINGER: Duration = Duration::from_secs(1);

/// One item of input: an operation with its line set, an invalid line, or
/// `Err` when the input could not be read.
pub type OpItem = io::Result<Result<DocOp, LineError>>;

/// What waiting a bounded time for the next item found.
#[derive(Debug)]
pub enum Pulled {
    /// The next item.
    Item(OpItem),
    /// The input ended.
    End,
    /// Nothing came within the wait; the input goes on.
    Quiet,
}

/// Where operations come from: a corpus file in `searchtree load`, a list
/// in tests.
pub trait OpSource {
    /// The next item, or `None` at the end, waiting as long as it takes.
    fn next_op(&mut self) -> Option<OpItem>;
    /// The next item, waiting at most `wait` for it. A source whose items
    /// are always at hand (a list) never answers [`Pulled::Quiet`].
    fn next_op_within(&mut self, wait: Duration) -> Pulled {
        let _ = wait;
        match self.next_op() {
            Some(item) => Pulled::Item(item),
            None => Pulled::End,
        }
    }
    /// Raw input bytes read so far, for progress.
    fn bytes_read(&self) -> u64;
}

impl OpSource for CorpusReader {
    fn next_op(&mut self) -> Option<OpItem> {
        let item = self.next_with(parse_op)?;
        let line = crate::build::corpus::Source::location(self);
        Some(item.map(|parsed| parsed.map(|op| DocOp { line, ..op })))
    }

    fn bytes_read(&self) -> u64 {
        crate::build::corpus::Source::bytes_read(self)
    }
}

/// A batch ready to send, and the lines it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// What goes on the wire.
    pub batch: LoadBatch,
    /// What the summary says about it.
    pub info: BatchInfo,
}

/// A sent batch as the summary names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// The batch's number, echoed by its ack.
    pub seq: u64,
    /// Its first and last input lines.
    pub first_line: u64,
    /// See `first_line`.
    pub last_line: u64,
    /// Operations in it.
    pub ops: u64,
}

/// What the batcher has next.
#[derive(Debug)]
pub enum Next {
    /// A batch to send.
    Batch(Batch),
    /// The input is exhausted.
    End,
    /// No line came within [`LINGER`]; the input goes on.
    Idle,
    /// Stop reading: an invalid line (without `skip_invalid`) or an input
    /// that cannot be read. Operations read since the last batch are not
    /// sent; `unsent_from` is the first line of them.
    Stop {
        /// Why.
        reason: String,
        /// The first line not sent.
        unsent_from: u64,
        /// Whether an invalid line stopped it (so rerunning the same
        /// command would stop there again).
        invalid: bool,
        /// Whether the input could not be read at all from there (a
        /// truncated `.gz`, a directory): rerunning fails the same way.
        unreadable: bool,
    },
}

/// Reads operations and hands them out in batches of at most `batch_size`
/// operations (and [`MAX_BATCH_BYTES`] of text), numbered from 1; a batch
/// [`LINGER`] old is handed out as it is.
pub struct Batcher<S> {
    source: S,
    batch_size: usize,
    skip_invalid: bool,
    next_seq: u64,
    /// Invalid lines passed over (with `skip_invalid`).
    pub skipped: u64,
    /// The first few of them.
    pub skipped_examples: Vec<LineError>,
}

impl<S: OpSource> Batcher<S> {
    /// A batcher over `source`; `batch_size` is at least 1.
    pub fn new(source: S, batch_size: usize, skip_invalid: bool) -> Self {
        Batcher {
            source,
            batch_size: batch_size.max(1),
            skip_invalid,
            next_seq: 1,
            skipped: 0,
            skipped_examples: Vec::new(),
        }
    }

    /// The source, for progress.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Reads the next batch. Blank lines count for line numbers only.
    pub fn next_batch(&mut self) -> Next {
        let mut ops: Vec<DocOp> = Vec::new();
        let mut bytes = 0;
        // Set when the batch's first operation is read.
        let mut due: Option<Instant> = None;
        while ops.len() < self.batch_size && bytes < MAX_BATCH_BYTES {
            let wait = due.map_or(LINGER, |due| due.saturating_duration_since(Instant::now()));
            let item = match self.source.next_op_within(wait) {
                Pulled::Item(item) => Some(item),
                Pulled::End => None,
                Pulled::Quiet if ops.is_empty() => return Next::Idle,
                Pulled::Quiet => break,
            };
            let op = match item {
                None => break,
                Some(Ok(Ok(op))) => op,
                Some(Ok(Err(bad))) if self.skip_invalid => {
                    self.skipped += 1;
                    if self.skipped_examples.len() < SKIPPED_EXAMPLES {
                        self.skipped_examples.push(bad);
                    }
                    continue;
                }
                Some(Ok(Err(bad))) => {
                    let unsent_from = ops.first().map_or(bad.line.unwrap_or(0), |op| op.line);
                    return Next::Stop {
                        reason: format!("{bad} (use --skip-invalid to skip such lines)"),
                        unsent_from,
                        invalid: true,
                        unreadable: false,
                    };
                }
                Some(Err(e)) => {
                    let unsent_from = ops.first().map_or(0, |op| op.line);
                    return Next::Stop {
                        reason: format!("reading the input failed: {e}"),
                        unsent_from,
                        invalid: false,
                        unreadable: true,
                    };
                }
            };
            bytes += op.id.len() + op.title.len() + op.body.len();
            ops.push(op);
            due.get_or_insert_with(|| Instant::now() + LINGER);
        }
        let (Some(first), Some(last)) = (ops.first(), ops.last()) else {
            return Next::End;
        };
        let info = BatchInfo {
            seq: self.next_seq,
            first_line: first.line,
            last_line: last.line,
            ops: ops.len() as u64,
        };
        self.next_seq += 1;
        Next::Batch(Batch {
            batch: LoadBatch { seq: info.seq, ops },
            info,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::build::corpus::FieldNames;
    use std::collections::VecDeque;

    /// Lines of input as a source: each parsed as `searchtree load` would,
    /// numbered from 1; blank lines skipped but counted.
    pub(crate) struct Lines(pub VecDeque<(u64, String)>);

    impl Lines {
        pub(crate) fn new(lines: &[&str]) -> Self {
            Lines(
                lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (i as u64 + 1, l.to_string()))
                    .collect(),
            )
        }
    }

    /// A line of [`Lines`] that stands for the input going quiet (a
    /// producer with nothing to say for a while): it counts as a line.
    pub(crate) const QUIET: &str = "<quiet>";

    impl OpSource for Lines {
        fn next_op_within(&mut self, _wait: Duration) -> Pulled {
            if self.0.front().is_some_and(|(_, text)| text == QUIET) {
                self.0.pop_front();
                return Pulled::Quiet;
            }
            match self.next_op() {
                Some(item) => Pulled::Item(item),
                None => Pulled::End,
            }
        }

        fn next_op(&mut self) -> Option<OpItem> {
            loop {
                let (line, text) = self.0.pop_front()?;
                if text.trim().is_empty() || text == QUIET {
                    continue;
                }
                let parsed = parse_op(&text, &FieldNames::default())
                    .map(|op| DocOp { line, ..op })
                    .map_err(|reason| LineError {
                        file: "in.jsonl".into(),
                        line: Some(line),
                        reason,
                    });
                return Some(Ok(parsed));
            }
        }
        fn bytes_read(&self) -> u64 {
            0
        }
    }

    fn doc(id: u32) -> String {
        format!(r#"{{"id":"d{id}","body":"text {id}"}}"#)
    }

    fn batch(next: Next) -> Batch {
        match next {
            Next::Batch(b) => b,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn batches_are_numbered_and_know_their_lines() {
        let mut lines: Vec<String> = (0..5).map(doc).collect();
        lines.insert(2, String::new());
        lines.push(r#"{"id":"d0","op":"delete"}"#.into());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut batcher = Batcher::new(Lines::new(&refs), 2, false);
        let first = batch(batcher.next_batch());
        assert_eq!(
            first.info,
            BatchInfo {
                seq: 1,
                first_line: 1,
                last_line: 2,
                ops: 2
            }
        );
        let second = batch(batcher.next_batch());
        assert_eq!((second.info.first_line, second.info.last_line), (4, 5));
        assert_eq!(second.batch.seq, 2);
        let third = batch(batcher.next_batch());
        assert_eq!(third.info.seq, 3);
        assert_eq!(third.batch.ops[1].id, "d0");
        assert!(third.batch.ops[1].delete);
        assert_eq!(third.batch.ops[1].line, 7);
        assert!(matches!(batcher.next_batch(), Next::End));
    }

    #[test]
    fn an_invalid_line_stops_before_its_batch_unless_skipped() {
        let lines = [doc(1), doc(2), doc(3), "{".into(), doc(5)];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut batcher = Batcher::new(Lines::new(&refs), 2, false);
        batch(batcher.next_batch());
        match batcher.next_batch() {
            Next::Stop {
                reason,
                unsent_from,
                invalid,
                ..
            } => {
                assert!(invalid);
                assert!(reason.starts_with("in.jsonl:4: not valid JSON"), "{reason}");
                assert!(reason.ends_with("(use --skip-invalid to skip such lines)"));
                assert_eq!(unsent_from, 3, "line 3 was read into the unsent batch");
            }
            other => panic!("{other:?}"),
        }

        let mut skipping = Batcher::new(Lines::new(&refs), 2, true);
        batch(skipping.next_batch());
        let second = batch(skipping.next_batch());
        assert_eq!((second.info.first_line, second.info.last_line), (3, 5));
        assert_eq!(skipping.skipped, 1);
        assert_eq!(skipping.skipped_examples[0].line, Some(4));
        assert!(matches!(skipping.next_batch(), Next::End));
    }

    #[test]
    fn long_documents_close_a_batch_early() {
        let body = "x".repeat(MAX_BATCH_BYTES / 2);
        let lines: Vec<String> = (0..3)
            .map(|i| format!(r#"{{"id":"d{i}","body":"{body}"}}"#))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut batcher = Batcher::new(Lines::new(&refs), 500, false);
        assert_eq!(batch(batcher.next_batch()).info.ops, 2);
        assert_eq!(batch(batcher.next_batch()).info.ops, 1);
    }

    #[test]
    fn a_batch_whose_input_goes_quiet_is_sent_as_it_is() {
        let lines = [
            doc(1),
            doc(2),
            QUIET.into(),
            doc(3),
            QUIET.into(),
            QUIET.into(),
            doc(4),
        ];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut batcher = Batcher::new(Lines::new(&refs), 100, false);
        let first = batch(batcher.next_batch());
        assert_eq!((first.info.ops, first.info.last_line), (2, 2));
        let second = batch(batcher.next_batch());
        assert_eq!((second.info.first_line, second.info.ops), (4, 1));
        // A pause before a batch's first operation is said, not waited out.
        assert!(matches!(batcher.next_batch(), Next::Idle));
        let third = batch(batcher.next_batch());
        assert_eq!((third.info.first_line, third.info.ops), (7, 1));
        assert!(matches!(batcher.next_batch(), Next::End));
    }
}
