//! The leaf's `searchtree.v1.Corpus` service: each call is one store
//! operation on a low-priority thread of its own ([`background`]), one at
//! a time (a mutex around the store); searches read the held versions
//! without taking it.
//!
//! A leaf started without `--data-dir` serves its build read-only: it
//! answers Versions and CopyVersion (a sibling may copy its build) and
//! refuses the calls that would change it.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use searchtree_node::ops::layer::ClientWait;
use searchtree_node::serving::MAX_CORPUS_MESSAGE_BYTES;
use searchtree_node::serving::request_stream::numbered;
use searchtree_proto::forwarded::{self, describe_shards};
use searchtree_proto::pb::corpus_client::CorpusClient;
use searchtree_proto::pb::corpus_server::Corpus;
use searchtree_proto::pb::{
    ActivateRequest, ActivateResponse, CatchUpRequest, CatchUpResponse, CopyVersionRequest,
    DiscardRequest, DiscardResponse, FailureReason, FileChunk, InstallChunk, InstallResponse,
    LeafVersions, LoadAck, LoadBatch, PrepareChunk, PrepareRequest, PublishRequest,
    PublishResponse, ShardDiscard, ShardFailure, VersionsRequest, VersionsResponse,
};
use searchtree_proto::sharding::NUM_SHARDS_METADATA;
use tokio::sync::{Mutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::background;
use super::copy::{VersionWriter, read_version};
use super::disk::DiskFloor;
use super::held::HeldVersions;
use super::local::LocalTotals;
use super::prepare::term_chunks;
use super::store::CorpusStore;
use super::{CorpusError, fsio};
use crate::node::{LeafCounter, LeafCounters};

/// How a leaf without a data directory refuses to change.
pub const READ_ONLY: &str = "started without --data-dir: this leaf serves its build read-only";

/// Batches (and their acknowledgements) buffered per Load stream.
const LOAD_IN_FLIGHT: usize = 4;

/// The most batches staged under one commit (those already waiting when a
/// commit starts).
const MAX_GROUP_BATCHES: usize = 8;

/// The most versions a leaf sends to copying siblings at once. Each copy
/// holds a thread reading the version's files for as long as its reader
/// takes; past this a copy is refused with RESOURCE_EXHAUSTED, which a
/// catching-up replica retries after a back-off.
pub const MAX_COPIES_SENT: usize = 4;

/// How long a catch-up waits to connect to its source.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Shared = Arc<Mutex<CorpusStore>>;

/// Serves `searchtree.v1.Corpus` for one leaf.
pub struct LeafCorpus {
    held: Arc<HeldVersions>,
    store: Option<Shared>,
    counters: Arc<LeafCounters>,
    /// The leaf's address, as replicas are named.
    name: String,
    /// The current version's totals of a read-only leaf, computed once.
    read_only_local: OnceLock<LocalTotals>,
    /// Slots for the copies being sent ([`MAX_COPIES_SENT`]).
    copies_sent: Arc<Semaphore>,
    /// The one Install under way. A second one waiting for the store
    /// behind the first would hold up its sender, whose other streams feed
    /// the first: a leaf reached twice by one publish (under two parents,
    /// or registered for a shard it does not serve) stalled every leaf's
    /// Install that way, for good.
    installing: Arc<Semaphore>,
    /// The one Prepare under way, until its terms are sent: a second one
    /// (a leaf reached twice) would rebuild the candidate they are read from.
    preparing: Arc<Semaphore>,
    /// How long a stream that holds the store (an Install coming in, a
    /// version being copied) may go without a message ([`STALLED_STREAM`]).
    stalled_after: Duration,
}

impl LeafCorpus {
    /// The service of a leaf with a data directory: every call is served.
    pub fn new(store: CorpusStore, counters: Arc<LeafCounters>, name: String) -> Self {
        let held = store.held();
        Self::serving(held, Some(Arc::new(Mutex::new(store))), counters, name)
    }

    /// The same service, giving up a stream that holds the store after
    /// `stalled_after` without a message instead of [`STALLED_STREAM`] (for
    /// tests that watch it happen).
    pub fn giving_up_after(mut self, stalled_after: Duration) -> Self {
        self.stalled_after = stalled_after;
        self
    }

    /// The service of a leaf without a data directory, serving `held` (its
    /// build) read-only.
    pub fn read_only(held: Arc<HeldVersions>, counters: Arc<LeafCounters>, name: String) -> Self {
        Self::serving(held, None, counters, name)
    }

    /// The service over `held`, changed through `store` when there is one.
    fn serving(
        held: Arc<HeldVersions>,
        store: Option<Shared>,
        counters: Arc<LeafCounters>,
        name: String,
    ) -> Self {
        let corpus = LeafCorpus {
            held,
            store,
            counters,
            name,
            read_only_local: OnceLock::new(),
            copies_sent: Arc::new(Semaphore::new(MAX_COPIES_SENT)),
            stalled_after: STALLED_STREAM,
            installing: Arc::new(Semaphore::new(1)),
            preparing: Arc::new(Semaphore::new(1)),
        };
        corpus.update_gauge();
        corpus
    }

    fn store(&self) -> Result<Shared, Status> {
        self.store
            .clone()
            .ok_or_else(|| Status::failed_precondition(READ_ONLY))
    }

    /// The slot of a publish step that runs one at a time (`doing` says
    /// which, e.g. "installing"), or ABORTED at once: a step already under
    /// way means one publish reached this leaf twice, and waiting behind it
    /// would stall the sender of both.
    fn one_at_a_time(
        &self,
        slot: &Arc<Semaphore>,
        doing: &str,
    ) -> Result<OwnedSemaphorePermit, Status> {
        Arc::clone(slot).try_acquire_owned().map_err(|_| {
            Status::aborted(format!(
                "{} is already {doing} a version: one publish reached it twice (is it listed \
                 under two parents, or registered in etcd for a shard it does not serve?)",
                self.name
            ))
        })
    }

    /// The shard this leaf serves (its current version's).
    fn shard(&self) -> Result<u32, Status> {
        let searcher = self
            .held
            .get(self.held.current())
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(searcher.shard().meta.shard)
    }

    /// Refuses a step of the root's `call` (a publish's, a discard) that a
    /// client sent here rather than through the root (see [`forwarded`]).
    fn step_from_above(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        call: &str,
    ) -> Result<(), Status> {
        if forwarded::is_forwarded(metadata) {
            Ok(())
        } else {
            Err(not_root(self.shard()?, call))
        }
    }

    fn update_gauge(&self) {
        self.counters
            .set(LeafCounter::VersionsHeld, self.held.numbers().len() as u64);
        self.counters
            .set(LeafCounter::CurrentVersion, self.held.current());
    }

    /// Runs `op` on the store, alone, on a low-priority thread.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut CorpusStore) -> Result<T, CorpusError> + Send + 'static,
    ) -> Result<T, Status> {
        let guard = self.store()?.lock_owned().await;
        let (_, result) = blocking(guard, op).await?;
        self.update_gauge();
        result.map_err(|e| refused(&self.counters, e))
    }

    fn versions_read_only(&self) -> Result<LeafVersions, Status> {
        let current = self.held.current();
        let searcher = self
            .held
            .get(current)
            .map_err(|e| Status::internal(e.to_string()))?;
        let shard = searcher.shard();
        let local = match self.read_only_local.get() {
            Some(local) => local.clone(),
            None => {
                let local = LocalTotals::of_undeleted(&shard.reader.searcher(), shard.fields)
                    .map_err(|e| Status::internal(e.to_string()))?;
                self.read_only_local.get_or_init(|| local).clone()
            }
        };
        Ok(LeafVersions {
            shard: shard.meta.shard,
            replica: self.name.clone(),
            reachable: true,
            error: String::new(),
            current,
            installed: self.held.numbers(),
            staged_ops: 0,
            num_docs: local.num_docs,
            digest: local.digest(),
            snapshot: shard.meta.input_checksum.clone(),
            misplaced: false,
        })
    }
}

