//! A build on disk is sound when its manifest is one this tool writes and
//! agrees with every shard's `shard.json`; every shard opens (with its
//! scoring files) and its files pass tantivy's checksums; every document
//! sits in the shard its id hashes to, once; and the corpus-wide
//! statistics the shards score with are what recomputing them over the
//! shards gives. The per-shard checks are the leaf's
//! ([`searchtree_leaf::shard::check`]), which runs them before it serves a
//! build.

use std::collections::HashSet;
use std::path::Path;

use searchtree_leaf::shard::check::check_shard;
use searchtree_leaf::stats::{self, DOC_FREQS_FILE, DocFreqs};
use tantivy::Searcher;

use super::Report;
use crate::build::manifest::{MANIFEST_FILE, Manifest};

/// Checks the build in `dir`.
pub fn check(dir: &Path) -> Report {
    let mut report = Report::default();
    let manifest = match Manifest::read(dir) {
        Ok(m) => m,
        Err(e) => {
            report.problem(format!("{e:#}"));
            return report;
        }
    };
    let manifest_path = dir.join(MANIFEST_FILE);
    if let Err(why) = manifest.check_ours() {
        report.problem(format!("{}: {why}", manifest_path.display()));
        return report;
    }
    let listed: u64 = manifest.shards.iter().map(|s| s.num_docs).sum();
    if listed != manifest.input.documents || listed != manifest.corpus.num_docs {
        report.problem(format!(
            "{}: its shards list {listed} documents, its input {}, its corpus totals {}",
            manifest_path.display(),
            manifest.input.documents,
            manifest.corpus.num_docs
        ));
    }

    let mut opened: Vec<(Searcher, DocFreqs)> = Vec::new();
    let mut ids = HashSet::new();
    let mut placed_ok = 0;
    for entry in &manifest.shards {
        let shard_dir = dir.join(&entry.dir);
        match check_shard(
            &manifest,
            entry.shard,
            &shard_dir,
            &mut ids,
            &mut report.problems,
        ) {
            Some((searcher, stored, misplaced)) => {
                opened.push((searcher, stored));
                placed_ok += usize::from(misplaced == 0);
            }
            None => continue,
        }
    }
    if opened.len() == manifest.shards.len() {
        report.ok(format!(
            "{} shards open, their files pass tantivy's checksums and agree with {}",
            opened.len(),
            MANIFEST_FILE
        ));
        check_statistics(dir, &manifest, &opened, &mut report);
    }
    if placed_ok == manifest.shards.len() {
        report.ok(format!(
            "all {} documents are in the shard their id hashes to ({}), each id once",
            ids.len(),
            manifest.sharding
        ));
    }
    report
}

