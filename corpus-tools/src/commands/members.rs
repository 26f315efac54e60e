//! `searchtree members`: who is registered in a tree's membership in etcd,
//! and whether each answers its health check.

use std::time::Duration;

use clap::Args;
use searchtree_membership::member::tree_prefix;
use searchtree_membership::{Discovery, Etcd, Member};
use searchtree_proto::pb::VersionsRequest;
use searchtree_proto::pb::corpus_client::CorpusClient;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::tree::supervisor::health_status;

/// List the nodes registered in a tree (address, role, shards, pid, HTTP
/// address) with each one's health, and the etcd members' state.
#[derive(Debug, Args)]
pub struct MembersArgs {
    /// etcd endpoints, comma-separated.
    #[arg(long, required = true)]
    pub etcd: String,
    /// The tree's name.
    #[arg(long, required = true)]
    pub tree: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How etcd is reached: TLS, a user (as the nodes take them).
    #[command(flatten)]
    pub access: searchtree_membership::EtcdAccessArgs,
}

/// How long one node's health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// A node's health as its gRPC health check says.
async fn health(addr: &str) -> String {
    match health_status(addr, HEALTH_TIMEOUT, HEALTH_TIMEOUT).await {
        Ok(ServingStatus::Serving) => "serving".into(),
        Ok(ServingStatus::NotServing) => "not_serving".into(),
        Ok(status) => format!("{status:?}").to_lowercase(),
        Err(_) => "unreachable".into(),
    }
}

/// The shard the leaf at `addr` answers Versions for, if it answers as
/// one leaf in time: compared with the shards its record names, it finds
/// a record that sends another shard's documents and queries to it.
async fn served_shard(addr: &str) -> Option<u32> {
    let ask = async {
        let channel = searchtree_node::ops::client::endpoint(addr)
            .ok()?
            .connect_timeout(HEALTH_TIMEOUT)
            .connect()
            .await
            .ok()?;
        let mut call = tonic::Request::new(VersionsRequest {});
        call.set_timeout(HEALTH_TIMEOUT);
        let answer = CorpusClient::new(searchtree_node::ops::client::channel(channel))
            .versions(call)
            .await
            .ok()?
            .into_inner();
        match answer.leaves.as_slice() {
            [leaf] if answer.role == "leaf" => Some(leaf.shard),
            _ => None,
        }
    };
    tokio::time::timeout(HEALTH_TIMEOUT * 2, ask)
        .await
        .ok()
        .flatten()
}

/// What is wrong with a leaf's record that says `shards` when the leaf
/// answers for `served`, if anything.
fn misregistered(record: &Member, served: Option<u32>) -> Option<String> {
    let served = served?;
    (record.role == "leaf" && record.shards != [served]).then(|| {
        format!(
            "{} is registered as a leaf of shard(s) {}, but the leaf there serves shard \
             {served}: its parents leave it out of that shard's loads, publishes and \
             queries; delete the record that names it so (`etcdctl del`), or fix the \
             address it names",
            record.addr,
            searchtree_parent::spec::format_shards(&record.shards)
        )
    })
}

