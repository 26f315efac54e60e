//! In-process leaves speaking the `Corpus` service over real gRPC on
//! 127.0.0.1, with scripted answers: for testing how inner nodes (and the
//! root) pass corpus calls down and fold the answers. They record what they
//! were sent; they keep no index.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use searchtree_node::serving::corpus_service;
use searchtree_proto::pb::corpus_server::Corpus;
use searchtree_proto::pb::{
    ActivateRequest, ActivateResponse, CatchUpRequest, CatchUpResponse, CopyVersionRequest,
    DiscardRequest, DiscardResponse, FieldTerms, FileChunk, InstallChunk, InstallResponse,
    LeafVersions, LoadAck, LoadBatch, PrepareChunk, PrepareRequest, PublishRequest,
    PublishResponse, ShardDiscard, ShardSummary, VersionsRequest, VersionsResponse,
};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};

use searchtree_proto::sharding::NUM_SHARDS_METADATA;

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What a fake leaf answers and what it was sent.
#[derive(Debug, Default)]
pub struct FakeLeafState {
    /// Its current version and the versions it holds.
    pub current: u64,
    /// Installed versions (current included).
    pub installed: Vec<u64>,
    /// Its shard's digest, as Prepare reports it.
    pub digest: String,
    /// Documents in its candidate.
    pub num_docs: u64,
    /// Tokens per field of its candidate.
    pub num_tokens: BTreeMap<String, u64>,
    /// Its candidate's terms and their document frequencies, per field.
    pub terms: BTreeMap<String, Vec<(Vec<u8>, u64)>>,
    /// Staged operations.
    pub staged_ops: u64,
    /// Refuse every call with this status.
    pub failing: Option<Status>,
    /// Refuse Install only.
    pub failing_install: bool,
    /// Never answer Versions (a hung process).
    pub hung_versions: bool,
    /// The batches it received (seq given by its parent, op ids).
    pub batches: Vec<(u64, Vec<String>)>,
    /// The shard count each Load stream carried in its metadata.
    pub load_num_shards: Vec<String>,
    /// Prepare requests received.
    pub prepares: Vec<PrepareRequest>,
    /// Install chunks received, in order.
    pub installed_chunks: Vec<InstallChunk>,
    /// Versions it was asked to activate.
    pub activated: Vec<u64>,
}

/// A leaf serving a scripted `Corpus` on a local port.
#[derive(Debug, Clone)]
pub struct FakeLeaf {
    /// Its shard.
    pub shard: u32,
    /// `HOST:PORT` it listens on.
    pub addr: String,
    /// Its script and records.
    pub state: Arc<Mutex<FakeLeafState>>,
    /// Acknowledgements of batches wait for a permit each (plenty unless a
    /// test holds them back).
    pub ack_permits: Arc<Semaphore>,
}

