//! The root's `Corpus` service: what operators call. Loads and publishes run
//! one at a time; a load starts only while every reachable leaf serves the
//! same version, and a publish makes the next version (one above anything a
//! leaf holds) and moves the pin once every leaf installed it. The steps
//! below the root are an inner node's ([`CorpusNode`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use searchtree_membership::TreeMembership;
use searchtree_membership::published;
use searchtree_node::background;
use searchtree_node::serving::request_stream::numbered;
use searchtree_parent::corpus::publish_steps::{VERSIONS_TIMEOUT, term_chunks};
use searchtree_parent::corpus::service::{AnswerStream, leaf_only};
use searchtree_parent::corpus::{CorpusNode, receiver_stream};
use searchtree_proto::pb::corpus_server::Corpus;
use searchtree_proto::pb::{
    ActivateRequest, ActivateResponse, CatchUpRequest, CatchUpResponse, CopyVersionRequest,
    DiscardRequest, DiscardResponse, FileChunk, InstallChunk, InstallResponse, LeafVersions,
    LoadAck, LoadBatch, PrepareChunk, PrepareRequest, PublishRequest, PublishResponse,
    VersionsRequest, VersionsResponse,
};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use crate::idle_load::{Activity, LOAD_IDLE, idle_limited};
use crate::load_chunks::{ChunkBook, chunked};
use crate::load_pace::{Busy, LoadPace};
use crate::pin::PinnedVersion;

/// How often the root asks the leaves for their versions until one answers,
/// to learn the version to pin queries to.
pub const PIN_RETRY: Duration = Duration::from_secs(1);

/// How long a starting root waits for the leaves' versions before it
/// serves (see [`RootCorpus::pin_at_start`]).
pub const PIN_AT_START_WAIT: Duration = Duration::from_secs(5);

/// How often a root looks for a version published through another root
/// (see [`RootCorpus::spawn_follow_publishes`]).
pub const PIN_FOLLOW: Duration = Duration::from_secs(5);

/// After an announcement of a newer version, how often the root asks the
/// leaves until they all serve it, and how many times at most (then it
/// goes back to [`PIN_FOLLOW`]).
const ANNOUNCED_RETRY: Duration = Duration::from_millis(200);
const ANNOUNCED_ASKS: u32 = 25;

/// The most leaves a refusal lists.
const MAX_LEAVES_NAMED: usize = 16;

/// Serves `searchtree.v1.Corpus` at the root.
#[derive(Clone)]
pub struct RootCorpus {
    node: Arc<CorpusNode>,
    pinned: Arc<PinnedVersion>,
    /// Held by the load or publish under way.
    busy: Arc<Mutex<()>>,
    /// Paces loads to the queries answered meanwhile (`None`: loads go as
    /// fast as the tree takes them).
    pace: Option<Arc<LoadPace>>,
    /// Where a publish is announced to the tree's other roots (a tree in
    /// etcd).
    announce_to: Option<TreeMembership>,
}

/// The one corpus operation slot, held; while held, queries answered pace
/// loads rather than show the idle tail.
struct Slot {
    _slot: OwnedMutexGuard<()>,
    _busy: Option<Busy>,
}

impl RootCorpus {
    /// A service over `node`, moving `pinned`.
    pub fn new(node: Arc<CorpusNode>, pinned: Arc<PinnedVersion>) -> Self {
        RootCorpus {
            node,
            pinned,
            busy: Arc::new(Mutex::new(())),
            pace: None,
            announce_to: None,
        }
    }

    /// Announces every publish in `membership`'s etcd, so that the tree's
    /// other roots pin it at once ([`searchtree_membership::published`]).
    pub fn with_announcements(mut self, membership: Option<TreeMembership>) -> Self {
        self.announce_to = membership;
        self
    }

    /// Paces loads with `pace`, the one the root's searches feed (see
    /// [`crate::load_pace`]).
    pub fn with_load_pace(mut self, pace: Option<Arc<LoadPace>>) -> Self {
        self.pace = pace;
        self
    }

    /// Learns the version to pin queries to in the background: asks the
    /// leaves every [`PIN_RETRY`] until one answers, then pins the highest
    /// current version reported (unless a publish pinned one meanwhile).
    pub fn spawn_pin_at_start(&self) -> tokio::task::JoinHandle<()> {
        let (node, pinned) = (Arc::clone(&self.node), Arc::clone(&self.pinned));
        tokio::spawn(async move {
            loop {
                let versions = node.versions(VERSIONS_TIMEOUT).await;
                if let Some(current) = versions
                    .leaves
                    .iter()
                    .filter(|l| l.reachable)
                    .map(|l| l.current)
                    .max()
                {
                    if pinned.learn(current) {
                        tracing::info!(version = current, "queries pinned");
                    }
                    return;
                }
                tokio::time::sleep(PIN_RETRY).await;
            }
        })
    }