/// Runs `op` on the store behind `guard` on a low-priority thread; gives the
/// guard back for the next step.
async fn blocking<T: Send + 'static>(
    mut guard: OwnedMutexGuard<CorpusStore>,
    op: impl FnOnce(&mut CorpusStore) -> Result<T, CorpusError> + Send + 'static,
) -> Result<(OwnedMutexGuard<CorpusStore>, Result<T, CorpusError>), Status> {
    background::spawn(move || {
        let result = op(&mut guard);
        (guard, result)
    })
    .await
    .map_err(|e| Status::internal(format!("corpus operation failed unexpectedly: {e}")))
}

#[tonic::async_trait]
impl Corpus for LeafCorpus {
    type LoadStream = ReceiverStream<Result<LoadAck, Status>>;
    type PrepareStream = futures::stream::BoxStream<'static, Result<PrepareChunk, Status>>;
    type CopyVersionStream = futures::stream::BoxStream<'static, Result<FileChunk, Status>>;

    async fn load(
        &self,
        request: Request<Streaming<LoadBatch>>,
    ) -> Result<Response<Self::LoadStream>, Status> {
        let store = self.store()?;
        let placement = store.lock().await.placement();
        // Only the root may start a load: a client's, sent here, would
        // stage operations on this replica alone.
        let Some(value) = request.metadata().get(NUM_SHARDS_METADATA) else {
            return Err(not_root(placement.shard, "load"));
        };
        let total = value.to_str().ok().and_then(|v| v.parse::<u32>().ok());
        if total != Some(placement.num_shards) {
            return Err(Status::invalid_argument(format!(
                "{NUM_SHARDS_METADATA} is {value:?}, but shard {} belongs to a corpus of {} shards",
                placement.shard, placement.num_shards
            )));
        }
        // Looking for more batches without waiting for them leaves the call
        // marked as waiting on its client: the commit after says the turn
        // is this node's.
        let client_wait = request.extensions().get::<ClientWait>().cloned();
        // A batch that does not decode ends the stream, named by its
        // number: the batches before it are staged and acknowledged as
        // usual (a group commit stops at it), none after it is read.
        let mut inbound = numbered(request.into_inner(), "Load", "LoadBatch");
        let (tx, rx) = mpsc::channel(LOAD_IN_FLIGHT);
        let counters = Arc::clone(&self.counters);
        // Decoding batches is bulk work: on the low-priority runtime.
        searchtree_node::background::spawn(async move {
            let mut ended = None;
            while ended.is_none() {
                let first = match inbound.next().await {
                    Some(Ok(batch)) => batch,
                    None => break,
                    Some(Err(status)) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                // Group commit: the batches already waiting behind this one
                // are staged with it under one commit.
                let mut group = vec![first];
                while group.len() < MAX_GROUP_BATCHES {
                    match inbound.next().now_or_never() {
                        Some(Some(Ok(batch))) => group.push(batch),
                        Some(None) => ended = Some(Ok(())),
                        Some(Some(Err(status))) => ended = Some(Err(status)),
                        None => break, // nothing more has arrived yet
                    }
                    if ended.is_some() {
                        break;
                    }
                }
                if let Some(wait) = &client_wait {
                    wait.working();
                }
                let seqs: Vec<u64> = group.iter().map(|b| b.seq).collect();
                let guard = Arc::clone(&store).lock_owned().await;
                let acks = match blocking(guard, move |s| s.load_group(&group)).await {
                    Ok((_, Ok(acks))) => {
                        for ack in &acks {
                            let applied = u64::from(
                                ack.added + ack.replaced + ack.deleted + ack.delete_missing,
                            );
                            counters.inc(LeafCounter::LoadBatches);
                            counters.add(LeafCounter::LoadedOps, applied);
                            counters.add(LeafCounter::LoadRefusedOps, ack.refused.len() as u64);
                        }
                        acks
                    }
                    Ok((_, Err(e))) => {
                        let e = refused(&counters, e);
                        seqs.iter()
                            .map(|&seq| failed_ack(seq, placement.shard, e.message()))
                            .collect()
                    }
                    Err(status) => seqs
                        .iter()
                        .map(|&seq| failed_ack(seq, placement.shard, status.message()))
                        .collect(),
                };
                for ack in acks {
                    if tx.send(Ok(ack)).await.is_err() {
                        return;
                    }
                }
            }
            if let Some(Err(status)) = ended {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn publish(
        &self,
        _: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        Err(not_root(self.shard()?, "publish"))
    }

    async fn prepare(
        &self,
        request: Request<PrepareRequest>,
    ) -> Result<Response<Self::PrepareStream>, Status> {
        self.step_from_above(request.metadata(), "publish")?;
        let preparing = self.one_at_a_time(&self.preparing, "preparing")?;
        let PrepareRequest {
            version,
            from_build,
            ..
        } = request.into_inner();
        let (summary, dir) = self
            .run(move |s| {
                let summary = s.prepare(version, &from_build)?;
                let dir = s.tmp_dir(version);
                Ok((summary, dir))
            })
            .await?;
        self.counters.inc(LeafCounter::Prepares);
        let (tx, rx) = mpsc::channel(4);
        let first = PrepareChunk {
            shards: vec![summary],
            terms: Vec::new(),
            left_out: Vec::new(),
        };
        tx.send(Ok(first))
            .await
            .map_err(|_| Status::cancelled("the caller went away"))?;
        // The slot is held by the answer and by the thread reading the
        // candidate's terms, until both are done: a caller that drops the
        // answer early must not let the next Prepare rebuild the directory
        // while this thread still reads it.
        let preparing = Arc::new(preparing);
        let reading = Arc::clone(&preparing);
        background::detach(move || {
            if let Err(e) = term_chunks(&dir, |chunk| tx.blocking_send(Ok(chunk)).is_ok()) {
                let _ = tx.blocking_send(Err(e.into()));
            }
            drop(reading);
        });
        Ok(Response::new(holding(preparing, rx)))
    }

    async fn install(
        &self,
        request: Request<Streaming<InstallChunk>>,
    ) -> Result<Response<InstallResponse>, Status> {
        self.step_from_above(request.metadata(), "publish")?;
        let store = self.store()?;
        let _installing = self.one_at_a_time(&self.installing, "installing")?;
        let mut inbound = numbered(request.into_inner(), "Install", "InstallChunk");
        let first = inbound
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("an Install stream needs a first chunk"))??;
        let guard = store.lock_owned().await;
        let shard = guard.placement().shard;
        let (guard, begun) = blocking(guard, move |s| s.begin_install(&first)).await?;
        let mut stats = begun.map_err(|e| refused(&self.counters, e))?;
        // The store is locked until the last chunk: a caller that stops
        // sending must not hold every other step of this leaf for ever.
        let stalled_after = self.stalled_after;
        while let Some(chunk) = tokio::time::timeout(stalled_after, inbound.next())
            .await
            .map_err(|_| stalled("Install", "chunk", stalled_after))?
            .transpose()?
        {
            stats = background::spawn(move || stats.absorb(&chunk.terms).map(|()| stats))
                .await
                .map_err(|e| Status::internal(format!("install failed unexpectedly: {e}")))??;
        }
        let (guard, finished) = blocking(guard, move |s| s.finish_install(stats)).await?;
        drop(guard);
        finished?;
        self.update_gauge();
        self.counters.inc(LeafCounter::Installs);
        Ok(Response::new(InstallResponse {
            shards: vec![shard],
        }))
    }

    async fn activate(
        &self,
        request: Request<ActivateRequest>,
    ) -> Result<Response<ActivateResponse>, Status> {
        self.step_from_above(request.metadata(), "publish")?;
        let version = request.into_inner().version;
        self.run(move |s| s.activate(version)).await?;
        self.counters.inc(LeafCounter::Activations);
        Ok(Response::new(ActivateResponse {
            replicas: vec![self.name.clone()],
            replicas_failed: Vec::new(),
        }))
    }

    async fn versions(
        &self,
        _: Request<VersionsRequest>,
    ) -> Result<Response<VersionsResponse>, Status> {
        let leaf = match &self.store {
            Some(_) => self.run(|s| s.versions()).await?,
            None => self.versions_read_only()?,
        };
        Ok(Response::new(VersionsResponse {
            leaves: vec![leaf],
            pinned: 0,
            role: "leaf".into(),
        }))
    }

    async fn copy_version(
        &self,
        request: Request<CopyVersionRequest>,
    ) -> Result<Response<Self::CopyVersionStream>, Status> {
        // Without the store's lock: a replica copying from this one while
        // this one copies from it must not wait for each other.
        let version = request.into_inner().version;
        if version == 0 {
            return Err(Status::invalid_argument("CopyVersion needs a version"));
        }
        let dir = self
            .held
            .get(version)
            .map_err(|e| Status::failed_precondition(e.to_string()))?
            .shard()
            .dir
            .clone();
        let slot = Arc::clone(&self.copies_sent)
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "this leaf is already sending {MAX_COPIES_SENT} copies of its versions; \
                     retry when one has ended"
                ))
            })?;
        let (tx, rx) = mpsc::channel(4);
        background::detach(move || {
            // Ends at the first chunk the stream below can no longer take.
            if let Err(e) = read_version(&dir, |chunk| tx.blocking_send(Ok(chunk)).is_ok()) {
                let _ = tx.blocking_send(Err(e.into()));
            }
        });
        Ok(Response::new(holding(slot, rx)))
    }

