//! The version store against the one thing that defines it: a version
//! published from loaded operations must search exactly as a fresh build of
//! the resulting documents — same hits, scores and counts — while the
//! versions before it keep answering as they did.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use searchtree_proto::SearchParams;
use searchtree_proto::forwarded::forwarded;
use searchtree_proto::pb::corpus_client::CorpusClient;
use searchtree_proto::pb::{
    ActivateRequest, CatchUpRequest, CopyVersionRequest, DocOp, FieldTerms, InstallChunk,
    LoadBatch, PrepareRequest, SearchRequest, SearchResponse, ShardSummary, VersionsRequest,
};
use searchtree_proto::sharding::{NUM_SHARDS_METADATA, SHARDING_FUNCTION, shard_of};
use tonic::Code;

use super::disk::{DiskFloor, MinFree};
use super::held::HeldVersions;
use super::local::LocalTotals;
use super::prepare::term_chunks;
use super::store::{CorpusStore, SearcherSettings};
use super::{LeafCorpus, fsio};
use crate::collector::Stop;
use crate::node::{LeafCounters, LeafTiming, ShardSearch};
use crate::searcher::{SearchError, ShardSearcher, VERSION_MISSING};
use crate::shard::manifest::{
    InputInfo, MANIFEST_FILE, MANIFEST_FORMAT, Manifest, ShardEntry, shard_dir_name,
};
use crate::shard::write::{ShardDocument, ShardWriter, write_scoring};
use crate::{LeafService, Shard};

const WORDS: &[&str] = &[
    "river", "stone", "paris", "light", "north", "garden", "engine", "copper", "violet", "harbor",
    "winter", "signal", "forest", "glass", "market", "silver", "thunder", "orbit", "meadow",
    "lantern",
];

const QUERIES: &[&str] = &[
    "river",
    "paris stone",
    "light OR harbor",
    "copper engine signal",
    "\"north garden\"",
    "forest -glass",
    "lantern",
    "meadow orbit thunder silver",
];

type Docs = BTreeMap<String, (String, String)>;

fn text(rng: &mut fastrand::Rng, min: usize, max: usize) -> String {
    let n = rng.usize(min..=max);
    (0..n)
        .map(|_| WORDS[rng.usize(..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn corpus(seed: u64, prefix: &str, n: usize) -> Docs {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            let title = text(&mut rng, 0, 3);
            let body = text(&mut rng, 3, 30);
            (format!("{prefix}{i}"), (title, body))
        })
        .collect()
}

/// Writes `docs` as a build of `num_shards` shards into `out/shards/shard-NNN`.
fn build(out: &Path, docs: &Docs, num_shards: u32, checksum: &str) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = (0..num_shards)
        .map(|s| out.join("shards").join(format!("shard-{s:03}")))
        .collect();
    let mut writers: Vec<ShardWriter> = dirs
        .iter()
        .map(|d| ShardWriter::create(d, 1, 0).unwrap())
        .collect();
    for (id, (title, body)) in docs {
        let document = ShardDocument {
            id: id.clone(),
            title: title.clone(),
            body: body.clone(),
        };
        writers[shard_of(id, num_shards) as usize]
            .add(document)
            .unwrap();
    }
    let written: Vec<_> = writers.into_iter().map(|w| w.finish().unwrap()).collect();
    let corpus = write_scoring(&written, checksum).unwrap();
    // The manifest `searchtree build` writes beside the shards.
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        created_unix: 0,
        input: InputInfo {
            path: "docs.jsonl".into(),
            checksum: checksum.into(),
            bytes: 0,
            lines: docs.len() as u64,
            documents: docs.len() as u64,
            skipped: 0,
            fields: ["id".into(), "title".into(), "body".into()],
        },
        sharding: SHARDING_FUNCTION.into(),
        num_shards,
        shards: written
            .iter()
            .enumerate()
            .map(|(n, w)| ShardEntry {
                shard: n as u32,
                dir: format!("shards/{}", shard_dir_name(n as u32)),
                num_docs: w.num_docs(),
            })
            .collect(),
        corpus,
        schema: serde_json::to_value(Shard::open(&dirs[0]).unwrap().index.schema()).unwrap(),
    };
    std::fs::write(
        out.join(MANIFEST_FILE),
        serde_json::to_string(&manifest).unwrap(),
    )
    .unwrap();
    dirs
}

fn settings(name: &str) -> SearcherSettings {
    SearcherSettings {
        name: name.into(),
        min_pruned_docs: 0,
    }
}

/// A floor that keeps nothing back (only what does not fit is refused).
fn no_floor() -> DiskFloor {
    DiskFloor::new(MinFree::Bytes(0))
}

/// A floor no file system can keep: every writing step is refused.
fn floor_of_everything() -> DiskFloor {
    DiskFloor::new(MinFree::Percent(100.0))
}

fn params(query: &str, version: u64) -> SearchParams {
    SearchParams::try_from(&SearchRequest {
        query: query.into(),
        top_k: 200,
        exact_total_hits: true,
        version,
        ..Default::default()
    })
    .unwrap()
}

fn search(held: &HeldVersions, query: &str, version: u64) -> SearchResponse {
    ShardSearch::search(held, &params(query, version), Stop::default()).unwrap()
}

/// Same ids in the same order, scores equal within 1e-5 relative, same
/// exact total.
fn assert_same(got: &SearchResponse, want: &SearchResponse, what: &str) {
    let ids = |r: &SearchResponse| r.hits.iter().map(|h| h.doc_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(got), ids(want), "{what}: ids");
    for (g, w) in got.hits.iter().zip(&want.hits) {
        let tolerance = 1e-5 * w.score.abs().max(1e-6);
        assert!(
            (g.score - w.score).abs() <= tolerance,
            "{what}: {} scored {} instead of {}",
            g.doc_id,
            g.score,
            w.score
        );
    }
    assert_eq!(got.total_hits, want.total_hits, "{what}: total_hits");
    assert!(!got.total_hits_is_lower_bound && !want.total_hits_is_lower_bound);
}

/// Every query at `version` of each held shard equals the fresh build's
/// shard of the same number.
fn assert_matches_build(held: &[Arc<HeldVersions>], fresh: &[PathBuf], version: u64, what: &str) {
    let mut matched = 0;
    for (shard, dir) in fresh.iter().enumerate() {
        let want = ShardSearcher::new(Shard::open(dir).unwrap());
        for query in QUERIES {
            let expected = want.search(&params(query, 0), Stop::default()).unwrap();
            let got = search(&held[shard], query, version);
            assert_same(
                &got,
                &expected,
                &format!("{what}, shard {shard}, {query:?}"),
            );
            matched += got.hits.len();
        }
    }
    assert!(
        matched > 20,
        "{what}: the queries match too little ({matched})"
    );
}

fn upsert(id: &str, title: &str, body: &str) -> DocOp {
    DocOp {
        id: id.into(),
        title: title.into(),
        body: body.into(),
        ..Default::default()
    }
}

fn delete(id: &str) -> DocOp {
    DocOp {
        id: id.into(),
        delete: true,
        ..Default::default()
    }
}

/// Applies `ops` to `docs` as a load does.
fn apply(docs: &mut Docs, ops: &[DocOp]) {
    for op in ops {
        if op.id.is_empty() || op.id.len() > 1024 {
            continue;
        }
        if op.delete {
            docs.remove(&op.id);
        } else {
            docs.insert(op.id.clone(), (op.title.clone(), op.body.clone()));
        }
    }
}

/// Loads `ops` in batches of 7 into every store (each refuses the other
/// shards' documents); returns the summed counts (added, replaced,
/// deleted, delete_missing, refused).
fn load(stores: &mut [CorpusStore], ops: &[DocOp]) -> [u32; 5] {
    let mut counts = [0; 5];
    for (seq, batch) in ops.chunks(7).enumerate() {
        let batch = LoadBatch {
            seq: seq as u64,
            ops: batch.to_vec(),
        };
        for store in stores.iter_mut() {
            let ack = store.load(&batch).unwrap();
            assert!(ack.ok);
            assert_eq!(ack.seq, seq as u64);
            counts[0] += ack.added;
            counts[1] += ack.replaced;
            counts[2] += ack.deleted;
            counts[3] += ack.delete_missing;
            counts[4] += ack.refused.len() as u32;
        }
    }
    counts
}

/// The publish the root and parents perform, in-process: prepare every
/// shard, sum their statistics, install the sums, activate.
fn publish(stores: &mut [CorpusStore], version: u64, from_build: &str) -> Vec<ShardSummary> {
    publish_reading(stores, version, from_build).0
}

/// [`publish`], with how many stored documents each shard's prepare read
/// to carry its totals.
fn publish_reading(
    stores: &mut [CorpusStore],
    version: u64,
    from_build: &str,
) -> (Vec<ShardSummary>, Vec<u64>) {
    publish_summing(stores, version, from_build, |_| true)
}

