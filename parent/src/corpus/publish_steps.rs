//! The steps of a publish as an inner node takes them: Prepare (fan out,
//! check that replicas of a shard agree, sum the terms' document frequencies
//! over the disjoint shards below), Install (the corpus-wide statistics teed
//! to every replica that prepared), Activate, and Versions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use searchtree_proto::forwarded::forwarded;
use searchtree_proto::pb::{
    ActivateRequest, ActivateResponse, FieldTerms, InstallChunk, InstallResponse, LeafVersions,
    PrepareChunk, PrepareRequest, ShardSummary, VersionsRequest, VersionsResponse,
};
use tokio::sync::mpsc;
use tonic::Status;

use super::CorpusChildren;
use super::CorpusNode;
use super::receiver_stream;

/// The most terms in one chunk of statistics.
pub const MAX_TERMS_PER_CHUNK: usize = 16_384;

/// How long a replica may take to say what versions it holds.
pub const VERSIONS_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a replica may take to activate a version it installed.
pub const ACTIVATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Document frequencies per field and term, summed over shards.
pub type TermSums = BTreeMap<String, BTreeMap<Vec<u8>, u64>>;

/// What a Prepare below this node produced.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Every replica's summary of its shard's candidate (replicas of a shard
    /// agree on its digest).
    pub summaries: Vec<ShardSummary>,
    /// The terms' document frequencies over every shard below.
    pub terms: TermSums,
    /// The replicas `(child, replica)` that prepared the candidate.
    pub replicas: BTreeSet<(usize, usize)>,
    /// Replicas that failed to prepare while a sibling did, were skipped
    /// for having missed part of the load, or were left out below: they
    /// catch up.
    pub left_out: Vec<String>,
}

impl Prepared {
    /// One summary per shard (the first of its replicas'), by shard.
    pub fn per_shard(&self) -> BTreeMap<u32, &ShardSummary> {
        let mut shards = BTreeMap::new();
        for s in &self.summaries {
            shards.entry(s.shard).or_insert(s);
        }
        shards
    }

    /// The corpus totals: documents, and tokens per field, over the shards.
    pub fn totals(&self) -> (u64, BTreeMap<String, u64>) {
        let mut docs = 0;
        let mut tokens = BTreeMap::new();
        for s in self.per_shard().values() {
            docs += s.num_docs;
            for (field, n) in &s.num_tokens {
                *tokens.entry(field.clone()).or_insert(0) += n;
            }
        }
        (docs, tokens)
    }

    /// The answer to send up: summaries first, then the summed terms.
    pub fn into_chunks(self) -> Vec<PrepareChunk> {
        let mut chunks = vec![PrepareChunk {
            shards: self.summaries,
            terms: Vec::new(),
            left_out: self.left_out,
        }];
        chunks.extend(
            term_chunks(&self.terms)
                .into_iter()
                .map(|terms| PrepareChunk {
                    shards: Vec::new(),
                    terms,
                    left_out: Vec::new(),
                }),
        );
        chunks
    }
}

/// Adds `chunk`'s document frequencies into `sums`.
pub fn add_terms(sums: &mut TermSums, chunk: &[FieldTerms]) -> Result<(), Status> {
    for field in chunk {
        if field.terms.len() != field.doc_freqs.len() {
            return Err(Status::invalid_argument(format!(
                "field {}: {} terms but {} document frequencies",
                field.field,
                field.terms.len(),
                field.doc_freqs.len()
            )));
        }
        let terms = sums.entry(field.field.clone()).or_default();
        for (term, df) in field.terms.iter().zip(&field.doc_freqs) {
            *terms.entry(term.clone()).or_insert(0) += df;
        }
    }
    Ok(())
}

