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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use searchtree_proto::serving::LISTENING_PREFIX;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};
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

/// When a node that died is started again, and when to give up on the root.
///
/// A node is restarted after a backoff that starts at `initial_backoff` and
/// doubles per attempt up to `max_backoff`; once a node has stayed up for
/// `stable_after`, its next death starts the backoff over. Nodes below the
/// root are retried for as long as it takes (a dead leaf is partial
/// coverage, not an outage). The root is what clients call, so it is given
/// up on when it fails to start `max_root_start_failures` times in a row or
/// would be restarted more than `max_root_restarts` times within
/// `root_window`: better to fail loudly than to serve nothing at an address
/// that was announced as ready.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    /// Restart dead nodes at all. Off, a dead node stays down and a dead
    /// root ends supervision.
    pub restart: bool,
    /// Delay before the first restart after a death.
    pub initial_backoff: Duration,
    /// The most the delay grows to.
    pub max_backoff: Duration,
    /// How long a node must have stayed up for its backoff to start over.
    pub stable_after: Duration,
    /// Failed starts of the root in a row after which it is given up on.
    pub max_root_start_failures: u32,
    /// Restarts of the root allowed within `root_window`.
    pub max_root_restarts: u32,
    /// The window `max_root_restarts` is counted over.
    pub root_window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            restart: true,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            stable_after: Duration::from_secs(30),
            max_root_start_failures: 5,
            max_root_restarts: 10,
            root_window: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// The delay before restart `attempt` (1 for the first since the node
    /// was last stable): `initial_backoff` doubled per attempt, capped at
    /// `max_backoff`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// What to do about a node that died or failed to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// Start it again after `delay`; this is restart `attempt` since the
    /// node was last stable.
    After {
        /// 1 for the first restart since the node was last stable.
        attempt: u32,
        /// How long to wait before starting it.
        delay: Duration,
    },
    /// Leave it down (restarts are off); the rest of the tree serves
    /// without it.
    LeaveDown,
    /// The root cannot be kept alive; the reason, for the operator.
    GiveUp(String),
}

/// One node's restart history judged by a [`RestartPolicy`]. It reads no
/// clock (time comes in as arguments), so the policy is tested without
/// waiting.
#[derive(Debug, Clone)]
pub struct RestartState {
    policy: RestartPolicy,
    is_root: bool,
    /// Restarts since the node was last stable.
    attempt: u32,
    /// Failed starts in a row.
    failed_starts: u32,
    /// When it last became ready, if it is up.
    up_since: Option<Instant>,
    /// When the root's recent restarts were decided, oldest first.
    recent: VecDeque<Instant>,
}

impl RestartState {
    /// The history of a node that has not started yet; `is_root` selects
    /// the root's crash-loop limits.
    pub fn new(policy: RestartPolicy, is_root: bool) -> Self {
        RestartState {
            policy,
            is_root,
            attempt: 0,
            failed_starts: 0,
            up_since: None,
            recent: VecDeque::new(),
        }
    }

    /// The node became ready at `now`.
    pub fn started(&mut self, now: Instant) {
        self.up_since = Some(now);
        self.failed_starts = 0;
    }

    /// The node exited on its own at `now`.
    pub fn exited(&mut self, now: Instant) -> Restart {
        if let Some(since) = self.up_since.take()
            && now.saturating_duration_since(since) >= self.policy.stable_after
        {
            self.attempt = 0;
        }
        self.next(now)
    }

    /// A restart of the node failed at `now`: it exited or hung before it
    /// was serving (e.g. its address was taken).
    pub fn start_failed(&mut self, now: Instant) -> Restart {
        self.up_since = None;
        self.failed_starts += 1;
        if self.is_root && self.failed_starts >= self.policy.max_root_start_failures {
            return Restart::GiveUp(format!(
                "it failed to start {} times in a row",
                self.failed_starts
            ));
        }
        self.next(now)
    }

    fn next(&mut self, now: Instant) -> Restart {
        if !self.policy.restart {
            return if self.is_root {
                Restart::GiveUp("restarts are off".into())
            } else {
                Restart::LeaveDown
            };
        }
        if self.is_root {
            while let Some(&at) = self.recent.front()
                && now.saturating_duration_since(at) >= self.policy.root_window
            {
                self.recent.pop_front();
            }
            if self.recent.len() >= self.policy.max_root_restarts as usize {
                return Restart::GiveUp(format!(
                    "it was already restarted {} times within {:?}",
                    self.recent.len(),
                    self.policy.root_window
                ));
            }
            self.recent.push_back(now);
        }
        self.attempt += 1;
        Restart::After {
            attempt: self.attempt,
            delay: self.policy.backoff(self.attempt),
        }
    }
}

