//! An inner node's corpus calls against fake leaves over real gRPC.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use searchtree_proto::pb::{
    ActivateRequest, DocOp, FailureReason, InstallChunk, LoadAck, LoadBatch, PrepareRequest,
};
use searchtree_proto::sharding::shard_of;
use tonic::Status;

use super::{CorpusChildren, CorpusNode};
use crate::fake_corpus::{FakeLeaf, dead_addr};
use crate::spec::ChildSpec;

fn spec(shard: u32, addrs: &[&str]) -> ChildSpec {
    format!("{shard}@{}", addrs.join(",")).parse().unwrap()
}

fn node(specs: &[ChildSpec]) -> CorpusNode {
    CorpusNode::new(CorpusChildren::from_specs(specs).unwrap())
}

/// `n` ids placed in `shard` of `num_shards`.
fn ids_in(shard: u32, num_shards: u32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("doc-{i}"))
        .filter(|id| shard_of(id, num_shards) == shard)
        .take(n)
        .collect()
}

fn upsert(id: &str, line: u64) -> DocOp {
    DocOp {
        id: id.into(),
        title: "t".into(),
        body: "b".into(),
        delete: false,
        line,
    }
}

/// Prepares `version` below `node`, from what is staged.
async fn prepare(node: &CorpusNode, version: u64) -> Result<super::Prepared, Status> {
    node.prepare(&PrepareRequest {
        version,
        ..PrepareRequest::default()
    })
    .await
}

/// Installs `version` below `node` (prepared there), with no statistics.
async fn install(node: &CorpusNode, version: u64) {
    let chunk = InstallChunk {
        version,
        ..InstallChunk::default()
    };
    node.install(futures::stream::iter([Ok(chunk)]))
        .await
        .unwrap();
}

/// Loads `batches` through `node` with `num_shards` shards; the acks.
async fn load(node: &CorpusNode, num_shards: u32, batches: Vec<LoadBatch>) -> Vec<LoadAck> {
    let incoming = futures::stream::iter(batches.into_iter().map(Ok::<_, Status>));
    let (mut acks, work) = node.load(num_shards, incoming);
    tokio::spawn(work);
    let mut all = Vec::new();
    while let Some(ack) = acks.recv().await {
        all.push(ack.unwrap());
    }
    all.sort_by_key(|a| a.seq);
    all
}

#[tokio::test]
async fn each_replica_gets_its_shards_ops_in_order_and_the_batch_is_acked_once() {
    let (a1, a2, b) = (
        FakeLeaf::start(0).await,
        FakeLeaf::start(0).await,
        FakeLeaf::start(1).await,
    );
    let node = node(&[spec(0, &[&a1.addr, &a2.addr]), spec(1, &[&b.addr])]);
    let zero = ids_in(0, 2, 3);
    let one = ids_in(1, 2, 2);
    let batch = LoadBatch {
        seq: 41,
        ops: vec![
            upsert(&zero[0], 1),
            upsert(&one[0], 2),
            upsert("", 3),
            upsert(&zero[1], 4),
            upsert(&one[1], 5),
            upsert(&zero[2], 6),
        ],
    };
    let only_zero = LoadBatch {
        seq: 42,
        ops: vec![upsert(&zero[0], 7)],
    };
    let acks = load(&node, 2, vec![batch, only_zero]).await;
    assert_eq!(acks.len(), 2);
    let first = &acks[0];
    assert_eq!(first.seq, 41, "the client's seq is echoed");
    assert!(first.ok);
    assert_eq!(first.added, 5, "counted once per shard, not per replica");
    assert_eq!(first.refused.len(), 1);
    assert_eq!(
        (first.refused[0].line, first.refused[0].reason.as_str()),
        (3, "empty id")
    );
    assert!(first.replicas_missed.is_empty());
    for replica in [&a1, &a2] {
        let batches = replica.seen(|s| s.batches.clone());
        assert_eq!(batches, [(0, zero.clone()), (1, vec![zero[0].clone()])]);
        assert_eq!(replica.seen(|s| s.load_num_shards.clone()), ["2"]);
    }
    // The second batch touches no shard of b: it is not sent there.
    assert_eq!(b.seen(|s| s.batches.clone()), [(0, one)]);
    assert_eq!(acks[1].added, 1);
}