/// `sums` in chunks of at most [`MAX_TERMS_PER_CHUNK`] terms, fields and
/// terms in order.
pub fn term_chunks(sums: &TermSums) -> Vec<Vec<FieldTerms>> {
    let mut chunks = Vec::new();
    let mut chunk: Vec<FieldTerms> = Vec::new();
    let mut in_chunk = 0;
    for (field, terms) in sums {
        for (term, df) in terms {
            if in_chunk == MAX_TERMS_PER_CHUNK {
                chunks.push(std::mem::take(&mut chunk));
                in_chunk = 0;
            }
            if chunk.last().is_none_or(|f| f.field != *field) {
                chunk.push(FieldTerms {
                    field: field.clone(),
                    ..FieldTerms::default()
                });
            }
            let last = chunk.last_mut().expect("pushed");
            last.terms.push(term.clone());
            last.doc_freqs.push(*df);
            in_chunk += 1;
        }
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// Refuses summaries whose replicas of a shard disagree on its content.
pub fn check_digests(summaries: &[ShardSummary]) -> Result<(), Status> {
    let mut by_shard: BTreeMap<u32, Vec<&ShardSummary>> = BTreeMap::new();
    for s in summaries {
        by_shard.entry(s.shard).or_default().push(s);
    }
    let disagreeing: Vec<String> = by_shard
        .iter()
        .filter(|(_, s)| s.iter().any(|x| x.digest != s[0].digest))
        .map(|(shard, s)| {
            let replicas: Vec<String> = s
                .iter()
                .map(|x| {
                    format!(
                        "{} has {} documents, digest {}",
                        x.replica, x.num_docs, x.digest
                    )
                })
                .collect();
            format!("shard {shard}: {}", replicas.join(", "))
        })
        .collect();
    if disagreeing.is_empty() {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "replicas disagree on the candidate's content ({}): rerun the load so every replica receives every batch",
        disagreeing.join("; ")
    )))
}

/// What one replica's Prepare gave.
struct ReplicaPrepare {
    child: usize,
    replica: usize,
    addr: String,
    /// Whether it was the child's replica whose terms were summed.
    claimed: bool,
    /// Its summaries, and the replicas below it it left out.
    outcome: Result<(Vec<ShardSummary>, Vec<String>), Status>,
}

