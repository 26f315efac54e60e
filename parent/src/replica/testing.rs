//! Test helpers shared by the replica group's tests: fake replicas, a group
//! over them, requests to send.

use std::sync::Arc;
use std::time::Duration;

use searchtree_proto::pb::SearchRequest;

use super::{Policy, ReplicaConfig, ReplicaGroup};
use crate::child::Child;
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
