//! [`Tree::supervise`]: the loop that keeps a started tree alive.

use std::future::Future;

use anyhow::{Context, bail};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use super::Tree;
use super::process::{Started, describe_status, spawn_ready, watch_started};
use super::restart::{Restart, RestartPolicy, RestartState};

impl Tree {
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

        // SIGHUP asks for a rolling restart (`searchtree restart --rolling`).
        #[cfg(unix)]
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("listening for SIGHUP")?;
        #[cfg(unix)]
        let hangup = async || hangups.recv().await;
        #[cfg(not(unix))]
        let hangup = async || std::future::pending::<Option<()>>().await;
        let mut hangup = hangup;

        loop {
            let next_due = due.iter().flatten().min().copied();
            tokio::select! {
                _ = &mut stop => return Ok(()),
                Some(()) = hangup() => {
                    tracing::info!("rolling restart requested");
                    if let Err(e) = self.rolling_restart().await {
                        tracing::error!("rolling restart stopped: {e:#}");
                    }
                    for state in states.iter_mut() {
                        state.started(Instant::now());
                    }
                }
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
                    let clean = matches!(&exit.status, Ok(s) if s.success());
                    let name = &self.nodes[i].name;
                    match states[i].exited(Instant::now()) {
                        Restart::After { attempt, delay } => {
                            if clean {
                                // Drained and stopped on a signal sent to
                                // it alone (a replacement): not a failure.
                                tracing::warn!(
                                    node = %name,
                                    %status,
                                    attempt,
                                    restart_in = ?delay,
                                    "node stopped cleanly; restarting it on {}",
                                    self.nodes[i].addr
                                );
                            } else {
                                tracing::error!(
                                    node = %name,
                                    %status,
                                    attempt,
                                    restart_in = ?delay,
                                    "node exited; restarting it on {}",
                                    self.nodes[i].addr
                                );
                            }
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
                            self.write_nodes_file();
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
                        let http = self.nodes[i].http;
                        let (bins, addrs, options) =
                            (self.bins.clone(), self.address_map(), self.options.clone());
                        let attempt = attempts[i];
                        tracing::info!(node = %self.nodes[i].name, attempt, "restarting node");
                        starting.spawn(async move {
                            (i, attempt, spawn_ready(&node, &bins, &addrs, &options, http).await)
                        });
                    }
                }
            }
        }
    }
}