impl CorpusNode {
    /// The replicas asked for a step that leaves out `skip` (and the
    /// replicas this node knows missed part of the load).
    fn skipped(&self, skip: &[String]) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = skip.iter().cloned().collect();
        all.extend(self.missed());
        all
    }

    /// Prepare: asks every replica below (but the skipped ones) to build
    /// the candidate, checks that replicas of a shard agree, and sums the
    /// terms of one replica per child.
    pub async fn prepare(&self, request: &PrepareRequest) -> Result<Prepared, Status> {
        if request.version == 0 {
            return Err(Status::invalid_argument("Prepare needs a version"));
        }
        let skip = self.skipped(&request.skip_replicas);
        let down = PrepareRequest {
            version: request.version,
            from_build: request.from_build.clone(),
            skip_replicas: skip.iter().cloned().collect(),
        };
        let children = self.children();
        let sums = Arc::new(Mutex::new(TermSums::new()));
        let claims = Mutex::new(vec![None; children.children().len()]);
        let calls = children
            .children()
            .iter()
            .enumerate()
            .flat_map(|(c, child)| {
                child
                    .replicas
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| !skip.contains(&r.addr))
                    .map(move |(r, replica)| (c, r, replica))
            })
            .map(|(child, replica, target)| {
                let (down, sums, claims) = (down.clone(), &sums, &claims);
                async move {
                    let mut claimed = false;
                    let outcome = async {
                        let mut stream =
                            target.client().prepare(forwarded(down)).await?.into_inner();
                        let mut summaries = Vec::new();
                        let mut left_out = Vec::new();
                        while let Some(chunk) = stream.message().await? {
                            summaries.extend(chunk.shards);
                            left_out.extend(chunk.left_out);
                            if chunk.terms.is_empty() {
                                continue;
                            }
                            if !claimed {
                                let mut claims = claims.lock().expect("claims lock");
                                if claims[child].is_none() {
                                    claims[child] = Some(replica);
                                }
                                claimed = claims[child] == Some(replica);
                            }
                            if claimed {
                                // Summing is CPU work: off the async workers,
                                // which keep answering queries meanwhile.
                                let (sums, terms) = (Arc::clone(sums), chunk.terms);
                                tokio::task::spawn_blocking(move || {
                                    add_terms(&mut sums.lock().expect("sums lock"), &terms)
                                })
                                .await
                                .map_err(|e| {
                                    Status::internal(format!("summing terms failed: {e}"))
                                })??;
                            }
                        }
                        Ok::<_, Status>((summaries, left_out))
                    }
                    .await;
                    ReplicaPrepare {
                        child,
                        replica,
                        addr: target.addr.clone(),
                        claimed,
                        outcome,
                    }
                }
            });
        let answers = futures::future::join_all(calls).await;
        let mut prepared = Prepared::default();
        let mut errors: Vec<String> = Vec::new();
        for answer in answers {
            match answer.outcome {
                Ok((summaries, below)) => {
                    prepared.summaries.extend(summaries);
                    prepared.left_out.extend(below);
                    prepared.replicas.insert((answer.child, answer.replica));
                }
                Err(status) if answer.claimed => {
                    return Err(Status::unavailable(format!(
                        "replica {} failed while sending its terms: {:?}: {}",
                        answer.addr,
                        status.code(),
                        status.message()
                    )));
                }
                Err(status) => {
                    if status.code() == tonic::Code::FailedPrecondition
                        || status.code() == tonic::Code::InvalidArgument
                    {
                        // Not a replica falling behind: the request itself
                        // (a version, a build directory) is wrong.
                        return Err(Status::new(
                            status.code(),
                            format!("{}: {}", answer.addr, status.message()),
                        ));
                    }
                    errors.push(format!(
                        "{}: {:?}: {}",
                        answer.addr,
                        status.code(),
                        status.message()
                    ));
                    prepared.left_out.push(answer.addr);
                }
            }
        }
        let covered: BTreeSet<u32> = prepared.summaries.iter().map(|s| s.shard).collect();
        let missing: Vec<String> = children
            .shards()
            .into_iter()
            .filter(|s| !covered.contains(s))
            .map(|s| s.to_string())
            .collect();
        if !missing.is_empty() {
            // Replicas left out because they missed a load or a discard:
            // the reason, when no other replica of their shards answered.
            let left_out: Vec<String> = children
                .children()
                .iter()
                .filter(|c| c.shards.iter().any(|s| !covered.contains(s)))
                .flat_map(|c| c.replicas.iter())
                .filter(|r| skip.contains(&r.addr))
                .map(|r| r.addr.clone())
                .collect();
            let mut reasons = errors;
            reasons.extend(
                children
                    .children()
                    .iter()
                    .filter(|c| c.replicas.is_empty())
                    .map(|c| c.none_known()),
            );
            if !left_out.is_empty() {
                reasons.push(format!(
                    "left out: {}, which missed part of a load or a discard since the last \
                     publish (unreachable or failing then) and has no replica in step to take \
                     its place: run `searchtree discard` now that it is back, then load again",
                    left_out.join(", ")
                ));
            }
            return Err(Status::unavailable(format!(
                "no replica prepared version {} of shard(s) {} ({})",
                request.version,
                missing.join(", "),
                reasons.join("; ")
            )));
        }
        check_digests(&prepared.summaries)?;
        prepared
            .summaries
            .sort_by(|a, b| (a.shard, &a.replica).cmp(&(b.shard, &b.replica)));
        prepared.terms = std::mem::take(&mut *sums.lock().expect("sums lock"));
        self.add_missed(prepared.left_out.iter().cloned());
        // Replicas skipped here are behind too; the node above is told, so
        // that the publish names them.
        prepared.left_out.extend(
            children
                .children()
                .iter()
                .flat_map(|c| c.replicas.iter())
                .filter(|r| skip.contains(&r.addr))
                .map(|r| r.addr.clone()),
        );
        prepared.left_out.sort();
        prepared.left_out.dedup();
        *self.prepared.lock().expect("prepared lock") =
            Some((request.version, prepared.replicas.clone(), children.clone()));
        Ok(prepared)
    }

    /// Install: tees `incoming` (the first chunk names the version) to every
    /// replica that prepared it; answers with the shards that installed it,
    /// or UNAVAILABLE naming a replica that failed.
    pub async fn install<S>(&self, mut incoming: S) -> Result<InstallResponse, Status>
    where
        S: Stream<Item = Result<InstallChunk, Status>> + Unpin + Send,
    {
        let first = incoming
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("Install sent no chunk"))??;
        if first.version == 0 {
            return Err(Status::invalid_argument(
                "Install's first chunk names no version",
            ));
        }
        let (children, targets) = self.install_targets(first.version, &first.skip_replicas);
        let mut calls = Vec::new();
        for (child, replica) in targets {
            let target = &children.children()[child].replicas[replica];
            let (tx, rx) = mpsc::channel::<InstallChunk>(4);
            let mut client = target.client();
            let call =
                tokio::spawn(async move { client.install(forwarded(receiver_stream(rx))).await });
            calls.push((target.addr.clone(), Some(tx), call));
        }
        let mut next = Some(first);
        loop {
            let chunk = match next.take() {
                Some(chunk) => chunk,
                None => match incoming.next().await {
                    None => break,
                    Some(Ok(chunk)) => chunk,
                    Some(Err(status)) => {
                        // Cancel the calls below: a leaf must not take a
                        // cut-off stream for the whole statistics.
                        for (_, _, call) in &calls {
                            call.abort();
                        }
                        return Err(status);
                    }
                },
            };
            for (_, tx, _) in &mut calls {
                if let Some(sender) = tx
                    && sender.send(chunk.clone()).await.is_err()
                {
                    // Its call ended early; its answer says why.
                    *tx = None;
                }
            }
        }
        let mut shards = BTreeSet::new();
        let mut failures = Vec::new();
        for (addr, tx, call) in calls {
            drop(tx);
            match call.await {
                Ok(Ok(response)) => shards.extend(response.into_inner().shards),
                Ok(Err(status)) => {
                    failures.push(format!("{addr}: {:?}: {}", status.code(), status.message()))
                }
                Err(err) => failures.push(format!("{addr}: {err}")),
            }
        }
        if !failures.is_empty() {
            return Err(Status::unavailable(format!(
                "install failed on {}",
                failures.join("; ")
            )));
        }
        Ok(InstallResponse {
            shards: shards.into_iter().collect(),
        })
    }

    /// The replicas an Install of `version` goes to: those that prepared it
    /// here, or (if this node has not seen the Prepare, e.g. it restarted)
    /// every replica not skipped.
    /// (The children as the Prepare saw them: membership may have changed
    /// since.)
    fn install_targets(
        &self,
        version: u64,
        skip: &[String],
    ) -> (CorpusChildren, Vec<(usize, usize)>) {
        if let Some((v, replicas, children)) = &*self.prepared.lock().expect("prepared lock")
            && *v == version
        {
            return (children.clone(), replicas.iter().copied().collect());
        }
        let skip = self.skipped(skip);
        let children = self.children();
        let targets = all_replicas(&children)
            .filter(|(c, r)| !skip.contains(&children.children()[*c].replicas[*r].addr))
            .collect();
        (children, targets)
    }

    /// Activate: every replica below makes `version` its current one; the
    /// ones that fail are named. When `version` is the one prepared here
    /// (the last step of a publish), the missed set starts afresh: the
    /// replicas that missed the load were left out of it and catch up from
    /// a sibling. Any other Activate (a leaf that missed an earlier one,
    /// brought to the pinned version) leaves it alone: the load's staged
    /// operations are not published yet, and its misses still count.
    pub async fn activate(&self, request: ActivateRequest) -> Result<ActivateResponse, Status> {
        if request.version == 0 {
            return Err(Status::invalid_argument("Activate needs a version"));
        }
        // The end of a publish goes to the replicas that prepared its
        // version (the others lack it: skipped, unreachable or failed, and
        // a hung one would hold the publish for ACTIVATE_TIMEOUT); any
        // other Activate to every replica.
        let prepared_here = self
            .prepared
            .lock()
            .expect("prepared lock")
            .as_ref()
            .filter(|(v, _, _)| *v == request.version)
            .map(|(_, replicas, children)| (replicas.clone(), children.clone()));
        let (children, targets): (CorpusChildren, Vec<(usize, usize)>) = match prepared_here {
            Some((replicas, children)) => (children, replicas.into_iter().collect()),
            None => {
                let children = self.children();
                let all = all_replicas(&children).collect();
                (children, all)
            }
        };
        let calls = targets.into_iter().map(|(c, r)| {
            let target = &children.children()[c].replicas[r];
            let mut call = forwarded(request);
            call.set_timeout(ACTIVATE_TIMEOUT);
            async move {
                let answer = target.client().activate(call).await;
                (target.addr.clone(), answer)
            }
        });
        let mut response = ActivateResponse::default();
        let mut activated = BTreeSet::new();
        for (addr, answer) in futures::future::join_all(calls).await {
            match answer {
                Ok(r) => {
                    let r = r.into_inner();
                    if r.replicas_failed.is_empty() {
                        activated.insert(addr);
                    }
                    response.replicas.extend(r.replicas);
                    response.replicas_failed.extend(r.replicas_failed);
                }
                Err(status) => {
                    tracing::warn!(replica = %addr, %status, version = request.version, "activate failed");
                    response.replicas_failed.push(addr);
                }
            }
        }
        let mut prepared = self.prepared.lock().expect("prepared lock");
        if prepared
            .as_ref()
            .is_some_and(|(v, _, _)| *v == request.version)
        {
            self.missed.lock().expect("missed lock").clear();
            self.set_loaded(false);
            *prepared = None;
        }
        drop(prepared);
        self.activated(request.version, &activated);
        Ok(response)
    }

    /// Versions: what every leaf below holds, answered `within` the time
    /// given; a replica that does not answer is listed unreachable for each
    /// shard below it, and one that answers for other shards than its
    /// child's is listed misplaced (and set aside from the other corpus
    /// calls until it answers as the child's again). Children get a fifth
    /// less time than this node has, so that one hung replica costs its own
    /// entry, not this node's whole answer (which its caller would
    /// otherwise give up on at the same moment).
    pub async fn versions(&self, within: Duration) -> VersionsResponse {
        let children = self.all_children();
        let marked = self.misplaced.lock().expect("misplaced lock").clone();
        let below = within.mul_f64(0.8);
        let calls = all_replicas(&children).map(|(c, r)| {
            let child = &children.children()[c];
            let target = &child.replicas[r];
            let mut call = tonic::Request::new(VersionsRequest {});
            call.set_timeout(below);
            async move {
                let answer = target.client().versions(call).await;
                (child, target, answer)
            }
        });
        let mut leaves = Vec::new();
        let mut answered = BTreeSet::new();
        let mut misplaced = BTreeSet::new();
        for (child, target, answer) in futures::future::join_all(calls).await {
            let entries = match answer {
                Ok(r) => {
                    let served = r.into_inner().leaves;
                    answered.insert((child.shards.clone(), target.addr.clone()));
                    match foreign_shards(&child.shards, &served) {
                        None => served,
                        Some(foreign) => {
                            misplaced.insert((child.shards.clone(), target.addr.clone()));
                            let error = misplaced_error(&child.shards, &foreign);
                            not_answering(&child.shards, &target.addr, &error, true)
                        }
                    }
                }
                // Still misplaced as far as is known: listed so, for the
                // root must not skip its address (its own shard's replica).
                Err(status) if marked.contains(&(child.shards.clone(), target.addr.clone())) => {
                    let error = format!(
                        "{} (last time it answered it was another shard's replica; this time \
                         it did not answer: {})",
                        misplaced_error(&child.shards, &[]),
                        status.message()
                    );
                    not_answering(&child.shards, &target.addr, &error, true)
                }
                Err(status) => unreachable_entries(&child.shards, &target.addr, &status, below),
            };
            leaves.extend(entries);
        }
        self.set_misplaced(&children, &answered, misplaced);
        leaves.sort_by(|a, b| (a.shard, &a.replica).cmp(&(b.shard, &b.replica)));
        VersionsResponse {
            leaves,
            pinned: 0,
            role: String::new(),
        }
    }
}

