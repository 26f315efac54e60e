//! Named counters a node keeps and serves over `searchtree.v1.NodeStats`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tonic::{Request, Response, Status};

use crate::pb::node_stats_server::NodeStats;
use crate::pb::{GetStatsRequest, GetStatsResponse};

/// A fixed set of named counters, cheap to bump from any thread.
#[derive(Debug)]
pub struct Counters {
    role: &'static str,
    counters: Vec<(&'static str, AtomicU64)>,
}

impl Counters {
    /// Counters named `names`, all at zero, for a node of `role`.
    pub fn new(role: &'static str, names: &[&'static str]) -> Arc<Self> {
        Arc::new(Counters {
            role,
            counters: names.iter().map(|n| (*n, AtomicU64::new(0))).collect(),
        })
    }

    /// Adds `n` to counter `name`. Panics on an unknown name: that is a bug.
    pub fn add(&self, name: &str, n: u64) {
        let (_, counter) = self
            .counters
            .iter()
            .find(|(k, _)| *k == name)
            .unwrap_or_else(|| panic!("unknown counter {name:?}"));
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to counter `name`.
    pub fn inc(&self, name: &str) {
        self.add(name, 1);
    }

    /// The current value of counter `name` (0 if unknown).
    pub fn get(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(k, _)| *k == name)
            .map_or(0, |(_, c)| c.load(Ordering::Relaxed))
    }
}

/// Serves a node's counters.
#[derive(Debug, Clone)]
pub struct StatsService(pub Arc<Counters>);

#[tonic::async_trait]
impl NodeStats for StatsService {
    async fn get_stats(
        &self,
        _request: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        Ok(Response::new(GetStatsResponse {
            role: self.0.role.to_string(),
            counters: self
                .0
                .counters
                .iter()
                .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_and_serves() {
        let c = Counters::new("leaf", &["a", "b"]);
        c.inc("a");
        c.add("b", 5);
        let r = StatsService(c.clone())
            .get_stats(Request::new(GetStatsRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.role, "leaf");
        assert_eq!(r.counters["a"], 1);
        assert_eq!(r.counters["b"], 5);
        assert_eq!(c.get("b"), 5);
    }
}
