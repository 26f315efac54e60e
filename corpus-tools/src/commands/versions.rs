//! `searchtree versions`: what every leaf of a running tree holds.

use std::fmt::Write;

use anyhow::anyhow;
use clap::Args;
use searchtree_proto::pb::{LeafVersions, VersionsRequest, VersionsResponse};

use crate::live::client::connect;
use crate::node_call::describe_status;

/// Show every leaf's versions: the current one, those installed, staged
/// operations, documents and content digest.
#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// The root's address, HOST:PORT.
    #[arg(long)]
    pub root: String,
}

/// Asks the node at `root` for its leaves' versions.
pub async fn fetch(root: &str) -> anyhow::Result<VersionsResponse> {
    let mut client = connect(root).await?;
    client
        .versions(VersionsRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| anyhow!("Versions failed: {}", describe_status(&s)))
}

/// The leaves as a table, by shard and replica, and the pinned version.
pub fn render(response: &VersionsResponse) -> String {
    let mut leaves: Vec<&LeafVersions> = response.leaves.iter().collect();
    leaves.sort_by(|a, b| (a.shard, &a.replica).cmp(&(b.shard, &b.replica)));
    let rows: Vec<[String; 8]> = leaves
        .iter()
        .map(|l| {
            let installed: Vec<String> = l.installed.iter().map(u64::to_string).collect();
            let reachable = if l.reachable {
                "yes".to_string()
            } else if l.misplaced {
                format!("misplaced: {}", l.error)
            } else {
                format!("no: {}", l.error)
            };
            let known = |v: String| if l.reachable { v } else { "-".into() };
            [
                l.shard.to_string(),
                l.replica.clone(),
                reachable,
                known(l.current.to_string()),
                known(installed.join(",")),
                known(l.staged_ops.to_string()),
                known(l.num_docs.to_string()),
                known(l.digest.clone()),
            ]
        })
        .collect();
    let header = [
        "shard",
        "replica",
        "reachable",
        "current",
        "installed",
        "staged",
        "docs",
        "digest",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, header.to_vec());
    for row in &rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    let _ = writeln!(
        out,
        "pinned: {}",
        match response.pinned {
            0 => "none (each leaf answers at its current version)".to_string(),
            v => format!("version {v}"),
        }
    );
    if let Some(note) = below_the_root(&response.role) {
        let _ = writeln!(out, "{note}");
    }
    out
}

/// What to say when the node asked is not the root, whose answer covers only
/// the leaves below it (and pins no version); `None` for the root (or a node
/// too old to say its role).
pub fn below_the_root(role: &str) -> Option<String> {
    match role {
        "parent" | "leaf" => Some(format!(
            "note: this is a {role}, not the tree's root: only the leaves below it are listed; \
             ask the root (`--root ROOT_ADDR`) for the whole tree"
        )),
        _ => None,
    }
}

/// Runs `versions`.
pub async fn run(args: &VersionsArgs) -> anyhow::Result<()> {
    print!("{}", render(&fetch(&args.root).await?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_leaves_by_shard_and_says_what_is_unreachable() {
        let response = VersionsResponse {
            leaves: vec![
                LeafVersions {
                    shard: 1,
                    replica: "127.0.0.1:4001".into(),
                    reachable: true,
                    current: 2,
                    installed: vec![1, 2],
                    staged_ops: 5,
                    num_docs: 100,
                    digest: "ab12".into(),
                    ..LeafVersions::default()
                },
                LeafVersions {
                    shard: 0,
                    replica: "127.0.0.1:4000".into(),
                    reachable: false,
                    error: "connection refused".into(),
                    ..LeafVersions::default()
                },
            ],
            pinned: 2,
            role: "root".into(),
        };
        let text = render(&response);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "shard  replica         reachable               current  installed  staged  docs  digest",
                "0      127.0.0.1:4000  no: connection refused  -        -          -       -     -",
                "1      127.0.0.1:4001  yes                     2        1,2        5       100   ab12",
                "pinned: version 2",
            ],
            "{text}"
        );
        let parent = VersionsResponse {
            role: "parent".into(),
            pinned: 0,
            ..response
        };
        assert!(
            render(&parent).ends_with(
                "note: this is a parent, not the tree's root: only the leaves below it are \
                 listed; ask the root (`--root ROOT_ADDR`) for the whole tree\n"
            ),
            "{}",
            render(&parent)
        );
    }
}
