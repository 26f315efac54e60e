//! Catch-up: a replica asked for a snapshot version it does not hold (it was
//! down or failing during a load or a publish) refuses with
//! FAILED_PRECONDITION `version-missing: …`. The group then
//!
//! - retries the request on a sibling, as for any retryable failure (the
//!   search and fetch paths ask [`ReplicaGroup::refused_version`]);
//! - takes the replica out of rotation as [`Rotation::Behind`], which a
//!   good health check does not undo: it is healthy, only stale;
//! - runs one background task per behind replica that calls
//!   `Corpus.CatchUp { version, source, activate: true }` on it, `source`
//!   being a sibling whose last answer was at that version, retrying with
//!   backoff while the replica stays behind; once a copy succeeds the
//!   replica goes on probation (shadow traffic), and from there back into
//!   rotation with slow start, as any replica that was slow.
//!
//! A replica that refuses a version *older* than every one it holds is not
//! behind (the request is stale): it stays in rotation, and is never told to
//! copy an old version, which would roll it back. A group of one replica has
//! nothing to copy from: the replica stays in rotation and its shards fail
//! until someone publishes again (logged once per version).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use searchtree_node::ops::client::NodeChannel;
use searchtree_node::serving::MAX_CORPUS_MESSAGE_BYTES;
use searchtree_proto::pb::corpus_client::CorpusClient;
use searchtree_proto::pb::{CatchUpRequest, CatchUpResponse, LeafVersions, VersionsRequest};

use super::ReplicaGroup;
use super::state::Replica;
use super::state::Rotation;
use crate::child::{ChildError, endpoint};
use crate::counters::InnerCounter;

/// The first wait before a failed catch-up is tried again; it doubles per
/// failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait between catch-up attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long one copy may take: a version is a whole shard, copied over the
/// network, so minutes are normal; a leaf that hangs longer is tried again.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What a `version-missing` refusal says about the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// It lacks the version asked for: it must catch up.
    Behind,
    /// Every version it holds is newer than the one asked for: the request
    /// is stale, the replica is not.
    Ahead,
}

/// Reads a failure as a leaf's refusal of the version `wanted`, if it is
/// one. The leaf's message lists what it holds (`holds versions [3, 4], not
/// 5`); a message without the list counts as behind.
fn refusal(err: &ChildError, wanted: u64) -> Option<Refusal> {
    let rest = err.version_missing()?;
    if wanted == 0 {
        // "The current version" cannot be missing; nothing to catch up to.
        return None;
    }
    let held = rest
        .split_once('[')
        .and_then(|(_, tail)| tail.split_once(']'))
        .map(|(list, _)| {
            list.split(',')
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !held.is_empty() && held.iter().all(|&v| v > wanted) {
        Some(Refusal::Ahead)
    } else {
        Some(Refusal::Behind)
    }
}

/// The corpus calls a group makes to its replicas to keep them on the
/// tree's version: copying a version from a sibling, and asking which
/// versions a replica holds (to find one behind with no query asking, see
/// `version_check`). Behind a trait so that the group's logic can be tested
/// without leaves.
pub trait CatchUpCall: Send + Sync {
    /// Asks the replica named `replica` (its address) to catch up as
    /// `request` says, answering once it has.
    fn catch_up(
        &self,
        replica: &str,
        request: CatchUpRequest,
    ) -> BoxFuture<'_, Result<CatchUpResponse, ChildError>>;

    /// Asks the replica named `replica` which versions it holds
    /// (`Corpus.Versions`): one entry for a leaf, one per leaf below for an
    /// inner node.
    fn versions(&self, replica: &str) -> BoxFuture<'_, Result<Vec<LeafVersions>, ChildError>>;
}

/// [`CatchUpCall`] over gRPC (`Corpus.CatchUp`), one lazily connected
/// client per replica address, made on first use.
#[derive(Default)]
pub struct GrpcCatchUp {
    clients: Mutex<HashMap<String, CorpusClient<NodeChannel>>>,
}

impl GrpcCatchUp {
    fn client(&self, addr: &str) -> Result<CorpusClient<NodeChannel>, ChildError> {
        let mut clients = self.clients.lock().expect("catch-up clients lock");
        if let Some(client) = clients.get(addr) {
            return Ok(client.clone());
        }
        let channel = searchtree_node::ops::client::channel(
            endpoint(addr)
                .map_err(|e| ChildError::Failed(format!("bad replica address {addr:?}: {e}")))?
                .connect_lazy(),
        );
        let client = CorpusClient::new(channel)
            .max_decoding_message_size(MAX_CORPUS_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_CORPUS_MESSAGE_BYTES);
        clients.insert(addr.to_string(), client.clone());
        Ok(client)
    }
}

impl CatchUpCall for GrpcCatchUp {
    fn catch_up(
        &self,
        replica: &str,
        request: CatchUpRequest,
    ) -> BoxFuture<'_, Result<CatchUpResponse, ChildError>> {
        let client = self.client(replica);
        Box::pin(async move {
            let mut client = client?;
            // Marked as passed down, as a publish's steps are: a leaf
            // refuses a CatchUp a client sends it.
            let mut request = searchtree_proto::forwarded::forwarded(request);
            request.set_timeout(CATCH_UP_TIMEOUT);
            Ok(client.catch_up(request).await?.into_inner())
        })
    }

    fn versions(&self, replica: &str) -> BoxFuture<'_, Result<Vec<LeafVersions>, ChildError>> {
        let client = self.client(replica);
        Box::pin(async move {
            let mut client = client?;
            let mut request = tonic::Request::new(VersionsRequest {});
            request.set_timeout(super::version_check::VERSIONS_TIMEOUT);
            Ok(client.versions(request).await?.into_inner().leaves)
        })
    }
}

