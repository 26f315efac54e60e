//! The corpus and queries shipped inside the binary, so the demo (and the
//! tests) run anywhere with no download. See `corpus-tools/data/SOURCE.md`.

/// 10,033 English Wikipedia article summaries as gzipped JSON Lines
/// (`id`, `title`, `body`). Wikipedia text, CC BY-SA 4.0.
pub const CORPUS_JSONL_GZ: &[u8] = include_bytes!("../data/wiki-summaries.jsonl.gz");
/// Documents in the bundled corpus.
pub const CORPUS_DOCUMENTS: usize = 10_033;
/// The file name the corpus is written under.
pub const CORPUS_FILE_NAME: &str = "wiki-summaries.jsonl.gz";
/// 300 queries drawn from the corpus, one per line.
pub const QUERIES: &str = include_str!("../data/wiki-queries.txt");

/// The bundled queries, one per entry.
pub fn queries() -> Vec<&'static str> {
    QUERIES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Writes the bundled corpus into `dir` and returns its path.
pub fn write_corpus(dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(CORPUS_FILE_NAME);
    std::fs::write(&path, CORPUS_JSONL_GZ)?;
    Ok(path)
}