/// The shards a replica of a child over `shards` answered Versions for
/// that are not the child's, if any: the node at its address is another
/// shard's, not this child's replica.
fn foreign_shards(shards: &[u32], served: &[LeafVersions]) -> Option<Vec<u32>> {
    let foreign: BTreeSet<u32> = served
        .iter()
        .map(|l| l.shard)
        .filter(|s| !shards.contains(s))
        .collect();
    (!foreign.is_empty()).then(|| foreign.into_iter().collect())
}

/// Why a replica of a child over `shards` that answered for `foreign`
/// shards (none known: `[]`) is not that child's replica.
fn misplaced_error(shards: &[u32], foreign: &[u32]) -> String {
    let serves = if foreign.is_empty() {
        "other shards".to_string()
    } else {
        format!("shard(s) {}", crate::spec::format_shards(foreign))
    };
    format!(
        "named as a replica of shard(s) {}, it answers for {serves}: a wrong address, or \
         an etcd record naming shards the node does not serve (`searchtree members` lists \
         the records); loads and publishes leave it out as a replica of shard(s) {0}",
        crate::spec::format_shards(shards),
    )
}

/// One entry per shard of a child over `shards` for its replica `addr`,
/// which did not answer as that child's (`error` says why).
fn not_answering(shards: &[u32], addr: &str, error: &str, misplaced: bool) -> Vec<LeafVersions> {
    shards
        .iter()
        .map(|shard| LeafVersions {
            shard: *shard,
            replica: addr.to_string(),
            reachable: false,
            misplaced,
            error: error.to_string(),
            ..LeafVersions::default()
        })
        .collect()
}