impl ReplicaGroup {
    /// Handles `replica`'s failure of a request pinned to `wanted`: if it
    /// is a refusal of that version, the replica is marked behind (and a
    /// catch-up started) when it lacks it, and true is returned: the
    /// request is worth sending to a sibling.
    pub(super) fn refused_version(
        &self,
        replica: &Arc<Replica>,
        err: &ChildError,
        wanted: u64,
    ) -> bool {
        let Some(refusal) = refusal(err, wanted) else {
            return false;
        };
        let name = replica.child.name();
        if refusal == Refusal::Ahead {
            tracing::debug!(replica = name, wanted, %err, "refused a version older than it holds");
            return true;
        }
        if self.replicas().len() == 1 {
            if self.alone_warned.swap(wanted, Ordering::Relaxed) != wanted {
                tracing::warn!(
                    replica = name,
                    version = wanted,
                    %err,
                    "the only replica of its shards lacks the version: they fail until it is published again"
                );
            }
            return true;
        }
        let held_by_a_sibling = self.replicas().iter().any(|r| {
            !Arc::ptr_eq(r, replica) && {
                let s = r.lock();
                s.answered >= wanted && !matches!(s.rotation, Rotation::Behind { .. })
            }
        });
        if held_by_a_sibling {
            self.mark_behind(replica, wanted);
        } else {
            // Perhaps no replica holds it (a version not published, or
            // asked for by mistake): behind only once a sibling answers at
            // it (see `on_answered`).
            let mut s = replica.lock();
            s.refused_unconfirmed = s.refused_unconfirmed.max(wanted);
        }
        true
    }

    /// Takes `replica`, which lacks `wanted`, out of rotation until it has
    /// copied that version (or a newer one it is found to lack) from a
    /// sibling, and starts its catch-up unless one runs.
    pub(super) fn mark_behind(&self, replica: &Arc<Replica>, wanted: u64) {
        let mut s = replica.lock();
        let newly = !matches!(s.rotation, Rotation::Behind { .. });
        let version = match s.rotation {
            Rotation::Behind { version } => version.max(wanted),
            _ => wanted,
        };
        s.rotation = Rotation::Behind { version };
        s.reset_checks();
        let spawn = !s.catching_up;
        s.catching_up = true;
        drop(s);
        if newly {
            self.counters.inc(InnerCounter::ReplicasBehind);
            tracing::warn!(
                replica = replica.child.name(),
                version,
                "behind: out of rotation until it catches up"
            );
        }
        if spawn && let Some(group) = self.me.upgrade() {
            tokio::spawn(catch_up(Arc::downgrade(&group), Arc::clone(replica)));
        }
    }