/// [`publish_reading`], summing only the terms each shard sends with a
/// frequency `sent` accepts: `|df| df > 0` is what a replica whose
/// segments hold no deleted document sends, where its sibling's kept
/// segment holds terms only deleted documents have.
fn publish_summing(
    stores: &mut [CorpusStore],
    version: u64,
    from_build: &str,
    sent: impl Fn(u64) -> bool,
) -> (Vec<ShardSummary>, Vec<u64>) {
    let mut docs_read = Vec::new();
    let summaries: Vec<ShardSummary> = stores
        .iter_mut()
        .map(|s| {
            let summary = s.prepare(version, from_build).unwrap();
            docs_read.push(s.candidate.as_ref().unwrap().docs_read);
            summary
        })
        .collect();
    let mut global: BTreeMap<String, BTreeMap<Vec<u8>, u64>> = BTreeMap::new();
    for store in stores.iter() {
        term_chunks(&store.tmp_dir(version), |chunk| {
            assert!(chunk.terms.iter().map(|t| t.terms.len()).sum::<usize>() <= 16_384);
            for group in chunk.terms {
                let field = global.entry(group.field).or_default();
                for (term, df) in group.terms.into_iter().zip(group.doc_freqs) {
                    if sent(df) {
                        *field.entry(term).or_default() += df;
                    }
                }
            }
            true
        })
        .unwrap();
    }
    let mut num_tokens = HashMap::new();
    for summary in &summaries {
        for (field, n) in &summary.num_tokens {
            *num_tokens.entry(field.clone()).or_default() += n;
        }
    }
    let first = InstallChunk {
        version,
        num_docs: summaries.iter().map(|s| s.num_docs).sum(),
        num_tokens,
        ..Default::default()
    };
    let terms: Vec<FieldTerms> = global
        .into_iter()
        .map(|(field, terms)| FieldTerms {
            field,
            terms: terms.keys().cloned().collect(),
            doc_freqs: terms.values().copied().collect(),
        })
        .collect();
    for store in stores.iter_mut() {
        let mut stats = store.begin_install(&first).unwrap();
        stats.absorb(&terms).unwrap();
        store.finish_install(stats).unwrap();
    }
    (summaries, docs_read)
}

/// Asserts that each summary's totals are those of a fresh build's shard.
fn assert_totals_match(summaries: &[ShardSummary], fresh: &[PathBuf], what: &str) {
    for (summary, dir) in summaries.iter().zip(fresh) {
        let shard = Shard::open(dir).unwrap();
        let want = LocalTotals::of_undeleted(&shard.reader.searcher(), shard.fields).unwrap();
        assert_eq!(summary.num_docs, want.num_docs, "{what}");
        assert_eq!(
            summary.num_tokens,
            want.num_tokens
                .clone()
                .into_iter()
                .collect::<HashMap<_, _>>(),
            "{what}"
        );
        assert_eq!(summary.digest, want.digest(), "{what}");
    }
}

fn activate(stores: &mut [CorpusStore], version: u64) {
    for store in stores {
        store.activate(version).unwrap();
    }
}

fn open_stores(builds: &[PathBuf], data: &Path) -> Vec<CorpusStore> {
    builds
        .iter()
        .enumerate()
        .map(|(i, b)| {
            CorpusStore::open(b, &data.join(format!("leaf-{i}")), settings("leaf")).unwrap()
        })
        .collect()
}

fn held(stores: &[CorpusStore]) -> Vec<Arc<HeldVersions>> {
    stores.iter().map(CorpusStore::held).collect()
}

#[test]
fn a_published_version_searches_as_a_fresh_build_and_the_old_one_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let mut docs = corpus(7, "d", 80);
    let builds = build(&tmp.path().join("build"), &docs, 2, "build-1");
    let build_files: Vec<_> = builds
        .iter()
        .map(|b| fsio::version_files(b).unwrap())
        .collect();
    let mut stores = open_stores(&builds, &tmp.path().join("data"));
    let before: Vec<Vec<SearchResponse>> = held(&stores)
        .iter()
        .map(|h| QUERIES.iter().map(|q| search(h, q, 0)).collect())
        .collect();

    let mut rng = fastrand::Rng::with_seed(11);
    let mut ops = Vec::new();
    for i in 0..15 {
        ops.push(upsert(
            &format!("n{i}"),
            &text(&mut rng, 1, 2),
            &text(&mut rng, 3, 25),
        ));
    }
    for i in 0..10 {
        ops.push(upsert(
            &format!("d{i}"),
            &text(&mut rng, 0, 2),
            &text(&mut rng, 3, 25),
        ));
    }
    for i in 10..18 {
        ops.push(delete(&format!("d{i}")));
    }
    ops.push(delete("never-there"));
    ops.push(delete("n3")); // upserted above: gone again
    ops.push(delete("d20"));
    ops.push(upsert("d20", "back", "river stone river")); // deleted, then back
    ops.push(upsert("n5", "second", "the second copy wins lantern"));
    ops.push(upsert("", "", "no id"));
    ops.push(upsert(&"x".repeat(1025), "", "too long an id"));
    apply(&mut docs, &ops);
    let [added, replaced, deleted, missing, refused] = load(&mut stores, &ops);
    // Each valid operation is applied by its shard and refused by the
    // other; the two invalid ones by both.
    let valid = ops.len() as u32 - 2;
    assert_eq!(added + replaced + deleted + missing, valid);
    assert_eq!(refused, valid + 4);
    // Counted as the batch goes: n3 added then deleted is a delete, d20
    // deleted then upserted is added, n5's second copy replaces its first.
    assert_eq!((added, replaced, deleted, missing), (16, 11, 10, 1));

    let summaries = publish(&mut stores, 2, "");
    let fresh = build(&tmp.path().join("fresh"), &docs, 2, "fresh");
    // Exact local totals: as the fresh build's own.
    assert_totals_match(&summaries, &fresh, "version 2");
    assert!(summaries.iter().all(|s| s.staged_ops > 0));
    let held_now = held(&stores);
    // Installed, not current: version 0 still answers as before.
    assert_matches_build(&held_now, &fresh, 2, "installed version 2");
    for (h, answers) in held_now.iter().zip(&before) {
        assert_eq!(h.current(), 1);
        for (query, answer) in QUERIES.iter().zip(answers) {
            assert_same(&search(h, query, 0), answer, "current before activation");
        }
    }

    activate(&mut stores, 2);
    assert_matches_build(&held_now, &fresh, 0, "current version 2");
    for (h, answers) in held_now.iter().zip(&before) {
        assert_eq!(h.numbers(), vec![1, 2]);
        assert_eq!(search(h, "river", 0).version, 2);
        for (query, answer) in QUERIES.iter().zip(answers) {
            assert_same(&search(h, query, 1), answer, "version 1, held");
        }
    }
    assert!(stores.iter().all(|s| s.staging().ops() == 0));

    // A restart serves the same versions from disk.
    drop(stores);
    let mut stores = open_stores(&builds, &tmp.path().join("data"));
    let held_now = held(&stores);
    assert!(
        held_now
            .iter()
            .all(|h| h.current() == 2 && h.numbers() == vec![1, 2])
    );
    assert_matches_build(&held_now, &fresh, 2, "version 2 after a restart");

    // Staged operations survive a restart, and make version 3.
    let more = vec![
        delete("d30"),
        upsert("late", "late", "paris light harbor"),
        upsert("d31", "replaced", "copper copper engine"),
    ];
    apply(&mut docs, &more);
    load(&mut stores, &more);
    let staged: u64 = stores.iter().map(|s| s.staging().ops()).sum();
    assert_eq!(staged, 3);
    drop(stores);
    let mut stores = open_stores(&builds, &tmp.path().join("data"));
    assert_eq!(stores.iter().map(|s| s.staging().ops()).sum::<u64>(), 3);
    publish(&mut stores, 3, "");
    activate(&mut stores, 3);
    let fresh = build(&tmp.path().join("fresh3"), &docs, 2, "fresh3");
    let held_now = held(&stores);
    assert_matches_build(&held_now, &fresh, 3, "version 3");
    // Version 1 (the build) is released, and the build left as it was.
    for (h, (dir, files)) in held_now.iter().zip(builds.iter().zip(&build_files)) {
        assert_eq!(h.numbers(), vec![2, 3]);
        let Err(SearchError::VersionMissing(msg)) = h.get(1) else {
            panic!("version 1 should be gone");
        };
        assert!(msg.starts_with(VERSION_MISSING), "{msg}");
        assert_eq!(&fsio::version_files(dir).unwrap(), files);
        Shard::open(dir).unwrap();
    }
    let mut snapshots = std::collections::BTreeSet::new();
    for store in &mut stores {
        let versions = store.versions().unwrap();
        assert_eq!(
            (versions.current, versions.installed.clone()),
            (3, vec![2, 3])
        );
        snapshots.insert(versions.snapshot);
    }
    // One name for the version on every shard.
    assert_eq!(snapshots.len(), 1);
    assert!(snapshots.first().unwrap().starts_with("v3-"));
}