impl FakeLeaf {
    /// Starts a fake leaf of `shard` at version 1 on a free port.
    pub async fn start(shard: u32) -> FakeLeaf {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let leaf = FakeLeaf {
            shard,
            addr,
            state: Arc::new(Mutex::new(FakeLeafState {
                current: 1,
                installed: vec![1],
                digest: format!("digest-{shard}"),
                num_docs: 10,
                ..FakeLeafState::default()
            })),
            ack_permits: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
        };
        let incoming = futures::stream::unfold(listener, |l| async move {
            let conn = l.accept().await.map(|(s, _)| s);
            Some((conn, l))
        });
        let service = corpus_service(leaf.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        leaf
    }

    /// Edits its script.
    pub fn script(&self, edit: impl FnOnce(&mut FakeLeafState)) {
        edit(&mut self.state.lock().expect("fake leaf"));
    }

    /// Reads its records.
    pub fn seen<T>(&self, read: impl FnOnce(&FakeLeafState) -> T) -> T {
        read(&self.state.lock().expect("fake leaf"))
    }

    fn refusal(&self) -> Result<(), Status> {
        match &self.state.lock().expect("fake leaf").failing {
            Some(status) => Err(status.clone()),
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl Corpus for FakeLeaf {
    type LoadStream = Answers<LoadAck>;
    type PrepareStream = Answers<PrepareChunk>;
    type CopyVersionStream = Answers<FileChunk>;

    async fn load(
        &self,
        request: Request<Streaming<LoadBatch>>,
    ) -> Result<Response<Self::LoadStream>, Status> {
        self.refusal()?;
        let num_shards = request
            .metadata()
            .get(NUM_SHARDS_METADATA)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.script(|s| s.load_num_shards.push(num_shards));
        let mut batches = request.into_inner();
        let leaf = self.clone();
        // Batches are read (and recorded) as they come; their
        // acknowledgements wait for permits apart.
        let (read_tx, mut read_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(batch)) = batches.message().await {
                let ids: Vec<String> = batch.ops.iter().map(|o| o.id.clone()).collect();
                let added = ids.len() as u32;
                leaf.script(|s| s.batches.push((batch.seq, ids)));
                if read_tx.send((batch.seq, added)).is_err() {
                    return;
                }
            }
        });
        let permits = Arc::clone(&self.ack_permits);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some((seq, added)) = read_rx.recv().await {
                let Ok(permit) = permits.acquire().await else {
                    return;
                };
                permit.forget();
                let ack = LoadAck {
                    seq,
                    ok: true,
                    added,
                    ..LoadAck::default()
                };
                if tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(crate::corpus::receiver_stream(rx))))
    }

    async fn publish(
        &self,
        _request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        Err(Status::failed_precondition("Publish is the root's call"))
    }

    async fn prepare(
        &self,
        request: Request<PrepareRequest>,
    ) -> Result<Response<Self::PrepareStream>, Status> {
        self.refusal()?;
        let mut s = self.state.lock().expect("fake leaf");
        s.prepares.push(request.into_inner());
        let mut chunks = vec![Ok(PrepareChunk {
            shards: vec![ShardSummary {
                shard: self.shard,
                replica: self.addr.clone(),
                num_docs: s.num_docs,
                num_tokens: s.num_tokens.clone().into_iter().collect(),
                digest: s.digest.clone(),
                staged_ops: s.staged_ops,
            }],
            terms: Vec::new(),
            left_out: Vec::new(),
        })];
        for (field, terms) in &s.terms {
            chunks.push(Ok(PrepareChunk {
                shards: Vec::new(),
                terms: vec![FieldTerms {
                    field: field.clone(),
                    terms: terms.iter().map(|t| t.0.clone()).collect(),
                    doc_freqs: terms.iter().map(|t| t.1).collect(),
                }],
                left_out: Vec::new(),
            }));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn install(
        &self,
        request: Request<Streaming<InstallChunk>>,
    ) -> Result<Response<InstallResponse>, Status> {
        self.refusal()?;
        let mut chunks = request.into_inner();
        while let Some(chunk) = chunks.message().await? {
            self.script(|s| s.installed_chunks.push(chunk));
        }
        let mut s = self.state.lock().expect("fake leaf");
        if s.failing_install {
            return Err(Status::internal("disk full"));
        }
        let version = s.installed_chunks.first().map_or(0, |c| c.version);
        s.installed.push(version);
        Ok(Response::new(InstallResponse {
            shards: vec![self.shard],
        }))
    }

    async fn activate(
        &self,
        request: Request<ActivateRequest>,
    ) -> Result<Response<ActivateResponse>, Status> {
        self.refusal()?;
        let version = request.into_inner().version;
        let mut s = self.state.lock().expect("fake leaf");
        if !s.installed.contains(&version) {
            return Err(Status::failed_precondition(format!(
                "version {version} is not installed"
            )));
        }
        s.activated.push(version);
        s.current = version;
        Ok(Response::new(ActivateResponse {
            replicas: vec![self.addr.clone()],
            replicas_failed: Vec::new(),
        }))
    }

    async fn versions(
        &self,
        _request: Request<VersionsRequest>,
    ) -> Result<Response<VersionsResponse>, Status> {
        self.refusal()?;
        if self.state.lock().expect("fake leaf").hung_versions {
            std::future::pending::<()>().await;
        }
        let s = self.state.lock().expect("fake leaf");
        Ok(Response::new(VersionsResponse {
            leaves: vec![LeafVersions {
                shard: self.shard,
                replica: self.addr.clone(),
                reachable: true,
                current: s.current,
                installed: s.installed.clone(),
                staged_ops: s.staged_ops,
                num_docs: s.num_docs,
                digest: s.digest.clone(),
                ..LeafVersions::default()
            }],
            pinned: 0,
            role: "leaf".into(),
        }))
    }

    async fn copy_version(
        &self,
        _request: Request<CopyVersionRequest>,
    ) -> Result<Response<Self::CopyVersionStream>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn catch_up(
        &self,
        _request: Request<CatchUpRequest>,
    ) -> Result<Response<CatchUpResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn discard(
        &self,
        _request: Request<DiscardRequest>,
    ) -> Result<Response<DiscardResponse>, Status> {
        let mut state = self.state.lock().expect("fake state");
        if let Some(status) = &state.failing {
            return Err(status.clone());
        }
        let discarded_ops = std::mem::take(&mut state.staged_ops);
        Ok(Response::new(DiscardResponse {
            shards: vec![ShardDiscard {
                shard: self.shard,
                replica: self.addr.clone(),
                staged_ops: discarded_ops,
            }],
            replicas_failed: Vec::new(),
        }))
    }
}

/// An address nothing listens on (a replica that is down).
pub async fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").to_string()
}
