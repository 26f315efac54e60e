//! Test helpers shared by the replica group's tests: fake replicas (some
//! holding snapshot versions), a group over them, requests to send, and a
//! scripted catch-up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use searchtree_proto::pb::{
    CatchUpRequest, CatchUpResponse, FetchRequest, FetchResponse, SearchRequest, SearchResponse,
};

use super::{CatchUpCall, Policy, ReplicaConfig, ReplicaGroup};
use crate::child::{Child, ChildError};
use crate::counters::inner_counters;
use crate::fake::FakeChild;

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
}

impl VersionedChild {
    pub fn new(name: &str, held: &[u64]) -> Arc<Self> {
        Arc::new(VersionedChild {
            inner: Arc::new(FakeChild::answering(0, ms(1), &[("a", 1.0)]).named(name)),
            held: Mutex::new(held.to_vec()),
        })
    }

    /// Makes `version` one it holds (as a copy from a sibling does).
    pub fn hold(&self, version: u64) {
        let mut held = self.held.lock().unwrap();
        if !held.contains(&version) {
            held.push(version);
            held.sort_unstable();
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
pub(super) struct FakeCatchUp {
    replicas: Vec<Arc<VersionedChild>>,
    delay: Duration,
    failures: AtomicUsize,
    /// Calls made: the replica asked and its request.
    pub calls: Mutex<Vec<(String, CatchUpRequest)>>,
}

impl FakeCatchUp {
    pub fn new(replicas: &[Arc<VersionedChild>], delay: Duration, failures: usize) -> Arc<Self> {
        Arc::new(FakeCatchUp {
            replicas: replicas.to_vec(),
            delay,
            failures: AtomicUsize::new(failures),
            calls: Mutex::default(),
        })
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
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            if self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(ChildError::Unavailable(format!("{replica}: copy failed")));
            }
            let target = self
                .replicas
                .iter()
                .find(|r| r.name() == replica)
                .expect("catch-up of a known replica");
            target.hold(request.version);
            Ok(CatchUpResponse {
                version: request.version,
                bytes: 1 << 20,
                took_us: self.delay.as_micros() as u64,
            })
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