    /// Follows publishes made through other roots (a tree may have
    /// several behind one address): every `every` ([`PIN_FOLLOW`] in a
    /// served root), and at once when `announced` (the tree's
    /// announcements in etcd) names a version newer than the one pinned,
    /// while no load or publish runs here, asks the leaves for their
    /// versions, and when every reachable leaf serves a newer current
    /// version than the one pinned, pins it. A root's own publish pins its
    /// version itself.
    pub fn spawn_follow_publishes(
        &self,
        every: Duration,
        mut announced: Option<watch::Receiver<u64>>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        background::spawn(async move {
            let mut asks_left = 0;
            loop {
                let wait = if asks_left > 0 {
                    asks_left -= 1;
                    ANNOUNCED_RETRY
                } else {
                    every
                };
                let heard = match &mut announced {
                    Some(rx) => tokio::select! {
                        () = tokio::time::sleep(wait) => false,
                        changed = rx.changed() => {
                            if changed.is_err() {
                                announced = None;
                            }
                            true
                        }
                    },
                    None => {
                        tokio::time::sleep(wait).await;
                        false
                    }
                };
                if let Some(rx) = &announced {
                    let newest = *rx.borrow();
                    if newest <= this.pinned.get() {
                        asks_left = 0;
                        if heard {
                            continue; // this root's own publish, or one it follows already
                        }
                    } else if heard {
                        // The leaves may still be switching: ask again soon.
                        asks_left = ANNOUNCED_ASKS;
                    }
                }
                // Skipped while a load or publish of this root's own runs,
                // but not held during the sweep: a sweep can take seconds
                // (a leaf just started reads its shard once for its totals),
                // and a load sent meanwhile would be refused as busy. The
                // pin only moves forward, so a sweep that overlaps a
                // publish cannot undo it.
                if this.busy.try_lock().is_err() {
                    continue;
                }
                let leaves = this.node.versions(VERSIONS_TIMEOUT).await.leaves;
                if let Ok(current) = agreed_current(&leaves)
                    && this.pinned.advance_to(current)
                {
                    tracing::info!(
                        version = current,
                        "queries pinned to a version published elsewhere"
                    );
                }
            }
        })
    }

    /// Learns the version to pin as [`RootCorpus::spawn_pin_at_start`]
    /// does, waiting up to `wait` for it before the root serves: the first
    /// queries are then pinned too (and cached under the version they will
    /// keep being asked at). Past `wait` it goes on in the background.
    pub async fn pin_at_start(&self, wait: Duration) {
        let learning = self.spawn_pin_at_start();
        if tokio::time::timeout(wait, learning).await.is_err() {
            tracing::warn!(
                ?wait,
                "no leaf said its version yet: queries go unpinned until one does"
            );
        }
    }

    /// Tells the tree's other roots, through etcd, that `version` is
    /// published; the publish stands whether or not etcd takes it (they
    /// then find it by asking the leaves).
    async fn announce(&self, version: u64) {
        let Some(m) = &self.announce_to else { return };
        let announced = tokio::time::timeout(
            published::ANNOUNCE_TIMEOUT,
            published::announce(&m.etcd, &m.tree, version),
        )
        .await;
        match announced {
            Ok(Ok(())) => tracing::debug!(version, "publish announced in etcd"),
            Ok(Err(err)) => {
                tracing::warn!(version, %err, "cannot announce the publish in etcd: other roots will find it by asking the leaves");
            }
            Err(_) => tracing::warn!(
                version,
                "etcd did not take the publish's announcement in time: other roots will find it by asking the leaves"
            ),
        }
    }

    /// Takes the one corpus operation slot, or refuses with ABORTED.
    fn lock(&self) -> Result<Slot, Status> {
        let slot = Arc::clone(&self.busy)
            .try_lock_owned()
            .map_err(|_| Status::aborted("another load or publish is running"))?;
        Ok(Slot {
            _slot: slot,
            _busy: self.pace.as_ref().map(LoadPace::busy),
        })
    }