    async fn discard(
        &self,
        request: Request<DiscardRequest>,
    ) -> Result<Response<DiscardResponse>, Status> {
        self.step_from_above(request.metadata(), "discard")?;
        let shard = self.shard()?;
        let staged_ops = self.run(|s| s.discard_staged()).await?;
        tracing::info!(staged_ops, "staged operations discarded");
        Ok(Response::new(DiscardResponse {
            shards: vec![ShardDiscard {
                shard,
                replica: self.name.clone(),
                staged_ops,
            }],
            replicas_failed: Vec::new(),
        }))
    }

    async fn catch_up(
        &self,
        request: Request<CatchUpRequest>,
    ) -> Result<Response<CatchUpResponse>, Status> {
        // A parent sends it to a replica that is behind; sent by a client,
        // it could move one replica to another version than its siblings'.
        if !forwarded::is_forwarded(request.metadata()) {
            return Err(Status::failed_precondition(format!(
                "this is a leaf (shard {}): CatchUp is sent by its parent, to bring a replica \
                 that is behind to its siblings' version; a client does not send it (the \
                 tree's parents catch replicas up by themselves)",
                self.shard()?
            )));
        }
        let started = Instant::now();
        let CatchUpRequest {
            version,
            source,
            activate,
        } = request.into_inner();
        if source == self.name {
            return Err(Status::invalid_argument(format!(
                "a replica cannot catch up from itself ({source})"
            )));
        }
        let guard = self.store()?.lock_owned().await;
        let bytes = if self.held.numbers().contains(&version) {
            let (_, result) = blocking(guard, move |s| {
                if activate {
                    s.activate(version).map(|_| ())
                } else {
                    Ok(())
                }
            })
            .await?;
            result?;
            0
        } else {
            let (guard, begun) = blocking(guard, move |s| {
                let tmp = s.begin_copy(version)?;
                Ok((tmp, s.disk_floor()))
            })
            .await?;
            let (tmp, floor) = begun.map_err(|e| refused(&self.counters, e))?;
            let copied = copy_from(
                &source,
                version,
                tmp.clone(),
                floor,
                &self.counters,
                self.stalled_after,
            );
            match copied.await {
                Ok(bytes) => {
                    let (_, adopted) =
                        blocking(guard, move |s| s.adopt_copy(version, &tmp, activate)).await?;
                    adopted?;
                    bytes
                }
                Err(status) => {
                    let _ = background::spawn(move || fsio::remove_dir_if_exists(&tmp)).await;
                    return Err(status);
                }
            }
        };
        self.update_gauge();
        self.counters.inc(LeafCounter::CatchUps);
        if activate {
            self.counters.inc(LeafCounter::Activations);
        }
        Ok(Response::new(CatchUpResponse {
            version,
            bytes,
            took_us: started.elapsed().as_micros() as u64,
        }))
    }
}