#[test]
fn a_build_replaces_the_corpus_and_discards_what_was_staged() {
    let tmp = tempfile::tempdir().unwrap();
    let builds = build(&tmp.path().join("build"), &corpus(3, "d", 50), 2, "one");
    let other = corpus(4, "e", 70);
    let rebuilt = tmp.path().join("rebuilt");
    let fresh = build(&rebuilt, &other, 2, "two");
    let mut stores = open_stores(&builds, &tmp.path().join("data"));
    load(&mut stores, &[upsert("staged", "", "river river")]);

    publish(&mut stores, 2, rebuilt.to_str().unwrap());
    activate(&mut stores, 2);
    let held_now = held(&stores);
    assert_matches_build(&held_now, &fresh, 0, "hot-swapped build");
    for (store, h) in stores.iter_mut().zip(&held_now) {
        assert_eq!(store.staging().ops(), 0);
        assert_eq!(h.get(0).unwrap().shard().meta.input_checksum, "two");
    }
    // The rebuilt build's own files are untouched (its scoring files were
    // not written through links).
    for dir in &fresh {
        assert_eq!(crate::shard::read_meta(dir).unwrap().version, 1);
        Shard::open(dir).unwrap();
    }

    // A build of another shard count is refused.
    let wrong = tmp.path().join("wrong");
    build(&wrong, &other, 3, "three");
    let err = stores[0].prepare(3, wrong.to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("of 3"), "{err}");
}

#[test]
fn a_damaged_build_is_refused_and_the_current_version_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = corpus(3, "d", 50);
    let builds = build(&tmp.path().join("build"), &docs, 2, "one");
    let rebuilt = build(&tmp.path().join("rebuilt"), &corpus(4, "e", 70), 2, "two");
    let mut stores = open_stores(&builds, &tmp.path().join("data"));

    // Copies of the rebuilt build, each damaged in one way `searchtree
    // verify` notices.
    let copy = |name: &str| {
        let to = tmp.path().join(name);
        for dir in &rebuilt {
            let shard = to.join("shards").join(dir.file_name().unwrap());
            std::fs::create_dir_all(&shard).unwrap();
            for file in std::fs::read_dir(dir).unwrap() {
                let file = file.unwrap().path();
                std::fs::copy(&file, shard.join(file.file_name().unwrap())).unwrap();
            }
        }
        let manifest = tmp.path().join("rebuilt").join(MANIFEST_FILE);
        std::fs::copy(manifest, to.join(MANIFEST_FILE)).unwrap();
        (to.clone(), to.join("shards").join(shard_dir_name(0)))
    };
    let flip_a_byte_of = |shard: &Path, ext: &str| {
        let file = std::fs::read_dir(shard)
            .unwrap()
            .map(|f| f.unwrap().path())
            .find(|f| f.extension().is_some_and(|e| e == ext))
            .unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(&file, bytes).unwrap();
        file
    };
    let (term, term_shard) = copy("term");
    let flipped_term = flip_a_byte_of(&term_shard, "term");
    let (store, store_shard) = copy("store");
    let flipped_store = flip_a_byte_of(&store_shard, "store");
    let (freqs, freqs_shard) = copy("freqs");
    std::fs::remove_file(freqs_shard.join(crate::stats::DOC_FREQS_FILE)).unwrap();

    let cases = [
        (
            &term,
            flipped_term
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        ),
        (
            &store,
            flipped_store
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        ),
        (&freqs, crate::stats::DOC_FREQS_FILE.to_string()),
    ];
    for (damaged, named) in cases {
        let err = stores[0].prepare(2, damaged.to_str().unwrap()).unwrap_err();
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().starts_with(&format!(
                "the build {} is damaged, shard 0 refuses it",
                damaged.display()
            )),
            "{}",
            status.message()
        );
        assert!(status.message().contains(&named), "{}", status.message());
        assert!(!stores[0].tmp_dir(2).exists(), "no candidate left behind");
        assert_eq!(stores[0].held().current(), 1);
    }
    assert_matches_build(&held(&stores), &builds, 0, "the version before");

    // Paths that are no build at all: refused as such, not as a failure of
    // the leaf (which a caller would retry).
    let shards_dir = tmp.path().join("rebuilt").join("shards");
    for not_a_build in [
        tmp.path().join("nonexistent"),
        shards_dir,
        tmp.path().to_path_buf(),
    ] {
        let err = stores[0]
            .prepare(2, not_a_build.to_str().unwrap())
            .unwrap_err();
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().contains("is not a searchtree build"),
            "{}",
            status.message()
        );
    }

    // The intact build still prepares, installs and serves.
    publish(&mut stores, 2, tmp.path().join("rebuilt").to_str().unwrap());
    activate(&mut stores, 2);
    assert_matches_build(&held(&stores), &rebuilt, 0, "the intact build");
}

/// Serves a store's Search and Corpus on a local port, as the binary does.
async fn serve(store: CorpusStore) -> String {
    serve_giving_up_after(store, super::service::STALLED_STREAM).await
}

/// [`serve`], giving up a stream that holds the store after `stalled_after`
/// without a message.
async fn serve_giving_up_after(store: CorpusStore, stalled_after: std::time::Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let timing = LeafTiming {
        policy: Default::default(),
        reserve: std::time::Duration::ZERO,
    };
    let faults = crate::fault::Faults::new(Default::default(), 1);
    let service = LeafService::new(store.held(), 2, timing, faults);
    let counters: Arc<LeafCounters> = service.counters();
    let corpus =
        LeafCorpus::new(store, Arc::clone(&counters), addr.clone()).giving_up_after(stalled_after);
    tokio::spawn(searchtree_node::serving::serve(
        listener,
        service,
        corpus,
        counters,
        Default::default(),
        std::future::pending(),
    ));
    addr
}