    /// The leaves' versions once they agree on the current one. A leaf
    /// that holds the pinned version but still serves an older one as
    /// current (it was away when that version was activated) is activated
    /// first; a leaf that lacks the version altogether is left to catch up
    /// from a sibling, and the leaves then disagree.
    async fn settled_versions(&self) -> Result<(u64, Vec<LeafVersions>), Status> {
        let leaves = self.node.versions(VERSIONS_TIMEOUT).await.leaves;
        if let Ok(current) = agreed_current(&leaves) {
            return Ok((current, leaves));
        }
        let pinned = self.pinned.get();
        let Some(lagging) = to_activate(&leaves, pinned) else {
            return agreed_current(&leaves).map(|current| (current, leaves));
        };
        let names: Vec<&str> = lagging.iter().map(|l| l.replica.as_str()).collect();
        tracing::info!(version = pinned, leaves = ?names, "activating the pinned version on leaves that missed it");
        self.node
            .activate(ActivateRequest { version: pinned })
            .await?;
        let leaves = self.node.versions(VERSIONS_TIMEOUT).await.leaves;
        agreed_current(&leaves).map(|current| (current, leaves))
    }

    /// Publishes under the lock (see [`Corpus::publish`]).
    async fn publish_locked(&self, request: PublishRequest) -> Result<PublishResponse, Status> {
        let started = Instant::now();
        let (current, leaves) = self.settled_versions().await?;
        let version = next_version(&leaves).ok_or_else(|| {
            Status::failed_precondition(
                "a leaf holds version 18446744073709551615, which no version can follow: \
                 remove that version from its data directory (`searchtree verify --root` \
                 names the leaf)",
            )
        })?;
        // A misplaced entry is an address reached as another shard's
        // replica: the nodes above already leave it out as that, and as
        // its own shard's replica it must not be skipped.
        let mut skip: BTreeSet<String> = leaves
            .iter()
            .filter(|l| !l.reachable && !l.misplaced)
            .map(|l| l.replica.clone())
            .collect();
        skip.extend(self.node.missed());
        tracing::info!(version, previous = current, skipped = ?skip, from_build = %request.from_build, "publishing");
        let prepared = self
            .node
            .prepare(&PrepareRequest {
                version,
                from_build: request.from_build.clone(),
                skip_replicas: skip.iter().cloned().collect(),
            })
            .await
            .map_err(|s| step_failed("Prepare", version, s))?;
        let prepare_ms = started.elapsed().as_millis();
        skip.extend(prepared.left_out.iter().cloned());
        let (num_docs, num_tokens) = prepared.totals();
        let staged_ops = prepared.per_shard().values().map(|s| s.staged_ops).sum();
        let mut chunks = vec![InstallChunk {
            version,
            num_docs,
            num_tokens: num_tokens.into_iter().collect(),
            terms: Vec::new(),
            skip_replicas: skip.iter().cloned().collect(),
        }];
        // Chunking every term is CPU work: off the async workers, which
        // keep answering queries meanwhile.
        let terms = tokio::task::spawn_blocking(move || term_chunks(&prepared.terms))
            .await
            .map_err(|e| Status::internal(format!("chunking terms failed: {e}")))?;
        chunks.extend(terms.into_iter().map(|terms| InstallChunk {
            terms,
            ..InstallChunk::default()
        }));
        self.node
            .install(futures::stream::iter(chunks.into_iter().map(Ok)))
            .await
            .map_err(|s| step_failed("Install", version, s))?;
        let install_ms = started.elapsed().as_millis() - prepare_ms;
        // Every leaf in the version holds it: queries may ask for it.
        self.pinned.set(version);
        let activated = self
            .node
            .activate(ActivateRequest { version })
            .await
            .map_err(|s| step_failed("Activate", version, s))?;
        skip.extend(activated.replicas_failed);
        // Where a publish's time went, step by step (Prepare includes
        // finding the leaves' versions).
        let activate_ms = started.elapsed().as_millis() - prepare_ms - install_ms;
        tracing::info!(version, num_docs, behind = ?skip, prepare_ms, install_ms, activate_ms, "published");
        self.announce(version).await;
        Ok(PublishResponse {
            version,
            previous_version: current,
            num_docs,
            staged_ops,
            replicas_behind: skip.into_iter().collect(),
            took_us: searchtree_proto::deadline::micros(started.elapsed()),
        })
    }
}

