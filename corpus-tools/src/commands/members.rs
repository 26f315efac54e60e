//! `searchtree members`: who is registered in a tree's membership in etcd,
//! and whether each answers its health check.

use std::time::Duration;

use clap::Args;
use searchtree_membership::{Discovery, Etcd};
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

/// Lists the members.
pub async fn run(args: &MembersArgs) -> anyhow::Result<()> {
    searchtree_membership::args::check_tree_name(&args.tree).map_err(anyhow::Error::msg)?;
    let etcd = Etcd::new(&[args.etcd.as_str()])?;
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
    let healths = futures::future::join_all(members.values().map(|m| health(&m.addr))).await;
    let statuses = etcd.statuses().await;
    let shards = |s: &[u32]| searchtree_parent::spec::format_shards(s);
    if args.json {
        let nodes: Vec<serde_json::Value> = members
            .values()
            .zip(&healths)
            .map(|(m, h)| {
                serde_json::json!({
                    "addr": m.addr, "role": m.role, "shards": m.shards,
                    "pid": m.pid, "http": m.http, "health": h,
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
                "tree": args.tree, "members": nodes, "etcd": etcd,
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
