//! Starting a tree of node processes and stopping it again.
//!
//! Nodes start children-first: leaves (all at once), then each parent once
//! its children are up, the root last. A node is up when it has printed
//! `LISTENING HOST:PORT` and answers the standard gRPC health check; its
//! actual address is then handed to its parent. Node logs are forwarded to
//! our stderr, prefixed with the node's name.
//!
//! [`Tree::supervise`] keeps a started tree alive: a node that dies is
//! started again on the address it had (parents hold their children's
//! addresses, clients the root's), after a backoff chosen by a
//! [`RestartPolicy`]. A root that cannot be kept alive ends supervision with
//! an error rather than leave a dead address behind.
//!
//! Split by concern: `process` starts one node and watches it, `restart` is
//! the restart policy, `supervise` the loop that applies it, `stderr_tail`
//! what a node said before it failed; this module
//! holds the tree and starts it.

mod nodes_file;
mod process;
mod restart;
mod stderr_tail;
mod supervise;

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::sync::mpsc;

pub use self::nodes_file::{NodeEntry, NodesFile};
pub use self::process::{NodeExit, READY_TIMEOUT, health_check, health_status};
use self::process::{Running, launch};
pub use self::restart::{Restart, RestartPolicy, RestartState};
use crate::tree::binaries::NodeBinaries;
use crate::tree::topology::{Plan, PlannedNode};

/// How long a rolling restart waits after a node serves again before the
/// next one goes: a few of its parent's health-check intervals.
const REJOIN: std::time::Duration = std::time::Duration::from_millis(1000);

/// How to start the nodes.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// `RUST_LOG` for the nodes when the environment does not set one.
    pub default_log: Option<String>,
    /// Forward node logs to our stderr (otherwise they are only kept to
    /// explain failures).
    pub forward_logs: bool,
    /// Async worker threads per node (`TOKIO_WORKER_THREADS`). `None`
    /// shares the machine: its cores divided among the tree's nodes, at
    /// least one each — every node sized for the whole machine would run
    /// seven processes' worth of threads on two cores, and the context
    /// switches cost throughput (measured in BENCHMARKS.md). `Some(0)`
    /// leaves each node its runtime's default (one per core), as when each
    /// node has a machine of its own. An explicit `TOKIO_WORKER_THREADS` in
    /// the environment wins over both.
    pub worker_threads: Option<usize>,
    /// Give every node an HTTP port on its host (`--metrics-listen
    /// HOST:0`): Prometheus metrics, and the root's status page.
    pub metrics: bool,
    /// Flags given to every node (e.g. TLS and token files).
    pub node_args: Vec<String>,
    /// Membership in etcd (endpoints, tree name): every node registers
    /// there, and inner nodes find their children there instead of being
    /// given their addresses.
    pub membership: Option<(String, String)>,
}

impl StartOptions {
    /// The options with [`StartOptions::worker_threads`] worked out for a
    /// tree of `nodes` processes on this machine.
    fn for_tree(&self, nodes: usize) -> StartOptions {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        StartOptions {
            worker_threads: Some(
                self.worker_threads
                    .unwrap_or_else(|| (cores / nodes.max(1)).max(1)),
            ),
            ..self.clone()
        }
    }
}

/// A running tree of node processes. Dropping it kills them; call
/// [`Tree::shutdown`] to stop them cleanly.
pub struct Tree {
    nodes: Vec<Running>,
    root: SocketAddr,
    exits: mpsc::UnboundedReceiver<NodeExit>,
    exit_tx: mpsc::UnboundedSender<NodeExit>,
    bins: NodeBinaries,
    options: StartOptions,
    /// Restarts begun per node by [`Tree::supervise`].
    restarts: HashMap<String, u64>,
    /// The leaves' state when the plan named none: removed with the tree.
    _scratch_state: Option<tempfile::TempDir>,
    /// Where the nodes file is kept current, if anywhere.
    nodes_file: Option<std::path::PathBuf>,
}

impl Tree {
    /// The root's address: what clients call.
    pub fn root_addr(&self) -> SocketAddr {
        self.root
    }

    /// The root's HTTP address (its status page and metrics), when the
    /// tree was started with [`StartOptions::metrics`]: where a person
    /// points a browser.
    pub fn root_http(&self) -> Option<SocketAddr> {
        self.nodes.iter().find(|n| n.is_root()).and_then(|n| n.http)
    }