/// The reachable leaves to activate at `pinned` so that all agree: those
/// serving an older version while holding the pinned one. `None` when that
/// would not settle them: a leaf serving something else, or none to
/// activate (no leaf answered: an Activate then would tell the parents a
/// publish ended, and they would forget which replicas missed a load).
fn to_activate(leaves: &[LeafVersions], pinned: u64) -> Option<Vec<&LeafVersions>> {
    let lagging: Vec<&LeafVersions> = leaves
        .iter()
        .filter(|l| l.reachable && l.current != pinned)
        .collect();
    let settles = lagging
        .iter()
        .all(|l| l.current < pinned && l.installed.contains(&pinned));
    (pinned > 0 && !lagging.is_empty() && settles).then_some(lagging)
}

/// The current version every reachable leaf serves, or a refusal naming
/// the leaves when they disagree (or none answered).
pub fn agreed_current(leaves: &[LeafVersions]) -> Result<u64, Status> {
    let reachable: Vec<&LeafVersions> = leaves.iter().filter(|l| l.reachable).collect();
    let Some(first) = reachable.first() else {
        let errors: Vec<String> = leaves
            .iter()
            .take(MAX_LEAVES_NAMED)
            .map(|l| format!("{}: {}", l.replica, l.error))
            .collect();
        return Err(Status::unavailable(format!(
            "no leaf answered ({})",
            errors.join("; ")
        )));
    };
    if reachable.iter().all(|l| l.current == first.current) {
        return Ok(first.current);
    }
    let mut named: Vec<String> = reachable
        .iter()
        .take(MAX_LEAVES_NAMED)
        .map(|l| format!("shard {} {} at v{}", l.shard, l.replica, l.current))
        .collect();
    if reachable.len() > MAX_LEAVES_NAMED {
        named.push(format!("and {} more", reachable.len() - MAX_LEAVES_NAMED));
    }
    Err(Status::failed_precondition(format!(
        "leaves disagree on the current version: {} — a replica lacking the current version \
         copies it from a sibling as soon as its parent finds it behind (within seconds of \
         its return, or of the publish); retry then, and see `searchtree verify --root` if \
         it stays behind",
        named.join(", ")
    )))
}

/// The version a publish makes: one above the highest any reachable leaf
/// holds, current or installed; `None` past the last version there is.
pub fn next_version(leaves: &[LeafVersions]) -> Option<u64> {
    leaves
        .iter()
        .filter(|l| l.reachable)
        .flat_map(|l| l.installed.iter().copied().chain([l.current]))
        .max()
        .unwrap_or(0)
        .checked_add(1)
}

fn step_failed(step: &str, version: u64, status: Status) -> Status {
    Status::new(
        status.code(),
        format!(
            "publish of v{version} failed at {step}, leaves keep serving the current version: {}",
            status.message()
        ),
    )
}

fn publish_step(call: &str) -> Status {
    Status::failed_precondition(format!(
        "{call} is a step of Publish below the root: call Publish"
    ))
}

#[tonic::async_trait]
impl Corpus for RootCorpus {
    type LoadStream = AnswerStream<LoadAck>;
    type PrepareStream = AnswerStream<PrepareChunk>;
    type CopyVersionStream = AnswerStream<FileChunk>;

