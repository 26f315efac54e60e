//! Starting a tree of node processes and stopping it again.
//!
//! Nodes start children-first: leaves (all at once), then each parent once
//! its children are up, the root last. A node is up when it has printed
//! `LISTENING HOST:PORT` and answers the standard gRPC health check; its
//! actual address is then handed to its parent. Node logs are forwarded to
//! our stderr, prefixed with the node's name.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use searchtree_proto::serving::LISTENING_PREFIX;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::binaries::NodeBinaries;
use crate::topology::{Plan, PlannedNode};

/// How long a node may take to print its address and pass a health check.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of a node's stderr kept to explain a failed start.
const STDERR_TAIL: usize = 30;

/// How to start the nodes.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// `RUST_LOG` for the nodes when the environment does not set one.
    pub default_log: Option<String>,
    /// Forward node logs to our stderr (otherwise they are only kept to
    /// explain failures).
    pub forward_logs: bool,
}

/// A node process that exited on its own.
#[derive(Debug)]
pub struct NodeExit {
    /// The node's name.
    pub name: String,
    /// How it exited.
    pub status: std::io::Result<ExitStatus>,
}

struct Running {
    name: String,
    addr: SocketAddr,
    node: PlannedNode,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
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
}

impl Tree {
    /// The root's address: what clients call.
    pub fn root_addr(&self) -> SocketAddr {
        self.root
    }

    /// Every node's name and address, in start order.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), n.addr))
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
        let mut node = self.nodes[i].node.clone();
        let addr = self.nodes[i].addr.to_string();
        match &mut node {
            PlannedNode::Leaf { listen, .. } | PlannedNode::Inner { listen, .. } => *listen = addr,
        }
        let addrs: HashMap<String, SocketAddr> = self
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.addr))
            .collect();
        let running = launch(
            &node,
            &self.bins,
            &addrs,
            &self.options,
            self.exit_tx.clone(),
        )
        .await?;
        self.nodes[i] = running;
        Ok(())
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
    let (exit_tx, exits) = mpsc::unbounded_channel();
    let mut tree = Tree {
        nodes: Vec::new(),
        root: SocketAddr::from(([127, 0, 0, 1], 0)),
        exits,
        exit_tx: exit_tx.clone(),
        bins: bins.clone(),
        options: options.clone(),
    };
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

async fn futures_start<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    futures::future::join_all(futures).await
}

/// Starts one node and waits until it is serving.
async fn launch(
    node: &PlannedNode,
    bins: &NodeBinaries,
    addrs: &HashMap<String, SocketAddr>,
    options: &StartOptions,
    exits: mpsc::UnboundedSender<NodeExit>,
) -> anyhow::Result<Running> {
    let mut cmd = match node {
        PlannedNode::Leaf {
            listen,
            index,
            inject,
            ..
        } => {
            let mut cmd = Command::new(&bins.leaf);
            cmd.arg("--index")
                .arg(index)
                .arg("--listen")
                .arg(listen)
                .args(inject);
            cmd
        }
        PlannedNode::Inner {
            listen,
            children,
            is_root,
            routing,
            ..
        } => {
            let mut cmd = Command::new(if *is_root { &bins.root } else { &bins.parent });
            cmd.arg("--listen").arg(listen).args(routing);
            for (replicas, shards) in children {
                let shards: Vec<String> = shards.iter().map(u32::to_string).collect();
                let replicas: Vec<String> = replicas.iter().map(|r| addrs[r].to_string()).collect();
                cmd.arg("--child")
                    .arg(format!("{}@{}", shards.join(","), replicas.join(",")));
            }
            cmd
        }
    };
    let name = node.name().to_string();
    if std::env::var_os("RUST_LOG").is_none()
        && let Some(level) = &options.default_log
    {
        cmd.env("RUST_LOG", level);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to send the
    // node SIGTERM if this supervisor dies, so no node outlives it.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{name}: starting {cmd:?}"))?;

    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let stderr = child.stderr.take().expect("piped");
    tokio::spawn(forward_stderr(
        name.clone(),
        stderr,
        Arc::clone(&tail),
        options.forward_logs,
    ));
    let stdout = child.stdout.take().expect("piped");

    let ready = async {
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next_line().await? {
                Some(line) => {
                    if let Some(addr) = line.strip_prefix(LISTENING_PREFIX) {
                        break addr.trim().parse::<SocketAddr>().with_context(|| {
                            format!("{name} announced an unreadable address {addr:?}")
                        })?;
                    }
                }
                None => bail!("{name} exited before it was listening"),
            }
        };
        wait_serving(addr).await?;
        anyhow::Ok(addr)
    };
    let addr = match timeout(READY_TIMEOUT, ready).await {
        Ok(Ok(addr)) => addr,
        outcome => {
            let _ = child.start_kill();
            let status = child.wait().await.ok();
            // Give the log forwarder a moment to drain the last lines.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("{name} was not serving within {READY_TIMEOUT:?}"),
            };
            let log: Vec<String> = tail.lock().expect("tail lock").iter().cloned().collect();
            bail!(
                "{why}{}\n{name} said:\n  {}",
                status.map(|s| format!(" ({s})")).unwrap_or_default(),
                log.join("\n  ")
            );
        }
    };
    tracing::debug!(%name, %addr, "node ready");

    let (stop_tx, stop_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(watch(name.clone(), child, stop_rx, done_tx, exits));
    Ok(Running {
        name,
        addr,
        node: node.clone(),
        stop: Some(stop_tx),
        done: Some(done_rx),
    })
}

/// Polls the node's health service until it reports SERVING.
async fn wait_serving(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last_err = String::new();
    while Instant::now() < deadline {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
        match endpoint.connect().await {
            Ok(channel) => match HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                Ok(r) if r.get_ref().status() == ServingStatus::Serving => return Ok(()),
                Ok(r) => last_err = format!("health status {:?}", r.get_ref().status()),
                Err(e) => last_err = e.to_string(),
            },
            Err(e) => last_err = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{addr} never reported SERVING: {last_err}")
}

async fn forward_stderr(
    name: String,
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<VecDeque<String>>>,
    forward: bool,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if forward {
            eprintln!("[{name}] {line}");
        }
        let mut tail = tail.lock().expect("tail lock");
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// Owns a node process: reports if it exits on its own, stops it on request.
async fn watch(
    name: String,
    mut child: Child,
    stop: oneshot::Receiver<()>,
    done: oneshot::Sender<()>,
    exits: mpsc::UnboundedSender<NodeExit>,
) {
    tokio::select! {
        status = child.wait() => {
            tracing::warn!(%name, ?status, "node exited");
            let _ = exits.send(NodeExit { name, status });
        }
        _ = stop => {
            terminate(&mut child).await;
        }
    }
    let _ = done.send(());
}

/// SIGTERM, then SIGKILL if the node has not exited after a grace period.
async fn terminate(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        // SAFETY: sending a signal to a process we own has no memory effects.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        if timeout(STOP_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}