/// Recomputes the corpus-wide statistics over the shards and compares them
/// with the manifest's totals and each shard's `doc_freqs.bin`.
fn check_statistics(
    dir: &Path,
    manifest: &Manifest,
    opened: &[(Searcher, DocFreqs)],
    report: &mut Report,
) {
    let searchers: Vec<Searcher> = opened.iter().map(|(s, _)| s.clone()).collect();
    let (totals, per_shard) = match stats::compute(&searchers) {
        Ok(computed) => computed,
        Err(e) => {
            report.problem(format!(
                "{}: recomputing the statistics failed: {e}",
                dir.display()
            ));
            return;
        }
    };
    let mut right = true;
    if totals != manifest.corpus {
        right = false;
        report.problem(format!(
            "{}: the corpus totals are {:?} but recomputed over the shards they are {:?}",
            dir.join(MANIFEST_FILE).display(),
            manifest.corpus,
            totals
        ));
    }
    for ((entry, (_, stored)), computed) in manifest.shards.iter().zip(opened).zip(&per_shard) {
        if stored != computed {
            right = false;
            report.problem(format!(
                "{}: the document frequencies differ from those recomputed over all shards",
                dir.join(&entry.dir).join(DOC_FREQS_FILE).display()
            ));
        }
    }
    if right {
        report.ok(format!(
            "the corpus statistics ({} documents; tokens {:?}) and every shard's document \
             frequencies match those recomputed over the shards",
            totals.num_docs, totals.num_tokens
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::corpus::FieldNames;
    use crate::build::{BuildOptions, Input, build};
    use searchtree_leaf::shard::SHARD_META_FILE;

    fn built(dir: &Path) -> std::path::PathBuf {
        let input = dir.join("c.jsonl");
        let lines: String = (0..40)
            .map(|i| {
                format!(
                    "{{\"id\":\"d{i}\",\"title\":\"t{i}\",\"body\":\"word number {i} and {}\"}}\n",
                    i % 7
                )
            })
            .collect();
        std::fs::write(&input, lines).unwrap();
        let out = dir.join("index");
        build(&BuildOptions {
            input: Input::Lines(input),
            shards: 3,
            out: out.clone(),
            parents: 0,
            replicas: 1,
            fields: FieldNames::default(),
            skip_invalid: false,
            progress: false,
        })
        .unwrap();
        out
    }

    #[test]
    fn a_fresh_build_passes_every_check() {
        let scratch = tempfile::tempdir().unwrap();
        let out = built(scratch.path());
        let report = check(&out);
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.ok.len(), 3, "{report:?}");
        assert!(report.ok[2].starts_with("all 40 documents are in the shard"));
    }

    #[test]
    fn edited_metadata_is_named_with_its_file() {
        let scratch = tempfile::tempdir().unwrap();
        let out = built(scratch.path());
        let meta_path = out.join("shards/shard-001").join(SHARD_META_FILE);
        let text = std::fs::read_to_string(&meta_path).unwrap();
        let mut meta: serde_json::Value = serde_json::from_str(&text).unwrap();
        meta["num_docs"] = serde_json::json!(999);
        meta["input_checksum"] = serde_json::json!("crc32:00000000");
        std::fs::write(&meta_path, meta.to_string()).unwrap();
        let report = check(&out);
        let problems = report.problems.join("\n");
        assert!(
            problems.contains(&format!(
                "{}: num_docs 999 differs from manifest.json's ",
                meta_path.display()
            )),
            "{problems}"
        );
        assert!(
            problems.contains("input_checksum \"crc32:00000000\" differs"),
            "{problems}"
        );
        assert!(problems.contains("the index holds"), "{problems}");
    }

    #[test]
    fn documents_in_the_wrong_shard_are_named() {
        let scratch = tempfile::tempdir().unwrap();
        let out = built(scratch.path());
        let shards = out.join("shards");
        std::fs::rename(shards.join("shard-000"), shards.join("swap")).unwrap();
        std::fs::rename(shards.join("shard-001"), shards.join("shard-000")).unwrap();
        std::fs::rename(shards.join("swap"), shards.join("shard-001")).unwrap();
        let report = check(&out);
        let problems = report.problems.join("\n");
        assert!(
            problems.contains("shard 1 differs from manifest.json's 0"),
            "{problems}"
        );
        assert!(
            problems.contains("documents in the wrong shard: \"d"),
            "{problems}"
        );
        assert!(problems.contains("(belongs in shard 0)"), "{problems}");
    }

    #[test]
    fn a_damaged_index_file_is_named_without_a_panic() {
        let scratch = tempfile::tempdir().unwrap();
        let out = built(scratch.path());
        let shard = out.join("shards/shard-001");
        let flip = |ext: &str| {
            for entry in std::fs::read_dir(&shard).unwrap().flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == ext) {
                    let mut bytes = std::fs::read(&path).unwrap();
                    let at = bytes.len() / 3;
                    bytes[at] ^= 0xff;
                    std::fs::write(&path, bytes).unwrap();
                }
            }
        };
        // A byte of the term dictionary (reading its ids once panicked),
        // then of every kind of file (the shard no longer opens).
        for exts in [&["term"][..], &["idx", "pos", "store", "fast"]] {
            for ext in exts {
                flip(ext);
            }
            let report = check(&out);
            let problems = report.problems.join("\n");
            assert!(
                problems.contains("files whose checksum does not match their content")
                    && problems.contains(".term"),
                "{problems}"
            );
        }
    }

    #[test]
    fn a_missing_manifest_or_a_truncated_statistics_file_is_named() {
        let scratch = tempfile::tempdir().unwrap();
        let out = built(scratch.path());
        let doc_freqs = out.join("shards/shard-002").join(DOC_FREQS_FILE);
        let len = std::fs::metadata(&doc_freqs).unwrap().len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&doc_freqs)
            .unwrap();
        file.set_len(len / 2).unwrap();
        let report = check(&out);
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(
            report.problems[0].starts_with("shard 2 does not open: "),
            "{report:?}"
        );
        assert!(report.problems[0].contains(DOC_FREQS_FILE), "{report:?}");

        std::fs::remove_file(out.join(MANIFEST_FILE)).unwrap();
        let report = check(&out);
        assert!(report.problems[0].contains("manifest.json"), "{report:?}");
    }
}