    async fn load(
        &self,
        request: Request<Streaming<LoadBatch>>,
    ) -> Result<Response<Self::LoadStream>, Status> {
        let guard = self.lock()?;
        self.settled_versions().await?;
        // After the versions settled: the children known then are the
        // ones the load goes to (found in etcd, they may have just come).
        let Some(num_shards) = self.node.children().whole_tree_shards() else {
            return Err(Status::failed_precondition(format!(
                "the root's shards {:?} are not 0..n (none: no child found yet): it cannot \
                 place documents",
                self.node.children().shards()
            )));
        };
        let activity = Activity::new();
        let incoming = idle_limited(
            numbered(request.into_inner(), "Load", "LoadBatch"),
            LOAD_IDLE,
            Arc::clone(&activity),
        );
        // Paced, a batch goes in chunks whose acknowledgements merge again.
        let (incoming, book) = match &self.pace {
            Some(pace) => {
                let book = ChunkBook::new();
                let chunks = chunked(incoming, Arc::clone(pace), Arc::clone(&book));
                (chunks, Some(book))
            }
            None => (incoming, None),
        };
        let loading = self.pace.as_ref().map(LoadPace::loading);
        let (mut acks, work) = self.node.load(num_shards, incoming);
        // The slot is free as soon as the load's work is done, whether or
        // not the client reads its last acknowledgements.
        let work = async move {
            work.await;
            if let Some(loading) = loading {
                loading.log_load_end();
            }
            drop(guard);
        };
        // The client's ack stream ends only once the slot is free again, so
        // that a publish sent as soon as it ends is not refused as busy.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        background::spawn(async move {
            let forward = async move {
                while let Some(ack) = acks.recv().await {
                    activity.touch();
                    let ack = match (ack, &book) {
                        (Ok(chunk), Some(book)) => match book.on_ack(chunk) {
                            Some(batch) => Ok(batch),
                            None => continue,
                        },
                        (ack, _) => ack,
                    };
                    if tx.send(ack).await.is_err() {
                        break; // the client went away
                    }
                }
                // Closed, so that the load's own sends fail fast rather
                // than wait for a reader that is gone.
                drop(acks);
                tx
            };
            let ((), tx) = tokio::join!(work, forward);
            drop(tx);
        });
        Ok(Response::new(Box::pin(receiver_stream(rx))))
    }

    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let guard = self.lock()?;
        // Decoding and summing statistics run on the bulk-work runtime.
        let root = self.clone();
        let published = background::spawn(async move {
            let published = root.publish_locked(request.into_inner()).await;
            drop(guard);
            published
        })
        .await
        .map_err(|e| Status::internal(format!("publish failed unexpectedly: {e}")))??;
        Ok(Response::new(published))
    }

    async fn prepare(
        &self,
        _request: Request<PrepareRequest>,
    ) -> Result<Response<Self::PrepareStream>, Status> {
        Err(publish_step("Prepare"))
    }

    async fn install(
        &self,
        _request: Request<Streaming<InstallChunk>>,
    ) -> Result<Response<InstallResponse>, Status> {
        Err(publish_step("Install"))
    }

    async fn activate(
        &self,
        _request: Request<ActivateRequest>,
    ) -> Result<Response<ActivateResponse>, Status> {
        Err(publish_step("Activate"))
    }

    async fn versions(
        &self,
        request: Request<VersionsRequest>,
    ) -> Result<Response<VersionsResponse>, Status> {
        // Within the caller's deadline, so that a hung leaf is named
        // unreachable before the caller gives up on the whole answer.
        let within = searchtree_proto::deadline::grpc_timeout(&request)
            .unwrap_or(VERSIONS_TIMEOUT)
            .min(VERSIONS_TIMEOUT);
        let mut versions = self.node.versions(within).await;
        versions.pinned = self.pinned.get();
        versions.role = "root".into();
        Ok(Response::new(versions))
    }

    async fn copy_version(
        &self,
        _request: Request<CopyVersionRequest>,
    ) -> Result<Response<Self::CopyVersionStream>, Status> {
        Err(leaf_only("CopyVersion"))
    }

    async fn catch_up(
        &self,
        _request: Request<CatchUpRequest>,
    ) -> Result<Response<CatchUpResponse>, Status> {
        Err(leaf_only("CatchUp"))
    }

    /// Under the same lock as a load or a publish: a discard in the middle
    /// of either would leave replicas with different staged operations.
    async fn discard(
        &self,
        _request: Request<DiscardRequest>,
    ) -> Result<Response<DiscardResponse>, Status> {
        let guard = self.lock()?;
        let node = Arc::clone(&self.node);
        let discarded = background::spawn(async move {
            let discarded = node.discard().await;
            drop(guard);
            discarded
        })
        .await
        .map_err(|e| Status::internal(format!("discard failed unexpectedly: {e}")))?;
        let ops: u64 = discarded.shards.iter().map(|s| s.staged_ops).sum();
        tracing::info!(ops, failed = ?discarded.replicas_failed, "staged operations discarded");
        Ok(Response::new(discarded))
    }
}

#[cfg(test)]
mod tests {
    use searchtree_parent::corpus::CorpusChildren;
    use searchtree_parent::fake_corpus::FakeLeaf;
    use searchtree_parent::spec::ChildSpec;

    use super::*;

    fn leaf(shard: u32, port: u16, current: u64, installed: &[u64]) -> LeafVersions {
        LeafVersions {
            shard,
            replica: format!("127.0.0.1:{port}"),
            reachable: true,
            current,
            installed: installed.to_vec(),
            ..LeafVersions::default()
        }
    }

