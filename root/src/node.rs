//! The root's request handling, free of gRPC: an inner node's search (see
//! [`InnerNode`]), with canaries if configured ([`crate::canary`]), then
//! the judgement of what the client is told about an incomplete answer
//! ([`crate::policy`]). By default a search has two phases
//! ([`crate::fetch_phase`]): ids and scores from the whole tree, then titles
//! and snippets for the global top-k only.

use std::borrow::Cow;

use std::time::Duration;

use searchtree_parent::{InnerNode, NodeError};
use searchtree_proto::pb::{FetchRequest, FetchResponse, Priority, SearchRequest, SearchResponse};
use searchtree_proto::query::Quoted;
use searchtree_proto::{FetchParams, SearchParams};
use tokio::time::Instant;

use std::sync::Arc;

use searchtree_parent::InnerCounter;
use searchtree_parent::counters::InnerCounters;

use crate::admission::{Admission, AdmissionConfig, ShedReason};
use crate::canary::{Canary, CanaryConfig};
use crate::fetch_phase::FetchPhase;
use crate::load_pace::LoadPace;
use crate::pin::PinnedVersion;
use crate::policy::judge;

/// The node clients call: the tree below it, and what it adds on top.
pub struct RootNode {
    node: InnerNode,
    canary: Option<Canary>,
    admission: Option<Arc<Admission>>,
    /// Two-phase search; `None` leaves titles and snippets to the leaves
    /// (one phase).
    fetch: Option<FetchPhase>,
    /// The version every search and fetch is sent at.
    pinned: Arc<PinnedVersion>,
    /// Fed every search's round trip, so that loads give way to queries.
    load_pace: Option<Arc<LoadPace>>,
}

impl RootNode {
    /// A root over `node`'s children.
    pub fn new(node: InnerNode) -> Self {
        RootNode {
            node,
            canary: None,
            admission: None,
            fetch: Some(FetchPhase::new()),
            pinned: Arc::new(PinnedVersion::default()),
            load_pace: None,
        }
    }

    /// Feeds `pace` every search's round trip (see [`crate::load_pace`]).
    pub fn with_load_pace(mut self, pace: Option<Arc<LoadPace>>) -> Self {
        self.load_pace = pace;
        self
    }

    /// The version queries are pinned to, shared with the corpus service
    /// that learns and moves it.
    pub fn pinned(&self) -> Arc<PinnedVersion> {
        Arc::clone(&self.pinned)
    }

    /// Searches in one phase (leaves fill titles and snippets for their own
    /// top-k) if `one_phase`, instead of the default two (query, then fetch
    /// for the global top-k).
    pub fn with_one_phase(mut self, one_phase: bool) -> Self {
        self.fetch = (!one_phase).then(FetchPhase::new);
        self
    }

    /// The fetch phase, unless the root searches in one phase.
    pub fn fetch_phase(&self) -> Option<&FetchPhase> {
        self.fetch.as_ref()
    }

    /// Counts a fetch and validates it on receipt.
    pub fn validate_fetch(&self, request: &FetchRequest) -> Result<FetchParams, NodeError> {
        self.node.validate_fetch(request)
    }

    /// The time a fetch has from arrival to answer.
    pub fn fetch_budget(&self, params: &FetchParams, grpc_timeout: Option<Duration>) -> Duration {
        self.node.fetch_budget(params, grpc_timeout)
    }

    /// A client's own fetch (after its own `ids_only` search): routed
    /// through the tree like the root's fetch phase, without admission (it
    /// loads k documents, not a query's worth of work).
    pub async fn fetch(
        &self,
        params: &FetchParams,
        deadline: Instant,
    ) -> Result<FetchResponse, NodeError> {
        let version = self
            .pinned
            .for_request(params.version)
            .map_err(NodeError::VersionMissing)?;
        if version == params.version {
            return self.node.fetch(params, deadline).await;
        }
        let params = FetchParams {
            version,
            ..params.clone()
        };
        self.node.fetch(&params, deadline).await
    }

    /// Admits whole queries under an adaptive limit (see
    /// [`crate::admission`]), if `config` is given; the rest are shed with
    /// [`NodeError::Overloaded`].
    pub fn with_admission(mut self, config: Option<AdmissionConfig>) -> Self {
        if let Some(config) = config {
            tracing::info!(?config, "admission control on");
        }
        self.admission = config.map(Admission::new);
        if let Some(admission) = &self.admission {
            show_admission(&self.node.counters(), admission);
        }
        self
    }