/// The refusal of a client's `call` sent to this leaf rather than the root.
fn not_root(shard: u32, call: &str) -> Status {
    forwarded::not_root(&format!("a leaf ({})", describe_shards(&[shard])), call)
}

/// An acknowledgement saying the batch was not committed here, and why.
/// A response stream of what `rx` receives that holds `slot` until it ends
/// or its reader goes away (dropping it).
fn holding<T: Send + 'static, S: Send + Sync + 'static>(
    slot: S,
    rx: mpsc::Receiver<T>,
) -> futures::stream::BoxStream<'static, T> {
    ReceiverStream::new(rx)
        .map(move |item| {
            let _slot = &slot;
            item
        })
        .boxed()
}

/// The status of a failed corpus step; a refusal for want of disk
/// ([`super::disk`]) is counted.
fn refused(counters: &LeafCounters, e: CorpusError) -> Status {
    if matches!(e, CorpusError::DiskFull(_)) {
        counters.inc(LeafCounter::DiskRefusals);
    }
    Status::from(e)
}

fn failed_ack(seq: u64, shard: u32, message: &str) -> LoadAck {
    LoadAck {
        seq,
        ok: false,
        failures: vec![ShardFailure {
            shard,
            reason: FailureReason::Error as i32,
            message: message.to_string(),
        }],
        ..Default::default()
    }
}

