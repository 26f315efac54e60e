//! What a load did, added up from the acks: the counts, the operations the
//! tree refused, the batches it did not acknowledge (with their lines and
//! the reasons), the replicas that missed a batch, and why the load stopped
//! early, if it did; and the summary `searchtree load` prints from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::time::Duration;

use searchtree_proto::pb::{LoadAck, RefusedOp, ShardFailure};

use crate::build::corpus::LineError;
use crate::live::batches::BatchInfo;
use crate::output::reason_name;

/// A batch the tree did not acknowledge, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedBatch {
    /// The batch.
    pub info: BatchInfo,
    /// What the ack (or the broken stream) said.
    pub reasons: Vec<String>,
}

/// Everything the summary reports.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Batches and operations sent.
    pub batches_sent: u64,
    /// See `batches_sent`.
    pub ops_sent: u64,
    /// Batches acknowledged as committed.
    pub batches_ok: u64,
    /// Counts from the acknowledged batches, against the published version.
    pub added: u64,
    /// See `added`.
    pub replaced: u64,
    /// See `added`.
    pub deleted: u64,
    /// See `added`.
    pub delete_missing: u64,
    /// Operations the tree refused, by line.
    pub refused: BTreeMap<u64, RefusedOp>,
    /// Batches not acknowledged, in the order their answers came.
    pub failed: Vec<FailedBatch>,
    /// Replicas that failed to commit a batch a sibling committed.
    pub replicas_missed: BTreeSet<String>,
    /// Invalid lines passed over with `--skip-invalid`, and examples.
    pub skipped: u64,
    /// See `skipped`.
    pub skipped_examples: Vec<LineError>,
    /// Why the load stopped before the end of the input, if it did.
    pub stopped: Option<String>,
    /// The first input line not sent, when it stopped early.
    pub unsent_from: Option<u64>,
    /// Whether an invalid line stopped it: rerunning the same command
    /// would stop there again.
    pub invalid_input: bool,
    /// Whether the input itself could not be read (a truncated `.gz`, a
    /// directory): rerunning the same command would fail the same way.
    pub unreadable_input: bool,
    /// Whether the node the load was sent to refused it as not the tree's
    /// root: rerunning the same command would be refused again.
    pub not_root: bool,
}

/// One shard's failure as the summary shows it.
pub fn describe_failure(f: &ShardFailure) -> String {
    format!(
        "shard {}: {}: {}",
        f.shard,
        reason_name(f.reason),
        f.message
    )
}

impl Tally {
    /// Records a batch handed to the stream.
    pub fn sent(&mut self, info: &BatchInfo) {
        self.batches_sent += 1;
        self.ops_sent += info.ops;
    }

    /// Records the ack of a sent batch.
    pub fn acked(&mut self, info: &BatchInfo, ack: LoadAck) {
        for refused in ack.refused {
            self.refused.entry(refused.line).or_insert(refused);
        }
        self.replicas_missed.extend(ack.replicas_missed);
        if ack.ok {
            self.batches_ok += 1;
            self.added += u64::from(ack.added);
            self.replaced += u64::from(ack.replaced);
            self.deleted += u64::from(ack.deleted);
            self.delete_missing += u64::from(ack.delete_missing);
            return;
        }
        let mut reasons: Vec<String> = ack.failures.iter().map(describe_failure).collect();
        if reasons.is_empty() {
            reasons.push("not committed (no reason given)".into());
        }
        self.failed.push(FailedBatch {
            info: *info,
            reasons,
        });
    }

    /// Records a sent batch whose ack will never come: the stream broke.
    pub fn lost(&mut self, info: &BatchInfo, why: &str) {
        self.failed.push(FailedBatch {
            info: *info,
            reasons: vec![why.to_string()],
        });
    }

    /// Records why the load stopped early (the first reason wins) and the
    /// first line not sent.
    pub fn stop(&mut self, reason: String, unsent_from: Option<u64>) {
        if self.stopped.is_none() {
            self.stopped = Some(reason);
            self.unsent_from = unsent_from;
        }
    }