/// Lists the members.
pub async fn run(args: &MembersArgs) -> anyhow::Result<()> {
    searchtree_membership::args::check_tree_name(&args.tree).map_err(anyhow::Error::msg)?;
    let security = args.access.security().map_err(anyhow::Error::msg)?;
    let etcd = Etcd::with_security(&[args.etcd.as_str()], &security)?;
    let discovery = Discovery::start(etcd.clone(), &args.tree);
    if !discovery.synced(Duration::from_secs(5)).await {
        // Say which members answer: a cluster that lost its quorum answers
        // no read, but its members that are up still tell their status.
        let states: Vec<String> = etcd
            .statuses()
            .await
            .into_iter()
            .map(|(endpoint, s)| match s {
                Some(s) => format!("{endpoint} up (version {})", s.version),
                None => format!("{endpoint} DOWN"),
            })
            .collect();
        anyhow::bail!(
            "etcd at {} does not answer the tree's members within 5 s ({}); a cluster \
             answers reads only while a majority of its members is up",
            args.etcd,
            states.join(", ")
        );
    }
    let members = discovery.subscribe().borrow().clone();
    // Records every node ignores: only the nodes' logs would name them.
    let (unreadable, unread): (Vec<(String, String)>, Option<String>) =
        match etcd.get_prefix(&tree_prefix(&args.tree)).await {
            Ok((kvs, _)) => (
                kvs.into_iter()
                    .filter_map(|(key, value)| Member::parse(&value).err().map(|e| (key, e)))
                    .collect(),
                None,
            ),
            Err(err) => (
                Vec::new(),
                Some(format!(
                    "the records could not be read again to find any that is not a member \
                     record: {err}"
                )),
            ),
        };
    let healths = futures::future::join_all(members.values().map(|m| health(&m.addr))).await;
    let served = futures::future::join_all(members.values().map(|m| async {
        if m.role == "leaf" {
            served_shard(&m.addr).await
        } else {
            None
        }
    }))
    .await;
    let problems: Vec<String> =
        members
            .values()
            .zip(&served)
            .filter_map(|(m, s)| misregistered(m, *s))
            .chain(unreadable.iter().map(|(key, e)| {
                format!("{key} is not a member record ({e}): every node ignores it")
            }))
            .chain(unread)
            .collect();
    let statuses = etcd.statuses().await;
    let shards = |s: &[u32]| searchtree_parent::spec::format_shards(s);
    if args.json {
        let nodes: Vec<serde_json::Value> = members
            .values()
            .zip(&healths)
            .zip(&served)
            .map(|((m, h), s)| {
                serde_json::json!({
                    "addr": m.addr, "role": m.role, "shards": m.shards,
                    "pid": m.pid, "http": m.http, "health": h, "serves": s,
                })
            })
            .collect();
        let etcd: Vec<serde_json::Value> = statuses
            .iter()
            .map(|(endpoint, s)| match s {
                Some(s) => serde_json::json!({
                    "endpoint": endpoint, "up": true, "version": s.version,
                    "leader": s.header.as_ref().is_some_and(|h| h.member_id == s.leader),
                }),
                None => serde_json::json!({ "endpoint": endpoint, "up": false }),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "tree": args.tree, "members": nodes, "etcd": etcd, "problems": problems,
            }))?
        );
        return Ok(());
    }
    println!(
        "{:<22} {:<7} {:<9} {:<12} {:<8} HTTP",
        "ADDRESS", "ROLE", "SHARDS", "HEALTH", "PID"
    );
    // The root first, then parents, then leaves, each by shards.
    let rank = |role: &str| match role {
        "root" => 0,
        "parent" => 1,
        _ => 2,
    };
    let mut rows: Vec<_> = members.values().zip(&healths).collect();
    rows.sort_by(|(a, _), (b, _)| {
        (rank(&a.role), &a.shards, &a.addr).cmp(&(rank(&b.role), &b.shards, &b.addr))
    });
    for (m, h) in rows {
        println!(
            "{:<22} {:<7} {:<9} {:<12} {:<8} {}",
            m.addr,
            m.role,
            shards(&m.shards),
            h,
            m.pid,
            m.http.as_deref().unwrap_or("-")
        );
    }
    for problem in &problems {
        println!("problem: {problem}");
    }
    println!();
    for (endpoint, s) in &statuses {
        match s {
            Some(s) => {
                let leader = s.header.as_ref().is_some_and(|h| h.member_id == s.leader);
                println!(
                    "etcd {endpoint}: up, version {}{}",
                    s.version,
                    if leader { ", leader" } else { "" }
                );
            }
            None => println!("etcd {endpoint}: DOWN"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_record_naming_shards_its_leaf_does_not_serve_is_a_problem() {
        let record = |role: &str, shards: &[u32]| Member {
            addr: "127.0.0.1:7001".into(),
            role: role.into(),
            shards: shards.to_vec(),
            http: None,
            pid: 0,
            instance: 0,
        };
        assert_eq!(misregistered(&record("leaf", &[2]), Some(2)), None);
        assert_eq!(
            misregistered(&record("leaf", &[0]), None),
            None,
            "not known"
        );
        assert_eq!(misregistered(&record("parent", &[0, 1]), Some(0)), None);
        let problem = misregistered(&record("leaf", &[0]), Some(2)).unwrap();
        assert!(
            problem.starts_with(
                "127.0.0.1:7001 is registered as a leaf of shard(s) 0, but the leaf there \
                 serves shard 2"
            ),
            "{problem}"
        );
    }
}