    /// A publish (or the root settling the leaves on the pinned version)
    /// activated `version` on the replicas named in `activated` (their
    /// addresses, as this node calls them): they hold it, and can be a
    /// sibling's source. Every other replica of this group lacks it (it was
    /// left out, unreachable, or failed) and catches up now, in an idle
    /// tree as in a busy one, instead of waiting for a query to find it
    /// behind. A group none of whose replicas activated (its shards all
    /// failed, or it is a group of inner nodes, which answer for the leaves
    /// below them) is left as it is.
    pub fn on_activated(&self, version: u64, activated: &BTreeSet<String>) {
        let replicas = self.replicas();
        let (holding, lacking): (Vec<_>, Vec<_>) = replicas
            .iter()
            .partition(|r| activated.contains(r.child.name()));
        if holding.is_empty() || version == 0 {
            return;
        }
        for replica in holding {
            self.on_answered(replica, version);
        }
        for replica in lacking {
            if replica.lock().answered < version {
                self.mark_behind(replica, version);
            }
        }
    }

    /// Records that `replica` answered at `version` (0: unknown): it can
    /// be the source of a sibling's catch-up, and if it was behind, it has
    /// caught up on its own (e.g. an operator copied the version).
    pub(super) fn on_answered(&self, replica: &Replica, version: u64) {
        if version == 0 {
            return;
        }
        let mut s = replica.lock();
        let changed = s.answered != version;
        s.answered = version;
        let caught_up =
            matches!(s.rotation, Rotation::Behind { version: behind } if version >= behind);
        if s.refused_unconfirmed <= version {
            s.refused_unconfirmed = 0;
        }
        drop(s);
        if caught_up {
            self.on_caught_up(replica, version);
        }
        if changed {
            self.answered.notify_waiters();
            // Siblings that refused this version before anyone was known
            // to hold it are behind after all.
            for sibling in self.replicas().iter() {
                let lacked = {
                    let mut s = sibling.lock();
                    let lacked = s.refused_unconfirmed;
                    if lacked == 0 || lacked > version {
                        continue;
                    }
                    s.refused_unconfirmed = 0;
                    lacked
                };
                self.mark_behind(sibling, lacked);
            }
        }
    }

    /// The version `replica` must catch up to, or None if it is no longer
    /// behind, or no longer one of the group's (and then its catch-up task
    /// ends).
    fn still_behind(&self, replica: &Arc<Replica>) -> Option<u64> {
        let member = self.is_member(replica);
        let mut s = replica.lock();
        if !member {
            s.catching_up = false;
            return None;
        }
        match s.rotation {
            Rotation::Behind { version } => Some(version),
            _ => {
                s.catching_up = false;
                None
            }
        }
    }

    /// A sibling of `replica` to copy `version` from: one not behind
    /// whose last answer was at that version, preferring one in rotation.
    fn source(&self, replica: &Arc<Replica>, version: u64) -> Option<String> {
        let replicas = self.replicas();
        let mut best: Option<(bool, usize)> = None;
        for (j, r) in replicas.iter().enumerate() {
            if Arc::ptr_eq(r, replica) {
                continue;
            }
            let s = r.lock();
            if s.answered != version || matches!(s.rotation, Rotation::Behind { .. }) {
                continue;
            }
            let in_rotation = s.rotation == Rotation::In;
            if best.is_none_or(|(best_in, _)| in_rotation && !best_in) {
                best = Some((in_rotation, j));
            }
        }
        best.map(|(_, j)| replicas[j].child.name().to_string())
    }

    /// `replica` was taken for behind but is not a replica that catches
    /// up (an inner node): ejected, so that health checks bring it back,
    /// and passed by from now on when versions are checked (see
    /// `version_check`), which would otherwise take it for behind again.
    fn not_behind(&self, replica: &Replica) {
        let mut s = replica.lock();
        s.not_a_leaf = true;
        if matches!(s.rotation, Rotation::Behind { .. }) {
            s.rotation = Rotation::Ejected;
            s.reset_checks();
        }
        s.catching_up = false;
    }

    /// `replica` holds `version` now: unless it was meanwhile asked for a
    /// newer one, it goes on probation, and back into rotation once its
    /// latency matches its peers' (its caches are cold after the copy).
    fn on_caught_up(&self, replica: &Replica, version: u64) {
        let mut s = replica.lock();
        match s.rotation {
            Rotation::Behind { version: behind } if behind <= version => {
                s.rotation = Rotation::Probation;
                s.reset_checks();
                s.recent.clear();
                s.ewma_us = 0.0;
                drop(s);
                tracing::info!(
                    replica = replica.child.name(),
                    version,
                    "caught up: on probation until it answers as fast as its peers"
                );
            }
            _ => {}
        }
    }
}

