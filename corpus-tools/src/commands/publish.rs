//! `searchtree publish`: make what was loaded (or a rebuilt corpus) the
//! running tree's new version.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use searchtree_node::ops::client::NodeChannel;
use searchtree_proto::pb::corpus_client::CorpusClient;
use searchtree_proto::pb::{PublishRequest, PublishResponse};

use crate::build::manifest::Manifest;
use crate::live::client::connect;
use crate::node_call::describe_status;

/// Make the operations loaded into a running tree searchable, as its next
/// version; or, with `--from-build`, switch the tree to a corpus rebuilt
/// offline. Every query is answered wholly at the old version or wholly at
/// the new one.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The root's address, HOST:PORT.
    #[arg(long)]
    pub root: String,
    /// A directory written by `searchtree build` with as many shards as the
    /// tree, readable by every leaf: its corpus replaces the tree's.
    #[arg(long)]
    pub from_build: Option<PathBuf>,
}

/// Calls Publish on the root; `from_build` empty publishes what is staged.
pub async fn publish(
    client: &CorpusClient<NodeChannel>,
    from_build: String,
) -> anyhow::Result<PublishResponse> {
    client
        .clone()
        .publish(PublishRequest { from_build })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| anyhow!("publish failed: {}", describe_status(&s)))
}

/// What a publish did, as `load` and `publish` print it. A publish of a
/// rebuilt corpus (`from_build`) discards what was staged, and says so.
pub fn render_published(r: &PublishResponse, from_build: bool) -> String {
    let mut out = String::new();
    let staged = if from_build {
        format!("{} staged operations discarded", r.staged_ops)
    } else {
        format!("{} staged operations", r.staged_ops)
    };
    let _ = writeln!(
        out,
        "published version {} (previous {}): {} documents, {staged}, took {:.1?}",
        r.version,
        r.previous_version,
        r.num_docs,
        Duration::from_micros(r.took_us)
    );
    if !r.replicas_behind.is_empty() {
        let _ = writeln!(
            out,
            "  replicas behind (they catch up by copying the version): {}",
            r.replicas_behind.join(", ")
        );
    }
    out
}

/// Runs the publish and prints what it did.
pub async fn run(args: &PublishArgs) -> anyhow::Result<()> {
    let from_build = match &args.from_build {
        None => String::new(),
        Some(dir) => {
            // The leaves read it: an absolute path, checked to be a build.
            let dir = std::path::absolute(dir)
                .with_context(|| format!("--from-build {}", dir.display()))?;
            let manifest = Manifest::read(&dir).context("--from-build is not a build")?;
            manifest
                .check_ours()
                .map_err(|why| anyhow!("--from-build {}: {why}", dir.display()))?;
            dir.display().to_string()
        }
    };
    let client = connect(&args.root).await?;
    let swap = !from_build.is_empty();
    let response = publish(&client, from_build).await?;
    print!("{}", render_published(&response, swap));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_says_versions_documents_and_who_is_behind() {
        let mut r = PublishResponse {
            version: 3,
            previous_version: 2,
            num_docs: 9_000,
            staged_ops: 120,
            replicas_behind: vec![],
            took_us: 1_500_000,
        };
        assert_eq!(
            render_published(&r, false),
            "published version 3 (previous 2): 9000 documents, 120 staged operations, took 1.5s\n"
        );
        // A rebuilt corpus replaced them: they are not in the version.
        assert!(render_published(&r, true).contains(", 120 staged operations discarded,"));
        r.replicas_behind = vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()];
        assert!(render_published(&r, false).ends_with(
            "  replicas behind (they catch up by copying the version): 127.0.0.1:1, 127.0.0.1:2\n"
        ));
    }
}