    #[test]
    fn only_reachable_leaves_holding_the_pinned_version_are_activated() {
        // One leaf missed the Activate of v3: activating it settles them.
        let missed = [leaf(0, 4000, 3, &[2, 3]), leaf(1, 4001, 2, &[2, 3])];
        let lagging = to_activate(&missed, 3).expect("activate");
        assert_eq!(lagging.len(), 1);
        assert_eq!(lagging[0].replica, "127.0.0.1:4001");
        // A leaf lacking v3 must catch up from a sibling instead.
        assert!(to_activate(&[leaf(0, 4000, 3, &[3]), leaf(1, 4001, 2, &[2])], 3).is_none());
        // No leaf answered: nothing to activate, and no Activate may tell
        // the parents that a publish ended.
        let mut gone = leaf(0, 4000, 0, &[]);
        gone.reachable = false;
        assert!(to_activate(&[gone.clone(), gone], 3).is_none());
        assert!(to_activate(&missed, 0).is_none(), "nothing pinned yet");
    }

    #[test]
    fn leaves_on_different_versions_are_named() {
        let agree = [leaf(0, 4000, 2, &[2]), leaf(1, 4001, 2, &[2, 3])];
        assert_eq!(agreed_current(&agree).unwrap(), 2);
        let mut down = leaf(1, 4002, 0, &[]);
        down.reachable = false;
        let err =
            agreed_current(&[leaf(0, 4000, 1, &[1]), leaf(1, 4001, 2, &[2]), down]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            err.message(),
            "leaves disagree on the current version: shard 0 127.0.0.1:4000 at v1, \
             shard 1 127.0.0.1:4001 at v2 — a replica lacking the current version copies \
             it from a sibling as soon as its parent finds it behind (within seconds of its \
             return, or of the publish); retry then, and see `searchtree verify --root` if it \
             stays behind"
        );
    }

