//! The fetch phase at an inner node: each document goes to the child whose
//! shards hold it, all children at once, and whatever has come back by the
//! deadline is the answer. A document whose child failed, was late or holds
//! no such document is reported as such; a fetch never fails as a whole
//! for a child's sake (as a search does not), except when a child finds the
//! request itself invalid (a query no leaf can parse), which no other child
//! would answer either: that is the caller's `INVALID_ARGUMENT`. A document asked for twice is
//! fetched once and answered twice, so the answer lines up with the request.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use searchtree_proto::FetchParams;
use searchtree_proto::pb::{DocRef, FetchResponse, Hit};
use tokio::time::Instant;

use crate::child::{Child, ChildError};
use crate::counters::{InnerCounter, InnerCounters};
use crate::error::NodeError;
use crate::round_trip::RoundTrip;

/// Routes fetches to the children that hold the documents' shards.
pub struct Fetcher {
    children: Vec<Arc<dyn Child>>,
    /// Shard -> index of the child that holds it.
    by_shard: HashMap<u32, usize>,
    /// The cost of the hop to each child and back (round trip minus the time
    /// the child says it spent), kept back from the budget it is given.
    hops: Vec<RoundTrip>,
    counters: Arc<InnerCounters>,
}

impl Fetcher {
    /// A router over `children` (the node's, in the order it searches them).
    pub fn new(children: &[Arc<dyn Child>], counters: Arc<InnerCounters>) -> Self {
        let by_shard = children
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.shards().iter().map(move |&s| (s, i)))
            .collect();
        Fetcher {
            children: children.to_vec(),
            by_shard,
            hops: children.iter().map(|_| RoundTrip::default()).collect(),
            counters,
        }
    }

    /// Fetches `params.docs` from the children holding them, answering by
    /// `answer_at`. Each distinct document is asked for once, and answered
    /// once per time it was asked, in the order asked: as a hit; as
    /// `not_found` if no child holds its shard or its child has no such
    /// document; else as `unfetched` (its child failed, had not answered by
    /// then, or left it out; the late calls are dropped, which cancels
    /// them). A child's `INVALID_ARGUMENT` fails the fetch as invalid.
    pub async fn fetch(
        &self,
        params: &FetchParams,
        answer_at: Instant,
    ) -> Result<FetchResponse, NodeError> {
        let started = Instant::now();
        self.counters.inc(InnerCounter::Fetches);
        let mut routed: Vec<Vec<DocRef>> = vec![Vec::new(); self.children.len()];
        let mut asked: HashSet<(&str, u32)> = HashSet::new();
        for doc in &params.docs {
            if let Some(&i) = self.by_shard.get(&doc.shard)
                && asked.insert((doc.doc_id.as_str(), doc.shard))
            {
                routed[i].push(doc.clone());
            }
        }
        // The children asked, until they answer.
        let mut pending: HashSet<usize> = routed
            .iter()
            .enumerate()
            .filter(|(_, docs)| !docs.is_empty())
            .map(|(i, _)| i)
            .collect();
        let mut calls: FuturesUnordered<_> = routed
            .into_iter()
            .enumerate()
            .filter(|(_, docs)| !docs.is_empty())
            .map(|(i, docs)| self.call(i, params, docs, answer_at))
            .collect();
        let mut fetched: HashMap<(String, u32), Hit> = HashMap::new();
        let mut not_found: HashSet<(String, u32)> = HashSet::new();
        let deadline = tokio::time::sleep_until(answer_at);
        tokio::pin!(deadline);
        while !calls.is_empty() {
            tokio::select! {
                biased;
                Some((i, result)) = calls.next() => {
                    pending.remove(&i);
                    match result {
                        Ok(part) => {
                            for hit in part.hits {
                                fetched.insert((hit.doc_id.clone(), hit.shard), hit);
                            }
                            not_found.extend(part.not_found.into_iter().map(|d| (d.doc_id, d.shard)));
                        }
                        Err(ChildError::InvalidArgument(msg)) => {
                            self.counters.inc(InnerCounter::InvalidRequests);
                            return Err(NodeError::Invalid(msg));
                        }
                        Err(err) => {
                            self.counters.inc(InnerCounter::FetchFailures);
                            tracing::debug!(child = self.children[i].name(), %err, "fetch failed");
                        }
                    }
                }
                _ = &mut deadline => {
                    self.counters.add(InnerCounter::FetchFailures, pending.len() as u64);
                    break;
                }
            }
        }
        // One answer per document asked, in the order asked; a child's hit
        // for a document not asked is dropped.
        let mut answer = FetchResponse::default();
        for doc in &params.docs {
            let key = (doc.doc_id.clone(), doc.shard);
            if let Some(hit) = fetched.get(&key) {
                answer.hits.push(hit.clone());
            } else if !self.by_shard.contains_key(&doc.shard) || not_found.contains(&key) {
                answer.not_found.push(doc.clone());
            } else {
                answer.unfetched.push(doc.clone());
            }
        }
        self.counters
            .add(InnerCounter::FetchUnfetched, answer.unfetched.len() as u64);
        answer.took_us = started.elapsed().as_micros() as u64;
        Ok(answer)
    }

    /// One child's share of the fetch, given the time to `answer_at` minus
    /// the measured hop to it and back.
    async fn call(
        &self,
        i: usize,
        params: &FetchParams,
        docs: Vec<DocRef>,
        answer_at: Instant,
    ) -> (usize, Result<FetchResponse, ChildError>) {
        let hop = &self.hops[i];
        let budget = answer_at
            .saturating_duration_since(Instant::now())
            .saturating_sub(hop.hop_reserve());
        if budget.is_zero() {
            return (i, Err(ChildError::Timeout("no time left to fetch".into())));
        }
        let request = params.to_child_request(docs, budget);
        let sent = Instant::now();
        let result = self.children[i].fetch(request, budget).await;
        if let Ok(part) = &result {
            let round_trip = sent.elapsed().as_micros() as u64;
            hop.observe(round_trip.saturating_sub(part.took_us));
        }
        (i, result)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use searchtree_proto::pb::FetchRequest;

    use super::*;
    use crate::counters::inner_counters;
    use crate::fake::FakeChild;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn doc(id: &str, shard: u32) -> DocRef {
        DocRef {
            doc_id: id.into(),
            shard,
        }
    }

    fn params(docs: Vec<DocRef>) -> FetchParams {
        let req = FetchRequest {
            hops: 0,
            query: "q".into(),
            docs,
            budget_ms: 0,
            version: 0,
        };
        FetchParams::validate(&req, &Default::default()).unwrap()
    }

    /// Three one-shard children, shard s holding "s0" and "s1" (s = 0, 1, 2),
    /// child 1 answering after `slow`.
    fn children(slow: Duration) -> Vec<Arc<FakeChild>> {
        (0..3)
            .map(|s| {
                let ids = [format!("{s}0"), format!("{s}1")];
                let delay = if s == 1 { slow } else { ms(2) };
                let hits: Vec<(&str, f32)> = ids.iter().map(|id| (id.as_str(), 1.0)).collect();
                Arc::new(FakeChild::answering(s, delay, &hits))
            })
            .collect()
    }

    fn fetcher(children: &[Arc<FakeChild>]) -> Fetcher {
        let dyns: Vec<Arc<dyn Child>> = children
            .iter()
            .map(|c| Arc::clone(c) as Arc<dyn Child>)
            .collect();
        Fetcher::new(&dyns, inner_counters("parent"))
    }

    #[tokio::test(start_paused = true)]
    async fn each_document_goes_to_the_child_holding_its_shard() {
        let c = children(ms(2));
        let f = fetcher(&c);
        let asked = vec![doc("21", 2), doc("00", 0), doc("nope", 0), doc("x", 9)];
        let answer = f
            .fetch(&params(asked), Instant::now() + ms(50))
            .await
            .unwrap();
        let got: Vec<(&str, &str)> = answer
            .hits
            .iter()
            .map(|h| (h.doc_id.as_str(), h.title.as_str()))
            .collect();
        assert_eq!(got, [("21", "title of 21"), ("00", "title of 00")]);
        assert_eq!(answer.hits[0].snippet, FakeChild::snippet_of("21", "q"));
        assert_eq!(answer.not_found, vec![doc("nope", 0), doc("x", 9)]);
        assert!(answer.unfetched.is_empty());
        let calls: Vec<usize> = c.iter().map(|c| c.fetch_calls()).collect();
        assert_eq!(calls, [1, 0, 1], "one call per child holding a document");
        assert_eq!(f.counters.get(InnerCounter::Fetches), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_document_asked_twice_is_fetched_once_and_answered_twice() {
        let c = children(ms(2));
        c[2].set_down(true);
        let f = fetcher(&c);
        let asked = vec![
            doc("00", 0),
            doc("20", 2),
            doc("10", 1),
            doc("00", 0),
            doc("nope", 0),
            doc("x", 9),
            doc("10", 1),
            doc("nope", 0),
            doc("20", 2),
            doc("x", 9),
        ];
        let answer = f
            .fetch(&params(asked), Instant::now() + ms(50))
            .await
            .unwrap();
        let ids: Vec<&str> = answer.hits.iter().map(|h| h.doc_id.as_str()).collect();
        assert_eq!(ids, ["00", "10", "00", "10"], "one hit per time asked");
        assert_eq!(answer.hits[2].title, FakeChild::title_of("00"));
        assert_eq!(
            answer.not_found,
            [doc("nope", 0), doc("x", 9), doc("nope", 0), doc("x", 9)]
        );
        assert_eq!(answer.unfetched, [doc("20", 2), doc("20", 2)]);
        let sent = |i: usize| c[i].fetched.lock().unwrap().clone();
        assert_eq!(sent(0), ["00", "nope"], "each distinct document once");
        assert_eq!(sent(1), ["10"]);
        assert_eq!(f.counters.get(InnerCounter::FetchUnfetched), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_child_leaves_its_documents_unfetched_and_the_answer_keeps_its_deadline() {
        let c = children(ms(500));
        let f = fetcher(&c);
        let start = Instant::now();
        let asked = vec![doc("10", 1), doc("00", 0), doc("11", 1)];
        let answer = f.fetch(&params(asked), start + ms(50)).await.unwrap();
        // The child's own deadline (the time left less the hop's reserve)
        // ended its call: the answer is in before the deadline.
        assert_eq!(start.elapsed(), ms(47));
        assert_eq!(answer.hits.len(), 1);
        assert_eq!(answer.unfetched, vec![doc("10", 1), doc("11", 1)]);
        assert_eq!(f.counters.get(InnerCounter::FetchFailures), 1);
        assert_eq!(f.counters.get(InnerCounter::FetchUnfetched), 2);
        assert_eq!(c[1].fetch_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_child_leaves_its_documents_unfetched_at_once() {
        let c = children(ms(2));
        c[2].set_down(true);
        let f = fetcher(&c);
        let start = Instant::now();
        let answer = f
            .fetch(&params(vec![doc("20", 2), doc("01", 0)]), start + ms(50))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), ms(2), "no waiting for the failed child");
        assert_eq!(answer.unfetched, vec![doc("20", 2)]);
        assert_eq!(answer.hits[0].doc_id, "01");
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_a_child_finds_invalid_fails_the_fetch_as_invalid() {
        let mut c = children(ms(2));
        c[2] = Arc::new(FakeChild::failing(
            2,
            ms(1),
            ChildError::InvalidArgument("the query has only excluded terms".into()),
        ));
        let f = fetcher(&c);
        let err = f
            .fetch(
                &params(vec![doc("20", 2), doc("01", 0)]),
                Instant::now() + ms(50),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NodeError::Invalid(m) if m.contains("only excluded terms")),
            "{err:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_goes_down_through_an_inner_node_to_its_leaves() {
        use crate::node::{InnerNode, InnerTiming};
        let c = children(ms(2));
        let lower: Vec<Arc<dyn Child>> = c[1..]
            .iter()
            .map(|c| Arc::clone(c) as Arc<dyn Child>)
            .collect();
        let mid = InnerNode::new("mid", lower, InnerTiming::default(), inner_counters("mid"));
        let top: Vec<Arc<dyn Child>> = vec![Arc::clone(&c[0]) as Arc<dyn Child>, Arc::new(mid)];
        let f = Fetcher::new(&top, inner_counters("root"));
        let asked = vec![doc("21", 2), doc("10", 1), doc("01", 0)];
        let answer = f
            .fetch(&params(asked), Instant::now() + ms(50))
            .await
            .unwrap();
        let ids: Vec<&str> = answer.hits.iter().map(|h| h.doc_id.as_str()).collect();
        assert_eq!(ids, ["21", "10", "01"], "in the order asked");
        assert_eq!(answer.hits[1].title, FakeChild::title_of("10"));
        let calls: Vec<usize> = c.iter().map(|c| c.fetch_calls()).collect();
        assert_eq!(calls, [1, 1, 1]);
    }
}