#[tokio::test]
async fn a_stream_that_fails_midway_acks_what_came_before_then_ends_with_the_failure() {
    let (a1, a2) = (FakeLeaf::start(0).await, FakeLeaf::start(0).await);
    let node = node(&[spec(0, &[&a1.addr, &a2.addr])]);
    let ids = ids_in(0, 1, 2);
    let refusal = Status::invalid_argument("message 2 of the Load stream is not a LoadBatch");
    let incoming = futures::stream::iter([
        Ok(LoadBatch {
            seq: 7,
            ops: vec![upsert(&ids[0], 1)],
        }),
        Err(refusal.clone()),
        Ok(LoadBatch {
            seq: 9,
            ops: vec![upsert(&ids[1], 3)],
        }),
    ]);
    let (mut acks, work) = node.load(1, incoming);
    tokio::spawn(work);
    let mut answers = Vec::new();
    while let Some(answer) = acks.recv().await {
        answers.push(answer);
    }
    assert_eq!(answers.len(), 2, "{answers:?}");
    let ack = answers[0]
        .as_ref()
        .expect("the batch before is acknowledged");
    assert!(ack.ok && ack.seq == 7 && ack.added == 1, "{ack:?}");
    let end = answers[1]
        .as_ref()
        .expect_err("the failure ends the stream");
    assert_eq!(
        (end.code(), end.message()),
        (refusal.code(), refusal.message())
    );
    for replica in [&a1, &a2] {
        let batches = replica.seen(|s| s.batches.clone());
        assert_eq!(batches, [(0, vec![ids[0].clone()])], "nothing after it");
    }
}

#[tokio::test]
async fn a_replica_down_is_missed_and_left_out_of_the_prepare() {
    let up = FakeLeaf::start(0).await;
    let down = dead_addr().await;
    let node = node(&[spec(0, &[&up.addr, &down])]);
    let ids = ids_in(0, 1, 2);
    let acks = load(
        &node,
        1,
        vec![LoadBatch {
            seq: 1,
            ops: vec![upsert(&ids[0], 1), upsert(&ids[1], 2)],
        }],
    )
    .await;
    assert!(acks[0].ok, "{:?}", acks[0]);
    assert_eq!(acks[0].replicas_missed, std::slice::from_ref(&down));
    assert!(node.missed().contains(&down));

    let prepared = prepare(&node, 2).await.unwrap();
    assert_eq!(prepared.summaries.len(), 1);
    // Skipped, not asked; named as left out, for the publish to say so.
    assert_eq!(prepared.left_out, std::slice::from_ref(&down));
    let asked = up.seen(|s| s.prepares.clone());
    assert_eq!(
        asked[0].skip_replicas,
        std::slice::from_ref(&down),
        "passed down too"
    );

    // An Activate of another version (a leaf brought to the pinned one,
    // before this publish ends) does not forget the load's misses: its
    // operations are not published yet.
    let activated = node.activate(ActivateRequest { version: 1 }).await.unwrap();
    assert_eq!(activated.replicas, std::slice::from_ref(&up.addr));
    assert_eq!(activated.replicas_failed, std::slice::from_ref(&down));
    assert!(node.missed().contains(&down));

    // The publish's own Activate goes to the replicas that prepared it, and
    // starts afresh: the missed replica was left out of the version (the
    // root names it behind) and catches up from a sibling.
    let activated = node.activate(ActivateRequest { version: 2 }).await.unwrap();
    // (The fake never installed v2: it refuses, and is named.)
    assert_eq!(activated.replicas_failed, std::slice::from_ref(&up.addr));
    assert!(node.missed().is_empty());
}

#[tokio::test]
async fn a_shard_no_replica_commits_fails_the_batch_and_is_named() {
    let a = FakeLeaf::start(0).await;
    let b = FakeLeaf::start(1).await;
    b.script(|s| s.failing = Some(Status::unavailable("disk gone")));
    let node = node(&[spec(0, &[&a.addr]), spec(1, &[&b.addr])]);
    let ops = vec![
        upsert(&ids_in(0, 2, 1)[0], 1),
        upsert(&ids_in(1, 2, 1)[0], 2),
    ];
    let acks = load(&node, 2, vec![LoadBatch { seq: 7, ops }]).await;
    let ack = &acks[0];
    assert!(!ack.ok);
    assert_eq!(ack.failures.len(), 1);
    assert_eq!(ack.failures[0].shard, 1);
    assert_eq!(ack.failures[0].reason(), FailureReason::Unavailable);
    assert!(ack.failures[0].message.contains("disk gone"));
    assert!(ack.replicas_missed.is_empty());
}

