//! `searchtree up` as an operator runs it: a real process started from a
//! topology, its READY line read, its log collected, and the nodes file it
//! keeps read back, so tests find every node (pid, gRPC and HTTP address)
//! the way operators' scripts do.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use searchtree::tree::supervisor::NodesFile;

use crate::searchtree;

/// A running `searchtree up`. Dropping it kills `up`, and with it
/// (parent-death signal) its nodes.
pub struct UpProcess {
    child: Child,
    /// The address printed on the READY line.
    pub root: SocketAddr,
    /// The nodes file `up` keeps.
    pub nodes_file: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl UpProcess {
    /// Starts `up --topology TOPOLOGY --nodes-file ... --state-dir ...` with
    /// `extra` flags and `RUST_LOG=log`, in a scratch directory under
    /// `dir`, and waits for its READY line; panics with `up`'s log if it
    /// does not come.
    pub fn start(topology: &Path, dir: &Path, extra: &[&str], log: &str) -> UpProcess {
        static TREES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = TREES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch = dir.join(format!("up-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        let nodes_file = scratch.join("nodes.json");
        let mut child = searchtree()
            .args(["up", "--topology"])
            .arg(topology)
            .arg("--state-dir")
            .arg(scratch.join("state"))
            .arg("--nodes-file")
            .arg(&nodes_file)
            .args(extra)
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn searchtree up");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("log lock").push(line);
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("read up's stdout");
        let Some(root) = line.trim().strip_prefix("READY root=") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "up printed {line:?} instead of READY; its log:\n{}",
                lines.lock().expect("log lock").join("\n")
            );
        };
        UpProcess {
            root: root.parse().expect("READY address"),
            child,
            nodes_file,
            log: lines,
        }
    }

    /// The nodes file as `up` last wrote it.
    pub fn nodes(&self) -> NodesFile {
        NodesFile::read(&self.nodes_file).expect("nodes file")
    }

    /// Everything `up` and its nodes logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits (up to 10 s) until `up` or a node has logged a line holding
    /// `needle`, and returns it; panics with the log if none comes. What
    /// `up` logs after READY reaches the log a moment after READY.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no line with {needle:?} in up's log:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `up`'s pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