    /// What to do about an incomplete load, for the line after the summary.
    pub fn advice(&self) -> &'static str {
        if self.not_root {
            "not published: nothing was loaded, as --root named a node below the tree's root; \
             rerun with the root's address"
        } else if self.unreadable_input {
            "not published: the input could not be read (see above): fix or replace it \
             and rerun; resending what was sent is harmless"
        } else if self.invalid_input {
            "not published: fix the line named above (or pass --skip-invalid) and rerun; \
             resending what was sent is harmless"
        } else {
            "not published: rerun the same command; resending is harmless"
        }
    }

    /// Whether everything read was sent and acknowledged, so that
    /// publishing makes the whole input searchable.
    pub fn complete(&self) -> bool {
        self.failed.is_empty() && self.stopped.is_none()
    }

    /// The summary: counts, then each kind of trouble with what to do.
    pub fn render(&self, input: &str, elapsed: Duration) -> String {
        let mut out = String::new();
        let secs = elapsed.as_secs_f64().max(1e-3);
        let _ = writeln!(
            out,
            "{input}: {} operations in {} batches sent, {} batches acknowledged, in {:.1?} ({} operations/s)",
            self.ops_sent,
            self.batches_sent,
            self.batches_ok,
            elapsed,
            rate(self.ops_sent as f64 / secs)
        );
        let _ = writeln!(
            out,
            "  {} added, {} replaced, {} deleted, {} delete_missing (ids not in the published version)",
            self.added, self.replaced, self.deleted, self.delete_missing
        );
        if self.skipped > 0 {
            let _ = writeln!(out, "  {} invalid lines skipped, e.g.:", self.skipped);
            for bad in &self.skipped_examples {
                let _ = writeln!(out, "    {bad}");
            }
        }
        if !self.refused.is_empty() {
            let _ = writeln!(out, "  {} operations refused:", self.refused.len());
            for r in self.refused.values() {
                let _ = writeln!(out, "    line {} (id {:?}): {}", r.line, r.id, r.reason);
            }
        }
        if !self.failed.is_empty() {
            let _ = writeln!(
                out,
                "  {} batches not acknowledged (not committed everywhere):",
                self.failed.len()
            );
            let mut failed = self.failed.clone();
            failed.sort_by_key(|f| f.info.seq);
            // A reason many batches share (a publish under way, a leaf
            // down) is said in full once, at the first of them.
            let mut first_with: HashMap<String, u64> = HashMap::new();
            for f in &failed {
                let reason = f.reasons.join("; ");
                let said = match first_with.get(&reason) {
                    Some(seq) => format!("the same as batch {seq}"),
                    None => {
                        first_with.insert(reason.clone(), f.info.seq);
                        reason
                    }
                };
                let _ = writeln!(
                    out,
                    "    batch {} (lines {}-{}, {} operations): {said}",
                    f.info.seq, f.info.first_line, f.info.last_line, f.info.ops,
                );
            }
        }
        if !self.replicas_missed.is_empty() {
            let missed: Vec<&str> = self.replicas_missed.iter().map(String::as_str).collect();
            let _ = writeln!(
                out,
                "  replicas that missed batches (left out of the next version; they catch up by copying it): {}",
                missed.join(", ")
            );
        }
        if let Some(why) = &self.stopped {
            let _ = writeln!(out, "  stopped: {why}");
            match self.unsent_from {
                Some(_) if self.batches_sent == 0 => {
                    let _ = writeln!(out, "  nothing was sent");
                }
                Some(line) => {
                    let _ = writeln!(out, "  nothing from line {line} on was sent");
                }
                None => {}
            }
        }
        out
    }
}