    /// Every node with its role, pid and addresses, in start order.
    pub fn nodes_file(&self) -> NodesFile {
        NodesFile {
            supervisor_pid: std::process::id(),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeEntry {
                    name: n.name.clone(),
                    role: n.node.role().to_string(),
                    pid: n.done.as_ref().and(n.pid),
                    grpc: n.addr,
                    http: n.http,
                })
                .collect(),
        }
    }

    /// Keeps the nodes file at `path` current from now on (written now, and
    /// whenever a node is restarted).
    pub fn keep_nodes_file(&mut self, path: std::path::PathBuf) -> anyhow::Result<()> {
        self.nodes_file = Some(path);
        self.try_write_nodes_file()
    }

    fn try_write_nodes_file(&self) -> anyhow::Result<()> {
        match &self.nodes_file {
            Some(path) => self.nodes_file().write(path),
            None => Ok(()),
        }
    }

    /// Rewrites the nodes file, if one is kept; a failure is logged (the
    /// tree serves on regardless).
    fn write_nodes_file(&self) {
        if let Err(e) = self.try_write_nodes_file() {
            tracing::warn!("{e:#}");
        }
    }

    /// Every node's name and address, in start order.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), n.addr))
            .collect()
    }

    /// The process id of the node called `name` while it runs, so that
    /// tests can kill it the way a crash would.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let node = self.nodes.iter().find(|n| n.name == name)?;
        node.done.as_ref().and(node.pid)
    }

    /// How many times [`Tree::supervise`] restarted each node, in start
    /// order: what an operator wants to know when the tree stops.
    pub fn restart_counts(&self) -> Vec<(String, u64)> {
        self.nodes
            .iter()
            .map(|n| {
                let count = self.restarts.get(&n.name).copied().unwrap_or(0);
                (n.name.clone(), count)
            })
            .collect()
    }

    /// Waits until some node exits on its own.
    pub async fn next_exit(&mut self) -> Option<NodeExit> {
        self.exits.recv().await
    }

    fn index_of(&self, name: &str) -> anyhow::Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .with_context(|| format!("no node named {name:?}"))
    }

    /// Stops one node (SIGTERM, then SIGKILL after a grace period) and waits
    /// until it has exited.
    pub async fn stop_node(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index_of(name)?;
        let node = &mut self.nodes[i];
        if let Some(stop) = node.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = node.done.take() {
            let _ = done.await;
        }
        Ok(())
    }

    /// Starts a stopped node again on the address it had, so its parent
    /// finds it where it was; waits until it is serving.
    pub async fn restart_node(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index_of(name)?;
        if self.nodes[i].done.is_some() {
            bail!("{name} is still running");
        }
        let node = self.restart_plan(i);
        let addrs = self.address_map();
        // On the HTTP port it had, too (scrapers know it).
        let started =
            process::spawn_ready(&node, &self.bins, &addrs, &self.options, self.nodes[i].http)
                .await?;
        self.nodes[i] = process::watch_started(started, node, self.exit_tx.clone());
        self.write_nodes_file();
        Ok(())
    }

    /// Restarts every running node one by one, leaves first and the root
    /// last, each serving again (and given time to return to its parent's
    /// rotation) before the next: a node without replicas is replaced
    /// first and drained after, on the same address (the nodes bind with
    /// SO_REUSEPORT, see [`StartOptions::node_args`]); a leaf (whose data
    /// directory one process holds at a time) is drained, then started.
    /// The nodes file follows each step.
    pub async fn rolling_restart(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            let name = self.nodes[i].name.clone();
            if self.nodes[i].done.is_none() {
                tracing::warn!(node = %name, "rolling restart: node is down, left to the supervisor");
                continue;
            }
            let old_pid = self.nodes[i].pid.unwrap_or_default();
            match self.nodes[i].node {
                PlannedNode::Leaf { .. } => {
                    self.stop_node(&name).await?;
                    self.restart_node(&name).await?;
                }
                PlannedNode::Inner { .. } => self.replace_node(i).await?,
            }
            tracing::info!(
                node = %name,
                old_pid,
                pid = self.nodes[i].pid.unwrap_or_default(),
                "rolling restart: node replaced"
            );
            // Parents check their children's health every 250 ms: let them
            // see it serving before the next node goes.
            tokio::time::sleep(REJOIN).await;
        }
        tracing::info!("rolling restart: done");
        Ok(())
    }

    /// Starts a new process of node `i` on its address beside the running
    /// one, then drains the old one.
    async fn replace_node(&mut self, i: usize) -> anyhow::Result<()> {
        let node = self.restart_plan(i);
        let http = self.nodes[i].http;
        let started =
            process::spawn_ready(&node, &self.bins, &self.address_map(), &self.options, http)
                .await?;
        let new = process::watch_started(started, node, self.exit_tx.clone());
        let mut old = std::mem::replace(&mut self.nodes[i], new);
        if let Some(stop) = old.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = old.done.take() {
            let _ = done.await;
        }
        self.write_nodes_file();
        Ok(())
    }

    /// Node `i` as planned, but listening where it listened before (the
    /// port it actually got if it was planned with port 0).
    fn restart_plan(&self, i: usize) -> PlannedNode {
        let mut node = self.nodes[i].node.clone();
        let addr = self.nodes[i].addr.to_string();
        match &mut node {
            PlannedNode::Leaf { listen, .. } | PlannedNode::Inner { listen, .. } => *listen = addr,
        }
        node
    }

    fn address_map(&self) -> HashMap<String, SocketAddr> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), n.addr))
            .collect()
    }
    /// Stops every node, the root first and leaves last.
    pub async fn shutdown(mut self) {
        let names: Vec<String> = self.nodes.iter().rev().map(|n| n.name.clone()).collect();
        for name in names {
            let _ = self.stop_node(&name).await;
        }
    }
}

