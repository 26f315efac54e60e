//! In-process children with scripted latency and outcome, for testing fan-out,
//! merging and timing logic under tokio's paused clock (no real sleeps, no
//! sockets). Real trees use [`crate::child::GrpcChild`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use searchtree_proto::pb::{Coverage, Hit, SearchRequest, SearchResponse};

use crate::child::{Child, ChildError};

/// Documents in each fake shard.
pub const FAKE_SHARD_DOCS: u64 = 100;

/// A child that answers after a fixed delay with a fixed outcome.
pub struct FakeChild {
    name: String,
    shards: Vec<u32>,
    delay: Duration,
    outcome: Result<Vec<Hit>, ChildError>,
    /// Calls whose future ran to completion.
    pub completed: Arc<AtomicUsize>,
    /// Calls dropped before they completed (cancelled by the caller).
    pub cancelled: Arc<AtomicUsize>,
    /// The budget each call was given.
    pub budgets: Arc<Mutex<Vec<Duration>>>,
}

impl FakeChild {
    /// A one-shard child answering `hits` (ids and scores) after `delay`.
    pub fn answering(shard: u32, delay: Duration, hits: &[(&str, f32)]) -> Self {
        let hits = hits
            .iter()
            .map(|(id, score)| Hit {
                doc_id: id.to_string(),
                score: *score,
                shard,
                ..Default::default()
            })
            .collect();
        Self::new(shard, delay, Ok(hits))
    }

    /// A one-shard child failing with `err` after `delay`.
    pub fn failing(shard: u32, delay: Duration, err: ChildError) -> Self {
        Self::new(shard, delay, Err(err))
    }

    fn new(shard: u32, delay: Duration, outcome: Result<Vec<Hit>, ChildError>) -> Self {
        FakeChild {
            name: format!("fake-{shard}"),
            shards: vec![shard],
            delay,
            outcome,
            completed: Arc::default(),
            cancelled: Arc::default(),
            budgets: Arc::default(),
        }
    }
}

/// Counts a call as cancelled unless it is disarmed on completion.
struct CancelGuard(Option<Arc<AtomicUsize>>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(counter) = self.0.take() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Child for FakeChild {
    fn name(&self) -> &str {
        &self.name
    }

    fn shards(&self) -> &[u32] {
        &self.shards
    }

    fn search(
        &self,
        request: SearchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<SearchResponse, ChildError>> {
        self.budgets.lock().expect("budgets lock").push(budget);
        Box::pin(async move {
            let mut guard = CancelGuard(Some(Arc::clone(&self.cancelled)));
            tokio::time::sleep(self.delay).await;
            guard.0 = None;
            self.completed.fetch_add(1, Ordering::SeqCst);
            let mut hits = self.outcome.clone()?;
            hits.sort_by(searchtree_proto::hit_order);
            let total_hits = hits.len() as u64;
            hits.truncate(request.top_k as usize);
            Ok(SearchResponse {
                hits,
                total_hits,
                coverage: Some(Coverage {
                    shards_total: 1,
                    shards_ok: 1,
                    docs_total: FAKE_SHARD_DOCS,
                    docs_searched: FAKE_SHARD_DOCS,
                    ..Default::default()
                }),
                took_us: self.delay.as_micros() as u64,
                ..Default::default()
            })
        })
    }
}
