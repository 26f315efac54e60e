//! What an inner node answers for one batch of a Load: the answers of every
//! replica of every child the batch touched, folded into one [`LoadAck`].
//!
//! A shard's part of the batch is committed when at least one replica of the
//! child holding it committed it; replicas that failed while a sibling
//! succeeded are "missed" (left out of the next version, they catch up by
//! copying it). A shard no replica committed fails the batch.

use std::collections::BTreeSet;

use searchtree_proto::pb::{FailureReason, LoadAck, RefusedOp, ShardFailure};
use tonic::{Code, Status};

/// How one replica answered its part of a batch.
#[derive(Debug, Clone)]
pub enum ReplicaAnswer {
    /// The replica's own acknowledgement (it may report failed shards below
    /// it, if it is a parent).
    Acked(LoadAck),
    /// The replica did not acknowledge: its call failed, its stream ended, or
    /// it was not asked because its stream had failed before.
    Failed {
        /// Why, as a shard failure would say it.
        reason: FailureReason,
        /// What went wrong.
        message: String,
    },
}

impl ReplicaAnswer {
    /// A failure from a call's status.
    pub fn from_status(status: &Status) -> Self {
        let reason = match status.code() {
            Code::DeadlineExceeded | Code::Cancelled => FailureReason::Timeout,
            Code::Unavailable => FailureReason::Unavailable,
            Code::ResourceExhausted => FailureReason::Overloaded,
            Code::Unknown if status.message().starts_with("transport error") => FailureReason::Lost,
            _ => FailureReason::Error,
        };
        ReplicaAnswer::Failed {
            reason,
            message: format!("{:?}: {}", status.code(), status.message()),
        }
    }

    /// The shards of `touched` this answer says were not committed.
    fn failed_shards(&self, touched: &[u32]) -> Vec<u32> {
        match self {
            ReplicaAnswer::Failed { .. } => touched.to_vec(),
            ReplicaAnswer::Acked(ack) if ack.ok => Vec::new(),
            ReplicaAnswer::Acked(ack) if ack.failures.is_empty() => touched.to_vec(),
            ReplicaAnswer::Acked(ack) => {
                let failed: BTreeSet<u32> = ack.failures.iter().map(|f| f.shard).collect();
                touched
                    .iter()
                    .copied()
                    .filter(|s| failed.contains(s))
                    .collect()
            }
        }
    }
}

/// The part of a batch sent to one child, and its replicas' answers.
#[derive(Debug)]
struct ChildPart {
    child: usize,
    /// The shards of the child the part touches.
    shards: Vec<u32>,
    /// `(address, answer)` per replica of the child, `None` until it answers.
    answers: Vec<(String, Option<ReplicaAnswer>)>,
}

/// One batch on its way down: the client's `seq`, the ops refused before
/// sending, and what each replica answered so far.
#[derive(Debug)]
pub struct BatchAcks {
    seq: u64,
    refused: Vec<RefusedOp>,
    parts: Vec<ChildPart>,
    /// Shards the batch touches that no replica could be sent: failed.
    unsent: Vec<ShardFailure>,
}

impl BatchAcks {
    /// A batch numbered `seq` by the client, with `refused` ops already
    /// taken out.
    pub fn new(seq: u64, refused: Vec<RefusedOp>) -> Self {
        BatchAcks {
            seq,
            refused,
            parts: Vec::new(),
            unsent: Vec::new(),
        }
    }

    /// The batch touches `shards` of a child with no replica to send them
    /// to (`why`): they fail, with nothing to wait for.
    pub fn none_known(&mut self, shards: Vec<u32>, why: String) {
        self.unsent
            .extend(shards.into_iter().map(|shard| ShardFailure {
                shard,
                reason: FailureReason::Unavailable as i32,
                message: why.clone(),
            }));
    }

    /// The batch touches `shards` of child `child`, whose replicas are
    /// `replicas` (addresses): each of them must answer.
    pub fn expect(&mut self, child: usize, shards: Vec<u32>, replicas: &[String]) {
        self.parts.push(ChildPart {
            child,
            shards,
            answers: replicas.iter().map(|a| (a.clone(), None)).collect(),
        });
    }