#[tokio::test]
async fn at_most_four_batches_are_in_flight() {
    let leaf = FakeLeaf::start(0).await;
    let held = Arc::clone(&leaf.ack_permits);
    held.forget_permits(tokio::sync::Semaphore::MAX_PERMITS);
    let node = node(&[spec(0, &[&leaf.addr])]);
    let ids = ids_in(0, 1, 10);
    let pulled = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&pulled);
    let incoming = futures::stream::iter(ids.into_iter().enumerate().map(|(i, id)| {
        Ok::<_, Status>(LoadBatch {
            seq: i as u64,
            ops: vec![upsert(&id, i as u64 + 1)],
        })
    }))
    .inspect(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let (mut acks, work) = node.load(1, incoming);
    tokio::spawn(work);
    while leaf.seen(|s| s.batches.len()) < 4 {
        tokio::task::yield_now().await;
    }
    // Four forwarded, none acknowledged: the fifth is not even read.
    assert_eq!(pulled.load(Ordering::SeqCst), 4);
    held.add_permits(1);
    let first = acks.recv().await.unwrap().unwrap();
    assert_eq!(first.seq, 0);
    while leaf.seen(|s| s.batches.len()) < 5 {
        tokio::task::yield_now().await;
    }
    assert_eq!(pulled.load(Ordering::SeqCst), 5);
    held.add_permits(100);
    let mut seqs = vec![first.seq];
    while let Some(ack) = acks.recv().await {
        seqs.push(ack.unwrap().seq);
    }
    assert_eq!(seqs, (0..10).collect::<Vec<u64>>());
}

#[tokio::test]
async fn prepare_sums_terms_over_children_and_install_reaches_every_prepared_replica() {
    let (a1, a2, b) = (
        FakeLeaf::start(0).await,
        FakeLeaf::start(0).await,
        FakeLeaf::start(1).await,
    );
    for leaf in [&a1, &a2] {
        leaf.script(|s| {
            s.terms.insert(
                "body".into(),
                vec![(b"cat".to_vec(), 3), (b"dog".to_vec(), 1)],
            );
        });
    }
    b.script(|s| {
        s.terms.insert("body".into(), vec![(b"cat".to_vec(), 2)]);
        s.terms.insert("title".into(), vec![(b"cat".to_vec(), 1)]);
    });
    let node = node(&[spec(0, &[&a1.addr, &a2.addr]), spec(1, &[&b.addr])]);
    let prepared = prepare(&node, 2).await.unwrap();
    assert_eq!(prepared.summaries.len(), 3, "every replica's summary");
    assert_eq!(
        prepared.terms["body"][b"cat".as_slice()],
        5,
        "one replica per shard"
    );
    assert_eq!(prepared.terms["body"][b"dog".as_slice()], 1);
    assert_eq!(prepared.terms["title"][b"cat".as_slice()], 1);
    assert_eq!(prepared.totals().0, 20);
    let chunks = prepared.into_chunks();
    assert_eq!(chunks[0].shards.len(), 3);

    let install = vec![
        InstallChunk {
            version: 2,
            num_docs: 20,
            ..InstallChunk::default()
        },
        InstallChunk {
            terms: chunks[1].terms.clone(),
            ..InstallChunk::default()
        },
    ];
    let response = node
        .install(futures::stream::iter(install.clone().into_iter().map(Ok)))
        .await
        .unwrap();
    assert_eq!(response.shards, [0, 1]);
    for leaf in [&a1, &a2, &b] {
        assert_eq!(leaf.seen(|s| s.installed_chunks.clone()), install);
    }
    let activated = node.activate(ActivateRequest { version: 2 }).await.unwrap();
    assert_eq!(activated.replicas.len(), 3);
    assert!(activated.replicas_failed.is_empty());
}