/// Starts every node of `plan` and waits until all are serving.
pub async fn start(
    plan: &Plan,
    bins: &NodeBinaries,
    options: &StartOptions,
) -> anyhow::Result<Tree> {
    let (plan, scratch_state) = with_scratch_state(plan)?;
    let plan = &plan;
    let (exit_tx, exits) = mpsc::unbounded_channel();
    let mut tree = Tree {
        nodes: Vec::new(),
        root: SocketAddr::from(([127, 0, 0, 1], 0)),
        exits,
        exit_tx: exit_tx.clone(),
        bins: bins.clone(),
        options: options.for_tree(plan.nodes.len()),
        restarts: HashMap::new(),
        _scratch_state: scratch_state,
        nodes_file: None,
    };
    let options = &tree.options.clone();
    let mut addrs: HashMap<String, SocketAddr> = HashMap::new();

    // Leaves first, all at once; then inner nodes in plan order.
    let (leaves, inner): (Vec<_>, Vec<_>) = plan
        .nodes
        .iter()
        .partition(|n| matches!(n, PlannedNode::Leaf { .. }));
    let started = futures_start(
        leaves
            .iter()
            .map(|node| launch(node, bins, &addrs, options, exit_tx.clone())),
    )
    .await;
    let mut failure = None;
    for result in started {
        match result {
            Ok(running) => {
                addrs.insert(running.name.clone(), running.addr);
                tree.nodes.push(running);
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(e) = failure {
        tree.shutdown().await;
        return Err(e);
    }
    for node in inner {
        match launch(node, bins, &addrs, options, exit_tx.clone()).await {
            Ok(running) => {
                addrs.insert(running.name.clone(), running.addr);
                if matches!(node, PlannedNode::Inner { is_root: true, .. }) {
                    tree.root = running.addr;
                }
                tree.nodes.push(running);
            }
            Err(e) => {
                tree.shutdown().await;
                return Err(e);
            }
        }
    }
    Ok(tree)
}

/// The plan with a state directory for every leaf: a leaf without one
/// could not be loaded into. Those the plan names none get one in a
/// temporary directory that lives as long as the tree (`up` names a lasting
/// one; trees started for a test or a benchmark are thrown away with what
/// was loaded into them). Each restart of a leaf finds its own again.
fn with_scratch_state(plan: &Plan) -> anyhow::Result<(Plan, Option<tempfile::TempDir>)> {
    let stateless = plan
        .nodes
        .iter()
        .any(|n| matches!(n, PlannedNode::Leaf { data_dir: None, .. }));
    if !stateless {
        return Ok((plan.clone(), None));
    }
    let scratch = tempfile::Builder::new()
        .prefix("searchtree-state-")
        .tempdir()
        .context("creating a state directory for the leaves")?;
    let mut plan = plan.clone();
    for node in &mut plan.nodes {
        if let PlannedNode::Leaf { name, data_dir, .. } = node
            && data_dir.is_none()
        {
            *data_dir = Some(scratch.path().join(name.as_str()));
        }
    }
    Ok((plan, Some(scratch)))
}

async fn futures_start<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    futures::future::join_all(futures).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_without_a_state_directory_get_one_that_goes_with_the_tree() {
        use crate::tree::topology::Topology;
        let topology: Topology = toml::from_str(
            "[root]\nchildren = [\"a\", \"b\"]\n\
             [[leaf]]\nname = \"a\"\nshard = 0\nindex = \"x\"\n\
             [[leaf]]\nname = \"b\"\nshard = 1\nindex = \"y\"\n",
        )
        .unwrap();
        let mut plan = topology.plan().unwrap();
        let dirs = |plan: &Plan| -> Vec<Option<std::path::PathBuf>> {
            plan.nodes
                .iter()
                .filter_map(|n| match n {
                    PlannedNode::Leaf { data_dir, .. } => Some(data_dir.clone()),
                    PlannedNode::Inner { .. } => None,
                })
                .collect()
        };
        let (given, scratch) = with_scratch_state(&plan).unwrap();
        let scratch = scratch.expect("a scratch directory");
        assert_eq!(
            dirs(&given),
            [
                Some(scratch.path().join("a")),
                Some(scratch.path().join("b"))
            ]
        );
        let path = scratch.path().to_path_buf();
        drop(scratch);
        assert!(!path.exists(), "removed with the tree");

        plan.set_state_dir(std::path::Path::new("/srv/state"));
        let (kept, none) = with_scratch_state(&plan).unwrap();
        assert!(none.is_none());
        assert_eq!(dirs(&kept), dirs(&plan));
    }

    #[test]
    fn nodes_share_the_machines_cores_unless_told_otherwise() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let shared = StartOptions::default();
        assert_eq!(shared.for_tree(1).worker_threads, Some(cores));
        assert_eq!(shared.for_tree(10_000).worker_threads, Some(1));
        assert_eq!(shared.for_tree(2).worker_threads, Some((cores / 2).max(1)));
        for explicit in [0, 3] {
            let options = StartOptions {
                worker_threads: Some(explicit),
                ..StartOptions::default()
            };
            assert_eq!(options.for_tree(7).worker_threads, Some(explicit));
        }
    }
}