    /// How long a shed client is asked to wait before retrying, if
    /// admission control is on.
    pub fn pushback(&self) -> Option<Duration> {
        self.admission.as_ref().map(|a| a.pushback())
    }

    /// Sends canaries for unseen queries (see [`crate::canary`]), if `config`
    /// is given.
    pub fn with_canary(mut self, config: Option<CanaryConfig>) -> Self {
        if let Some(config) = config {
            tracing::info!(?config, "canary requests on");
        }
        self.canary = config.map(Canary::new);
        self
    }

    /// The inner node below the root's own logic (its counters, say).
    pub fn inner(&self) -> &InnerNode {
        &self.node
    }

    /// Counts a request and validates it on receipt.
    pub fn validate(&self, request: &SearchRequest) -> Result<SearchParams, NodeError> {
        if request.canary {
            // A canary searches one shard; from a client its answer would
            // read as complete, coverage and all, over a part of the corpus.
            return Err(NodeError::Invalid(
                "canary is the root's own probe of one shard (root flag --canary): a client's \
                 search covers every shard, leave canary false"
                    .into(),
            ));
        }
        self.node.validate(request)
    }

    /// The time a request has from arrival to answer (see
    /// [`InnerNode::budget`]).
    pub fn budget(&self, params: &SearchParams, grpc_timeout: Option<Duration>) -> Duration {
        self.node.budget(params, grpc_timeout)
    }

    /// Answers `params` by `deadline`: partial answers pass, unless nothing
    /// answered or the client's `min_coverage` is not met. A complete
    /// two-phase answer is kept in the result cache whole, so a repeat is
    /// answered before admission, with no search and no fetch.
    pub async fn search(
        &self,
        params: &SearchParams,
        deadline: Instant,
    ) -> Result<SearchResponse, NodeError> {
        let started = Instant::now();
        let counters = self.node.counters();
        // Every shard answers at the pinned version (the cache keys on it).
        let pinned;
        let version = self
            .pinned
            .for_request(params.version)
            .map_err(NodeError::VersionMissing)?;
        let params = match version {
            v if v == params.version => params,
            version => {
                pinned = SearchParams {
                    version,
                    ..params.clone()
                };
                &pinned
            }
        };
        // A profiled search is timed as a real one: `cached` never answers
        // it, here or for the query phase below.
        if self.fetch.is_some()
            && !params.ids_only
            && let Some(hit) = self.node.cached(params).await
        {
            // The whole answer, titles and snippets included, costs the tree
            // nothing: no admission, no fan-out, no fetch.
            return Ok(hit);
        }
        let permit = match &self.admission {
            None => None,
            Some(admission) => match admission.try_acquire(
                params.priority == Priority::Batch,
                deadline.saturating_duration_since(Instant::now()),
            ) {
                Ok(permit) => {
                    counters.inc(InnerCounter::Admitted);
                    Some(permit)
                }
                Err(shed) => {
                    count_shed(&counters, params.priority, shed.reason);
                    return Err(NodeError::Overloaded(format!(
                        "the tree is at its limit of {} queries in flight; retry after {} ms",
                        shed.limit,
                        shed.pushback.as_millis()
                    )));
                }
            },
        };
        // Two phases unless configured off or the client wants ids only: the
        // query phase answers ids and scores early enough to leave the fetch
        // phase its reserve.
        let fetch = self.fetch.as_ref().filter(|_| !params.ids_only);
        let (query, query_deadline) = match fetch {
            Some(phase) => (
                Cow::Owned(SearchParams {
                    ids_only: true,
                    ..params.clone()
                }),
                phase.query_deadline(deadline),
            ),
            None => (Cow::Borrowed(params), deadline),
        };
        // A cached answer is complete (no canary needed), and its round trip
        // says nothing of the tree's load: no admission sample (below).
        let hit = self.node.cached(&query).await;
        let from_cache = hit.is_some();
        let mut response = match (hit, &self.canary) {
            (Some(hit), _) => Ok(hit),
            (None, Some(canary)) => canary.search(&self.node, &query, query_deadline).await,
            (None, None) => self.node.search(&query, query_deadline).await,
        };
        if let (Some(phase), Ok(answer)) = (fetch, response.as_mut()) {
            phase.fill(&self.node, params, answer, deadline).await;
            self.node.remember(params, answer).await;
        }
        if let (Some(pace), false, Ok(_)) = (&self.load_pace, from_cache, &response) {
            let pace = pace.on_query(started.elapsed());
            counters.set(
                InnerCounter::LoadPaceRate,
                pace.rate.map_or(0, |rate| rate.round() as u64),
            );
            counters.set(InnerCounter::LoadQueriesSlowed, pace.slowed);
        }
        let permit = permit.filter(|_| !from_cache);
        if let (Some(permit), Some(admission)) = (permit, &self.admission) {
            // A shard that timed out, or was refused by an overloaded leaf,
            // means the tree is past what it can answer in time: a drop.
            // The share of shards that answered is the work the tree did,
            // which the admission floor's rate counts.
            let coverage = response.as_ref().ok().and_then(|r| r.coverage.as_ref());
            let dropped = coverage.is_some_and(|c| c.shards_timed_out > 0 || c.shards_failed > 0);
            let answered = coverage.map_or(0.0, |c| {
                f64::from(c.shards_ok) / f64::from(c.shards_total.max(1))
            });
            let refused = coverage.is_some_and(|c| c.shards_failed > 0);
            permit.finish(dropped, refused, answered);
            show_admission(&counters, admission);
        }
        let response = response?;
        judge(params, response).map_err(|(refusal, err)| {
            self.node.counters().inc(refusal.counter());
            searchtree_node::ops::metrics::metrics().observe_unanswered("failed");
            tracing::info!(query = %Quoted::new(&params.query), %err, "answer refused");
            err
        })
    }
}