    /// Records replica `replica` of child `child`'s answer; only its first
    /// answer counts. Returns whether it was awaited.
    pub fn record(&mut self, child: usize, replica: usize, answer: ReplicaAnswer) -> bool {
        let Some(slot) = self
            .parts
            .iter_mut()
            .find(|p| p.child == child)
            .and_then(|p| p.answers.get_mut(replica))
        else {
            return false;
        };
        if slot.1.is_some() {
            return false;
        }
        slot.1 = Some(answer);
        true
    }

    /// Whether replica `replica` of child `child` still owes an answer.
    pub fn awaits(&self, child: usize, replica: usize) -> bool {
        self.parts
            .iter()
            .find(|p| p.child == child)
            .and_then(|p| p.answers.get(replica))
            .is_some_and(|a| a.1.is_none())
    }

    /// The replicas `(child, replica)` that still owe an answer.
    pub fn awaited(&self) -> Vec<(usize, usize)> {
        self.parts
            .iter()
            .flat_map(|p| {
                p.answers
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.1.is_none())
                    .map(|(r, _)| (p.child, r))
            })
            .collect()
    }

    /// Whether every replica asked has answered.
    pub fn is_done(&self) -> bool {
        self.parts
            .iter()
            .all(|p| p.answers.iter().all(|a| a.1.is_some()))
    }

    /// The acknowledgement to send up (once [`Self::is_done`]).
    pub fn ack(self) -> LoadAck {
        let mut ack = LoadAck {
            seq: self.seq,
            ok: true,
            ..LoadAck::default()
        };
        let mut refused = self.refused;
        let mut missed = BTreeSet::new();
        for part in &self.parts {
            let answers: Vec<(&str, &ReplicaAnswer)> = part
                .answers
                .iter()
                .filter_map(|(addr, a)| a.as_ref().map(|a| (addr.as_str(), a)))
                .collect();
            let failed: Vec<Vec<u32>> = answers
                .iter()
                .map(|(_, a)| a.failed_shards(&part.shards))
                .collect();
            for shard in &part.shards {
                let committed = failed.iter().any(|f| !f.contains(shard));
                if committed {
                    for ((addr, _), f) in answers.iter().zip(&failed) {
                        if f.contains(shard) {
                            missed.insert(addr.to_string());
                        }
                    }
                } else {
                    ack.ok = false;
                    ack.failures.push(shard_failure(*shard, &answers));
                }
            }
            // Counts from one replica: the first that committed everything,
            // else the first that answered at all.
            let counted = answers
                .iter()
                .find_map(|(_, a)| match a {
                    ReplicaAnswer::Acked(ack) if ack.ok => Some(ack),
                    _ => None,
                })
                .or_else(|| {
                    answers.iter().find_map(|(_, a)| match a {
                        ReplicaAnswer::Acked(ack) => Some(ack),
                        _ => None,
                    })
                });
            if let Some(counted) = counted {
                ack.added += counted.added;
                ack.replaced += counted.replaced;
                ack.deleted += counted.deleted;
                ack.delete_missing += counted.delete_missing;
            }
            for (_, answer) in &answers {
                if let ReplicaAnswer::Acked(a) = answer {
                    refused.extend(a.refused.iter().cloned());
                    missed.extend(a.replicas_missed.iter().cloned());
                }
            }
        }
        if !self.unsent.is_empty() {
            ack.ok = false;
            ack.failures.extend(self.unsent);
        }
        refused.sort_by(|a, b| (a.line, &a.id).cmp(&(b.line, &b.id)));
        refused.dedup_by(|a, b| a.line == b.line && a.id == b.id);
        ack.refused = refused;
        ack.failures.sort_by_key(|f| f.shard);
        ack.replicas_missed = missed.into_iter().collect();
        ack
    }
}