async fn client(addr: &str) -> CorpusClient<tonic::transport::Channel> {
    CorpusClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_replica_catches_up_by_copying_a_version_over_grpc() {
    let tmp = tempfile::tempdir().unwrap();
    let mut docs = corpus(5, "d", 60);
    let builds = build(&tmp.path().join("build"), &docs, 1, "one");
    let open = |name: &str| CorpusStore::open(&builds[0], &tmp.path().join(name), settings(name));
    let (a, b) = (open("a").unwrap(), open("b").unwrap());
    let held_b = b.held();
    let (addr_a, addr_b) = (serve(a).await, serve(b).await);
    let (mut a, mut b) = (client(&addr_a).await, client(&addr_b).await);

    // Replica A alone gets a load and publishes version 2.
    let ops = vec![
        upsert("new", "new", "river paris"),
        delete("d3"),
        upsert("d4", "", "stone stone"),
    ];
    apply(&mut docs, &ops);
    let batch = LoadBatch { seq: 9, ops };
    // A client's Load sent to a leaf is refused, pointing at the root...
    let err = a
        .load(futures::stream::iter(vec![batch.clone()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().starts_with(
            "this is a leaf (shard 0), not the tree's root: load through the root, \
             `searchtree load --root ROOT_ADDR`"
        ),
        "{}",
        err.message()
    );
    assert_eq!(
        a.versions(VersionsRequest {})
            .await
            .unwrap()
            .into_inner()
            .leaves[0]
            .staged_ops,
        0,
        "nothing staged"
    );
    // ...and one forwarded from above (it carries the shard count) is served.
    let mut from_root = tonic::Request::new(futures::stream::iter(vec![batch]));
    from_root
        .metadata_mut()
        .insert(NUM_SHARDS_METADATA, "1".parse().unwrap());
    let mut acks = a.load(from_root).await.unwrap().into_inner();
    let ack = acks.message().await.unwrap().unwrap();
    assert!(ack.ok && ack.seq == 9 && (ack.added, ack.deleted, ack.replaced) == (1, 1, 1));
    let prepare = PrepareRequest {
        version: 2,
        ..Default::default()
    };
    // A publish's steps come from the tree above, never from a client.
    let refused = [
        a.prepare(prepare.clone()).await.map(|_| ()).unwrap_err(),
        a.install(futures::stream::iter(Vec::<InstallChunk>::new()))
            .await
            .map(|_| ())
            .unwrap_err(),
        a.activate(ActivateRequest { version: 2 })
            .await
            .map(|_| ())
            .unwrap_err(),
    ];
    for err in refused {
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(
            err.message().starts_with(
                "this is a leaf (shard 0), not the tree's root: publish through the root"
            ),
            "{}",
            err.message()
        );
    }
    let mut chunks = a.prepare(forwarded(prepare)).await.unwrap().into_inner();
    let first = chunks.message().await.unwrap().unwrap();
    let summary = first.shards[0].clone();
    let mut terms = first.terms;
    while let Some(chunk) = chunks.message().await.unwrap() {
        terms.extend(chunk.terms);
    }
    // One shard: its own statistics are the corpus's.
    let install = vec![
        InstallChunk {
            version: 2,
            num_docs: summary.num_docs,
            num_tokens: summary.num_tokens.clone(),
            ..Default::default()
        },
        InstallChunk {
            terms,
            ..Default::default()
        },
    ];
    let installed = a
        .install(forwarded(futures::stream::iter(install)))
        .await
        .unwrap();
    assert_eq!(installed.into_inner().shards, vec![0]);
    a.activate(forwarded(ActivateRequest { version: 2 }))
        .await
        .unwrap();

    // B is behind: a query pinned to 2 is refused as version-missing.
    let err = ShardSearch::search(&*held_b, &params("river", 2), Stop::default()).unwrap_err();
    let status = tonic::Status::from(crate::LeafError::from(err));
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().starts_with(VERSION_MISSING),
        "{}",
        status.message()
    );

    let request = CatchUpRequest {
        version: 2,
        source: addr_a.clone(),
        activate: true,
    };
    // Sent by a client rather than the parent: refused, nothing copied.
    let refused = b.catch_up(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("CatchUp is sent by its parent"),
        "{}",
        refused.message()
    );
    let caught = b.catch_up(forwarded(request)).await.unwrap().into_inner();
    assert_eq!(caught.version, 2);
    assert!(caught.bytes > 0);

    let versions = |r: tonic::Response<searchtree_proto::pb::VersionsResponse>| {
        let mut inner = r.into_inner();
        inner.leaves.remove(0)
    };
    let va = versions(a.versions(VersionsRequest {}).await.unwrap());
    let vb = versions(b.versions(VersionsRequest {}).await.unwrap());
    assert_eq!((va.current, vb.current), (2, 2));
    assert_eq!(va.digest, summary.digest);
    assert_eq!(vb.digest, va.digest);
    assert_eq!(vb.num_docs, docs.len() as u64);
    let fresh = build(&tmp.path().join("fresh"), &docs, 1, "fresh");
    assert_matches_build(&[held_b], &fresh, 2, "caught-up replica");

    // Publish belongs to the root.
    let err = b
        .publish(searchtree_proto::pb::PublishRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .starts_with("this is a leaf (shard 0), not the tree's root: publish through the root"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_second_install_at_once_is_refused_rather_than_queued() {
    let tmp = tempfile::tempdir().unwrap();
    let builds = build(&tmp.path().join("build"), &corpus(6, "d", 20), 1, "one");
    let store = CorpusStore::open(&builds[0], &tmp.path().join("data"), settings("a")).unwrap();
    let addr = serve(store).await;
    // An Install whose sender has not sent its first chunk yet.
    let (_hold, pending) = tokio::sync::mpsc::channel::<InstallChunk>(1);
    let mut first = client(&addr).await;
    let held_open = tokio::spawn(async move {
        first
            .install(forwarded(
                tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(pending),
            ))
            .await
    });
    // Until the first holds the slot, a second (of no chunk) is told it
    // sent nothing; then it is refused at once, not queued behind it.
    let mut second = client(&addr).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refusal = loop {
        let err = second
            .install(forwarded(futures::stream::empty::<InstallChunk>()))
            .await
            .unwrap_err();
        if err.code() != Code::InvalidArgument || std::time::Instant::now() > deadline {
            break err;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(refusal.code(), Code::Aborted, "{refusal:?}");
    assert!(
        refusal.message().contains("already installing"),
        "{}",
        refusal.message()
    );
    held_open.abort();
}

/// An Install holds the store until its last chunk: one whose sender goes
/// quiet is given up, and the leaf's other steps go on.
#[tokio::test]
async fn an_install_whose_sender_goes_quiet_is_given_up() {
    let tmp = tempfile::tempdir().unwrap();
    let builds = build(&tmp.path().join("build"), &corpus(6, "d", 20), 1, "one");
    let mut stores = open_stores(&builds, &tmp.path().join("data"));
    load(&mut stores, &[upsert("x", "", "river")]);
    let summary = stores[0].prepare(2, "").unwrap();
    let store = stores.pop().unwrap();
    let addr = serve_giving_up_after(store, std::time::Duration::from_millis(300)).await;
    let first = InstallChunk {
        version: 2,
        num_docs: summary.num_docs,
        num_tokens: summary.num_tokens.clone(),
        ..Default::default()
    };
    // The first chunk, then nothing, the stream left open.
    let (send, pending) = tokio::sync::mpsc::channel::<InstallChunk>(1);
    send.send(first).await.unwrap();
    let started = std::time::Instant::now();
    let err = client(&addr)
        .await
        .install(forwarded(
            tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(pending),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("no chunk for 300ms"), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // The store and the install's slot are free again: the next Install
    // gets as far as checking its first chunk.
    let bogus = InstallChunk {
        version: 2,
        num_docs: 1,
        ..Default::default()
    };
    let err = client(&addr)
        .await
        .install(forwarded(futures::stream::iter(vec![bogus])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    drop(send);
}

/// A Prepare holds its slot until its terms have been read: a second one
/// would rebuild the candidate they are read from. Called in process, so
/// that nothing reads the first one's answer (over gRPC the server's
/// transport reads a small one to its end at once, and frees the slot).
#[tokio::test]
async fn a_second_prepare_while_the_first_is_unread_is_refused_rather_than_queued() {
    use searchtree_proto::pb::corpus_server::Corpus;
    let tmp = tempfile::tempdir().unwrap();
    let builds = build(&tmp.path().join("build"), &corpus(6, "d", 20), 1, "one");
    let store = CorpusStore::open(&builds[0], &tmp.path().join("data"), settings("p")).unwrap();
    let corpus = LeafCorpus::new(store, LeafCounters::new("leaf"), "p".into());
    let prepare = || {
        corpus.prepare(forwarded(PrepareRequest {
            version: 2,
            ..Default::default()
        }))
    };
    let unread = prepare().await.unwrap();
    let Err(refusal) = prepare().await else {
        panic!("a second Prepare at once was let through");
    };
    assert_eq!(refusal.code(), Code::Aborted, "{refusal:?}");
    assert!(
        refusal.message().contains("already preparing"),
        "{refusal:?}"
    );
    // Once the first answer is gone, and the thread reading its terms has
    // stopped, so is its hold: the next Prepare rebuilds the candidate.
    drop(unread);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match prepare().await {
            Ok(_) => break,
            Err(e) if e.code() == Code::Aborted && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(e) => panic!("the Prepare after the first was dropped failed: {e:?}"),
        }
    }
}

#[tokio::test]
async fn a_leaf_without_a_data_dir_serves_its_build_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let builds = build(&tmp.path().join("build"), &corpus(5, "d", 20), 1, "one");
    let held = Arc::new(HeldVersions::new(settings("ro").open(&builds[0]).unwrap()));
    let corpus = LeafCorpus::read_only(Arc::clone(&held), LeafCounters::new("leaf"), "ro".into());
    use searchtree_proto::pb::corpus_server::Corpus;
    let err = corpus
        .activate(forwarded(ActivateRequest { version: 2 }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), super::service::READ_ONLY);
    let Err(err) = corpus.prepare(forwarded(PrepareRequest::default())).await else {
        panic!("a read-only leaf prepared a version");
    };
    assert_eq!(err.code(), Code::FailedPrecondition);
    let leaf = corpus
        .versions(tonic::Request::new(VersionsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .leaves
        .remove(0);
    assert_eq!(
        (leaf.current, leaf.installed, leaf.num_docs),
        (1, vec![1], 20)
    );
    assert_eq!(leaf.snapshot, "one");

    // Copies of its build are sent, up to a cap: a reader that holds its
    // stream unread keeps a slot, and the slot returns when it lets go.
    use futures::StreamExt;
    let copy = || corpus.copy_version(tonic::Request::new(CopyVersionRequest { version: 1 }));
    let mut open = Vec::new();
    for _ in 0..super::service::MAX_COPIES_SENT {
        open.push(copy().await.unwrap().into_inner());
    }
    let Err(err) = copy().await else {
        panic!("a copy past the cap was sent");
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    drop(open.pop());
    let Ok(stream) = copy().await else {
        panic!("the slot did not come back");
    };
    let mut stream = stream.into_inner();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
        chunks += 1;
    }
    assert!(chunks > 0, "the copy sends the build's files");
}

#[test]
fn a_copied_version_has_the_same_files_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
    std::fs::create_dir_all(&from).unwrap();
    std::fs::create_dir_all(&to).unwrap();
    let big: Vec<u8> = (0..(super::copy::CHUNK_BYTES * 5 / 2))
        .map(|i| (i % 251) as u8)
        .collect();
    let exact: Vec<u8> = vec![7; super::copy::CHUNK_BYTES];
    std::fs::write(from.join("big"), &big).unwrap();
    std::fs::write(from.join("exact"), &exact).unwrap();
    std::fs::write(from.join("empty"), b"").unwrap();
    std::fs::write(from.join(".tantivy-writer.lock"), b"").unwrap();
    let mut chunks = Vec::new();
    let sent = super::copy::read_version(&from, |c| {
        chunks.push(c);
        true
    })
    .unwrap();
    assert_eq!(sent, (big.len() + exact.len()) as u64);
    // 3 chunks of the big file, 1 of the exact one, 1 of the empty one.
    assert_eq!(chunks.len(), 5);
    assert!(
        chunks
            .iter()
            .all(|c| c.data.len() <= super::copy::CHUNK_BYTES)
    );
    let mut writer = super::copy::VersionWriter::new(to.clone(), no_floor());
    for chunk in &chunks {
        writer.write(chunk).unwrap();
    }
    assert_eq!(writer.finish().unwrap(), sent);
    assert_eq!(std::fs::read(to.join("big")).unwrap(), big);
    assert_eq!(std::fs::read(to.join("exact")).unwrap(), exact);
    assert_eq!(std::fs::read(to.join("empty")).unwrap(), b"");
    assert!(!to.join(".tantivy-writer.lock").exists());

    // A name that would leave the directory is refused; so is a copy that
    // stops in the middle of a file.
    let mut writer = super::copy::VersionWriter::new(to.clone(), no_floor());
    let evil = searchtree_proto::pb::FileChunk {
        name: "../x".into(),
        data: vec![1],
        last: true,
    };
    assert!(writer.write(&evil).is_err());
    let mut writer = super::copy::VersionWriter::new(to, no_floor());
    let mut cut = chunks[0].clone();
    cut.last = false;
    writer.write(&cut).unwrap();
    assert!(writer.finish().is_err());
}

#[test]
fn a_copy_that_does_not_open_never_becomes_a_version_nor_stops_a_start() {
    let tmp = tempfile::tempdir().unwrap();
    let builds = build(&tmp.path().join("build"), &corpus(6, "d", 30), 1, "one");
    let mut a = open_stores(&builds, &tmp.path().join("a"));
    load(&mut a, &[upsert("x", "", "river")]);
    publish(&mut a, 2, "");
    activate(&mut a, 2);
    let source = a[0].version_dir(2);
    // A copy whose statistics table claims 2^50 frequencies: read as the
    // file says, it would ask for 4 PiB and abort the process.
    let damaged = |into: &Path| {
        std::fs::create_dir_all(into).unwrap();
        for file in std::fs::read_dir(&source).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, into.join(file.file_name().unwrap())).unwrap();
        }
        // One table (a build's format), of field 0, 2^50 long.
        let mut bytes = b"STDFREQ1".to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(1u64 << 50).to_le_bytes());
        std::fs::write(into.join(crate::stats::DOC_FREQS_FILE), bytes).unwrap();
    };
    let data_b = tmp.path().join("b");
    let mut b = open_stores(&builds, &data_b);
    let copy = b[0].begin_copy(2).unwrap();
    damaged(&copy);
    let err = b[0].adopt_copy(2, &copy, true).unwrap_err().to_string();
    assert!(
        err.contains("the copy of version 2 does not open")
            && err.contains("a table of 1125899906842624 frequencies"),
        "{err}"
    );
    assert!(!copy.exists() && !b[0].version_dir(2).exists());
    assert_eq!(b[0].held().numbers(), vec![1]);
    // A damaged version beside the current one (the disk's doing) is
    // dropped at the next start; the leaf serves its current version.
    damaged(&b[0].version_dir(2));
    drop(b);
    let b = open_stores(&builds, &data_b);
    assert_eq!(b[0].held().numbers(), vec![1]);
    assert!(!b[0].version_dir(2).exists());
}

#[test]
fn many_small_batches_stay_a_few_segments_and_publish_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut docs = corpus(9, "d", 40);
    let builds = build(&tmp.path().join("build"), &docs, 1, "one");
    let mut stores = open_stores(&builds, &tmp.path().join("data"));
    let mut rng = fastrand::Rng::with_seed(3);
    for i in 0..50 {
        // New ids, staged ids replaced again, published ids deleted.
        let op = match i % 3 {
            0 => upsert(&format!("s{}", i % 7), "", &text(&mut rng, 2, 12)),
            1 => delete(&format!("d{i}")),
            _ => upsert(&format!("d{}", i + 1), "t", &text(&mut rng, 2, 12)),
        };
        apply(&mut docs, std::slice::from_ref(&op));
        load(&mut stores, &[op]);
    }
    let (_, segments) = stores[0].staging_mut().snapshot().unwrap();
    assert!(
        segments.len() < super::staging::MAX_SEGMENTS,
        "{}",
        segments.len()
    );
    assert_eq!(stores[0].staging().ops(), 50);
    publish(&mut stores, 2, "");
    activate(&mut stores, 2);
    let fresh = build(&tmp.path().join("fresh"), &docs, 1, "fresh");
    assert_matches_build(&held(&stores), &fresh, 2, "after 50 one-operation batches");
}

#[test]
fn a_candidate_left_by_a_crash_is_removed_and_install_needs_a_prepare() {
    let tmp = tempfile::tempdir().unwrap();
    let builds = build(&tmp.path().join("build"), &corpus(2, "d", 30), 1, "one");
    let data = tmp.path().join("data");
    let mut stores = open_stores(&builds, &data);
    load(&mut stores, &[upsert("x", "", "river")]);
    stores[0].prepare(2, "").unwrap();
    let candidate = stores[0].tmp_dir(2);
    assert!(candidate.exists());
    drop(stores);

    let mut stores = open_stores(&builds, &data);
    assert!(!candidate.exists());
    assert_eq!(stores[0].held().numbers(), vec![1]);
    assert_eq!(stores[0].staging().ops(), 1);
    let first = InstallChunk {
        version: 2,
        ..Default::default()
    };
    let Err(err) = stores[0].begin_install(&first) else {
        panic!("an install without a candidate must be refused");
    };
    assert_eq!(tonic::Status::from(err).code(), Code::FailedPrecondition);
    // A version at or below the current one cannot be prepared, nor one
    // that jumps a million versions (none could follow u64::MAX); an
    // activation of a version not held is refused as missing.
    assert!(stores[0].prepare(1, "").is_err());
    for far in [u64::MAX, 1 + super::store::MAX_VERSION_STEP + 1] {
        let err = tonic::Status::from(stores[0].prepare(far, "").unwrap_err());
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("more than 1000000 above"), "{err:?}");
        assert!(stores[0].begin_copy(far).is_err());
    }
    let err = stores[0].activate(5).unwrap_err().to_string();
    assert!(err.starts_with(VERSION_MISSING), "{err}");

    publish(&mut stores, 2, "");
    // The in-flight search holds its version past the release.
    let pinned = stores[0].held().get(1).unwrap();
    activate(&mut stores, 2);
    publish(&mut stores, 3, "");
    activate(&mut stores, 3);
    assert_eq!(stores[0].held().numbers(), vec![2, 3]);
    let answer = pinned.search(&params("river", 0), Stop::default()).unwrap();
    assert_eq!(answer.version, 1);
}

#[test]
fn statistics_no_corpus_could_have_are_refused_and_the_candidate_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let builds = build(&tmp.path().join("build"), &corpus(4, "d", 30), 1, "one");
    let mut stores = open_stores(&builds, &tmp.path().join("data"));
    load(&mut stores, &[upsert("x", "", "river")]);
    let summary = stores[0].prepare(2, "").unwrap();
    let sound = InstallChunk {
        version: 2,
        num_docs: summary.num_docs,
        num_tokens: summary.num_tokens.clone(),
        ..Default::default()
    };
    let refused = |store: &CorpusStore, first: &InstallChunk, terms: &[FieldTerms]| {
        let err = match store.begin_install(first) {
            Err(err) => err,
            Ok(mut stats) => stats.absorb(terms).expect_err("refused"),
        };
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status.message().to_string()
    };
    // Fewer documents, or fewer tokens in a field, than the shard holds.
    let few_docs = InstallChunk {
        num_docs: 1,
        ..sound.clone()
    };
    let message = refused(&stores[0], &few_docs, &[]);
    assert!(
        message.contains("count 1 documents, fewer than shard 0's own 31"),
        "{message}"
    );
    let mut few_tokens = sound.clone();
    few_tokens.num_tokens.insert("body".into(), 2);
    let message = refused(&stores[0], &few_tokens, &[]);
    assert!(message.contains("tokens in field body"), "{message}");
    // A term in more documents than the corpus holds: BM25 has no idf for
    // it, and tantivy would panic at every search of it.
    let over = [FieldTerms {
        field: "body".into(),
        terms: vec![b"river".to_vec()],
        doc_freqs: vec![summary.num_docs + 1],
    }];
    let message = refused(&stores[0], &sound, &over);
    assert!(
        message.contains("a term in 32 documents of a corpus of 31"),
        "{message}"
    );
    // Refusals leave the candidate: the sound statistics install it, and
    // the version answers as a fresh build.
    publish(&mut stores, 2, "");
    activate(&mut stores, 2);
    let answer = search(&stores[0].held(), "river", 0);
    assert_eq!(answer.version, 2);
    assert!(answer.hits.iter().any(|h| h.doc_id == "x"));
}

#[test]
fn a_publish_under_way_refuses_loads_and_a_version_never_activated_is_not_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let builds = build(&tmp.path().join("build"), &corpus(3, "d", 30), 1, "one");
    let data = tmp.path().join("data");
    let mut stores = open_stores(&builds, &data);
    load(&mut stores, &[upsert("a", "", "river")]);
    // A publish (another root's, beside this load) has prepared version 2:
    // activating it empties the staging area, so a batch staged now would
    // be acknowledged and then lost.
    stores[0].prepare(2, "").unwrap();
    let batch = LoadBatch {
        seq: 9,
        ops: vec![upsert("b", "", "lake")],
    };
    let err = stores[0].load(&batch).unwrap_err().to_string();
    assert!(err.contains("version 2 is being published"), "{err}");
    // Installed and not yet activated: still refused.
    publish(&mut stores, 2, "");
    assert!(stores[0].load(&batch).is_err());
    activate(&mut stores, 2);
    assert!(stores[0].load(&batch).unwrap().ok);

    // A publish that stops after installing leaves version 3, never
    // current. The next one releases it and keeps version 2, the one it
    // replaced, for queries still pinned to it — across a restart too.
    publish(&mut stores, 3, "");
    publish(&mut stores, 4, "");
    activate(&mut stores, 4);
    assert_eq!(stores[0].held().numbers(), vec![2, 4]);
    drop(stores);
    let stores = open_stores(&builds, &data);
    assert_eq!(stores[0].held().numbers(), vec![2, 4]);
    let answer = search(&stores[0].held(), "lake", 4);
    assert_eq!(
        answer.hits.len(),
        1,
        "the batch loaded after version 2 is in 4"
    );
}

#[test]
fn batches_staged_under_one_commit_ack_each_and_publish_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut docs = corpus(11, "d", 40);
    let builds = build(&tmp.path().join("build"), &docs, 1, "one");
    let data = tmp.path().join("data");
    let mut stores = open_stores(&builds, &data);
    // Within one group, a later batch's operation on an id wins.
    let batches = [
        vec![upsert("n1", "", "river stone"), upsert("d3", "t", "paris")],
        vec![delete("n1"), delete("d4"), delete("missing")],
        vec![upsert("n1", "again", "light harbor"), upsert("", "", "x")],
    ];
    for ops in &batches {
        apply(&mut docs, ops);
    }
    let group: Vec<LoadBatch> = batches
        .iter()
        .enumerate()
        .map(|(seq, ops)| LoadBatch {
            seq: seq as u64 + 10,
            ops: ops.clone(),
        })
        .collect();
    let acks = stores[0].load_group(&group).unwrap();
    let seqs: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, [10, 11, 12]);
    let counts: Vec<[u32; 4]> = acks
        .iter()
        .map(|a| [a.added, a.replaced, a.deleted, a.delete_missing])
        .collect();
    // n1 added, then deleted (it was there), then added again.
    assert_eq!(counts, [[1, 1, 0, 0], [0, 0, 2, 1], [1, 0, 0, 0]]);
    assert_eq!(acks[2].refused.len(), 1, "the empty id is refused");
    // One commit for the group, durable: a reopened store still has it.
    drop(stores);
    let mut stores = open_stores(&builds, &data);
    assert_eq!(
        stores[0].staging().ops(),
        6,
        "refused operations are not staged"
    );
    // What was staged before the restart still counts: n1 is there (a
    // replace), d4 was deleted (a delete of a missing document).
    let again = LoadBatch {
        seq: 13,
        ops: vec![upsert("n1", "again", "light harbor"), delete("d4")],
    };
    let ack = stores[0].load(&again).unwrap();
    assert_eq!(
        [ack.added, ack.replaced, ack.deleted, ack.delete_missing],
        [0, 1, 0, 1]
    );
    // (The same operations as before: the documents do not change.)
    publish(&mut stores, 2, "");
    activate(&mut stores, 2);
    let fresh = build(&tmp.path().join("fresh"), &docs, 1, "fresh");
    assert_matches_build(&held(&stores), &fresh, 2, "after a group commit");
}

#[test]
fn acknowledged_operations_the_index_never_committed_are_applied_again_at_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut docs = corpus(13, "d", 30);
    let builds = build(&tmp.path().join("build"), &docs, 1, "one");
    let data = tmp.path().join("data");
    let mut stores = open_stores(&builds, &data);
    // Committed by the index (a snapshot commits), then its log emptied as
    // `clear` does first: a leaf stopped between the two steps.
    let first = [upsert("n1", "first", "river stone")];
    apply(&mut docs, &first);
    load(&mut stores, &first);
    stores[0].staging_mut().snapshot().unwrap();
    drop(stores);
    fsio::write_atomic(&data.join("leaf-0/staging/ops.log"), b"").unwrap();
    // Acknowledged after the restart and never committed by the index: the
    // commit's count of log lines (1) must not cover the new log's line 1.
    let mut stores = open_stores(&builds, &data);
    let second = [upsert("n2", "second", "light harbor"), delete("d2")];
    apply(&mut docs, &second);
    load(&mut stores, &second);
    drop(stores);
    let mut stores = open_stores(&builds, &data);
    assert_eq!(stores[0].staging().ops(), 2);
    publish(&mut stores, 2, "");
    activate(&mut stores, 2);
    let fresh = build(&tmp.path().join("fresh"), &docs, 1, "fresh");
    assert_matches_build(&held(&stores), &fresh, 2, "after two restarts");
}