/// Shows the admission limit and its floor in the gauges.
fn show_admission(counters: &InnerCounters, admission: &Admission) {
    counters.set(InnerCounter::AdmissionLimit, admission.limit() as u64);
    counters.set(InnerCounter::AdmissionFloor, admission.floor() as u64);
}

/// Counts a shed query by its class and by the bound that refused it.
fn count_shed(counters: &InnerCounters, priority: Priority, reason: ShedReason) {
    counters.inc(InnerCounter::Shed);
    searchtree_node::ops::metrics::metrics().observe_unanswered("refused");
    counters.inc(match priority {
        Priority::Batch => InnerCounter::ShedBatch,
        Priority::Interactive => InnerCounter::ShedInteractive,
    });
    counters.inc(match reason {
        ShedReason::AtLimit => InnerCounter::ShedAtLimit,
        ShedReason::OverShare => InnerCounter::ShedOverShare,
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use searchtree_parent::counters::inner_counters;
    use searchtree_parent::fake::FakeChild;
    use searchtree_parent::node::InnerTiming;
    use searchtree_parent::{Child, ChildError, InnerCounter};

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn root(children: Vec<Arc<dyn Child>>) -> RootNode {
        RootNode::new(InnerNode::new(
            "root",
            children,
            InnerTiming::default(),
            inner_counters("root"),
        ))
    }

    async fn ask(
        root: &RootNode,
        request: SearchRequest,
        grpc_timeout: Option<Duration>,
    ) -> Result<SearchResponse, NodeError> {
        let arrived = Instant::now();
        let params = root.validate(&request)?;
        root.search(&params, arrived + root.budget(&params, grpc_timeout))
            .await
    }

    /// A root's inner node over `leaf` alone, with a result cache.
    fn cached_node(leaf: &Arc<FakeChild>) -> InnerNode {
        let child: Arc<dyn Child> = leaf.clone();
        InnerNode::new(
            "root",
            vec![child],
            InnerTiming::default(),
            inner_counters("root"),
        )
        .with_cache(Some(searchtree_parent::cache::CacheConfig {
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(60),
        }))
    }

    fn request(min_coverage: f64) -> SearchRequest {
        SearchRequest {
            query: "q".into(),
            budget_ms: 50,
            min_coverage,
            ..Default::default()
        }
    }

    fn children() -> Vec<Arc<dyn Child>> {
        vec![
            Arc::new(FakeChild::answering(0, ms(5), &[("a", 1.0)])),
            Arc::new(FakeChild::failing(
                1,
                ms(1),
                ChildError::Unavailable("down".into()),
            )),
            Arc::new(FakeChild::answering(2, ms(5000), &[("z", 9.0)])),
        ]
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_answer_is_an_answer_unless_the_client_is_strict() {
        // One phase: the answer's time is the query's alone.
        let r = root(children()).with_one_phase(true);
        let start = Instant::now();
        let answer = ask(&r, request(0.0), None).await.unwrap();
        assert_eq!(
            start.elapsed(),
            ms(47),
            "answered at the budget less the reserve"
        );
        let c = answer.coverage.unwrap();
        assert_eq!(
            (c.shards_ok, c.shards_failed, c.shards_timed_out),
            (1, 1, 1)
        );

        let err = ask(&r, request(0.9), None).await.unwrap_err();
        assert!(matches!(err, NodeError::Timeout(ref m) if m.contains("below min_coverage")));
        assert_eq!(r.inner().counters().get(InnerCounter::StrictRefusals), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_shorter_of_budget_and_grpc_deadline_applies_and_errors_keep_their_kind() {
        let r = root(children()).with_one_phase(true);
        let start = Instant::now();
        ask(&r, request(0.0), Some(ms(20))).await.unwrap();
        assert_eq!(start.elapsed(), ms(17));
        let bad = SearchRequest {
            query: "title:*".into(),
            ..request(0.0)
        };
        assert!(matches!(
            ask(&r, bad, None).await,
            Err(NodeError::Invalid(_))
        ));
        let nothing = root(vec![Arc::new(FakeChild::failing(
            0,
            ms(1),
            ChildError::Unavailable("down".into()),
        ))]);
        let err = ask(&nothing, request(0.0), None).await.unwrap_err();
        assert!(
            matches!(err, NodeError::Unavailable(ref m) if m.starts_with("no shard could answer"))
        );
        assert_eq!(
            nothing
                .inner()
                .counters()
                .get(InnerCounter::NothingAnswered),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_version_no_leaf_holds_is_refused_as_a_failed_precondition() {
        let lacking = |shard: u32| -> Arc<dyn Child> {
            let err = ChildError::from(tonic::Status::failed_precondition(format!(
                "version-missing: shard {shard} holds versions [1], not 999"
            )));
            Arc::new(FakeChild::failing(shard, ms(1), err))
        };
        let r = root(vec![lacking(0), lacking(1)]);
        let pinned = SearchRequest {
            version: 999,
            ..request(0.0)
        };
        let err = ask(&r, pinned.clone(), None).await.unwrap_err();
        let NodeError::VersionMissing(msg) = &err else {
            panic!("{err:?}")
        };
        assert!(msg.contains("none holds version 999"), "{msg}");
        assert!(msg.contains("shard 1 holds versions [1], not 999"), "{msg}");
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::FailedPrecondition
        );
        // One shard down for another reason: worth retrying.
        let r = root(vec![
            lacking(0),
            Arc::new(FakeChild::failing(
                1,
                ms(1),
                ChildError::Unavailable("down".into()),
            )),
        ]);
        let err = ask(&r, pinned, None).await.unwrap_err();
        assert!(matches!(err, NodeError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cached_answer_needs_no_canary_and_no_child() {
        let leaf = Arc::new(FakeChild::answering(0, ms(5), &[("a", 1.0)]));
        leaf.set_snapshot("v1");
        let node = cached_node(&leaf);
        // Every query unseen, so every search would get a canary first.
        let r = RootNode::new(node)
            .with_one_phase(true)
            .with_canary(Some(CanaryConfig {
                remember: Duration::ZERO,
                ..CanaryConfig::default()
            }));
        let first = ask(&r, request(1.0), None).await.unwrap();
        assert_eq!(leaf.calls(), 2, "a canary, then the fan-out");
        let start = Instant::now();
        let again = ask(&r, request(1.0), None).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(leaf.calls(), 2);
        assert_eq!(again.hits, first.hits);
        let c = r.inner().counters();
        assert_eq!(c.get(InnerCounter::Canaries), 1);
        assert_eq!(c.get(InnerCounter::CacheHits), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeated_two_phase_query_costs_no_search_and_no_fetch() {
        let leaf = Arc::new(FakeChild::answering(0, ms(5), &[("a", 1.0), ("b", 0.5)]));
        leaf.set_snapshot("v1");
        let node = cached_node(&leaf);
        let r = RootNode::new(node);
        let first = ask(&r, request(1.0), None).await.unwrap();
        assert_eq!((leaf.calls(), leaf.fetch_calls()), (1, 1));
        assert!(first.hits.iter().all(|h| !h.title.is_empty()));
        let start = Instant::now();
        let again = ask(&r, request(1.0), None).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!((leaf.calls(), leaf.fetch_calls()), (1, 1));
        assert_eq!(again.hits, first.hits, "titles and snippets included");
        assert_eq!(r.inner().counters().get(InnerCounter::CacheHits), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_profiled_two_phase_query_is_searched_and_not_kept_though_cached() {
        let leaf = Arc::new(FakeChild::answering(0, ms(5), &[("a", 1.0), ("b", 0.5)]));
        leaf.set_snapshot("v1");
        let node = cached_node(&leaf);
        let r = RootNode::new(node);
        let profiled = || SearchRequest {
            profile: true,
            ..request(1.0)
        };
        // Asked profiled first: searched, fetched, and not kept.
        let first = ask(&r, profiled(), None).await.unwrap();
        assert!(first.profile.is_some());
        assert_eq!((leaf.calls(), leaf.fetch_calls()), (1, 1));
        ask(&r, request(1.0), None).await.unwrap();
        assert_eq!((leaf.calls(), leaf.fetch_calls()), (2, 2), "nothing kept");
        // The plain answer is cached now; a profiled repeat still searches.
        let again = ask(&r, profiled(), None).await.unwrap();
        assert!(again.profile.is_some(), "a profiled answer has its profile");
        assert_eq!((leaf.calls(), leaf.fetch_calls()), (3, 3));
        assert!(again.hits.iter().all(|h| !h.title.is_empty()));
        assert_eq!(r.inner().counters().get(InnerCounter::CacheHits), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn searches_and_fetches_go_out_at_the_pinned_version() {
        let leaf = Arc::new(FakeChild::answering(0, ms(5), &[("a", 1.0)]));
        let r = root(vec![leaf.clone()]);
        ask(&r, request(0.0), None).await.unwrap();
        r.pinned().set(3);
        ask(&r, request(0.0), None).await.unwrap();
        // A client naming a version keeps it.
        let named = SearchRequest {
            version: 2,
            ..request(0.0)
        };
        ask(&r, named, None).await.unwrap();
        let sent = leaf.versions.lock().unwrap().clone();
        assert_eq!(
            sent,
            [
                ("search", 0),
                ("fetch", 0),
                ("search", 3),
                ("fetch", 3),
                ("search", 2),
                ("fetch", 2)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn admission_counts_sheds_by_class_and_reason_and_shows_its_floor() {
        let r = root(vec![Arc::new(FakeChild::answering(
            0,
            ms(20),
            &[("a", 1.0)],
        ))])
        .with_admission(Some(AdmissionConfig {
            min_limit: 1,
            initial_limit: 1,
            max_limit: 1,
            ..AdmissionConfig::default()
        }));
        let interactive = || SearchRequest {
            ids_only: true,
            ..request(0.0)
        };
        let batch = || SearchRequest {
            priority: Priority::Batch as i32,
            ..interactive()
        };
        // One query in flight fills the limit of 1: the next two are shed
        // at the limit, whatever their class.
        let (first, shed) = tokio::join!(ask(&r, interactive(), None), async {
            (
                ask(&r, interactive(), None).await,
                ask(&r, batch(), None).await,
            )
        });
        first.unwrap();
        assert!(matches!(shed.0, Err(NodeError::Overloaded(_))));
        assert!(matches!(shed.1, Err(NodeError::Overloaded(_))));
        // Alone, a batch query is still past its share of a limit of 1.
        assert!(matches!(
            ask(&r, batch(), None).await,
            Err(NodeError::Overloaded(_))
        ));
        let c = r.inner().counters();
        let count = |k| c.get(k);
        assert_eq!(count(InnerCounter::Admitted), 1);
        assert_eq!(count(InnerCounter::Shed), 3);
        assert_eq!(
            (
                count(InnerCounter::ShedInteractive),
                count(InnerCounter::ShedBatch)
            ),
            (1, 2)
        );
        assert_eq!(
            (
                count(InnerCounter::ShedAtLimit),
                count(InnerCounter::ShedOverShare)
            ),
            (2, 1)
        );
        assert_eq!(count(InnerCounter::AdmissionLimit), 1);
        assert_eq!(count(InnerCounter::AdmissionFloor), 1);
    }
}