/// Why no replica committed `shard`'s part: a failure a replica reported
/// for it (a parent's), else the replicas' own errors.
fn shard_failure(shard: u32, answers: &[(&str, &ReplicaAnswer)]) -> ShardFailure {
    let mut reason = None;
    let mut messages = Vec::new();
    for (addr, answer) in answers {
        match answer {
            ReplicaAnswer::Failed { reason: r, message } => {
                reason.get_or_insert(*r);
                messages.push(format!("{addr}: {message}"));
            }
            ReplicaAnswer::Acked(ack) => match ack.failures.iter().find(|f| f.shard == shard) {
                Some(f) => {
                    reason.get_or_insert(f.reason());
                    messages.push(format!("{addr}: {}", f.message));
                }
                None => messages.push(format!("{addr}: not acknowledged")),
            },
        }
    }
    ShardFailure {
        shard,
        reason: reason.unwrap_or(FailureReason::Error) as i32,
        message: messages.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(added: u32, refused: &[u64]) -> ReplicaAnswer {
        ReplicaAnswer::Acked(LoadAck {
            ok: true,
            added,
            refused: refused
                .iter()
                .map(|l| RefusedOp {
                    line: *l,
                    id: String::new(),
                    reason: "empty id".into(),
                })
                .collect(),
            ..LoadAck::default()
        })
    }

    fn down() -> ReplicaAnswer {
        ReplicaAnswer::from_status(&Status::unavailable("connection refused"))
    }

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.1:{}", 7000 + i)).collect()
    }

    #[test]
    fn one_replica_committing_a_shard_is_enough_and_the_other_is_missed() {
        let mut batch = BatchAcks::new(9, Vec::new());
        batch.expect(0, vec![0], &addrs(2));
        batch.expect(1, vec![1], &addrs(1));
        assert!(batch.record(0, 0, acked(3, &[4])));
        assert!(!batch.is_done());
        assert!(batch.record(0, 1, down()));
        assert!(
            !batch.record(0, 1, acked(3, &[])),
            "only the first answer counts"
        );
        assert_eq!(batch.awaited(), [(1, 0)]);
        batch.record(1, 0, acked(2, &[4, 7]));
        assert!(batch.is_done());
        let ack = batch.ack();
        assert_eq!(ack.seq, 9);
        assert!(ack.ok);
        assert_eq!(ack.added, 5, "counted once per child");
        assert_eq!(ack.replicas_missed, ["127.0.0.1:7001"]);
        let lines: Vec<u64> = ack.refused.iter().map(|r| r.line).collect();
        assert_eq!(lines, [4, 7], "refusals deduplicated by line");
    }

    #[test]
    fn a_shard_no_replica_committed_fails_the_batch_and_names_it() {
        let mut batch = BatchAcks::new(1, Vec::new());
        batch.expect(0, vec![2, 3], &addrs(2));
        // A parent below lost shard 3 on one replica, the other is down.
        batch.record(
            0,
            0,
            ReplicaAnswer::Acked(LoadAck {
                ok: false,
                failures: vec![ShardFailure {
                    shard: 3,
                    reason: FailureReason::Lost as i32,
                    message: "leaf crashed".into(),
                }],
                ..LoadAck::default()
            }),
        );
        batch.record(0, 1, down());
        let ack = batch.ack();
        assert!(!ack.ok);
        assert_eq!(ack.failures.len(), 1);
        let failure = &ack.failures[0];
        assert_eq!(failure.shard, 3);
        assert_eq!(failure.reason(), FailureReason::Lost);
        assert!(
            failure.message.contains("leaf crashed"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("127.0.0.1:7001: Unavailable"));
        // Shard 2 was committed by replica 0 only: replica 1 missed it.
        assert_eq!(ack.replicas_missed, ["127.0.0.1:7001"]);
    }

    #[test]
    fn a_batch_touching_nothing_is_done_at_once_with_its_refusals() {
        let refused = vec![RefusedOp {
            line: 3,
            id: String::new(),
            reason: "empty id".into(),
        }];
        let batch = BatchAcks::new(4, refused.clone());
        assert!(batch.is_done());
        let ack = batch.ack();
        assert!(ack.ok);
        assert_eq!(ack.refused, refused);
    }
}
