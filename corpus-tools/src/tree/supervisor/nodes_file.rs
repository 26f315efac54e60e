//! The nodes file `searchtree up --nodes-file` writes: every node of the
//! running tree with its role, pid and addresses, so operators' scripts and
//! tests find each node (its metrics, its process) without reading logs.
//!
//! It is written once the tree is ready and again whenever a node is
//! restarted (new pid), atomically: a reader sees the old file or the new
//! one, never half of one.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodesFile {
    /// The pid of the `searchtree up` that keeps the tree.
    pub supervisor_pid: u32,
    /// Every node, in start order (leaves first, the root last).
    pub nodes: Vec<NodeEntry>,
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Its name in the topology.
    pub name: String,
    /// `leaf`, `parent` or `root`.
    pub role: String,
    /// Its process id; `None` while it is down.
    pub pid: Option<u32>,
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its HTTP address (`/metrics`; the root's status page), if it has one.
    pub http: Option<SocketAddr>,
}

impl NodesFile {
    /// Writes the file at `path` atomically (a temporary file beside it,
    /// then a rename).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))
            .with_context(|| format!("writing {}", path.display()))?;
        std::io::Write::write_all(&mut tmp, json.as_bytes())?;
        std::io::Write::write_all(&mut tmp, b"\n")?;
        tmp.persist(path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Reads the file at `path`.
    pub fn read(path: &Path) -> anyhow::Result<NodesFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the nodes file {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a nodes file written by `searchtree up`",
                path.display()
            )
        })
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.json");
        let file = NodesFile {
            supervisor_pid: 7,
            nodes: vec![NodeEntry {
                name: "leaf-0".into(),
                role: "leaf".into(),
                pid: Some(42),
                grpc: "127.0.0.1:7001".parse().unwrap(),
                http: Some("127.0.0.1:9001".parse().unwrap()),
            }],
        };
        file.write(&path).unwrap();
        assert_eq!(NodesFile::read(&path).unwrap(), file);
        assert_eq!(file.node("leaf-0").unwrap().pid, Some(42));
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        let err = NodesFile::read(&bad).unwrap_err().to_string();
        assert!(err.contains("not a nodes file"), "{err}");
    }
}
