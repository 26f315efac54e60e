//! Children found in etcd: an inner node told `--child 0-1` (shards, no
//! address) keeps that child's replica group equal to the nodes registered
//! in the tree as serving exactly those shards.
//!
//! The group starts empty and follows the membership view: a node that
//! registers joins through the group's health checks and slow start, one
//! whose registration goes (drained, or its lease expired) leaves. The
//! corpus side (loads, publishes) follows the same view. While etcd is away
//! the last view stands (see `searchtree_membership::discovery`), so a
//! group is never emptied because the store is.

use std::sync::Arc;
use std::time::Duration;

use searchtree_membership::{Discovery, Members, TreeMembership};

use crate::child::{Child, GrpcChild};
use crate::corpus::CorpusNode;
use crate::replica::ReplicaGroup;
use crate::spec::format_shards;

/// How long a starting node waits for its first view of the membership
/// before it serves anyway (its groups fill as soon as etcd answers).
pub const FIRST_VIEW_WAIT: Duration = Duration::from_secs(3);

/// A child whose replicas come from etcd.
pub struct DiscoveredChild {
    /// The shards below it.
    pub shards: Vec<u32>,
    /// Its replica group.
    pub group: Arc<ReplicaGroup>,
}

/// Who this node is in the membership: what tells its own records, and
/// those of its own replicas, from its children's.
#[derive(Debug, Clone)]
pub struct OwnRecord {
    /// The address it registers under (`--advertise`), if it registers.
    pub addr: Option<String>,
    /// Its role, as it registers (`parent` or `root`).
    pub role: String,
    /// The shards below it, ascending, as it registers them.
    pub shards: Vec<u32>,
    /// This process's instance number
    /// ([`this_instance`](searchtree_membership::member::this_instance)).
    pub instance: u64,
}

/// The addresses of the members serving exactly `shards` (leaves and
/// parents; never a root), sorted, less this node's own records (at its
/// advertised address, or of its process at whatever address it
/// registered) and less its own replicas: members of its role serving its
/// shards. A parent over a single child registers with exactly that
/// child's shards, so without that last rule two replicas of such a parent
/// would take each other as replicas of the child, and a query would
/// bounce between them until its budget ran out.
pub fn replicas_of(members: &Members, shards: &[u32], own: &OwnRecord) -> Vec<String> {
    let mut addrs: Vec<String> = members
        .values()
        .filter(|m| {
            m.role != "root"
                && m.shards == shards
                && Some(m.addr.as_str()) != own.addr.as_deref()
                && (m.instance == 0 || m.instance != own.instance)
                && !(m.role == own.role && m.shards == own.shards)
        })
        .map(|m| m.addr.clone())
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// Starts following the tree's membership for `children`, keeping their
/// groups and `corpus` current. Waits (at most [`FIRST_VIEW_WAIT`]) for the
/// first view, whose members are in rotation at once; later ones join
/// through health checks and slow start.
pub async fn follow(
    membership: TreeMembership,
    own: OwnRecord,
    children: Vec<DiscoveredChild>,
    corpus: Arc<CorpusNode>,
) {
    for child in children.iter().filter(|c| c.shards == own.shards) {
        if own.role == "parent" {
            tracing::info!(
                child = format_shards(&child.shards),
                "this parent's only child has its own shards: only leaves are taken as that \
                 child's replicas (a parent registered with them is one of this node's own \
                 replicas); name a parent child by its address"
            );
        }
    }
    let discovery = Discovery::start(membership.etcd.clone(), &membership.tree);
    let first = discovery.synced(FIRST_VIEW_WAIT).await;
    if !first {
        tracing::warn!(
            tree = membership.tree,
            "no membership from etcd yet: serving, children join as soon as it answers"
        );
    }
    let mut view = discovery.subscribe();
    let apply = move |members: &Members, joining: bool| {
        for child in &children {
            let addrs = replicas_of(members, &child.shards, &own);
            let shards = child.shards.clone();
            let (added, removed) = child.group.update_members(&addrs, joining, |addr| {
                match GrpcChild::new(addr, shards.clone()) {
                    Ok(c) => Some(Arc::new(c) as Arc<dyn Child>),
                    Err(err) => {
                        tracing::warn!(addr, %err, "registered address unusable");
                        None
                    }
                }
            });
            corpus.set_replicas(&child.shards, &addrs);
            let label = format_shards(&child.shards);
            for addr in added {
                tracing::info!(child = label, replica = addr, joining, "replica joined");
            }
            for addr in removed {
                tracing::info!(child = label, replica = addr, "replica left");
            }
            if addrs.is_empty() {
                tracing::warn!(child = label, "no replica registered");
            }
        }
    };
    let initial = Arc::clone(&view.borrow_and_update());
    apply(&initial, !first);
    tokio::spawn(async move {
        // The discovery lives as long as this task.
        let _discovery = discovery;
        while view.changed().await.is_ok() {
            let members = Arc::clone(&view.borrow_and_update());
            apply(&members, true);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use searchtree_membership::Member;

    #[test]
    fn a_child_is_every_non_root_node_over_exactly_its_shards_but_this_one_and_its_replicas() {
        let m = |addr: &str, role: &str, shards: &[u32]| {
            (
                format!("k/{addr}"),
                Member {
                    addr: addr.into(),
                    role: role.into(),
                    shards: shards.to_vec(),
                    http: None,
                    pid: 0,
                    instance: 7,
                },
            )
        };
        let members: Members = [
            m("l0a:1", "leaf", &[0]),
            m("l0b:1", "leaf", &[0]),
            m("l1:1", "leaf", &[1]),
            m("p01:1", "parent", &[0, 1]),
            m("r:1", "root", &[0, 1]),
        ]
        .into_iter()
        .collect();
        let own = |addr: Option<&str>, role: &str, shards: &[u32], instance: u64| OwnRecord {
            addr: addr.map(str::to_string),
            role: role.into(),
            shards: shards.to_vec(),
            instance,
        };
        let root = own(None, "root", &[0, 1], 1);
        let p01 = own(Some("p01:1"), "parent", &[0, 1], 1);
        assert_eq!(replicas_of(&members, &[0], &p01), ["l0a:1", "l0b:1"]);
        assert_eq!(replicas_of(&members, &[0, 1], &root), ["p01:1"]);
        assert_eq!(
            replicas_of(&members, &[0, 1], &own(Some("p01:1"), "root", &[0, 1], 1)),
            Vec::<String>::new()
        );
        assert!(replicas_of(&members, &[2], &root).is_empty());

        // A parent over one child registers with that child's shards: its
        // own record, at whatever address, is not a replica of the child,
        // and neither is the record of another replica of that parent.
        let mut members = members;
        let mut own_record = m("p0:1", "parent", &[0]).1;
        own_record.instance = 42;
        members.insert("k/p0:1".into(), own_record);
        let (key, sibling) = m("p0b:1", "parent", &[0]);
        members.insert(key, sibling);
        assert_eq!(
            replicas_of(&members, &[0], &own(None, "parent", &[0], 42)),
            ["l0a:1", "l0b:1"]
        );
        assert_eq!(
            replicas_of(&members, &[0], &own(Some("p0b:1"), "parent", &[0], 9)),
            ["l0a:1", "l0b:1"]
        );
        // A root over that parent finds both of its replicas.
        assert_eq!(
            replicas_of(&members, &[0], &own(None, "root", &[0], 1)),
            ["l0a:1", "l0b:1", "p0:1", "p0b:1"]
        );
    }
}
