//! Discard as an inner node takes it: every replica below throws away its
//! staged operations, so that the next publish does not include what a
//! stopped or unwanted load left staged.

use std::collections::BTreeSet;
use std::time::Duration;

use searchtree_proto::forwarded::forwarded;
use searchtree_proto::pb::{DiscardRequest, DiscardResponse};

use super::CorpusNode;
use super::publish_steps::all_replicas;

/// How long a replica may take to empty its staging area (a commit and
/// its fsyncs).
const DISCARD_TIMEOUT: Duration = Duration::from_secs(60);

impl CorpusNode {
    /// Discard: asks every replica below to throw away what it staged, and
    /// folds their answers. A replica that fails keeps its staged
    /// operations, so it is recorded as having missed the load (left out of
    /// the next version, caught up from a sibling afterwards); one that
    /// discarded holds what its siblings hold again, whatever it missed.
    pub async fn discard(&self) -> DiscardResponse {
        let children = self.children();
        let calls = all_replicas(&children).map(|(c, r)| {
            let target = &children.children()[c].replicas[r];
            let mut call = forwarded(DiscardRequest {});
            call.set_timeout(DISCARD_TIMEOUT);
            async move { (target.addr.clone(), target.client().discard(call).await) }
        });
        let mut response = DiscardResponse::default();
        let mut discarded = BTreeSet::new();
        for (addr, answer) in futures::future::join_all(calls).await {
            match answer {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    if answer.replicas_failed.is_empty() {
                        discarded.insert(addr);
                    }
                    discarded.extend(answer.shards.iter().map(|s| s.replica.clone()));
                    response.shards.extend(answer.shards);
                    response.replicas_failed.extend(answer.replicas_failed);
                }
                Err(status) => {
                    tracing::warn!(replica = %addr, %status, "discard failed");
                    response.replicas_failed.push(addr);
                }
            }
        }
        let mut missed = self.missed.lock().expect("missed lock");
        missed.retain(|replica| !discarded.contains(replica));
        missed.extend(response.replicas_failed.iter().cloned());
        if response.replicas_failed.is_empty() {
            // Nothing is staged below any more: a replica joining now
            // lacks nothing.
            self.set_loaded(false);
        }
        response
    }
}
