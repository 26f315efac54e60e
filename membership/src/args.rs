//! The flags that put a node in a tree whose membership lives in etcd.

use std::time::Duration;

use clap::Args;

use crate::etcd::Etcd;

/// Membership flags every node takes.
#[derive(Debug, Clone, Args)]
pub struct MembershipArgs {
    /// etcd endpoints (`http://host:port`, comma-separated): the node
    /// registers itself there under --tree, and an inner node whose
    /// `--child` names only shards finds that child's replicas there.
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// The tree's name: its members live under `/searchtree/<tree>/` in etcd.
    #[arg(long)]
    pub tree: Option<String>,
    /// The address callers reach this node at, registered in etcd (default:
    /// the address it listens on, which must then not be a wildcard such as
    /// 0.0.0.0).
    #[arg(long)]
    pub advertise: Option<String>,
    /// How long the registration outlives a node that stops renewing it
    /// (crashed, or cut off from etcd), in seconds.
    #[arg(long, default_value_t = 10)]
    pub lease_ttl_secs: u64,
}

impl Default for MembershipArgs {
    fn default() -> Self {
        MembershipArgs {
            etcd: Vec::new(),
            tree: None,
            advertise: None,
            lease_ttl_secs: 10,
        }
    }
}

/// A node's place in an etcd-backed tree: the cluster and the tree's name.
#[derive(Debug, Clone)]
pub struct TreeMembership {
    /// The etcd client.
    pub etcd: Etcd,
    /// The tree's name.
    pub tree: String,
    /// The lease TTL.
    pub ttl: Duration,
    /// The address to register, if set.
    pub advertise: Option<String>,
}

impl MembershipArgs {
    /// The membership these flags ask for: none without --etcd; --etcd
    /// needs --tree.
    pub fn membership(&self) -> Result<Option<TreeMembership>, String> {
        if self.etcd.is_empty() {
            if self.tree.is_some() {
                return Err(
                    "--tree needs --etcd (the cluster the tree's membership lives in)".into(),
                );
            }
            return Ok(None);
        }
        let Some(tree) = self.tree.clone() else {
            return Err("--etcd needs --tree NAME (the tree this node belongs to)".into());
        };
        if tree.is_empty() || tree.contains('/') {
            return Err(format!(
                "--tree {tree:?} must be a non-empty name without '/'"
            ));
        }
        if self.lease_ttl_secs == 0 {
            return Err("--lease-ttl-secs must be at least 1".into());
        }
        let etcd = Etcd::new(&self.etcd).map_err(|e| e.to_string())?;
        Ok(Some(TreeMembership {
            etcd,
            tree,
            ttl: Duration::from_secs(self.lease_ttl_secs),
            advertise: self.advertise.clone(),
        }))
    }
}