/// The entries of a replica of a child over `shards` that did not answer
/// Versions (`status`) within `within`: one per shard of the child.
fn unreachable_entries(
    shards: &[u32],
    addr: &str,
    status: &Status,
    within: Duration,
) -> Vec<LeafVersions> {
    // tonic's own words for a deadline that ran out ("Cancelled: Timeout
    // expired") name neither.
    let why = match status.code() {
        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
            format!("no answer within {} ms", within.as_millis())
        }
        code => format!("{code:?}: {}", status.message()),
    };
    let error = if shards.len() > 1 {
        // A leaf serves one shard: this is an inner node, not a replica.
        format!(
            "{why} (it serves shards {shards:?}: a node above their leaves, which could not \
             be asked through it)"
        )
    } else {
        why
    };
    not_answering(shards, addr, &error, false)
}

/// Every replica of every child, as (child, replica) indices.
pub(super) fn all_replicas(children: &CorpusChildren) -> impl Iterator<Item = (usize, usize)> + '_ {
    children
        .children()
        .iter()
        .enumerate()
        .flat_map(|(c, child)| (0..child.replicas.len()).map(move |r| (c, r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(field: &str, pairs: &[(&str, u64)]) -> FieldTerms {
        FieldTerms {
            field: field.into(),
            terms: pairs.iter().map(|(t, _)| t.as_bytes().to_vec()).collect(),
            doc_freqs: pairs.iter().map(|(_, d)| *d).collect(),
        }
    }

    fn summary(shard: u32, replica: &str, digest: &str) -> ShardSummary {
        ShardSummary {
            shard,
            replica: replica.into(),
            num_docs: 10,
            digest: digest.into(),
            ..ShardSummary::default()
        }
    }

    #[test]
    fn document_frequencies_add_up_over_shards() {
        let mut sums = TermSums::new();
        add_terms(&mut sums, &[terms("body", &[("a", 2), ("b", 1)])]).unwrap();
        add_terms(
            &mut sums,
            &[terms("body", &[("b", 3)]), terms("title", &[("a", 1)])],
        )
        .unwrap();
        assert_eq!(sums["body"][b"a".as_slice()], 2);
        assert_eq!(sums["body"][b"b".as_slice()], 4);
        assert_eq!(sums["title"][b"a".as_slice()], 1);
        let bad = FieldTerms {
            doc_freqs: vec![],
            ..terms("body", &[("c", 1)])
        };
        assert!(add_terms(&mut sums, &[bad]).is_err());
    }

    #[test]
    fn chunks_hold_at_most_the_limit_and_keep_every_term_in_order() {
        let mut sums = TermSums::new();
        let n = MAX_TERMS_PER_CHUNK + 10;
        sums.insert(
            "body".into(),
            (0..n)
                .map(|i| (format!("{i:06}").into_bytes(), 1))
                .collect(),
        );
        sums.insert("title".into(), [(b"x".to_vec(), 7)].into());
        let chunks = term_chunks(&sums);
        assert_eq!(chunks.len(), 2);
        let count = |c: &Vec<FieldTerms>| c.iter().map(|f| f.terms.len()).sum::<usize>();
        assert_eq!(count(&chunks[0]), MAX_TERMS_PER_CHUNK);
        assert_eq!(count(&chunks[1]), 11);
        // The second chunk goes on with body, then title.
        let fields: Vec<&str> = chunks[1].iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["body", "title"]);
        let mut again = TermSums::new();
        for chunk in &chunks {
            add_terms(&mut again, chunk).unwrap();
        }
        assert_eq!(again, sums);
    }

    #[test]
    fn replicas_disagreeing_on_a_digest_are_named() {
        let agree = [
            summary(0, "a:1", "d1"),
            summary(0, "b:1", "d1"),
            summary(1, "c:1", "x"),
        ];
        check_digests(&agree).unwrap();
        let disagree = [summary(0, "a:1", "d1"), summary(0, "b:1", "d2")];
        let err = check_digests(&disagree).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().contains(
                "shard 0: a:1 has 10 documents, digest d1, b:1 has 10 documents, digest d2"
            ),
            "{}",
            err.message()
        );
        assert!(err.message().contains("rerun the load"));
    }

    #[test]
    fn totals_count_each_shard_once() {
        let mut a = summary(0, "a:1", "d");
        a.num_tokens.insert("body".into(), 100);
        let mut b = summary(0, "b:1", "d");
        b.num_tokens.insert("body".into(), 100);
        let mut c = summary(1, "c:1", "e");
        c.num_tokens.insert("body".into(), 5);
        let prepared = Prepared {
            summaries: vec![a, b, c],
            ..Prepared::default()
        };
        let (docs, tokens) = prepared.totals();
        assert_eq!(docs, 20);
        assert_eq!(tokens["body"], 105);
    }
}