#[test]
fn a_long_load_commits_as_it_goes_and_a_restart_applies_only_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let mut docs = corpus(17, "d", 20);
    let builds = build(&tmp.path().join("build"), &docs, 1, "one");
    let data = tmp.path().join("data");
    let mut stores = open_stores(&builds, &data);
    // Batches of about 4 MiB: the index commits once they pass the bound.
    let body = "harbor ".repeat(4 << 17);
    let batches = super::staging::COMMIT_AFTER_BYTES / body.len() + 2;
    for i in 0..batches {
        let mut ops = vec![upsert(&format!("big{i}"), "big", &body)];
        if i == 0 {
            // A delete among the lines the commit rewrites: it must count
            // after the restart all the same.
            ops.push(delete("d3"));
        }
        apply(&mut docs, &ops);
        load(&mut stores, &ops);
    }
    let log = data.join("leaf-0/staging/ops.log");
    let committed = tantivy::Index::open_in_dir(data.join("leaf-0/staging"))
        .unwrap()
        .load_metas()
        .unwrap()
        .payload;
    let text = std::fs::read_to_string(&log).unwrap();
    let committed: u64 = committed
        .expect("committed past the bound")
        .parse()
        .unwrap();
    // The committed lines were rewritten as one standing for them all,
    // without their documents; the lines after it hold theirs.
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["lines"], committed, "{first}");
    assert!(first.get("applied").is_none(), "{first}");
    let after = text.lines().count() as u64 - 1;
    assert!(committed > 1 && after > 0, "{committed} then {after}");
    assert!(
        (text.len() as u64) < (after + 1) * body.len() as u64,
        "the log holds {} bytes for {after} lines of documents",
        text.len()
    );
    drop(stores);
    let mut stores = open_stores(&builds, &data);
    assert_eq!(stores[0].staging().ops(), batches as u64 + 1);
    assert!(stores[0].staging().deleted().contains("d3"));
    publish(&mut stores, 2, "");
    activate(&mut stores, 2);
    let fresh = build(&tmp.path().join("fresh"), &docs, 1, "fresh");
    assert_matches_build(&held(&stores), &fresh, 2, "after a long load and a restart");
}