#[tokio::test]
async fn replicas_disagreeing_fail_the_prepare_and_a_failed_install_is_unavailable() {
    let (a1, a2) = (FakeLeaf::start(0).await, FakeLeaf::start(0).await);
    a2.script(|s| {
        s.digest = "other".into();
        s.num_docs = 9;
    });
    let node = node(&[spec(0, &[&a1.addr, &a2.addr])]);
    let err = prepare(&node, 2).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message()
            .contains(&format!("{} has 9 documents, digest other", a2.addr))
    );

    a2.script(|s| {
        s.digest = "digest-0".into();
        s.failing_install = true;
    });
    prepare(&node, 2).await.unwrap();
    let first = InstallChunk {
        version: 2,
        ..InstallChunk::default()
    };
    let err = node
        .install(futures::stream::iter([Ok(first)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains(&a2.addr), "{}", err.message());
}

#[tokio::test]
async fn versions_list_every_leaf_and_an_unreachable_one_per_shard() {
    let a = FakeLeaf::start(0).await;
    let down = dead_addr().await;
    let node = node(&[spec(0, &[&a.addr]), format!("1-2@{down}").parse().unwrap()]);
    let versions = node.versions(super::publish_steps::VERSIONS_TIMEOUT).await;
    assert_eq!(versions.leaves.len(), 3);
    assert!(versions.leaves[0].reachable);
    assert_eq!(versions.leaves[0].current, 1);
    let unreachable: Vec<u32> = versions
        .leaves
        .iter()
        .filter(|l| !l.reachable)
        .map(|l| l.shard)
        .collect();
    assert_eq!(unreachable, [1, 2]);
    // A child of two shards is no leaf: said so, not taken for a replica.
    let error = &versions.leaves[1].error;
    assert!(
        error.contains("it serves shards [1, 2]: a node above their leaves"),
        "{error}"
    );
}

#[tokio::test]
async fn a_hung_replica_costs_its_own_entry_not_the_whole_answer() {
    let (a, hung) = (FakeLeaf::start(0).await, FakeLeaf::start(0).await);
    hung.script(|s| s.hung_versions = true);
    let node = node(&[spec(0, &[&a.addr, &hung.addr])]);
    let started = std::time::Instant::now();
    let within = std::time::Duration::from_millis(500);
    let versions = node.versions(within).await;
    // Answered before the caller, who gave it `within`, gives up on it.
    assert!(started.elapsed() < within, "{:?}", started.elapsed());
    let mut reachable: Vec<(&str, bool)> = versions
        .leaves
        .iter()
        .map(|l| (l.replica.as_str(), l.reachable))
        .collect();
    reachable.sort();
    let mut want = [(a.addr.as_str(), true), (hung.addr.as_str(), false)];
    want.sort();
    assert_eq!(reachable, want);
    let silent = versions.leaves.iter().find(|l| !l.reachable).unwrap();
    assert_eq!(silent.error, "no answer within 400 ms");
}

#[tokio::test]
async fn a_load_or_publish_sent_by_a_client_to_a_parent_is_refused_with_where_to_send_it() {
    use searchtree_proto::pb::PublishRequest;
    use searchtree_proto::pb::corpus_server::Corpus;
    use searchtree_proto::sharding::NUM_SHARDS_METADATA;
    use tonic::metadata::MetadataMap;

    // This parent holds the whole tree's shards, as the only parent of a
    // tree does: a client's Load must still go through the root.
    let children =
        CorpusChildren::from_specs(&[spec(0, &["127.0.0.1:1"]), spec(1, &["127.0.0.1:2"])])
            .unwrap();
    let err = super::service::num_shards_of(&MetadataMap::new(), &children).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().starts_with(
            "this is a parent (shards 0-1), not the tree's root: load through the root, \
             `searchtree load --root ROOT_ADDR`"
        ),
        "{}",
        err.message()
    );

    // The root's forwarded Load carries the shard count and is served.
    let mut forwarded = MetadataMap::new();
    forwarded.insert(NUM_SHARDS_METADATA, "2".parse().unwrap());
    assert_eq!(
        super::service::num_shards_of(&forwarded, &children).unwrap(),
        2
    );

    let service = super::ParentCorpus::new(Arc::new(CorpusNode::new(children)));
    let err = service
        .publish(tonic::Request::new(PublishRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message()
            .starts_with("this is a parent (shards 0-1), not the tree's root: publish"),
        "{}",
        err.message()
    );

    // So are a publish's steps, unless the node above marked them.
    use searchtree_proto::pb::{ActivateRequest, PrepareRequest};
    let refused = [
        service
            .prepare(tonic::Request::new(PrepareRequest::default()))
            .await
            .map(|_| ())
            .unwrap_err(),
        service
            .activate(tonic::Request::new(ActivateRequest { version: 2 }))
            .await
            .map(|_| ())
            .unwrap_err(),
    ];
    for err in refused {
        assert!(
            err.message()
                .starts_with("this is a parent (shards 0-1), not the tree's root: publish"),
            "{}",
            err.message()
        );
    }
    let err = service
        .activate(searchtree_proto::forwarded::forwarded(ActivateRequest {
            version: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.message(), "Activate needs a version");
}

#[tokio::test]
async fn a_sole_replica_that_missed_a_discard_is_named_until_a_discard_reaches_it() {
    let a = FakeLeaf::start(0).await;
    let b = FakeLeaf::start(1).await;
    let node = node(&[spec(0, &[&a.addr]), spec(1, &[&b.addr])]);
    // Shard 1's only replica fails the discard: it keeps its staged
    // operations, so it cannot be in the next version.
    b.script(|s| s.failing = Some(Status::unavailable("down")));
    let discarded = node.discard().await;
    assert_eq!(discarded.replicas_failed, std::slice::from_ref(&b.addr));
    b.script(|s| s.failing = None);

    let refused = prepare(&node, 2)
        .await
        .expect_err("shard 1 has no replica in step");
    let message = refused.message();
    assert!(
        message.starts_with("no replica prepared version 2 of shard(s) 1 ("),
        "only shard 1 is named: {message}"
    );
    assert!(
        message.contains(&format!("left out: {}, which missed", b.addr))
            && message.contains("run `searchtree discard`"),
        "{message}"
    );

    // Back, and reached by a discard rerun: it is in step again.
    let discarded = node.discard().await;
    assert!(discarded.replicas_failed.is_empty(), "{discarded:?}");
    assert!(node.missed().is_empty());
    prepare(&node, 2).await.unwrap();
}

#[tokio::test]
async fn a_replica_answering_for_another_shard_is_named_and_left_out_of_loads_and_publishes() {
    // Shard 0's replicas as named (by an etcd record, say): a shard-0 leaf
    // and shard 2's leaf, which also serves under its own name.
    let (zero, two) = (FakeLeaf::start(0).await, FakeLeaf::start(2).await);
    let node = node(&[spec(0, &[&zero.addr, &two.addr]), spec(2, &[&two.addr])]);
    let versions = node.versions(super::publish_steps::VERSIONS_TIMEOUT).await;
    let entry = |shard: u32, addr: &str| {
        versions
            .leaves
            .iter()
            .find(|l| l.shard == shard && l.replica == addr)
            .cloned()
            .unwrap()
    };
    let wrong = entry(0, &two.addr);
    assert!(wrong.misplaced && !wrong.reachable, "{wrong:?}");
    assert!(
        wrong
            .error
            .starts_with("named as a replica of shard(s) 0, it answers for shard(s) 2"),
        "{}",
        wrong.error
    );
    assert!(entry(0, &zero.addr).reachable && entry(2, &two.addr).reachable);

    // A load: shard 0's part goes to its leaf only, nobody missed it, and
    // shard 2's leaf gets only its own documents.
    let (ids0, ids2) = (ids_in(0, 4, 2), ids_in(2, 4, 1));
    let batch = LoadBatch {
        seq: 1,
        ops: vec![
            upsert(&ids0[0], 1),
            upsert(&ids2[0], 2),
            upsert(&ids0[1], 3),
        ],
    };
    let acks = load(&node, 4, vec![batch]).await;
    assert!(acks[0].ok, "{:?}", acks[0]);
    assert_eq!(acks[0].added, 3);
    assert!(acks[0].refused.is_empty() && acks[0].replicas_missed.is_empty());
    assert_eq!(zero.seen(|s| s.batches.clone()), [(0, ids0.clone())]);
    assert_eq!(two.seen(|s| s.batches.clone()), [(0, ids2.clone())]);

    // A publish's steps reach each leaf once, as its own shard's replica.
    prepare(&node, 2).await.unwrap();
    assert_eq!(two.seen(|s| s.prepares.len()), 1);
    install(&node, 2).await;
    assert_eq!(two.seen(|s| s.installed_chunks.len()), 1);
    node.activate(ActivateRequest { version: 2 }).await.unwrap();
    assert_eq!(two.seen(|s| s.activated.clone()), [2]);

    // Named for shard 0 alone, it leaves shard 0 with no replica: a load
    // and a publish fail, saying why.
    let alone =
        super::CorpusNode::new(CorpusChildren::from_specs(&[spec(0, &[&two.addr])]).unwrap());
    alone.versions(super::publish_steps::VERSIONS_TIMEOUT).await;
    let acks = load(
        &alone,
        4,
        vec![LoadBatch {
            seq: 5,
            ops: vec![upsert(&ids0[0], 1)],
        }],
    )
    .await;
    assert!(!acks[0].ok);
    assert!(
        acks[0].failures[0].message.contains(&format!(
            "{} is named for them but answers for other shards",
            two.addr
        )),
        "{:?}",
        acks[0].failures
    );
    let err = prepare(&alone, 3).await.unwrap_err();
    assert!(err.message().contains("answers for other shards"), "{err}");
    assert_eq!(two.seen(|s| s.batches.len()), 1, "nothing more reached it");

    // Marked misplaced, it stays listed so when it does not answer: the
    // root must not skip its address, its own shard's replica's too.
    two.script(|s| s.hung_versions = true);
    let versions = node.versions(std::time::Duration::from_millis(300)).await;
    let silent = versions
        .leaves
        .iter()
        .find(|l| l.shard == 0 && l.replica == two.addr)
        .unwrap();
    assert!(silent.misplaced && !silent.reachable, "{silent:?}");
    assert!(
        silent.error.contains("this time it did not answer"),
        "{}",
        silent.error
    );
}

#[tokio::test]
async fn a_replica_joining_while_a_load_is_staged_missed_it_and_is_left_out_of_the_publish() {
    let (a, late, later) = (
        FakeLeaf::start(0).await,
        FakeLeaf::start(0).await,
        FakeLeaf::start(0).await,
    );
    let node = node(&[spec(0, &[&a.addr])]);
    let ids = ids_in(0, 1, 2);
    let batch = LoadBatch {
        seq: 1,
        ops: vec![upsert(&ids[0], 1), upsert(&ids[1], 2)],
    };
    assert!(load(&node, 1, vec![batch]).await[0].ok);
    // A replica registers (or comes back) now: it has none of the batch.
    node.set_replicas(&[0], &[a.addr.clone(), late.addr.clone()]);
    assert!(node.missed().contains(&late.addr));
    let prepared = prepare(&node, 2).await.unwrap();
    assert_eq!(late.seen(|s| s.prepares.len()), 0, "left out, to catch up");
    assert_eq!(prepared.left_out, std::slice::from_ref(&late.addr));
    install(&node, 2).await;
    node.activate(ActivateRequest { version: 2 }).await.unwrap();
    // Published: one joining now lacks nothing.
    node.set_replicas(
        &[0],
        &[a.addr.clone(), late.addr.clone(), later.addr.clone()],
    );
    assert!(node.missed().is_empty(), "{:?}", node.missed());
}

#[tokio::test]
async fn another_childs_replica_named_for_a_child_too_is_not_marked_as_missing_a_load() {
    let (zero, two) = (FakeLeaf::start(0).await, FakeLeaf::start(2).await);
    let node = node(&[spec(0, &[&zero.addr]), spec(2, &[&two.addr])]);
    let ids = ids_in(2, 4, 1);
    let batch = LoadBatch {
        seq: 1,
        ops: vec![upsert(&ids[0], 1)],
    };
    assert!(load(&node, 4, vec![batch]).await[0].ok);
    // A stray record names shard 2's leaf for shard 0 as well: were its
    // address marked, the publish would skip it as shard 2's replica.
    node.set_replicas(&[0], &[zero.addr.clone(), two.addr.clone()]);
    assert!(node.missed().is_empty(), "{:?}", node.missed());
}

#[tokio::test]
async fn a_parent_checks_its_replicas_shards_when_a_load_stream_opens() {
    use searchtree_node::serving::corpus_service;
    use searchtree_proto::pb::corpus_client::CorpusClient;
    use searchtree_proto::sharding::NUM_SHARDS_METADATA;

    // A stray record names shard 2's leaf for shard 0 after the root's
    // check: nothing has asked this parent's Versions since.
    let (zero, two) = (FakeLeaf::start(0).await, FakeLeaf::start(2).await);
    let node = Arc::new(node(&[spec(0, &[&zero.addr, &two.addr])]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    let service = corpus_service(super::ParentCorpus::new(Arc::clone(&node)));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    let mut client = CorpusClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let ids = ids_in(0, 4, 2);
    let batch = LoadBatch {
        seq: 1,
        ops: vec![upsert(&ids[0], 1), upsert(&ids[1], 2)],
    };
    let mut request = tonic::Request::new(futures::stream::iter([batch]));
    request
        .metadata_mut()
        .insert(NUM_SHARDS_METADATA, "4".parse().unwrap());
    let mut acks = client.load(request).await.unwrap().into_inner();
    let ack = acks.message().await.unwrap().unwrap();
    assert!(
        ack.ok && ack.refused.is_empty() && ack.replicas_missed.is_empty(),
        "{ack:?}"
    );
    assert_eq!(zero.seen(|s| s.batches.len()), 1);
    assert!(
        two.seen(|s| s.batches.is_empty()),
        "set aside before the load"
    );
}
