//! `searchtree restart --rolling`: restart every node of a running tree one
//! by one, with no failed query.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::time::Instant;

use crate::tree::supervisor::NodesFile;

/// Restart every node of a tree kept by `searchtree up`, one at a time:
/// leaves first, the root last, each serving again before the next goes
/// (a node drains before it exits; the root and parents are replaced on
/// their address before they drain). Asks `up` (SIGHUP to the pid in the
/// nodes file) and follows the nodes file until every node has a new
/// process.
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Restart the nodes one by one (the only way there is: say it).
    #[arg(long, required = true)]
    pub rolling: bool,
    /// The nodes file `searchtree up --nodes-file` keeps.
    #[arg(long)]
    pub nodes_file: PathBuf,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

/// Runs `restart`.
pub async fn run(args: &RestartArgs) -> anyhow::Result<()> {
    let before = NodesFile::read(&args.nodes_file)?;
    let old: BTreeMap<String, Option<u32>> = before
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.pid))
        .collect();
    check_supervisor(before.supervisor_pid, &args.nodes_file)?;
    signal_hangup(before.supervisor_pid)?;
    eprintln!(
        "asked searchtree up (pid {}) to restart {} nodes one by one",
        before.supervisor_pid,
        old.len()
    );
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut reported = BTreeMap::new();
    loop {
        // The file is replaced atomically; a read that fails mid-rename is
        // tried again.
        if let Ok(now) = NodesFile::read(&args.nodes_file) {
            for node in &now.nodes {
                let was = old.get(&node.name).copied().flatten();
                if node.pid.is_some() && node.pid != was && !reported.contains_key(&node.name) {
                    eprintln!(
                        "  {:<12} restarted: pid {} -> {}",
                        node.name,
                        was.map_or("-".into(), |p| p.to_string()),
                        node.pid.unwrap_or_default()
                    );
                    reported.insert(node.name.clone(), node.pid);
                }
            }
            if reported.len() == old.len() {
                println!("rolling restart done: {} nodes restarted", old.len());
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            let missing: Vec<&String> = old.keys().filter(|n| !reported.contains_key(*n)).collect();
            bail!(
                "not every node was restarted within {} s: still the old process for {missing:?} (see searchtree up's log)",
                args.timeout_secs
            );
        }
        if !alive(before.supervisor_pid) {
            bail!("searchtree up (pid {}) is gone", before.supervisor_pid);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Refuses to signal a process that is not the `searchtree up` keeping the
/// nodes file: a file left behind by an `up` that was killed names a pid
/// the system may since have given to anything (or 0 or 1, which would
/// signal this process group or init).
fn check_supervisor(pid: u32, nodes_file: &std::path::Path) -> anyhow::Result<()> {
    let stale = || {
        format!(
            "{} names pid {pid} as its searchtree up, but {}; the tree it describes is not \
             running (start it with searchtree up --nodes-file)",
            nodes_file.display(),
            if pid <= 1 {
                "no searchtree up has that pid".to_string()
            } else {
                "that process is not a searchtree up keeping a nodes file".to_string()
            }
        )
    };
    if pid <= 1 {
        bail!(stale());
    }
    if !cfg!(target_os = "linux") {
        return Ok(());
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        bail!(stale());
    };
    if !is_up_keeping_a_nodes_file(&cmdline) {
        bail!(stale());
    }
    Ok(())
}

/// Whether a process's `/proc/PID/cmdline` (arguments separated by NULs)
/// is `searchtree up ... --nodes-file ...`.
fn is_up_keeping_a_nodes_file(cmdline: &[u8]) -> bool {
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let program = args.first().map(|p| {
        std::path::Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    program.is_some_and(|p| p.starts_with("searchtree"))
        && args.iter().any(|a| a == "up")
        && args
            .iter()
            .any(|a| a == "--nodes-file" || a.starts_with("--nodes-file="))
}

#[cfg(unix)]
fn signal_hangup(pid: u32) -> anyhow::Result<()> {
    let pid = libc::pid_t::try_from(pid).context("supervisor pid")?;
    // SAFETY: sending a signal has no memory effects in this process.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        bail!(
            "cannot signal searchtree up (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn signal_hangup(_pid: u32) -> anyhow::Result<()> {
    bail!("rolling restarts need a Unix system")
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists() || !cfg!(target_os = "linux")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_searchtree_up_keeping_a_nodes_file_is_signalled() {
        let up = b"/usr/bin/searchtree\0up\0--topology\0t.toml\0--nodes-file\0n.json\0";
        assert!(is_up_keeping_a_nodes_file(up));
        assert!(is_up_keeping_a_nodes_file(
            b"searchtree\0up\0--nodes-file=n.json\0"
        ));
        assert!(!is_up_keeping_a_nodes_file(b"sleep\x00300\x00"));
        assert!(!is_up_keeping_a_nodes_file(
            b"searchtree\0up\0--topology\0t.toml\0"
        ));
        let file = std::path::Path::new("n.json");
        for pid in [0, 1] {
            let err = check_supervisor(pid, file).unwrap_err().to_string();
            assert!(
                err.contains("is not") || err.contains("no searchtree up"),
                "{err}"
            );
        }
        // This test's own process is no searchtree up.
        let err = check_supervisor(std::process::id(), file)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a searchtree up") && err.contains("n.json"),
            "{err}"
        );
    }
}