/// A rate as the summary prints it: whole numbers, but for a trickle (a
/// slow pipe) that would round to 0.
fn rate(per_sec: f64) -> String {
    if per_sec < 10.0 {
        format!("{per_sec:.2}")
    } else {
        format!("{per_sec:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use searchtree_proto::pb::FailureReason;

    fn info(seq: u64, first_line: u64, last_line: u64) -> BatchInfo {
        BatchInfo {
            seq,
            first_line,
            last_line,
            ops: last_line - first_line + 1,
        }
    }

    #[test]
    fn counts_come_from_acknowledged_batches_and_failures_are_named() {
        let mut tally = Tally::default();
        let (one, two, three) = (info(1, 1, 500), info(2, 501, 1000), info(3, 1001, 1200));
        for b in [&one, &two, &three] {
            tally.sent(b);
        }
        tally.acked(
            &two,
            LoadAck {
                seq: 2,
                ok: false,
                added: 99,
                failures: vec![ShardFailure {
                    shard: 2,
                    reason: FailureReason::Unavailable as i32,
                    message: "127.0.0.1:4002: connection refused".into(),
                }],
                ..LoadAck::default()
            },
        );
        let refused = RefusedOp {
            line: 17,
            id: "x".into(),
            reason: "not of this shard".into(),
        };
        tally.acked(
            &one,
            LoadAck {
                seq: 1,
                ok: true,
                added: 400,
                replaced: 90,
                deleted: 9,
                delete_missing: 1,
                refused: vec![refused.clone(), refused],
                replicas_missed: vec!["127.0.0.1:4005".into()],
                ..LoadAck::default()
            },
        );
        tally.lost(&three, "the root closed the stream: transport error");
        let four = info(4, 1201, 1300);
        tally.sent(&four);
        tally.lost(&four, "the root closed the stream: transport error");
        tally.stop("the root closed the stream".into(), Some(1301));
        tally.stop("a later reason".into(), None);
        assert!(!tally.complete());
        assert_eq!(
            tally.advice(),
            "not published: rerun the same command; resending is harmless"
        );
        tally.invalid_input = true;
        assert!(
            tally
                .advice()
                .starts_with("not published: fix the line named above")
        );
        assert_eq!(tally.batches_ok, 1);

        let text = tally.render("in.jsonl", Duration::from_secs(2));
        let expected = [
            "in.jsonl: 1300 operations in 4 batches sent, 1 batches acknowledged, in 2.0s (650 operations/s)",
            "  400 added, 90 replaced, 9 deleted, 1 delete_missing (ids not in the published version)",
            "  1 operations refused:",
            "    line 17 (id \"x\"): not of this shard",
            "  3 batches not acknowledged (not committed everywhere):",
            "    batch 2 (lines 501-1000, 500 operations): shard 2: unavailable: 127.0.0.1:4002: connection refused",
            "    batch 3 (lines 1001-1200, 200 operations): the root closed the stream: transport error",
            "    batch 4 (lines 1201-1300, 100 operations): the same as batch 3",
            "  replicas that missed batches (left out of the next version; they catch up by copying it): 127.0.0.1:4005",
            "  stopped: the root closed the stream",
            "  nothing from line 1301 on was sent",
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{text}");
    }

    #[test]
    fn an_input_that_cannot_be_read_is_not_worth_resending_as_it_is() {
        let mut tally = Tally {
            unreadable_input: true,
            ..Tally::default()
        };
        tally.stop(
            "reading the input failed: invalid gzip header".into(),
            Some(0),
        );
        assert!(
            tally
                .advice()
                .starts_with("not published: the input could not be read"),
            "{}",
            tally.advice()
        );
        let text = tally.render("in.jsonl.gz", Duration::from_secs(1));
        assert!(text.ends_with("  nothing was sent\n"), "{text}");
    }

    #[test]
    fn a_clean_load_is_complete_and_says_only_the_counts() {
        let mut tally = Tally::default();
        let one = info(1, 1, 3);
        tally.sent(&one);
        tally.acked(
            &one,
            LoadAck {
                seq: 1,
                ok: true,
                added: 2,
                deleted: 1,
                ..LoadAck::default()
            },
        );
        assert!(tally.complete());
        let text = tally.render("in.jsonl", Duration::from_millis(10));
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("2 added, 0 replaced, 1 deleted, 0 delete_missing"));
        tally.acked(
            &one,
            LoadAck {
                seq: 1,
                ok: false,
                ..LoadAck::default()
            },
        );
        assert!(
            tally
                .render("x", Duration::ZERO)
                .contains("not committed (no reason given)")
        );
    }

    #[test]
    fn a_trickle_has_a_rate_too() {
        assert_eq!(rate(0.333), "0.33");
        assert_eq!(rate(650.2), "650");
    }
}
