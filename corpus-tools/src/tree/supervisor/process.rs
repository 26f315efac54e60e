//! One node process: starting it, knowing when it is ready (it printed
//! `LISTENING HOST:PORT` and passes the standard gRPC health check),
//! forwarding its logs, reporting its exit, and stopping it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use searchtree_node::ops::http::HTTP_PREFIX;
use searchtree_node::serving::LISTENING_PREFIX;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::StartOptions;
use super::stderr_tail::StderrTail;
use crate::tree::binaries::NodeBinaries;
use crate::tree::topology::PlannedNode;

/// How long a node may take to print its address and pass a health check.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM before it is killed:
/// longer than its drain (notice plus the requests in flight, 11 s by
/// default), so a draining node is never cut short.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Lines of a node's stderr kept to explain a failed start (backtrace
/// frames are counted, not kept).
const STDERR_TAIL: usize = 30;

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

/// A node process being watched, as the tree keeps it.
pub(super) struct Running {
    pub(super) name: String,
    pub(super) addr: SocketAddr,
    /// Its HTTP port (metrics), when it was given one.
    pub(super) http: Option<SocketAddr>,
    pub(super) pid: Option<u32>,
    pub(super) node: PlannedNode,
    pub(super) stop: Option<oneshot::Sender<()>>,
    pub(super) done: Option<oneshot::Receiver<()>>,
}

impl Running {
    pub(super) fn is_root(&self) -> bool {
        matches!(self.node, PlannedNode::Inner { is_root: true, .. })
    }
}

/// A node process that printed its address and passes health checks, not
/// yet watched.
pub(super) struct Started {
    pub(super) name: String,
    pub(super) addr: SocketAddr,
    pub(super) http: Option<SocketAddr>,
    pub(super) child: Child,
}

/// Starts one node, waits until it is serving, and watches it.
pub(super) async fn launch(
    node: &PlannedNode,
    bins: &NodeBinaries,
    addrs: &HashMap<String, SocketAddr>,
    options: &StartOptions,
    exits: mpsc::UnboundedSender<NodeExit>,
) -> anyhow::Result<Running> {
    let started = spawn_ready(node, bins, addrs, options, None).await?;
    Ok(watch_started(started, node.clone(), exits))
}

/// Hands a started node to a task that reports its exit.
pub(super) fn watch_started(
    started: Started,
    node: PlannedNode,
    exits: mpsc::UnboundedSender<NodeExit>,
) -> Running {
    let Started {
        name,
        addr,
        http,
        child,
    } = started;
    let pid = child.id();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(watch(name.clone(), child, stop_rx, done_tx, exits));
    Running {
        name,
        addr,
        http,
        pid,
        node,
        stop: Some(stop_tx),
        done: Some(done_rx),
    }
}

/// Starts one node and waits until it is serving; a node that does not get
/// there is killed and its last words returned in the error. With
/// [`StartOptions::metrics`], the node serves HTTP on `http` (a restarted
/// node keeps the port it had), else on a free port of its host.
pub(super) async fn spawn_ready(
    node: &PlannedNode,
    bins: &NodeBinaries,
    addrs: &HashMap<String, SocketAddr>,
    options: &StartOptions,
    http: Option<SocketAddr>,
) -> anyhow::Result<Started> {
    let program = match node {
        PlannedNode::Leaf { .. } => &bins.leaf,
        PlannedNode::Inner { is_root: true, .. } => &bins.root,
        PlannedNode::Inner { .. } => &bins.parent,
    };
    let mut cmd = Command::new(program);
    match &options.membership {
        // Children are found in etcd: named by their shards alone.
        Some((etcd, tree)) => {
            cmd.args(node.args(|_| None));
            cmd.arg("--etcd").arg(etcd).arg("--tree").arg(tree);
        }
        None => {
            cmd.args(node.args(|name| Some(addrs[name].to_string())));
        }
    }
    cmd.args(&options.node_args);
    if options.metrics {
        let listen = match http {
            Some(addr) => addr.to_string(),
            None => format!("{}:0", host_of(node.listen())),
        };
        cmd.arg("--metrics-listen").arg(listen);
    }
    let name = node.name().to_string();
    if std::env::var_os("RUST_LOG").is_none()
        && let Some(level) = &options.default_log
    {
        cmd.env("RUST_LOG", level);
    }
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none()
        && let Some(threads) = options.worker_threads.filter(|&n| n > 0)
    {
        cmd.env("TOKIO_WORKER_THREADS", threads.to_string());
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group: a Ctrl-C at the terminal (SIGINT to the
    // foreground group) reaches the supervisor alone, which stops the tree
    // root first, each node draining; were the nodes in the group too, each
    // would take the signal and then the supervisor's SIGTERM as a second
    // one, and exit without draining.
    #[cfg(unix)]
    cmd.process_group(0);
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

    let tail = Arc::new(Mutex::new(StderrTail::new(STDERR_TAIL)));
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
        let mut http = None;
        let addr = loop {
            match lines.next_line().await? {
                Some(line) => {
                    if let Some(addr) = line.strip_prefix(HTTP_PREFIX) {
                        http = Some(addr.trim().parse::<SocketAddr>().with_context(|| {
                            format!("{name} announced an unreadable HTTP address {addr:?}")
                        })?);
                    }
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
        anyhow::Ok((addr, http))
    };
    let (addr, http) = match timeout(READY_TIMEOUT, ready).await {
        Ok(Ok(found)) => found,
        outcome => {
            let _ = child.start_kill();
            let status = child.wait().await.ok();
            // Give the log forwarder a moment to drain the last lines.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!("{name} was not serving within {READY_TIMEOUT:?}"),
            };
            let log = tail.lock().expect("tail lock").lines();
            bail!(
                "{why}{}\n{name} said:\n  {}",
                status.map(|s| format!(" ({s})")).unwrap_or_default(),
                log.join("\n  ")
            );
        }
    };
    tracing::debug!(%name, %addr, "node ready");
    Ok(Started {
        name,
        addr,
        http,
        child,
    })
}

/// The host part of a listen address `HOST:PORT` (`[::1]:0` gives `[::1]`).
fn host_of(listen: &str) -> &str {
    listen.rsplit_once(':').map_or(listen, |(host, _)| host)
}

/// One standard gRPC health check of the node at `addr` (`HOST:PORT`):
/// the status it reports, connecting within `connect` and answered within
/// `timeout`. Shared by start-up, `searchtree members`, and tests.
pub async fn health_status(
    addr: &str,
    connect: Duration,
    timeout: Duration,
) -> anyhow::Result<ServingStatus> {
    let endpoint = searchtree_node::ops::client::endpoint(addr)?
        .connect_timeout(connect)
        .timeout(timeout);
    let channel = endpoint.connect().await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(response.get_ref().status())
}

/// One standard gRPC health check of the node at `addr`: `Ok` if it reports
/// SERVING. Shared by start-up and by tests that watch a node come back.
pub async fn health_check(addr: SocketAddr) -> anyhow::Result<()> {
    let connect = Duration::from_secs(2);
    match health_status(&addr.to_string(), connect, Duration::from_secs(5)).await? {
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
pub(super) fn describe_status(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

async fn forward_stderr(
    name: String,
    stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<StderrTail>>,
    forward: bool,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if forward {
            eprintln!("[{name}] {line}");
        }
        tail.lock().expect("tail lock").push(line);
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