/// A node process that exited on its own.
#[derive(Debug)]
pub struct NodeExit {
    /// The node's name.
    pub name: String,
    /// How it exited.
    pub status: std::io::Result<ExitStatus>,
    /// Its process id, telling this process from a later one of the same
    /// node.
    pub pid: Option<u32>,
}

struct Running {
    name: String,
    addr: SocketAddr,
    pid: Option<u32>,
    node: PlannedNode,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl Running {
    fn is_root(&self) -> bool {
        matches!(self.node, PlannedNode::Inner { is_root: true, .. })
    }
}

/// A node process that printed its address and passes health checks, not
/// yet watched.
struct Started {
    name: String,
    addr: SocketAddr,
    child: Child,
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

    /// Keeps the tree alive until `stop` resolves: a node that exits on its
    /// own is started again on its address after the backoff `policy`
    /// chooses, every restart logged and counted ([`Tree::restart_counts`]).
    /// Returns an error, leaving the tree to be shut down, when the root
    /// cannot be kept alive: then clients would find nothing at the address
    /// they were given.
    pub async fn supervise(
        &mut self,
        policy: &RestartPolicy,
        stop: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(stop);
        let now = Instant::now();
        let mut states: Vec<RestartState> = self
            .nodes
            .iter()
            .map(|n| {
                let mut state = RestartState::new(*policy, n.is_root());
                state.started(now);
                state
            })
            .collect();
        // When each node that is down is due to be started again.
        let mut due: Vec<Option<Instant>> = vec![None; self.nodes.len()];
        // Restarts under way, each waiting for its node to serve.
        let mut starting: JoinSet<(usize, u32, anyhow::Result<Started>)> = JoinSet::new();
        // The attempt each node is on, for the logs.
        let mut attempts: Vec<u32> = vec![0; self.nodes.len()];

        loop {
            let next_due = due.iter().flatten().min().copied();
            tokio::select! {
                _ = &mut stop => return Ok(()),
                Some(exit) = self.exits.recv() => {
                    let Some(i) = self.nodes.iter().position(|n| {
                        n.name == exit.name && n.pid == exit.pid && n.done.is_some()
                    }) else {
                        tracing::debug!(node = %exit.name, "exit of a process no longer tracked");
                        continue;
                    };
                    // Its watcher is gone; the node is down.
                    self.nodes[i].stop = None;
                    self.nodes[i].done = None;
                    let status = describe_status(&exit.status);
                    let name = &self.nodes[i].name;
                    match states[i].exited(Instant::now()) {
                        Restart::After { attempt, delay } => {
                            tracing::error!(
                                node = %name,
                                %status,
                                attempt,
                                restart_in = ?delay,
                                "node exited; restarting it on {}",
                                self.nodes[i].addr
                            );
                            attempts[i] = attempt;
                            due[i] = Some(Instant::now() + delay);
                        }
                        Restart::LeaveDown => {
                            tracing::error!(
                                node = %name,
                                %status,
                                "node exited; restarts are off, the tree serves without it"
                            );
                        }
                        Restart::GiveUp(why) => bail!(
                            "the root at {} cannot be kept alive: it exited ({status}) and {why}",
                            self.nodes[i].addr
                        ),
                    }
                }
                Some(joined) = starting.join_next() => {
                    let (i, attempt, result) = joined.context("a restart task failed")?;
                    let name = self.nodes[i].name.clone();
                    match result {
                        Ok(started) => {
                            states[i].started(Instant::now());
                            let pid = started.child.id();
                            tracing::info!(
                                node = %name,
                                addr = %started.addr,
                                pid = pid.unwrap_or_default(),
                                attempt,
                                "node restarted"
                            );
                            let node = self.nodes[i].node.clone();
                            self.nodes[i] = watch_started(started, node, self.exit_tx.clone());
                        }
                        Err(e) => match states[i].start_failed(Instant::now()) {
                            Restart::After { attempt, delay } => {
                                let reason = e.to_string();
                                let reason = reason.lines().next().unwrap_or_default();
                                tracing::error!(
                                    node = %name,
                                    attempt,
                                    retry_in = ?delay,
                                    "node failed to restart, still down: {reason}"
                                );
                                attempts[i] = attempt;
                                due[i] = Some(Instant::now() + delay);
                            }
                            Restart::LeaveDown => {
                                tracing::error!(node = %name, "node failed to restart: {e:#}");
                            }
                            Restart::GiveUp(why) => {
                                return Err(e.context(format!(
                                    "the root at {} cannot be kept alive: {why}",
                                    self.nodes[i].addr
                                )));
                            }
                        },
                    }
                }
                _ = sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                    let now = Instant::now();
                    for i in 0..self.nodes.len() {
                        if due[i].is_none_or(|at| at > now) {
                            continue;
                        }
                        due[i] = None;
                        *self.restarts.entry(self.nodes[i].name.clone()).or_default() += 1;
                        let node = self.restart_plan(i);
                        let (bins, addrs, options) =
                            (self.bins.clone(), self.address_map(), self.options.clone());
                        let attempt = attempts[i];
                        tracing::info!(node = %self.nodes[i].name, attempt, "restarting node");
                        starting.spawn(async move {
                            (i, attempt, spawn_ready(&node, &bins, &addrs, &options).await)
                        });
                    }
                }
            }
        }
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
        restarts: HashMap::new(),
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

/// Starts one node, waits until it is serving, and watches it.
async fn launch(
    node: &PlannedNode,
    bins: &NodeBinaries,
    addrs: &HashMap<String, SocketAddr>,
    options: &StartOptions,
    exits: mpsc::UnboundedSender<NodeExit>,
) -> anyhow::Result<Running> {
    let started = spawn_ready(node, bins, addrs, options).await?;
    Ok(watch_started(started, node.clone(), exits))
}

/// Hands a started node to a task that reports its exit.
fn watch_started(
    started: Started,
    node: PlannedNode,
    exits: mpsc::UnboundedSender<NodeExit>,
) -> Running {
    let Started { name, addr, child } = started;
    let pid = child.id();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(watch(name.clone(), child, stop_rx, done_tx, exits));
    Running {
        name,
        addr,
        pid,
        node,
        stop: Some(stop_tx),
        done: Some(done_rx),
    }
}

/// Starts one node and waits until it is serving; a node that does not get
/// there is killed and its last words returned in the error.
async fn spawn_ready(
    node: &PlannedNode,
    bins: &NodeBinaries,
    addrs: &HashMap<String, SocketAddr>,
    options: &StartOptions,
) -> anyhow::Result<Started> {
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
    Ok(Started { name, addr, child })
}

/// One standard gRPC health check of the node at `addr`: `Ok` if it reports
/// SERVING. Shared by start-up and by tests that watch a node come back.
pub async fn health_check(addr: SocketAddr) -> anyhow::Result<()> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    match response.get_ref().status() {
        ServingStatus::Serving => Ok(()),
        status => bail!("health status {status:?}"),
    }
}

/// Polls the node's health service until it reports SERVING.
async fn wait_serving(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last_err = String::new();
    while Instant::now() < deadline {
        match health_check(addr).await {
            Ok(()) => return Ok(()),
            Err(e) => last_err = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{addr} never reported SERVING: {last_err}")
}

/// An exit status for the logs: `exit status: 1`, `signal: 9 (SIGKILL)`.
fn describe_status(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("unknown ({e})"),
    }
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
    let pid = child.id();
    tokio::select! {
        status = child.wait() => {
            tracing::debug!(%name, ?status, "node exited");
            let _ = exits.send(NodeExit { name, status, pid });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn delay(decision: Restart) -> Duration {
        match decision {
            Restart::After { delay, .. } => delay,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_from_100ms_up_to_5s() {
        let policy = RestartPolicy::default();
        let delays: Vec<u64> = (1..=9)
            .map(|a| policy.backoff(a).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(policy.backoff(u32::MAX), ms(5000));
    }

    #[test]
    fn a_crashing_leaf_is_retried_forever_at_the_cap() {
        let t0 = Instant::now();
        let mut leaf = RestartState::new(RestartPolicy::default(), false);
        leaf.started(t0);
        let mut now = t0 + ms(10);
        let mut last = Duration::ZERO;
        for attempt in 1..=100 {
            let decision = leaf.exited(now);
            assert_eq!(
                decision,
                Restart::After {
                    attempt,
                    delay: RestartPolicy::default().backoff(attempt)
                }
            );
            last = delay(decision);
            now += last;
            // Up again, but only briefly.
            leaf.started(now);
            now += ms(10);
        }
        assert_eq!(last, ms(5000));
        // Failing to start is retried forever too.
        for _ in 0..100 {
            assert_eq!(delay(leaf.start_failed(now)), ms(5000));
        }
    }

    #[test]
    fn staying_up_long_enough_resets_the_backoff() {
        let t0 = Instant::now();
        let mut leaf = RestartState::new(RestartPolicy::default(), false);
        leaf.started(t0);
        assert_eq!(delay(leaf.exited(t0 + ms(1))), ms(100));
        leaf.started(t0 + ms(200));
        assert_eq!(delay(leaf.exited(t0 + ms(300))), ms(200));
        leaf.started(t0 + ms(600));
        // 29.9 s up is not long enough...
        assert_eq!(delay(leaf.exited(t0 + ms(30_500))), ms(400));
        leaf.started(t0 + ms(31_000));
        // ... 30 s is.
        assert_eq!(
            leaf.exited(t0 + ms(61_000)),
            Restart::After {
                attempt: 1,
                delay: ms(100)
            }
        );
    }

    #[test]
    fn a_root_that_fails_to_start_five_times_in_a_row_is_given_up_on() {
        let t0 = Instant::now();
        let mut root = RestartState::new(RestartPolicy::default(), true);
        root.started(t0);
        let mut now = t0 + ms(1);
        now += delay(root.exited(now));
        for _ in 1..5 {
            now += delay(root.start_failed(now));
        }
        match root.start_failed(now) {
            Restart::GiveUp(why) => assert_eq!(why, "it failed to start 5 times in a row"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_good_start_forgives_earlier_failed_starts() {
        let t0 = Instant::now();
        let mut root = RestartState::new(RestartPolicy::default(), true);
        root.started(t0);
        let mut now = t0 + ms(1);
        now += delay(root.exited(now));
        for _ in 0..3 {
            now += delay(root.start_failed(now));
        }
        root.started(now);
        now += ms(1);
        now += delay(root.exited(now));
        for _ in 0..4 {
            now += delay(root.start_failed(now));
        }
        assert!(matches!(root.start_failed(now), Restart::GiveUp(_)));
    }

    #[test]
    fn a_root_restarted_too_often_within_the_window_is_given_up_on() {
        let policy = RestartPolicy {
            max_root_restarts: 3,
            root_window: Duration::from_secs(60),
            ..RestartPolicy::default()
        };
        let t0 = Instant::now();
        let mut root = RestartState::new(policy, true);
        // Each time it stays up 20 s: long enough not to grow the backoff
        // past 400 ms, but three restarts fall within a minute.
        let mut now = t0;
        for _ in 0..3 {
            root.started(now);
            now += Duration::from_secs(20);
            now += delay(root.exited(now));
        }
        root.started(now);
        now += Duration::from_secs(5);
        match root.exited(now) {
            Restart::GiveUp(why) => {
                assert_eq!(why, "it was already restarted 3 times within 60s")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn root_restarts_spread_wider_than_the_window_are_fine() {
        let policy = RestartPolicy {
            max_root_restarts: 3,
            ..RestartPolicy::default()
        };
        let t0 = Instant::now();
        let mut root = RestartState::new(policy, true);
        let mut now = t0;
        for _ in 0..20 {
            root.started(now);
            now += Duration::from_secs(25);
            now += delay(root.exited(now));
        }
    }

    #[test]
    fn with_restarts_off_a_leaf_stays_down_and_the_root_gives_up() {
        let policy = RestartPolicy {
            restart: false,
            ..RestartPolicy::default()
        };
        let t0 = Instant::now();
        let mut leaf = RestartState::new(policy, false);
        leaf.started(t0);
        assert_eq!(leaf.exited(t0 + ms(1)), Restart::LeaveDown);
        let mut root = RestartState::new(policy, true);
        root.started(t0);
        assert_eq!(
            root.exited(t0 + ms(1)),
            Restart::GiveUp("restarts are off".into())
        );
    }

    #[test]
    fn no_root_restarts_allowed_means_the_first_death_ends_it() {
        let policy = RestartPolicy {
            max_root_restarts: 0,
            ..RestartPolicy::default()
        };
        let t0 = Instant::now();
        let mut root = RestartState::new(policy, true);
        root.started(t0);
        assert!(matches!(root.exited(t0), Restart::GiveUp(_)));
        // Leaves are not held to the root's limits.
        let mut leaf = RestartState::new(policy, false);
        leaf.started(t0);
        assert_eq!(delay(leaf.exited(t0)), ms(100));
    }
}
