//! `searchtree build`: shard and index a corpus.

use std::path::PathBuf;

use clap::Args;

use crate::build::corpus::FieldNames;
use crate::build::{
    self, BuildOptions, BuildReport, Input, MAX_REPLICAS, MAX_SHARDS, TOPOLOGY_FILE,
};

/// Shard a JSON Lines corpus, build one tantivy index per shard, and write a
/// manifest and a topology for a tree over them.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The corpus: JSON Lines, plain or `.gz`, one object per line.
    #[arg(
        long,
        required_unless_present = "input_dir",
        conflicts_with = "input_dir"
    )]
    pub input: Option<PathBuf>,
    /// Instead: a directory of text files, one document per file (path as
    /// id and title); files that are not UTF-8 text are passed over.
    #[arg(long)]
    pub input_dir: Option<PathBuf>,
    /// Number of shards: 1 to 256, and no more than the corpus has documents.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SHARDS)))]
    pub shards: u32,
    /// Output directory: new, empty, or a previous build, which is replaced
    /// only once the new build is complete. Anything else is refused.
    #[arg(long)]
    pub out: PathBuf,
    /// Parents in the generated topology (0: leaves directly under the root).
    #[arg(long, default_value_t = 0)]
    pub parents: u32,
    /// Leaves per shard in the generated topology (1 to 16): replicas,
    /// started by `up` from the same shard directory, among which their
    /// parent chooses.
    #[arg(
        long,
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_REPLICAS))
    )]
    pub replicas: u32,
    /// Which JSON keys hold the document's parts.
    #[command(flatten)]
    pub fields: FieldNameArgs,
    /// Skip invalid lines (counted and reported) instead of stopping.
    #[arg(long)]
    pub skip_invalid: bool,
}

impl BuildArgs {
    /// The build these arguments ask for.
    pub fn options(&self) -> BuildOptions {
        let input = match (&self.input, &self.input_dir) {
            (Some(file), _) => Input::Lines(file.clone()),
            (None, Some(dir)) => Input::Dir(dir.clone()),
            (None, None) => unreachable!("clap requires one of --input and --input-dir"),
        };
        BuildOptions {
            input,
            shards: self.shards,
            out: self.out.clone(),
            parents: self.parents,
            replicas: self.replicas,
            fields: self.fields.names(),
            skip_invalid: self.skip_invalid,
            progress: true,
        }
    }
}

/// Runs the build and prints what it did (on stdout: it is the command's
/// result; progress and warnings go to stderr).
pub fn run(args: &BuildArgs) -> anyhow::Result<()> {
    let report = build::build(&args.options())?;
    print_report(&mut std::io::stdout().lock(), &report, &args.out);
    Ok(())
}

/// Writes a build's summary to `to`: what was built, where, documents per
/// shard, lines skipped, and how to start the tree.
pub fn print_report(to: &mut dyn std::io::Write, report: &BuildReport, out: &std::path::Path) {
    let m = &report.manifest;
    let mut text = format!(
        "built {} documents into {} shards in {:.1?} -> {}\n",
        m.input.documents,
        m.num_shards,
        report.elapsed,
        out.display()
    );
    let docs: Vec<String> = m.shards.iter().map(|s| s.num_docs.to_string()).collect();
    text.push_str(&format!("  documents per shard: {}\n", docs.join(", ")));
    if m.input.skipped > 0 {
        text.push_str(&format!(
            "  skipped {} invalid lines or non-text files, e.g.:\n",
            m.input.skipped
        ));
        for e in &report.skipped_examples {
            text.push_str(&format!("    {e}\n"));
        }
    }
    text.push_str(&format!(
        "  start the tree with: searchtree up --topology {}\n",
        out.join(TOPOLOGY_FILE).display()
    ));
    // A closed pipe (`| head -1`) is not an error of the build's.
    let _ = to.write_all(text.as_bytes()).and_then(|()| to.flush());
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        build: BuildArgs,
    }

    fn parse(extra: &[&str]) -> Result<BuildArgs, String> {
        let args = ["searchtree", "--input", "c.jsonl", "--out", "o"];
        Cli::try_parse_from(args.iter().chain(extra))
            .map(|cli| cli.build)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn shard_and_replica_counts_are_bounded_when_parsed() {
        assert_eq!(parse(&["--shards", "256"]).unwrap().shards, MAX_SHARDS);
        let err = parse(&["--shards", "100000"]).unwrap_err();
        assert!(err.contains("100000 is not in 1..=256"), "{err}");
        assert!(parse(&["--shards", "0"]).is_err());
        let args = parse(&["--shards", "2", "--replicas", "16"]).unwrap();
        assert_eq!(args.replicas, MAX_REPLICAS);
        assert!(parse(&["--shards", "2", "--replicas", "17"]).is_err());
    }
}

/// The JSON keys of a corpus line's parts, as `build` and `load` take them.
#[derive(Debug, Clone, Args)]
pub struct FieldNameArgs {
    /// JSON key of the unique document id.
    #[arg(long, default_value = "id")]
    pub id_field: String,
    /// JSON key of the title.
    #[arg(long, default_value = "title")]
    pub title_field: String,
    /// JSON key of the body text.
    #[arg(long, default_value = "body")]
    pub body_field: String,
}

impl FieldNameArgs {
    /// The keys, as the corpus reader takes them.
    pub fn names(&self) -> FieldNames {
        FieldNames {
            id: self.id_field.clone(),
            title: self.title_field.clone(),
            body: self.body_field.clone(),
        }
    }
}