#[test]
fn a_leaf_does_not_start_on_a_damaged_shard_and_names_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let builds = build(&tmp.path().join("build"), &corpus(4, "d", 30), 1, "one");
    let term = std::fs::read_dir(&builds[0])
        .unwrap()
        .map(|f| f.unwrap().path())
        .find(|f| f.extension().is_some_and(|e| e == "term"))
        .unwrap();
    let mut bytes = std::fs::read(&term).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0xff;
    std::fs::write(&term, bytes).unwrap();
    let Err(err) = CorpusStore::open(&builds[0], &tmp.path().join("data"), settings("leaf")) else {
        panic!("a damaged shard must not be served");
    };
    let message = tonic::Status::from(err).message().to_string();
    assert!(
        message.contains("checksum does not match") && message.contains(".term"),
        "{message}"
    );
}

#[test]
fn a_shard_whose_statistics_count_fewer_documents_than_a_term_is_in_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let builds = build(&tmp.path().join("build"), &corpus(4, "d", 30), 1, "one");
    let meta = builds[0].join(crate::shard::SHARD_META_FILE);
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    json["corpus"]["num_docs"] = 2.into();
    std::fs::write(&meta, serde_json::to_vec(&json).unwrap()).unwrap();
    let Err(err) = Shard::open(&builds[0]) else {
        panic!("statistics BM25 cannot score with must not be served");
    };
    let message = format!("{err:#}");
    assert!(message.contains("documents of a corpus of 2"), "{message}");
}

#[test]
fn a_data_directory_in_use_by_another_leaf_is_refused_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let builds = build(&tmp.path().join("build"), &corpus(4, "d", 10), 1, "one");
    let data = tmp.path().join("data");
    let _first = open_stores(&builds, &data);
    let Err(err) = CorpusStore::open(&builds[0], &data.join("leaf-0"), settings("second")) else {
        panic!("two leaves must not share a data directory");
    };
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("another leaf is using this data directory"),
        "{}",
        status.message()
    );
}