/// How long a stream that holds the store's lock (an Install coming in,
/// a version being copied) may go without a message before it is given
/// up.
pub(crate) const STALLED_STREAM: Duration = Duration::from_secs(30);

/// The refusal of a `call` whose stream sent no `what` for `after`.
fn stalled(call: &str, what: &str, after: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "{call}: no {what} for {after:?}; given up, so that the leaf's other steps can go on"
    ))
}

/// Copies version `version` from the replica at `source` into `dir`,
/// keeping `floor` free (a refusal counted in `counters`), giving up after
/// `stalled_after` without a message; returns the bytes copied.
async fn copy_from(
    source: &str,
    version: u64,
    dir: PathBuf,
    floor: DiskFloor,
    counters: &LeafCounters,
    stalled_after: Duration,
) -> Result<u64, Status> {
    let unavailable = |e: &dyn std::fmt::Display| {
        Status::unavailable(format!("cannot copy version {version} from {source}: {e}"))
    };
    let endpoint = searchtree_node::ops::client::endpoint(source)
        .map_err(|e| Status::invalid_argument(format!("source {source:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| unavailable(&e))?;
    let mut client = CorpusClient::new(searchtree_node::ops::client::channel(channel))
        .max_decoding_message_size(MAX_CORPUS_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CORPUS_MESSAGE_BYTES);
    // The store is locked while the copy runs: a source that stops
    // sending must not hold every other step of this leaf for ever.
    let mut stream = tokio::time::timeout(
        stalled_after,
        client.copy_version(CopyVersionRequest { version }),
    )
    .await
    .map_err(|_| stalled("CopyVersion", "answer", stalled_after))??
    .into_inner();
    let mut writer = VersionWriter::new(dir, floor);
    while let Some(chunk) = tokio::time::timeout(stalled_after, stream.message())
        .await
        .map_err(|_| stalled("CopyVersion", "chunk", stalled_after))??
    {
        writer = background::spawn(move || writer.write(&chunk).map(|()| writer))
            .await
            .map_err(|e| Status::internal(format!("copy failed unexpectedly: {e}")))?
            .map_err(|e| refused(counters, e))?;
    }
    background::spawn(move || writer.finish())
        .await
        .map_err(|e| Status::internal(format!("copy failed unexpectedly: {e}")))?
        .map_err(|e| refused(counters, e))
}