    #[test]
    fn no_reachable_leaf_is_unavailable() {
        let mut down = leaf(0, 4000, 0, &[]);
        down.reachable = false;
        down.error = "Unavailable: connection refused".into();
        let err = agreed_current(&[down]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(err.message().contains("connection refused"));
    }

    fn root_over(leaves: &[&FakeLeaf]) -> (RootCorpus, Arc<PinnedVersion>) {
        let specs: Vec<ChildSpec> = leaves
            .iter()
            .map(|l| format!("{}@{}", l.shard, l.addr).parse().unwrap())
            .collect();
        let node = Arc::new(CorpusNode::new(CorpusChildren::from_specs(&specs).unwrap()));
        let pinned = Arc::new(PinnedVersion::default());
        (RootCorpus::new(node, Arc::clone(&pinned)), pinned)
    }

    async fn publish(root: &RootCorpus) -> Result<PublishResponse, Status> {
        root.publish(Request::new(PublishRequest::default()))
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn publish_makes_the_next_version_installs_totals_pins_then_activates() {
        let (a, b) = (FakeLeaf::start(0).await, FakeLeaf::start(1).await);
        a.script(|s| {
            s.installed = vec![1, 3];
            s.staged_ops = 4;
            s.num_tokens.insert("body".into(), 70);
            s.terms.insert("body".into(), vec![(b"cat".to_vec(), 2)]);
        });
        b.script(|s| {
            s.num_docs = 5;
            s.num_tokens.insert("body".into(), 30);
            s.terms.insert("body".into(), vec![(b"cat".to_vec(), 1)]);
        });
        let (root, pinned) = root_over(&[&a, &b]);
        root.spawn_pin_at_start().await.unwrap();
        assert_eq!(pinned.get(), 1, "learnt from the leaves");

        let published = publish(&root).await.unwrap();
        assert_eq!(
            (published.version, published.previous_version),
            (4, 1),
            "one above anything a leaf holds"
        );
        assert_eq!((published.num_docs, published.staged_ops), (15, 4));
        assert!(published.replicas_behind.is_empty());
        assert_eq!(pinned.get(), 4);
        for leaf in [&a, &b] {
            let chunks = leaf.seen(|s| s.installed_chunks.clone());
            assert_eq!((chunks[0].version, chunks[0].num_docs), (4, 15));
            assert_eq!(chunks[0].num_tokens["body"], 100);
            assert_eq!(chunks[1].terms[0].doc_freqs, [3], "summed over shards");
            assert_eq!(leaf.seen(|s| s.activated.clone()), [4]);
        }
        let versions = root
            .versions(Request::new(VersionsRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(versions.pinned, 4);
        assert!(versions.leaves.iter().all(|l| l.current == 4));
    }

    #[tokio::test]
    async fn a_version_published_through_another_root_is_followed() {
        let (a, b) = (FakeLeaf::start(0).await, FakeLeaf::start(1).await);
        let (root, pinned) = root_over(&[&a, &b]);
        pinned.set(1);
        let following = root.spawn_follow_publishes(Duration::from_millis(20), None);
        // Another root published v2: one leaf activated so far, then both.
        a.script(|s| s.current = 2);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(pinned.get(), 1, "leaves that disagree move nothing");
        b.script(|s| s.current = 2);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pinned.get() != 2 {
            assert!(std::time::Instant::now() < deadline, "never followed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        following.abort();
    }

    #[tokio::test]
    async fn an_announced_publish_is_followed_at_once_once_the_leaves_serve_it() {
        let (a, b) = (FakeLeaf::start(0).await, FakeLeaf::start(1).await);
        let (root, pinned) = root_over(&[&a, &b]);
        pinned.set(1);
        let (announce, announced) = watch::channel(0);
        // Polling an hour apart: only an announcement moves the pin here.
        let following = root.spawn_follow_publishes(Duration::from_secs(3600), Some(announced));
        async fn until_pinned(pinned: &PinnedVersion, version: u64) {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while pinned.get() != version {
                assert!(
                    std::time::Instant::now() < deadline,
                    "never pinned {version}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        // Announced while the leaves are still switching: asked again
        // until they all serve it.
        a.script(|s| s.current = 2);
        announce.send(2).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pinned.get(), 1, "leaves that disagree move nothing");
        b.script(|s| s.current = 2);
        until_pinned(&pinned, 2).await;

        // An announcement the leaves do not bear out (a value written by
        // hand) moves nothing.
        announce.send(9).unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(pinned.get(), 2);

        // The next real publish: announced, followed.
        a.script(|s| s.current = 10);
        b.script(|s| s.current = 10);
        announce.send(10).unwrap();
        until_pinned(&pinned, 10).await;
        following.abort();
    }

    #[tokio::test]
    async fn a_slow_sweep_for_other_roots_publishes_does_not_make_a_load_wait() {
        let (a, b) = (FakeLeaf::start(0).await, FakeLeaf::start(1).await);
        // One leaf takes its time to say its versions (as one just started
        // does, reading its shard once): the sweep lasts seconds.
        b.script(|s| s.hung_versions = true);
        let (root, pinned) = root_over(&[&a, &b]);
        pinned.set(1);
        let following = root.spawn_follow_publishes(Duration::from_millis(10), None);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            root.lock().is_ok(),
            "a load or publish would be refused as busy"
        );
        following.abort();
    }

    #[tokio::test]
    async fn a_failed_install_neither_pins_nor_activates() {
        let (a, b) = (FakeLeaf::start(0).await, FakeLeaf::start(1).await);
        b.script(|s| s.failing_install = true);
        let (root, pinned) = root_over(&[&a, &b]);
        pinned.set(1);
        let err = publish(&root).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(
            err.message().starts_with("publish of v2 failed at Install"),
            "{}",
            err.message()
        );
        assert_eq!(pinned.get(), 1);
        assert!(a.seen(|s| s.activated.is_empty()));
    }

    #[tokio::test]
    async fn loads_wait_for_agreeing_leaves_and_run_one_at_a_time() {
        let (a, b) = (FakeLeaf::start(0).await, FakeLeaf::start(1).await);
        b.script(|s| s.current = 2);
        let (root, _) = root_over(&[&a, &b]);
        let err = publish(&root).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().starts_with("leaves disagree"),
            "{}",
            err.message()
        );

        // While one operation holds the slot, another is refused at once.
        let held = root.lock().unwrap();
        let err = publish(&root).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Aborted);
        assert_eq!(err.message(), "another load or publish is running");
        drop(held);
        b.script(|s| s.current = 1);
        publish(&root).await.unwrap();
    }

    #[tokio::test]
    async fn a_leaf_that_missed_an_activate_is_activated_before_the_next_publish() {
        let (a, b) = (FakeLeaf::start(0).await, FakeLeaf::start(1).await);
        a.script(|s| {
            s.current = 2;
            s.installed = vec![1, 2];
        });
        // b installed version 2 but was away when it was activated.
        b.script(|s| s.installed = vec![1, 2]);
        let (root, pinned) = root_over(&[&a, &b]);
        pinned.set(2);
        let published = publish(&root).await.unwrap();
        assert_eq!(published.previous_version, 2);
        assert_eq!(published.version, 3);
        assert_eq!(b.state.lock().unwrap().activated, [2, 3]);

        // A leaf that lacks the pinned version is not activated: it must
        // copy it from a sibling first.
        let (c, d) = (FakeLeaf::start(0).await, FakeLeaf::start(1).await);
        c.script(|s| {
            s.current = 2;
            s.installed = vec![1, 2];
        });
        let (root, pinned) = root_over(&[&c, &d]);
        pinned.set(2);
        let err = publish(&root).await.unwrap_err();
        assert!(err.message().starts_with("leaves disagree"), "{err}");
        assert!(d.state.lock().unwrap().activated.is_empty());
    }

    /// A root whose load pace holds loads to `rate`, serving its Corpus on
    /// a loopback port; queries keep being answered (within the idle tail)
    /// while `queries` lives.
    async fn paced_root_over(
        leaves: &[&FakeLeaf],
        rate: f64,
    ) -> (String, Arc<LoadPace>, tokio::task::JoinHandle<()>) {
        use crate::load_pace::LoadPaceConfig;
        let pace = Arc::new(LoadPace::new(LoadPaceConfig::default()));
        for _ in 0..1000 {
            pace.on_query(Duration::from_millis(2));
        }
        pace.set_rate_for_test(rate);
        let queries = {
            let pace = Arc::clone(&pace);
            tokio::spawn(async move {
                loop {
                    pace.on_query(Duration::from_millis(2));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let (root, pinned) = root_over(leaves);
        pinned.set(1);
        let root = root.with_load_pace(Some(Arc::clone(&pace)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = futures::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(searchtree_node::serving::corpus_service(root))
                .serve_with_incoming(incoming),
        );
        (format!("http://{addr}"), pace, queries)
    }

    #[tokio::test]
    async fn a_paced_load_reaches_the_leaves_in_chunks_and_is_acknowledged_per_batch() {
        use searchtree_proto::pb::DocOp;
        use searchtree_proto::pb::corpus_client::CorpusClient;

        let (a, b) = (FakeLeaf::start(0).await, FakeLeaf::start(1).await);
        // 20,000 operations a second: chunks of 2,000.
        let (addr, pace, queries) = paced_root_over(&[&a, &b], 20_000.0).await;
        let mut client = CorpusClient::connect(addr).await.unwrap();
        let batch = |seq: u64, from: u64| LoadBatch {
            seq,
            ops: (from..from + 5000)
                .map(|i| DocOp {
                    id: format!("doc-{i}"),
                    body: "words".into(),
                    line: i + 1,
                    ..DocOp::default()
                })
                .collect(),
        };
        let started = Instant::now();
        let batches = futures::stream::iter([batch(10, 0), batch(11, 5000)]);
        let mut acks = client.load(batches).await.unwrap().into_inner();
        let mut answered = Vec::new();
        while let Some(ack) = acks.message().await.unwrap() {
            answered.push((ack.seq, ack.ok, ack.added));
        }
        // One acknowledgement per batch, under the client's numbers, with
        // the sums of its chunks'.
        assert_eq!(answered, [(10, true, 5000), (11, true, 5000)]);
        // The leaves got every operation once, in chunks of the pace's.
        let received: Vec<(u64, Vec<String>)> = [&a, &b]
            .iter()
            .flat_map(|leaf| leaf.seen(|s| s.batches.clone()))
            .collect();
        let ops: usize = received.iter().map(|(_, ids)| ids.len()).sum();
        assert_eq!(ops, 10_000);
        let chunks: std::collections::BTreeSet<u64> =
            received.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            chunks.len(),
            6,
            "each batch in chunks of 2,000, 2,000 and 1,000"
        );
        // Paced: each chunk goes a chunk's time at the rate after the one
        // before (fast queries raise the rate a little meanwhile).
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        assert!(pace.summary().rate.unwrap() >= 20_000.0);
        queries.abort();
    }

    #[test]
    fn the_next_version_is_above_anything_installed() {
        let leaves = [leaf(0, 4000, 2, &[2, 4]), leaf(1, 4001, 3, &[3])];
        assert_eq!(next_version(&leaves), Some(5));
        let mut down = leaf(2, 4002, 9, &[9]);
        down.reachable = false;
        assert_eq!(next_version(&[leaf(0, 4000, 1, &[1]), down]), Some(2));
        assert_eq!(next_version(&[leaf(0, 4000, 1, &[u64::MAX])]), None);
    }
}
