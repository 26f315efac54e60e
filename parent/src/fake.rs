//! In-process children with scripted latency and outcome, for testing fan-out,
//! merging, timing and replica logic under tokio's paused clock (no real
//! sleeps, no sockets). Real trees use [`crate::child::GrpcChild`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use searchtree_proto::pb::{
    Coverage, FetchRequest, FetchResponse, Hit, SearchRequest, SearchResponse, ShardSource,
};

use crate::child::{Child, ChildError};

/// Documents in each fake shard.
pub const FAKE_SHARD_DOCS: u64 = 100;

/// A child that answers after a delay with a fixed outcome; the delay and
/// whether it is down can be changed while it runs.
pub struct FakeChild {
    name: String,
    shards: Vec<u32>,
    delay_us: AtomicU64,
    down: AtomicBool,
    hung: AtomicBool,
    snapshot: Mutex<String>,
    outcome: Result<Vec<Hit>, ChildError>,
    /// Calls started.
    pub started: Arc<AtomicUsize>,
    /// Calls whose future ran to completion.
    pub completed: Arc<AtomicUsize>,
    /// Calls dropped before they completed (cancelled by the caller).
    pub cancelled: Arc<AtomicUsize>,
    /// The budget each call was given.
    pub budgets: Arc<Mutex<Vec<Duration>>>,
    /// Fetch calls started.
    pub fetches: Arc<AtomicUsize>,
    /// The ids every fetch asked for, in the order asked.
    pub fetched: Arc<Mutex<Vec<String>>>,
    /// The snapshot version each search, then each fetch, asked for.
    pub versions: Arc<Mutex<Vec<(&'static str, u64)>>>,
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
            delay_us: AtomicU64::new(delay.as_micros() as u64),
            down: AtomicBool::new(false),
            hung: AtomicBool::new(false),
            snapshot: Mutex::default(),
            outcome,
            started: Arc::default(),
            completed: Arc::default(),
            cancelled: Arc::default(),
            budgets: Arc::default(),
            fetches: Arc::default(),
            fetched: Arc::default(),
            versions: Arc::default(),
        }
    }

    /// The same child under another name (e.g. one replica of several).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Changes how long the child takes to answer.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }

    /// Changes the snapshot the child says answered (none at first), as a
    /// leaf does when it serves a new build; a call in flight keeps the
    /// one it started with.
    pub fn set_snapshot(&self, snapshot: &str) {
        *self.snapshot.lock().expect("snapshot lock") = snapshot.to_string();
    }

    /// Takes the child down (it refuses calls and health checks) or up.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Makes the child's health checks never answer (a hung process, a
    /// black-holed link), or answer again.
    pub fn set_hung(&self, hung: bool) {
        self.hung.store(hung, Ordering::SeqCst);
    }

    /// Calls started so far.
    pub fn calls(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Fetch calls started so far.
    pub fn fetch_calls(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// The title a fake document shows: made from its id, so a test can
    /// tell which child filled it.
    pub fn title_of(doc_id: &str) -> String {
        format!("title of {doc_id}")
    }

    /// The snippet a fake document shows for `query`.
    pub fn snippet_of(doc_id: &str, query: &str) -> String {
        format!("{doc_id} matches <b>{query}</b>")
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
        self.versions
            .lock()
            .expect("versions lock")
            .push(("search", request.version));
        self.started.fetch_add(1, Ordering::SeqCst);
        let snapshot = self.snapshot.lock().expect("snapshot lock").clone();
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(ChildError::Unavailable(format!("{} is down", self.name)));
            }
            let delay = Duration::from_micros(self.delay_us.load(Ordering::SeqCst));
            let mut guard = CancelGuard(Some(Arc::clone(&self.cancelled)));
            tokio::time::sleep(delay).await;
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
                    sources: self
                        .shards
                        .iter()
                        .map(|&shard| ShardSource {
                            shard,
                            replica: self.name.clone(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                took_us: delay.as_micros() as u64,
                snapshot,
                ..Default::default()
            })
        })
    }

    /// Fetches the scripted hits asked for, after the child's delay, like a
    /// real child: a document not among its hits (or of another shard) is
    /// not found, and a delay past `budget` times out at the budget (as a
    /// gRPC deadline does).
    fn fetch(
        &self,
        request: FetchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<FetchResponse, ChildError>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.fetched
            .lock()
            .expect("fetched lock")
            .extend(request.docs.iter().map(|d| d.doc_id.clone()));
        self.versions
            .lock()
            .expect("versions lock")
            .push(("fetch", request.version));
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(ChildError::Unavailable(format!("{} is down", self.name)));
            }
            let delay = Duration::from_micros(self.delay_us.load(Ordering::SeqCst));
            if delay > budget {
                tokio::time::sleep(budget).await;
                return Err(ChildError::Timeout(format!(
                    "{} fetched too slowly",
                    self.name
                )));
            }
            tokio::time::sleep(delay).await;
            let hits = self.outcome.clone()?;
            let mut answer = FetchResponse {
                took_us: delay.as_micros() as u64,
                ..Default::default()
            };
            for doc in request.docs {
                let held = self.shards.contains(&doc.shard)
                    && hits
                        .iter()
                        .any(|h| h.doc_id == doc.doc_id && h.shard == doc.shard);
                if held {
                    answer.hits.push(Hit {
                        title: Self::title_of(&doc.doc_id),
                        snippet: Self::snippet_of(&doc.doc_id, &request.query),
                        doc_id: doc.doc_id,
                        shard: doc.shard,
                        ..Default::default()
                    });
                } else {
                    answer.not_found.push(doc);
                }
            }
            Ok(answer)
        })
    }

    fn check_health(&self) -> BoxFuture<'_, Result<(), ChildError>> {
        Box::pin(async move {
            if self.hung.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.down.load(Ordering::SeqCst) {
                Err(ChildError::Unavailable(format!("{} is down", self.name)))
            } else {
                Ok(())
            }
        })
    }
}
