//! Test helpers shared by the replica group's tests: fake replicas (some
//! holding snapshot versions), a group over them, requests to send, and a
//! scripted catch-up.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use searchtree_proto::pb::{
    CatchUpRequest, CatchUpResponse, FetchRequest, FetchResponse, LeafVersions, SearchRequest,
    SearchResponse,
};

use super::{CatchUpCall, Policy, ReplicaConfig, ReplicaGroup};
use crate::child::{Child, ChildError};
use crate::counters::inner_counters;
use crate::fake::FakeChild;

/// The catch-up a group asks of `replica`: copy `version` from `source`
/// and make it current.
pub(super) fn copy_of(replica: &str, version: u64, source: &str) -> (String, CatchUpRequest) {
    (
        replica.to_string(),
        CatchUpRequest {
            version,
            source: source.to_string(),
            activate: true,
        },
    )
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn request() -> SearchRequest {
    SearchRequest {
        query: "q".into(),
        top_k: 10,
        ..Default::default()
    }
}

pub(super) fn fakes(n: usize, delay: Duration) -> Vec<Arc<FakeChild>> {
    (0..n)
        .map(|i| Arc::new(FakeChild::answering(0, delay, &[("a", 1.0)]).named(&format!("r{i}"))))
        .collect()
}

pub(super) fn group(replicas: &[Arc<FakeChild>], config: ReplicaConfig) -> Arc<ReplicaGroup> {
    let children = replicas
        .iter()
        .map(|r| Arc::clone(r) as Arc<dyn Child>)
        .collect();
    ReplicaGroup::new(children, config, inner_counters("parent"))
}

pub(super) fn round_robin() -> ReplicaConfig {
    ReplicaConfig {
        policy: Policy::RoundRobin,
        ..ReplicaConfig::default()
    }
}

pub(super) async fn send(g: &ReplicaGroup, n: usize) {
    for _ in 0..n {
        g.search(request(), ms(1000)).await.unwrap();
    }
}

/// A leaf-like replica: holds some snapshot versions and answers a request
/// pinned to one of them (through its [`FakeChild`]), refusing any other
/// with the leaf's FAILED_PRECONDITION `version-missing:` status.
pub(super) struct VersionedChild {
    pub inner: Arc<FakeChild>,
    held: Mutex<Vec<u64>>,
    /// The version it serves as current (what Versions reports).
    current: Mutex<u64>,
}

impl VersionedChild {
    /// A replica holding `held`, the highest its current one.
    pub fn new(name: &str, held: &[u64]) -> Arc<Self> {
        Arc::new(VersionedChild {
            inner: Arc::new(FakeChild::answering(0, ms(1), &[("a", 1.0)]).named(name)),
            held: Mutex::new(held.to_vec()),
            current: Mutex::new(held.iter().copied().max().unwrap_or(0)),
        })
    }

    /// Makes `version` one it holds, not its current one (as Install does).
    pub fn install(&self, version: u64) {
        let mut held = self.held.lock().unwrap();
        if !held.contains(&version) {
            held.push(version);
            held.sort_unstable();
        }
    }

    /// Makes `version` one it holds and its current one (as a copy from a
    /// sibling, activated, does).
    pub fn hold(&self, version: u64) {
        self.install(version);
        self.set_current(version);
    }

    /// Makes `version` its current one (as Activate does).
    pub fn set_current(&self, version: u64) {
        *self.current.lock().unwrap() = version;
    }

    /// Its current version.
    pub fn current(&self) -> u64 {
        *self.current.lock().unwrap()
    }

    /// What it answers to Versions.
    fn versions(&self) -> LeafVersions {
        LeafVersions {
            replica: self.name().to_string(),
            reachable: true,
            current: self.current(),
            installed: self.held.lock().unwrap().clone(),
            ..LeafVersions::default()
        }
    }

    fn refusal(&self, version: u64) -> Option<ChildError> {
        let held = self.held.lock().unwrap();
        (version != 0 && !held.contains(&version)).then(|| {
            ChildError::from(tonic::Status::failed_precondition(format!(
                "version-missing: shard 0 holds versions {held:?}, not {version}"
            )))
        })
    }
}

impl Child for VersionedChild {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn shards(&self) -> &[u32] {
        self.inner.shards()
    }

    fn search(
        &self,
        request: SearchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<SearchResponse, ChildError>> {
        let refusal = self.refusal(request.version);
        let version = request.version;
        let answer = self.inner.search(request, budget);
        Box::pin(async move {
            if let Some(err) = refusal {
                return Err(err);
            }
            let mut response = answer.await?;
            response.version = version;
            Ok(response)
        })
    }

    fn fetch(
        &self,
        request: FetchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<FetchResponse, ChildError>> {
        let refusal = self.refusal(request.version);
        let answer = self.inner.fetch(request, budget);
        Box::pin(async move {
            match refusal {
                Some(err) => Err(err),
                None => answer.await,
            }
        })
    }

    fn check_health(&self) -> BoxFuture<'_, Result<(), ChildError>> {
        self.inner.check_health()
    }
}

/// A scripted `Corpus.CatchUp`: records each call, takes `delay`, fails the
/// first `failures` calls, and then makes the replica hold the version.
/// `Corpus.Versions` answers what the replica holds, unless it is down.
pub(super) struct FakeCatchUp {
    replicas: Vec<Arc<VersionedChild>>,
    delay: Duration,
    failures: AtomicUsize,
    /// Calls made: the replica asked and its request.
    pub calls: Mutex<Vec<(String, CatchUpRequest)>>,
    /// Replicas whose Versions fails (busy), healthy otherwise.
    versions_down: Mutex<BTreeSet<String>>,
    /// Replicas that refuse CatchUp as an inner node does.
    inner_nodes: Mutex<BTreeSet<String>>,
}

impl FakeCatchUp {
    pub fn new(replicas: &[Arc<VersionedChild>], delay: Duration, failures: usize) -> Arc<Self> {
        Arc::new(FakeCatchUp {
            replicas: replicas.to_vec(),
            delay,
            failures: AtomicUsize::new(failures),
            calls: Mutex::default(),
            versions_down: Mutex::default(),
            inner_nodes: Mutex::default(),
        })
    }

    /// Makes `replica`'s Versions fail (`down`) or answer again.
    pub fn set_versions_down(&self, replica: &str, down: bool) {
        let mut set = self.versions_down.lock().unwrap();
        if down {
            set.insert(replica.to_string());
        } else {
            set.remove(replica);
        }
    }

    /// Makes `replica` refuse CatchUp as an inner node does.
    pub fn refuse_as_inner(&self, replica: &str) {
        self.inner_nodes.lock().unwrap().insert(replica.to_string());
    }

    fn replica(&self, name: &str) -> &Arc<VersionedChild> {
        self.replicas
            .iter()
            .find(|r| r.name() == name)
            .expect("a known replica")
    }

    /// Calls made so far.
    pub fn calls(&self) -> Vec<(String, CatchUpRequest)> {
        self.calls.lock().unwrap().clone()
    }

    /// Makes the next calls succeed.
    pub fn heal(&self) {
        self.failures.store(0, Ordering::SeqCst);
    }
}

impl CatchUpCall for FakeCatchUp {
    fn catch_up(
        &self,
        replica: &str,
        request: CatchUpRequest,
    ) -> BoxFuture<'_, Result<CatchUpResponse, ChildError>> {
        self.calls
            .lock()
            .unwrap()
            .push((replica.to_string(), request.clone()));
        let replica = replica.to_string();
        let inner_node = self.inner_nodes.lock().unwrap().contains(&replica);
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            if inner_node {
                return Err(ChildError::from(crate::corpus::service::leaf_only(
                    "CatchUp",
                )));
            }
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(ChildError::Unavailable(format!("{replica}: copy failed")));
            }
            self.replica(&replica).hold(request.version);
            Ok(CatchUpResponse {
                version: request.version,
                bytes: 1 << 20,
                took_us: self.delay.as_micros() as u64,
            })
        })
    }

    fn versions(&self, replica: &str) -> BoxFuture<'_, Result<Vec<LeafVersions>, ChildError>> {
        let target = Arc::clone(self.replica(replica));
        let busy = self.versions_down.lock().unwrap().contains(replica);
        Box::pin(async move {
            target.inner.check_health().await?;
            if busy {
                return Err(ChildError::Timeout("busy".into()));
            }
            Ok(vec![target.versions()])
        })
    }
}

/// A group over versioned replicas, catching up through `catch_up`.
pub(super) fn versioned_group(
    replicas: &[Arc<VersionedChild>],
    catch_up: &Arc<FakeCatchUp>,
    config: ReplicaConfig,
) -> Arc<ReplicaGroup> {
    let children = replicas
        .iter()
        .map(|r| Arc::clone(r) as Arc<dyn Child>)
        .collect();
    ReplicaGroup::with_catch_up(
        children,
        config,
        inner_counters("parent"),
        Arc::clone(catch_up) as Arc<dyn CatchUpCall>,
    )
}

/// A search pinned to `version`.
pub(super) fn pinned(version: u64) -> SearchRequest {
    SearchRequest {
        version,
        ..request()
    }
}
