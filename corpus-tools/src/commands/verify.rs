//! `searchtree verify`: check a build on disk, or a running tree.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::commands::versions;
use crate::verify::{self, Report};

/// Check a build directory (manifest, checksums, every document in the
/// shard its id hashes to, statistics recomputed), or with `--root` a
/// running tree (every leaf reachable and at the same version, replicas of
/// a shard identical). Prints what is wrong and fails, or prints `ok:`
/// lines.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A directory written by `searchtree build`.
    #[arg(required_unless_present = "root", conflicts_with = "root")]
    pub dir: Option<PathBuf>,
    /// Instead: the address (HOST:PORT) of a running tree's root.
    #[arg(long)]
    pub root: Option<String>,
}

/// Runs the verification and prints its report on stdout.
pub async fn run(args: &VerifyArgs) -> anyhow::Result<()> {
    let report: Report = match (&args.dir, &args.root) {
        (Some(dir), _) => {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || verify::build::check(&dir)).await?
        }
        (None, Some(root)) => verify::tree::check(&versions::fetch(root).await?),
        (None, None) => unreachable!("clap requires a directory or --root"),
    };
    print!("{}", report.render());
    if !report.passed() {
        bail!("verification failed: {} problem(s)", report.problems.len());
    }
    Ok(())
}