/// Whether a catch-up failed because the replica is an inner node, which
/// copies no versions (its `CatchUp` refusal, see
/// [`crate::corpus::service::leaf_only`]).
fn is_not_a_leaf(err: &ChildError) -> bool {
    matches!(err, ChildError::Failed(msg) if msg.ends_with(crate::corpus::service::LEAF_ONLY))
}

/// The catch-up of `replica` of `group`: until the replica is no longer
/// behind (or the group, or the replica, is gone), finds a source and asks
/// the replica to copy the version from it, waiting longer after each
/// failure.
async fn catch_up(group: Weak<ReplicaGroup>, replica: Arc<Replica>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let Some(g) = group.upgrade() else { return };
        let Some(version) = g.still_behind(&replica) else {
            return;
        };
        let source = {
            let answered = g.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            match g.source(&replica, version) {
                Some(source) => source,
                None => {
                    // No sibling has answered at that version yet: wait
                    // until one does (the refused request is being retried
                    // on one), or a while.
                    let _ = tokio::time::timeout(backoff, answered).await;
                    continue;
                }
            }
        };
        let name = replica.child.name().to_string();
        g.counters.inc(InnerCounter::CatchUpsStarted);
        tracing::info!(replica = name, version, source, "catching up");
        let request = CatchUpRequest {
            version,
            source: source.clone(),
            activate: true,
        };
        let result = tokio::time::timeout(CATCH_UP_TIMEOUT, g.catch_up.catch_up(&name, request))
            .await
            .unwrap_or_else(|_| Err(ChildError::Timeout("catch-up took too long".into())));
        match result {
            Ok(done) => {
                g.counters.inc(InnerCounter::CatchUpsSucceeded);
                tracing::info!(
                    replica = name,
                    version,
                    source,
                    bytes = done.bytes,
                    took_us = done.took_us,
                    "caught up"
                );
                g.on_caught_up(&replica, version);
                backoff = BACKOFF_MIN;
            }
            Err(err) if is_not_a_leaf(&err) => {
                // An inner node answers for the leaves below it, which its
                // own groups catch up: health checks decide its rotation.
                g.counters.inc(InnerCounter::CatchUpsFailed);
                tracing::info!(replica = name, %err, "not a leaf: its own children catch up");
                g.not_behind(&replica);
                return;
            }
            Err(err) => {
                g.counters.inc(InnerCounter::CatchUpsFailed);
                tracing::warn!(replica = name, version, source, %err, retry_in = ?backoff, "catch-up failed");
                drop(g);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use searchtree_proto::pb::{DocRef, FetchRequest};
    use tokio::time::Instant;

    use super::super::testing::{
        FakeCatchUp, VersionedChild, copy_of, ms, pinned, versioned_group,
    };
    use super::super::{Policy, ReplicaConfig};
    use super::*;
    use crate::child::Child;

    fn config() -> ReplicaConfig {
        ReplicaConfig {
            policy: Policy::RoundRobin,
            hedge_ratio: 0.0,
            shadow_every: 2,
            ..ReplicaConfig::default()
        }
    }

    /// r0 holds version 1 only; r1 holds 1 and 2.
    fn r0_behind() -> [Arc<VersionedChild>; 2] {
        [
            VersionedChild::new("r0", &[1]),
            VersionedChild::new("r1", &[1, 2]),
        ]
    }

    fn missing(held: &str, wanted: u64) -> ChildError {
        ChildError::from(tonic::Status::failed_precondition(format!(
            "version-missing: shard 2 holds versions {held}, not {wanted}"
        )))
    }

    #[tokio::test]
    async fn a_replica_that_cannot_be_reached_fails_its_catch_up_as_unavailable() {
        // Nothing listens on port 1: the copy fails, to be tried again.
        let request = CatchUpRequest {
            version: 2,
            source: "127.0.0.1:2".into(),
            activate: true,
        };
        let err = GrpcCatchUp::default()
            .catch_up("127.0.0.1:1", request)
            .await
            .unwrap_err();
        assert!(matches!(err, ChildError::Unavailable(_)), "{err:?}");
    }

    #[test]
    fn a_leafs_refusal_of_a_version_is_told_from_other_failures() {
        assert_eq!(refusal(&missing("[3, 4]", 5), 5), Some(Refusal::Behind));
        assert_eq!(refusal(&missing("[]", 5), 5), Some(Refusal::Behind));
        assert_eq!(refusal(&missing("[3, 4]", 2), 2), Some(Refusal::Ahead));
        assert_eq!(refusal(&missing("[3, 4]", 4), 0), None);
        let other = ChildError::from(tonic::Status::failed_precondition("no data dir"));
        assert_eq!(refusal(&other, 5), None);
        let down = ChildError::from(tonic::Status::unavailable("version-missing: no"));
        assert_eq!(refusal(&down, 5), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_lacking_the_version_is_retried_on_a_sibling_with_the_retry_budget_spent() {
        let r = r0_behind();
        let copies = FakeCatchUp::new(&r, ms(50), 0);
        let g = versioned_group(&r, &copies, config());
        while g.retry_budget.take() {}
        // r0's turn: it refuses version 2, and r1 answers all the same.
        let response = g.search(pinned(2), ms(100)).await.unwrap();
        let source = &response.coverage.unwrap().sources[0];
        assert_eq!((source.replica.as_str(), source.retried), ("r1", true));
        assert_eq!(g.counters.get(InnerCounter::RetriesThrottled), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_version_no_replica_holds_takes_none_out_of_rotation() {
        let r = [
            VersionedChild::new("r0", &[1]),
            VersionedChild::new("r1", &[1]),
        ];
        let copies = FakeCatchUp::new(&r, ms(50), 0);
        let g = versioned_group(&r, &copies, config());
        // A request naming a version that was never published: both
        // refuse it, and the caller is told.
        for _ in 0..4 {
            let err = g.search(pinned(u64::MAX), ms(100)).await.unwrap_err();
            assert!(err.version_missing().is_some(), "{err:?}");
        }
        // The published version is answered by both, as before.
        for _ in 0..4 {
            g.search(pinned(1), ms(100)).await.unwrap();
        }
        tokio::time::sleep(ms(100)).await;
        assert_eq!(g.rotations(), [Rotation::In, Rotation::In]);
        assert_eq!(g.counters.get(InnerCounter::ReplicasBehind), 0);
        assert!(copies.calls().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_behind_replica_is_left_out_and_catches_up_from_the_sibling_that_answered() {
        let r = r0_behind();
        let copies = FakeCatchUp::new(&r, ms(50), 0);
        let g = versioned_group(&r, &copies, config());

        // r0's turn: it refuses version 2 and r1 answers instead.
        let response = g.search(pinned(2), ms(100)).await.unwrap();
        let source = &response.coverage.unwrap().sources[0];
        assert_eq!((source.replica.as_str(), source.retried), ("r1", true));
        assert_eq!(response.version, 2);
        assert_eq!(g.rotations()[0], Rotation::Behind { version: 2 });
        assert_eq!(g.counters.get(InnerCounter::ReplicasBehind), 1);

        // While it copies, every request goes to r1; further refusals start
        // no second catch-up.
        let refused = r[0].inner.calls();
        for _ in 0..10 {
            g.search(pinned(2), ms(100)).await.unwrap();
        }
        assert!(g.refused_version(&g.replicas()[0], &missing("[1]", 2), 2));
        assert_eq!(r[0].inner.calls(), refused, "no traffic while behind");
        tokio::time::sleep(ms(50)).await;
        assert_eq!(copies.calls(), [copy_of("r0", 2, "r1")]);
        assert_eq!(g.counters.get(InnerCounter::CatchUpsStarted), 1);
        assert_eq!(g.counters.get(InnerCounter::CatchUpsSucceeded), 1);

        // Caught up: probation (shadow copies only), then back in rotation.
        assert_eq!(g.rotations()[0], Rotation::Probation);
        for _ in 0..100 {
            g.search(pinned(2), ms(100)).await.unwrap();
            tokio::time::advance(ms(2)).await; // let shadow copies finish
        }
        assert_eq!(g.rotations()[0], Rotation::In);
        assert!(g.counters.get(InnerCounter::Returns) >= 1);
        let back = r[0].inner.calls();
        tokio::time::advance(ms(3000)).await; // past slow start
        for _ in 0..10 {
            g.search(pinned(2), ms(100)).await.unwrap();
        }
        assert_eq!(r[0].inner.calls() - back, 5, "its full share again");
        assert_eq!(copies.calls().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_left_out_of_an_activate_catches_up_with_no_query_asking() {
        let r = r0_behind();
        let copies = FakeCatchUp::new(&r, ms(50), 0);
        let g = versioned_group(&r, &copies, config());

        // The tree is idle: the only news of version 2 is its Activate,
        // which reached r1 alone.
        g.on_activated(2, &BTreeSet::from(["r1".to_string()]));
        assert_eq!(g.rotations()[0], Rotation::Behind { version: 2 });
        tokio::time::sleep(ms(100)).await;
        assert_eq!(copies.calls(), [copy_of("r0", 2, "r1")]);
        assert_eq!(g.rotations()[0], Rotation::Probation);
        assert_eq!(r[0].inner.calls(), 0, "no query was sent");

        // An Activate that reached both, or neither, leaves them alone.
        g.on_activated(2, &BTreeSet::from(["r0".to_string(), "r1".to_string()]));
        g.on_activated(3, &BTreeSet::new());
        assert_eq!(g.rotations()[0], Rotation::Probation);
        assert_eq!(copies.calls().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_is_not_a_leaf_is_not_kept_behind() {
        struct Inner;
        impl CatchUpCall for Inner {
            fn catch_up(
                &self,
                _replica: &str,
                _request: CatchUpRequest,
            ) -> BoxFuture<'_, Result<CatchUpResponse, ChildError>> {
                Box::pin(async {
                    Err(ChildError::from(crate::corpus::service::leaf_only(
                        "CatchUp",
                    )))
                })
            }
            fn versions(
                &self,
                _replica: &str,
            ) -> BoxFuture<'_, Result<Vec<LeafVersions>, ChildError>> {
                Box::pin(async { Ok(Vec::new()) })
            }
        }
        let r = r0_behind();
        let children = r.iter().map(|c| Arc::clone(c) as Arc<dyn Child>).collect();
        let g = ReplicaGroup::with_catch_up(
            children,
            config(),
            crate::counters::inner_counters("parent"),
            Arc::new(Inner),
        );
        g.on_activated(2, &BTreeSet::from(["r1".to_string()]));
        tokio::time::sleep(ms(10)).await;
        assert_eq!(g.rotations()[0], Rotation::Ejected, "health checks decide");
        g.check_all().await;
        g.check_all().await;
        assert_eq!(g.rotations()[0], Rotation::In);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_on_probation_that_misses_the_next_version_catches_up_again() {
        let r = [
            VersionedChild::new("r0", &[1]),
            VersionedChild::new("r1", &[1, 2, 3]),
        ];
        let copies = FakeCatchUp::new(&r, ms(50), 0);
        let g = versioned_group(&r, &copies, config());
        g.search(pinned(2), ms(100)).await.unwrap();
        tokio::time::sleep(ms(100)).await;
        assert_eq!(g.rotations()[0], Rotation::Probation);

        // The tree moves on to version 3: r1 answers at it, and r0's first
        // shadow copy is refused, which sends it behind again.
        for _ in 0..4 {
            g.search(pinned(3), ms(100)).await.unwrap();
        }
        assert_eq!(g.rotations()[0], Rotation::Behind { version: 3 });
        tokio::time::sleep(ms(100)).await;
        assert_eq!(
            copies.calls(),
            [copy_of("r0", 2, "r1"), copy_of("r0", 3, "r1")]
        );
        assert_eq!(g.rotations()[0], Rotation::Probation);
        assert_eq!(g.counters.get(InnerCounter::ReplicasBehind), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn health_checks_do_not_bring_a_behind_replica_back_and_failed_copies_back_off() {
        let r = r0_behind();
        let copies = FakeCatchUp::new(&r, ms(10), usize::MAX);
        let g = versioned_group(&r, &copies, config());
        let start = Instant::now();
        g.search(pinned(2), ms(100)).await.unwrap();
        let refused = r[0].inner.calls();

        // Copies at ~0, 1, 3 and 7 s (each failing after 10 ms, then 1, 2,
        // 4 s of backoff); healthy all along, the replica stays out.
        for (at_ms, copies_by_then) in [(500, 1), (1500, 2), (2900, 2), (3500, 3), (7500, 4)] {
            tokio::time::sleep_until(start + ms(at_ms)).await;
            g.check_all().await;
            g.search(pinned(2), ms(100)).await.unwrap();
            assert_eq!(g.rotations()[0], Rotation::Behind { version: 2 });
            assert_eq!(copies.calls().len(), copies_by_then, "at {at_ms} ms");
        }
        assert_eq!(r[0].inner.calls(), refused, "no traffic while behind");
        assert_eq!(g.counters.get(InnerCounter::CatchUpsFailed), 4);
        assert_eq!(g.counters.get(InnerCounter::Returns), 0);

        // The next attempt (at ~15 s) succeeds.
        copies.heal();
        tokio::time::sleep_until(start + ms(16_000)).await;
        assert_eq!(g.rotations()[0], Rotation::Probation);
        assert_eq!(copies.calls().len(), 5);
        assert!(copies.calls().iter().all(|c| *c == copy_of("r0", 2, "r1")));
        assert_eq!(g.counters.get(InnerCounter::CatchUpsStarted), 5);
        assert_eq!(g.counters.get(InnerCounter::CatchUpsSucceeded), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_catch_up_waits_for_a_sibling_to_answer_at_the_version() {
        let r = r0_behind();
        let copies = FakeCatchUp::new(&r, ms(10), 0);
        let g = versioned_group(&r, &copies, config());
        r[1].inner.set_down(true);
        let err = g.search(pinned(2), ms(100)).await.unwrap_err();
        assert!(matches!(err, ChildError::Unavailable(_)), "{err:?}");
        tokio::time::sleep(ms(5000)).await;
        assert!(copies.calls().is_empty(), "no sibling holds version 2 yet");

        // r1 returns and answers at version 2: r0 copies from it.
        r[1].inner.set_down(false);
        g.check_all().await;
        g.check_all().await;
        g.search(pinned(2), ms(100)).await.unwrap();
        tokio::time::sleep(ms(20)).await;
        assert_eq!(copies.calls(), [copy_of("r0", 2, "r1")]);
        assert_eq!(g.rotations()[0], Rotation::Probation);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_fetch_goes_to_a_sibling_and_starts_a_catch_up() {
        let r = r0_behind();
        let copies = FakeCatchUp::new(&r, ms(10), 0);
        let g = versioned_group(&r, &copies, config());
        let fetch = FetchRequest {
            hops: 0,
            query: "q".into(),
            docs: vec![DocRef {
                doc_id: "a".into(),
                shard: 0,
            }],
            budget_ms: 0,
            version: 2,
        };
        let answer = g.fetch(fetch, ms(100)).await.unwrap();
        assert_eq!(answer.hits.len(), 1);
        assert_eq!((r[0].inner.fetch_calls(), r[1].inner.fetch_calls()), (1, 1));
        assert_eq!(g.rotations()[0], Rotation::Behind { version: 2 });
        tokio::time::sleep(ms(20)).await;
        assert_eq!(copies.calls(), [copy_of("r0", 2, "r1")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_asked_for_a_version_older_than_it_holds_is_not_rolled_back() {
        let r = [
            VersionedChild::new("r0", &[3]),
            VersionedChild::new("r1", &[2, 3]),
        ];
        let copies = FakeCatchUp::new(&r, ms(10), 0);
        let g = versioned_group(&r, &copies, config());
        let response = g.search(pinned(2), ms(100)).await.unwrap();
        assert_eq!(response.coverage.unwrap().sources[0].replica, "r1");
        tokio::time::sleep(ms(5000)).await;
        assert_eq!(g.rotations(), [Rotation::In, Rotation::In]);
        assert!(copies.calls().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_replica_stays_in_rotation_and_its_shards_fail() {
        let r = [VersionedChild::new("r0", &[1])];
        let copies = FakeCatchUp::new(&r, ms(10), 0);
        let g = versioned_group(&r, &copies, config());
        for _ in 0..2 {
            let err = g.search(pinned(2), ms(100)).await.unwrap_err();
            assert!(err.to_string().contains("version-missing"), "{err}");
        }
        assert_eq!(r[0].inner.calls(), 2);
        tokio::time::sleep(ms(5000)).await;
        assert_eq!(g.rotations(), [Rotation::In]);
        assert!(copies.calls().is_empty());
        assert_eq!(g.counters.get(InnerCounter::ReplicasBehind), 0);
        // Version 1, which it holds, it still answers.
        g.search(pinned(1), ms(100)).await.unwrap();
    }
}