#[test]
fn a_data_directory_of_another_shard_or_build_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = corpus(5, "d", 20);
    let two = build(&tmp.path().join("two"), &docs, 2, "one");
    let other = build(&tmp.path().join("other"), &docs, 2, "another");
    let data = tmp.path().join("data");
    drop(CorpusStore::open(&two[0], &data, settings("leaf")).unwrap());
    // A candidate left by a crash would be removed by an open that goes on.
    let leftover = data.join("versions/v00000002.tmp");
    std::fs::create_dir_all(&leftover).unwrap();

    let refusal = |index: &Path| match CorpusStore::open(index, &data, settings("leaf")) {
        Ok(_) => panic!("{} opened over shard 0's data", index.display()),
        Err(err) => tonic::Status::from(err),
    };
    let status = refusal(&two[1]);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("holds shard 0 of 2")
            && status.message().contains("is shard 1 of 2"),
        "{}",
        status.message()
    );
    let status = refusal(&other[0]);
    assert!(
        status
            .message()
            .contains("was made over another build of the corpus (input checksum one)"),
        "{}",
        status.message()
    );
    assert!(leftover.exists(), "a refused open touched the directory");
    // Over its own shard and build it opens, as before.
    CorpusStore::open(&two[0], &data, settings("leaf")).unwrap();
    assert!(!leftover.exists());
}

/// The segments each shard's version `version` searches.
fn segment_counts(held: &[Arc<HeldVersions>], version: u64) -> Vec<usize> {
    held.iter()
        .map(|h| {
            let searcher = h.get(version).unwrap();
            searcher.shard().reader.searcher().segment_readers().len()
        })
        .collect()
}

#[test]
fn publishes_keep_the_segments_a_load_did_not_touch_and_stay_exact() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut docs = corpus(5, "d", 60);
    let builds = build(&tmp.path().join("build"), &docs, 2, "build");
    let mut stores = open_stores(&builds, &tmp.path().join("data"));
    let mut rng = fastrand::Rng::with_seed(17);
    let new_docs = |rng: &mut fastrand::Rng, round: usize| -> Vec<DocOp> {
        (0..12)
            .map(|i| {
                upsert(
                    &format!("r{round}n{i}"),
                    &text(rng, 0, 2),
                    &text(rng, 3, 20),
                )
            })
            .collect()
    };

    // New documents only: the build's segment is linked, not rewritten,
    // and the staged segment beside it.
    let ops = new_docs(&mut rng, 0);
    apply(&mut docs, &ops);
    load(&mut stores, &ops);
    publish(&mut stores, 2, "");
    activate(&mut stores, 2);
    let held_now = held(&stores);
    assert_eq!(segment_counts(&held_now, 2), vec![2, 2]);
    for (store, build) in stores.iter().zip(&builds) {
        let version = store.dir_of(2).unwrap();
        let mut linked = 0;
        for name in fsio::version_files(build).unwrap() {
            if name.ends_with(".idx") || name.ends_with(".store") {
                let (a, b) = (build.join(&name), version.join(&name));
                assert_eq!(
                    std::fs::metadata(&a).unwrap().ino(),
                    std::fs::metadata(&b).unwrap().ino(),
                    "{name} of the build is linked into version 2"
                );
                linked += 1;
            }
        }
        assert_eq!(linked, 2);
    }
    let fresh = build(&tmp.path().join("fresh2"), &docs, 2, "fresh2");
    assert_matches_build(&held_now, &fresh, 0, "version 2, two segments");

    // More rounds: new documents, some replacing or deleting documents of
    // earlier rounds and of the build. Every version stays exact and
    // within the bound on segments.
    let mut most = 0;
    for round in 1..14 {
        let version = round as u64 + 2;
        let mut ops = new_docs(&mut rng, round);
        if round % 3 == 0 {
            ops.push(upsert(&format!("r{}n1", round - 1), "again", "river stone"));
            ops.push(delete(&format!("r{}n2", round - 2)));
            ops.push(delete(&format!("d{round}")));
        }
        apply(&mut docs, &ops);
        load(&mut stores, &ops);
        let (summaries, docs_read) = publish_reading(&mut stores, version, "");
        activate(&mut stores, version);
        if round % 3 != 0 {
            // New documents only, each staged segment as it was indexed:
            // no stored document is read for the totals.
            assert_eq!(docs_read, vec![0, 0], "round {round}");
        }
        let counts = segment_counts(&held(&stores), version);
        assert!(
            counts
                .iter()
                .all(|&n| n <= super::segments::MAX_VERSION_SEGMENTS),
            "{counts:?}"
        );
        most = most.max(*counts.iter().max().unwrap());
        let fresh = build(&tmp.path().join(format!("fresh{version}")), &docs, 2, "f");
        assert_matches_build(&held(&stores), &fresh, 0, &format!("version {version}"));
        assert_totals_match(&summaries, &fresh, &format!("version {version}"));
    }
    assert_eq!(
        most,
        super::segments::MAX_VERSION_SEGMENTS,
        "the bound was reached"
    );

    // Every document replaced: the old segments are dropped, not merged,
    // their totals taken out whole, and no stored document is read. Then
    // again, the staged segment of that load now leaving whole.
    let mut fresh = Vec::new();
    for (version, title, what) in [
        (20, "all", "every document replaced"),
        (21, "again", "every document replaced twice"),
    ] {
        let ops: Vec<DocOp> = docs
            .keys()
            .map(|id| upsert(id, title, &text(&mut rng, 3, 20)))
            .collect();
        apply(&mut docs, &ops);
        load(&mut stores, &ops);
        let (summaries, docs_read) = publish_reading(&mut stores, version, "");
        activate(&mut stores, version);
        assert_eq!(docs_read, vec![0, 0], "{what}");
        assert_eq!(
            segment_counts(&held(&stores), version),
            vec![1, 1],
            "{what}"
        );
        fresh = build(&tmp.path().join(format!("fresh{version}")), &docs, 2, "f");
        assert_matches_build(&held(&stores), &fresh, 0, what);
        assert_totals_match(&summaries, &fresh, what);
    }

    // A restart opens the versions as they were.
    drop(stores);
    let stores = open_stores(&builds, &tmp.path().join("data"));
    assert_matches_build(&held(&stores), &fresh, 0, "after a restart");
}

#[test]
fn replicas_that_carry_their_totals_by_different_paths_agree_on_the_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let mut docs = corpus(23, "d", 50);
    let builds = build(&tmp.path().join("build"), &docs, 2, "build");
    let mut steady = open_stores(&builds, &tmp.path().join("steady"));
    let mut restarted = open_stores(&builds, &tmp.path().join("restarted"));
    let mut rng = fastrand::Rng::with_seed(29);
    // Every document replaced and some added, committed by the index (a
    // snapshot commits) on both replicas of each shard; one of them then
    // restarts, so its staged segments are no longer known as indexed.
    let ops: Vec<DocOp> = docs
        .keys()
        .cloned()
        .chain((0..10).map(|i| format!("n{i}")))
        .map(|id| upsert(&id, &text(&mut rng, 0, 2), &text(&mut rng, 3, 20)))
        .collect();
    apply(&mut docs, &ops);
    load(&mut steady, &ops);
    load(&mut restarted, &ops);
    for store in &mut restarted {
        store.staging_mut().snapshot().unwrap();
    }
    drop(restarted);
    let mut restarted = open_stores(&builds, &tmp.path().join("restarted"));

    let (by_segment, read_none) = publish_reading(&mut steady, 2, "");
    let (by_document, read_all) = publish_reading(&mut restarted, 2, "");
    assert_eq!(read_none, vec![0, 0], "segments moved whole");
    // The restarted replica read every document that entered (its
    // shard's all); the build's segment left whole on both.
    let per_shard: Vec<u64> = by_document.iter().map(|s| s.num_docs).collect();
    assert_eq!(read_all, per_shard);
    for (a, b) in by_segment.iter().zip(&by_document) {
        assert_eq!(a.digest, b.digest, "shard {}", a.shard);
    }
    let fresh = build(&tmp.path().join("fresh"), &docs, 2, "fresh");
    assert_totals_match(&by_segment, &fresh, "totals moved by segment");
    assert_totals_match(&by_document, &fresh, "totals counted by document");
}

