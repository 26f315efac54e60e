//! A real etcd cluster on loopback for the membership tests: `n` members
//! (Debian's `etcd-server`), each on free ports with its own data
//! directory, that a test can kill, stop and restart.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use searchtree_membership::Etcd;

/// One member of the cluster.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: Option<Child>,
}

/// A cluster of etcd processes on loopback.
pub struct EtcdCluster {
    dir: PathBuf,
    members: Vec<Member>,
    /// How clients reach it (TLS, a user), and its members' flags for it.
    secure: Option<Secure>,
}

/// A cluster that serves its clients TLS and (once [`EtcdCluster::enable_auth`]
/// ran) only known users.
#[derive(Clone)]
pub struct Secure {
    /// The CA that signed the members' certificate.
    pub ca: PathBuf,
    /// The members' certificate and key (any node's will do).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The user clients act as, once authentication is on.
    pub credentials: Option<searchtree_membership::EtcdCredentials>,
    /// Seconds a simple token lives unused (etcd's `--auth-token-ttl`).
    pub token_ttl_secs: u32,
}

/// A free port on loopback (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl EtcdCluster {
    /// Starts `n` members with data under `dir` and waits until the
    /// cluster has a leader.
    pub fn start(dir: &Path, n: usize) -> EtcdCluster {
        Self::start_with(dir, n, None)
    }

    /// [`EtcdCluster::start`], serving clients over TLS as `secure` says.
    /// Ports are found free, then released and handed to etcd, so a test
    /// running beside this one may take one in between: a cluster one of
    /// whose members exited without a leader is started again on other
    /// ports (three times at most).
    pub fn start_with(dir: &Path, n: usize, secure: Option<Secure>) -> EtcdCluster {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let mut cluster = Self::try_start(dir, n, secure.clone());
            let Some(i) = cluster.exited() else {
                cluster.wait_for_leader(Duration::from_secs(20));
                return cluster;
            };
            let log =
                std::fs::read_to_string(cluster.dir.join(format!("e{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            eprintln!(
                "etcd member e{i} exited as it started (attempt {attempt} of {ATTEMPTS}); \
                 its log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        panic!("no etcd cluster started in {ATTEMPTS} attempts (see the logs above)");
    }

    /// The first member whose process has exited, if one has, after giving
    /// the cluster a moment to elect a leader or fail.
    fn exited(&mut self) -> Option<usize> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) && self.leader().is_none() {
            let gone = self.members.iter_mut().position(|m| {
                m.process
                    .as_mut()
                    .is_some_and(|p| matches!(p.try_wait(), Ok(Some(_))))
            });
            if gone.is_some() {
                return gone;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Starts `n` members on ports free now, without waiting for a leader.
    fn try_start(dir: &Path, n: usize, secure: Option<Secure>) -> EtcdCluster {
        let dir = dir.join(format!("etcd-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("etcd dir");
        let members = (0..n)
            .map(|i| Member {
                name: format!("e{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                process: None,
            })
            .collect();
        let mut cluster = EtcdCluster {
            dir,
            members,
            secure,
        };
        for i in 0..n {
            cluster.start_member(i);
        }
        cluster
    }

    fn start_member(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .expect("etcd log");
        let client = format!("{}://127.0.0.1:{}", self.scheme(), m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut command = Command::new("etcd");
        if let Some(secure) = &self.secure {
            command
                .arg("--cert-file")
                .arg(&secure.cert)
                .arg("--key-file")
                .arg(&secure.key)
                .args(["--auth-token-ttl", &secure.token_ttl_secs.to_string()]);
        }
        let child = command
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "searchtree-test"])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (install Debian's etcd-server, as .ci/run does)");
        self.members[i].process = Some(child);
    }

    fn scheme(&self) -> &'static str {
        if self.secure.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The client endpoints, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How a client reaches the cluster: TLS and the user, if it has them.
    pub fn security(&self) -> searchtree_membership::EtcdSecurity {
        let Some(secure) = &self.secure else {
            return Default::default();
        };
        let ca = std::fs::read(&secure.ca).expect("the CA");
        searchtree_membership::EtcdSecurity {
            tls: Some(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            ),
            credentials: secure.credentials.clone(),
        }
    }

    /// A client of the cluster (within a tokio runtime).
    pub fn client(&self) -> Etcd {
        Etcd::with_security(&[self.endpoints()], &self.security()).expect("etcd client")
    }

    /// Turns authentication on (`etcdctl`): a `root` user, and `user`
    /// with `password` allowed to read and write the keys under `prefix`
    /// only; clients act as `user` from now on.
    pub fn enable_auth(&mut self, user: &str, password: &str, prefix: &str) {
        let secure = self.secure.as_mut().expect("auth on a TLS cluster");
        let endpoints = self
            .members
            .iter()
            .map(|m| format!("https://127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",");
        let ca = secure.ca.clone();
        let etcdctl = |args: &[&str]| {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={endpoints}"))
                .arg(format!("--cacert={}", ca.display()))
                .args(args)
                .output()
                .expect("etcdctl (Debian's etcd-client)");
            assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        };
        let root_password = format!("{password}-root");
        etcdctl(&[
            "user",
            "add",
            &format!("root:{root_password}"),
            "--interactive=false",
        ]);
        etcdctl(&["role", "add", user]);
        etcdctl(&[
            "role",
            "grant-permission",
            user,
            "--prefix=true",
            "readwrite",
            prefix,
        ]);
        etcdctl(&[
            "user",
            "add",
            &format!("{user}:{password}"),
            "--interactive=false",
        ]);
        etcdctl(&["user", "grant-role", user, user]);
        etcdctl(&["auth", "enable"]);
        secure.credentials = Some(searchtree_membership::EtcdCredentials {
            user: user.to_string(),
            password: password.to_string(),
        });
    }

    /// The index of the member that is leader now, if one is.
    pub fn leader(&self) -> Option<usize> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let statuses = runtime.block_on(async { self.client().statuses().await });
        statuses.iter().enumerate().find_map(|(i, (_, s))| {
            let s = s.as_ref()?;
            (s.header.as_ref()?.member_id == s.leader).then_some(i)
        })
    }

    /// Waits until some member is leader; panics after `wait`.
    pub fn wait_for_leader(&self, wait: Duration) -> usize {
        let start = Instant::now();
        loop {
            if let Some(i) = self.leader() {
                return i;
            }
            assert!(
                start.elapsed() < wait,
                "etcd has no leader after {wait:?}; logs in {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills member `i` outright (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data (after [`EtcdCluster::kill`]).
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].process.is_none(), "member {i} is running");
        self.start_member(i);
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