/// Below its disk floor a leaf refuses every step that writes, before it
/// writes, with RESOURCE_EXHAUSTED and the figures; what it held stays, it
/// goes on searching, and the same steps go through once there is room.
#[test]
fn steps_that_write_are_refused_below_the_disk_floor_and_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let builds = build(&tmp.path().join("build"), &corpus(6, "d", 20), 1, "one");
    let mut stores = open_stores(&builds, &tmp.path().join("data"));
    load(&mut stores, &[upsert("x", "", "river")]);
    let before = search(&stores[0].held(), "river", 0);

    stores[0].disk = floor_of_everything();
    let refused = |err: super::CorpusError, step: &str| {
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains(&format!("{step} refused"))
                && status.message().contains("--min-free-disk 100%")
                && status.message().contains("free of"),
            "{status:?}"
        );
    };
    let batch = LoadBatch {
        seq: 9,
        ops: vec![upsert("y", "", "river stone")],
    };
    refused(stores[0].load(&batch).unwrap_err(), "a load's batch");
    assert_eq!(
        stores[0].staging().ops(),
        1,
        "the refused batch is not staged"
    );
    refused(stores[0].prepare(2, "").unwrap_err(), "preparing version 2");
    let rebuilt = tmp.path().join("build").display().to_string();
    refused(
        stores[0].prepare(2, &rebuilt).unwrap_err(),
        "preparing version 2",
    );
    assert!(stores[0].candidate.is_none());
    assert!(!stores[0].tmp_dir(2).exists());
    refused(stores[0].begin_copy(2).unwrap_err(), "copying version 2");
    assert_same(
        &search(&stores[0].held(), "river", 0),
        &before,
        "searches go on at the current version",
    );

    stores[0].disk = no_floor();
    assert!(stores[0].load(&batch).unwrap().ok);
    publish(&mut stores, 2, "");
    activate(&mut stores, 2);
    let ids: Vec<String> = search(&stores[0].held(), "river", 0)
        .hits
        .into_iter()
        .map(|h| h.doc_id)
        .collect();
    assert!(
        ids.contains(&"x".to_string()) && ids.contains(&"y".to_string()),
        "{ids:?}"
    );
}

/// A copy's size is known only at its end: each chunk is checked against
/// the floor before it is written, so a source that sends more than the
/// disk can take is stopped at the first chunk that does not fit.
#[test]
fn a_copy_is_refused_at_a_chunk_the_disk_floor_has_no_room_for() {
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("copy");
    std::fs::create_dir(&to).unwrap();
    let chunk = |last: bool| searchtree_proto::pb::FileChunk {
        name: "a".into(),
        data: vec![7; 1000],
        last,
    };
    let mut writer = super::copy::VersionWriter::new(to.clone(), no_floor());
    writer.write(&chunk(false)).unwrap();
    let mut writer = super::copy::VersionWriter::new(to.clone(), floor_of_everything());
    let status = tonic::Status::from(writer.write(&chunk(true)).unwrap_err());
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("next chunk (after 0 bytes)"),
        "{status:?}"
    );
}

/// The number of deleted documents each segment of `version` holds, per
/// shard.
fn deleted_counts(held: &[Arc<HeldVersions>], version: u64) -> Vec<Vec<u32>> {
    held.iter()
        .map(|h| {
            let searcher = h.get(version).unwrap();
            let readers = searcher.shard().reader.searcher();
            readers
                .segment_readers()
                .iter()
                .map(|s| s.num_deleted_docs())
                .collect()
        })
        .collect()
}

#[test]
fn a_few_deletes_keep_a_segment_with_a_delete_file_and_count_nowhere() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut docs = corpus(11, "d", 200);
    // A word only one document holds: once it is deleted, the word is in
    // no live document, though the segment's dictionary still has it.
    docs.insert("only".into(), ("alone".into(), "zyzzyva river".into()));
    let builds = build(&tmp.path().join("build"), &docs, 2, "build");
    let mut stores = open_stores(&builds, &tmp.path().join("data"));
    let mut rng = fastrand::Rng::with_seed(3);
    let ids: Vec<String> = docs.keys().filter(|id| *id != "only").cloned().collect();
    let zyzzyva = |held: &[Arc<HeldVersions>], version: u64| -> u64 {
        held.iter()
            .map(|h| search(h, "zyzzyva", version).total_hits)
            .sum()
    };

    // A few documents deleted and replaced: the build's segment is kept,
    // its files linked, with a delete file; only the leaving documents are
    // read; the answers are a fresh build's of what is left.
    let mut ops = vec![delete("only"), delete(&ids[0]), delete(&ids[1])];
    for id in &ids[2..8] {
        ops.push(upsert(id, "changed", &text(&mut rng, 3, 20)));
    }
    apply(&mut docs, &ops);
    load(&mut stores, &ops);
    // The terms summed as a replica that merged the segment would send
    // them: without the words only deleted documents hold. The install
    // takes them all the same.
    let (summaries, docs_read) = publish_summing(&mut stores, 2, "", |df| df > 0);
    activate(&mut stores, 2);
    assert_eq!(
        docs_read.iter().sum::<u64>(),
        9,
        "the leaving documents, once each"
    );
    let held_now = held(&stores);
    for (shard, counts) in deleted_counts(&held_now, 2).iter().enumerate() {
        assert!(
            counts.iter().any(|&n| n > 0),
            "shard {shard} keeps a segment with deletes: {counts:?}"
        );
    }
    for (store, build) in stores.iter().zip(&builds) {
        let version = store.dir_of(2).unwrap();
        for name in fsio::version_files(build).unwrap() {
            if name.ends_with(".idx") || name.ends_with(".store") {
                assert_eq!(
                    std::fs::metadata(build.join(&name)).unwrap().ino(),
                    std::fs::metadata(version.join(&name)).unwrap().ino(),
                    "{name} of the build is linked into version 2, not rewritten"
                );
            }
        }
        assert!(
            version
                .join(super::deleted_terms::DELETED_TERMS_FILE)
                .is_file()
        );
    }
    let fresh = build(&tmp.path().join("fresh2"), &docs, 2, "f2");
    assert_matches_build(&held_now, &fresh, 0, "version 2, deletes kept");
    assert_totals_match(&summaries, &fresh, "version 2, deletes kept");
    assert_eq!(
        zyzzyva(&held_now, 2),
        0,
        "a deleted document's word matches nothing"
    );
    assert_eq!(zyzzyva(&held_now, 1), 1, "version 1 still has it");

    // A load counts against the published documents the delete file
    // leaves: deleting a deleted id again is missing, adding it back adds.
    let ops = vec![delete(&ids[0]), upsert(&ids[1], "back", "river stone")];
    apply(&mut docs, &ops);
    let [added, replaced, deleted, missing, _] = load(&mut stores, &ops);
    assert_eq!((added, replaced, deleted, missing), (1, 0, 0, 1));

    // Deletes pile up over publishes, each version exact, until a segment
    // passes the share a version keeps: then it is merged without them.
    let mut next = 8;
    let mut version = 2;
    let mut merged_at = None;
    while merged_at.is_none() {
        version += 1;
        let ops: Vec<DocOp> = ids[next..next + 8].iter().map(|id| delete(id)).collect();
        next += 8;
        apply(&mut docs, &ops);
        load(&mut stores, &ops);
        let (summaries, _) = publish_reading(&mut stores, version, "");
        activate(&mut stores, version);
        let fresh = build(&tmp.path().join(format!("fresh{version}")), &docs, 2, "f");
        let what = format!("version {version}");
        assert_matches_build(&held(&stores), &fresh, 0, &what);
        assert_totals_match(&summaries, &fresh, &what);
        for (segments, build) in deleted_counts(&held(&stores), version).iter().zip(&builds) {
            let built = Shard::open(build).unwrap().reader.searcher().num_docs() as f64;
            for &n in segments {
                assert!(f64::from(n) <= 0.2 * built + 1.0, "{what}: {segments:?}");
            }
        }
        if deleted_counts(&held(&stores), version)
            .iter()
            .any(|s| s.iter().all(|&n| n == 0))
        {
            merged_at = Some(version);
        }
        assert!(
            version < 12,
            "no segment was merged after {version} publishes"
        );
    }
    assert_eq!(zyzzyva(&held(&stores), version), 0);

    // A restart opens the versions with their delete files as they were.
    drop(stores);
    let stores = open_stores(&builds, &tmp.path().join("data"));
    let fresh = build(&tmp.path().join("fresh-end"), &docs, 2, "f");
    assert_matches_build(&held(&stores), &fresh, 0, "after a restart");
}

#[test]
fn an_install_missing_a_term_some_live_document_holds_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = corpus(12, "d", 40);
    let builds = build(&tmp.path().join("build"), &docs, 1, "one");
    let mut stores = open_stores(&builds, &tmp.path().join("data"));
    let ops = vec![delete("d1"), upsert("new", "river", "stone river")];
    load(&mut stores, &ops);
    let summary = stores[0].prepare(2, "").unwrap();
    let mut terms = Vec::new();
    term_chunks(&stores[0].tmp_dir(2), |chunk| {
        terms.extend(chunk.terms);
        true
    })
    .unwrap();
    // "river" is in live documents: statistics without it are wrong, not
    // a replica's other layout of deleted ones.
    for group in &mut terms {
        let keep: Vec<bool> = group.terms.iter().map(|t| t != b"river").collect();
        let mut k = keep.iter();
        group.terms.retain(|_| *k.next().unwrap());
        let mut k = keep.iter();
        group.doc_freqs.retain(|_| *k.next().unwrap());
    }
    let first = InstallChunk {
        version: 2,
        num_docs: summary.num_docs,
        num_tokens: summary.num_tokens.clone(),
        ..Default::default()
    };
    let mut stats = stores[0].begin_install(&first).unwrap();
    stats.absorb(&terms).unwrap();
    let err = stores[0].finish_install(stats).unwrap_err().to_string();
    assert!(err.contains("lack term"), "{err}");
}
