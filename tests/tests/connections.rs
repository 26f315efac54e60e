//! Connection limits over real processes: a node out of descriptors neither
//! spins nor stops answering the clients it has, and comes back once idle
//! connections time out; at its cap, a node closes the connection longest
//! without a call to make room; clients trickling request heads hold the
//! HTTP port's slots no longer than its header-read timeout, and cannot
//! keep a scraper out meanwhile; a parent resuming
//! from a stall answers in full although its caller cancelled everything
//! it sent meanwhile.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use searchtree::build::TOPOLOGY_FILE;
use searchtree::tree::topology::Topology;
use searchtree_node::ops::http::{HTTP_HEADER_READ_TIMEOUT, MAX_HTTP_CONNECTIONS};
use searchtree_node::serving::connections::EVICT_AFTER_IDLE;
use searchtree_proto::pb::search_client::SearchClient;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use searchtree_tests::{
    Fixture, client, fixture, node_addr, node_binaries, read_listening, search, send, start_tree,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// The descriptor limit the nodes under test run with: the default cap is
/// then 192 connections.
const NOFILE: u64 = 256;
/// Raw TCP connections opened against such a node: well past both.
const FLOOD: usize = 400;
/// Raw TCP connections opened against a node whose cap is above its
/// descriptor limit: past the limit, but not by more than the listen backlog
/// (128) holds, or connecting would wait for SYN retransmissions.
const EMFILE_FLOOD: usize = NOFILE as usize + 40;
/// The idle timeout the nodes under test run with.
const IDLE_TIMEOUT_SECS: u64 = 3;
/// A node that does not spin uses far less CPU than this over a second.
const MAX_CPU_PER_SECOND: Duration = Duration::from_millis(200);

/// The tests here measure a node's CPU time and time idle connections out;
/// running them one at a time keeps them from starving each other on 2 cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A leaf started by hand, under a descriptor limit of [`NOFILE`].
struct Leaf {
    process: Child,
    addr: std::net::SocketAddr,
    /// Its HTTP port, when started with `--metrics-listen`.
    http: Option<std::net::SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Leaf {
    fn start(fx: &Fixture, args: &[&str]) -> Leaf {
        let mut cmd = Command::new(node_binaries().leaf);
        cmd.arg("--index")
            .arg(fx.sharded.join("shards/shard-000"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setrlimit and prctl are async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: NOFILE,
                    rlim_max: NOFILE,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The leaf goes when the test process does, however it ends.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut process = cmd.spawn().expect("start the leaf");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = process.stderr.take().expect("piped");
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[leaf] {line}");
                lines.lock().unwrap().push(line);
            }
        });
        let (addr, http) = read_listening(process.stdout.take().expect("piped"));
        Leaf {
            process,
            addr,
            http,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The log lines so far that contain `text`.
    fn log_lines(&self, text: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(text)).count()
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// CPU time (user and system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name, which is in parentheses: state is the
    // first, utime (field 14) the 12th, stime the 13th.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// How many descriptors the process has open.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read fd/")
        .count()
}

/// The CPU time `pid` uses over one second of wall time.
async fn cpu_over_a_second(pid: u32) -> Duration {
    let before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cpu_time(pid) - before
}

/// Opens `n` TCP connections to `addr` that never send a byte.
async fn open_idle(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(TcpStream::connect(addr).await.expect("connect"));
    }
    streams
}

/// Whether the other end closes `stream` within `within` (EOF or reset),
/// after whatever it sent first (a served connection gets the server's
/// HTTP/2 settings).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let drained = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, drained).await.is_ok()
}

/// Connects a new gRPC client to `addr` and searches, until that works.
async fn new_client_answered(addr: std::net::SocketAddr, deadline: Instant) -> Duration {
    let started = Instant::now();
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(2), async {
            let mut fresh = SearchClient::connect(format!("http://{addr}"))
                .await
                .map_err(|e| e.to_string())?;
            search(&mut fresh, "river", 5)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        match attempt {
            Ok(Ok(_)) => return started.elapsed(),
            outcome => assert!(
                Instant::now() < deadline,
                "no new client was answered in time; last attempt: {outcome:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_its_connection_cap_a_node_refuses_cleanly_keeps_answering_and_makes_room() {
    let _one = ONE_AT_A_TIME.lock().await;
    let fx = fixture(TMP);
    let idle_timeout = IDLE_TIMEOUT_SECS.to_string();
    let leaf = Leaf::start(
        fx,
        &[
            "--idle-timeout-secs",
            &idle_timeout,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let mut old = client(leaf.addr).await;
    search(&mut old, "river", 5).await.expect("answers");

    let started = Instant::now();
    let mut idle = open_idle(leaf.addr, FLOOD).await;
    // While every connection held is new (none has gone a second without
    // a call), a connection past the cap is closed at once, not left in
    // the backlog. On a machine so slow that the flood took longer (the
    // node accepts a little after the client connects: half the second is
    // kept for that), a newcomer may rightly take an old one's place
    // instead, and there may be no refusal at all.
    let mut extra = TcpStream::connect(leaf.addr).await.expect("connect");
    let flood_took = started.elapsed();
    let closed_at_once = closed_within(&mut extra, Duration::from_secs(1)).await;
    let fast_flood = flood_took < EVICT_AFTER_IDLE / 2;
    if fast_flood {
        assert!(closed_at_once, "a connection past the cap was left open");
    } else {
        eprintln!("the flood took {flood_took:?}: not checking the refusal");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The client it had still gets answers.
    for _ in 0..5 {
        search(&mut old, "river", 5).await.expect("still answers");
    }
    // Not spinning.
    let cpu = cpu_over_a_second(leaf.pid()).await;
    eprintln!("CPU at the connection cap: {cpu:?} per second");
    assert!(cpu < MAX_CPU_PER_SECOND, "{cpu:?} of CPU in 1 s at the cap");
    assert!(
        !fast_flood || leaf.log_lines("connection refused") >= 1,
        "no warning logged"
    );

    // The connections that never called have now gone over a second
    // without a call: a new client takes the place of one of them, well
    // before the idle timeout.
    let took = new_client_answered(leaf.addr, Instant::now() + Duration::from_secs(20)).await;
    eprintln!("a new client was answered {took:?} after the cap was reached");
    assert!(
        leaf.log_lines("closed the connection longest without a call") >= 1,
        "making room was not logged"
    );
    let http = leaf.http.expect("the leaf announced its HTTP port");
    let (_, page) =
        tokio::task::spawn_blocking(move || searchtree_tests::http_get(http, "/metrics"))
            .await
            .unwrap();
    let evicted: u64 = page
        .lines()
        .find_map(|l| {
            l.strip_prefix("searchtree_connections_evicted_total{reason=\"connection_cap\"} ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no eviction series in:\n{page}"));
    assert!(evicted >= 1, "making room was not counted");
    // The server, not the test, closed the idle connections it held. They
    // were opened one after another, so their timers end one after another:
    // allow them a few seconds between them, on a busy machine.
    let all_closed_by = Instant::now() + Duration::from_secs(10);
    let mut closed = 0;
    for stream in &mut idle {
        let left = all_closed_by.saturating_duration_since(Instant::now());
        if closed_within(stream, left.max(Duration::from_millis(10))).await {
            closed += 1;
        }
    }
    assert_eq!(closed, FLOOD, "idle connections left open");
    // The old client, quiet for longer than the idle timeout but answering
    // the leaf's pings, was never cut off.
    search(&mut old, "river", 5)
        .await
        .expect("the old client still answers");
    // At most one refusal warning every 5 s.
    let warnings = leaf.log_lines("connection refused");
    let allowed = 1 + started.elapsed().as_secs() as usize / 5;
    assert!(warnings <= allowed, "{warnings} refusal warnings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_a_node_backs_off_instead_of_spinning() {
    let _one = ONE_AT_A_TIME.lock().await;
    let fx = fixture(TMP);
    let idle_timeout = IDLE_TIMEOUT_SECS.to_string();
    // A cap above the descriptor limit: accept() itself fails with EMFILE,
    // which used to spin on the connection left in the backlog.
    let leaf = Leaf::start(
        fx,
        &[
            "--idle-timeout-secs",
            &idle_timeout,
            "--max-connections",
            "100000",
        ],
    );
    let mut old = client(leaf.addr).await;
    search(&mut old, "river", 5).await.expect("answers");

    let started = Instant::now();
    let _idle = open_idle(leaf.addr, EMFILE_FLOOD).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        search(&mut old, "river", 5).await.expect("still answers");
    }
    let cpu = cpu_over_a_second(leaf.pid()).await;
    eprintln!("CPU out of descriptors: {cpu:?} per second");
    let open = open_descriptors(leaf.pid());
    assert!(
        open as u64 >= NOFILE - 2,
        "only {open} descriptors open: not at the limit"
    );
    assert!(cpu < MAX_CPU_PER_SECOND, "{cpu:?} of CPU in 1 s: spinning");
    assert!(
        leaf.log_lines("out of descriptors") >= 1,
        "running out of descriptors was not logged"
    );

    // The idle connections time out, those in the backlog get their turn
    // (and time out too), and a new client is answered.
    let took = new_client_answered(leaf.addr, Instant::now() + Duration::from_secs(30)).await;
    eprintln!("a new client was answered {took:?} after descriptors ran out");
    search(&mut old, "river", 5)
        .await
        .expect("the old client still answers");
    let warnings = leaf.log_lines("cannot accept connections");
    let allowed = 1 + started.elapsed().as_secs() as usize / 5;
    assert!(warnings <= allowed, "{warnings} accept warnings");
}

/// `GET /metrics` on a connection of its own: whether it was answered 200
/// within two seconds (a connection past the cap is closed unanswered).
async fn metrics_answered(http: std::net::SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(http).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: leaf\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Ok(true))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_trickling_request_heads_cannot_keep_a_scraper_out_and_are_closed_in_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let fx = fixture(TMP);
    let leaf = Leaf::start(fx, &["--metrics-listen", "127.0.0.1:0"]);
    let http = leaf.http.expect("the leaf announced its HTTP port");
    assert!(metrics_answered(http).await, "/metrics answers at first");
    let mut grpc = client(leaf.addr).await;
    search(&mut grpc, "river", 5).await.expect("answers");

    // More clients than the port has slots, each sending its request's
    // head one byte a second: never idle for the idle timeout (30 s), and
    // never done.
    let started = Instant::now();
    let mut tricklers = Vec::new();
    for _ in 0..MAX_HTTP_CONNECTIONS + 16 {
        tricklers.push(TcpStream::connect(http).await.expect("connect"));
    }
    let head = b"GET /metrics HTTP/1.1\r\nHost: leaf\r\nX-Padding: ".repeat(8);
    let trickling = tokio::spawn(async move {
        let mut closed_by_server = 0;
        for byte in head {
            let mut open = Vec::new();
            for mut stream in tricklers.drain(..) {
                if stream.write_all(&[byte]).await.is_ok() {
                    open.push(stream);
                }
            }
            tricklers = open;
            // Those the server closed read EOF (or a reset) at once.
            let mut open = Vec::new();
            for mut stream in tricklers.drain(..) {
                let mut buf = [0u8; 64];
                match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => closed_by_server += 1,
                    _ => open.push(stream),
                }
            }
            tricklers = open;
            if tricklers.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        (closed_by_server, tricklers.len())
    });

    // Every slot is held by a trickling client, yet a scrape is answered:
    // the client that has waited longest for its head gives its slot up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        assert!(
            metrics_answered(http).await,
            "/metrics unanswered while trickling clients hold the port"
        );
    }
    // gRPC is another port, with limits of its own: unaffected.
    search(&mut grpc, "river", 5)
        .await
        .expect("gRPC answers while the HTTP port is full");

    // The server closed every trickling client (the oldest to make room,
    // the others at the head timeout); none was left to send its whole
    // head.
    // A busy machine may run the timers a little late.
    let deadline = started + HTTP_HEADER_READ_TIMEOUT + Duration::from_secs(5);
    let (closed_by_server, still_open) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        trickling,
    )
    .await
    .expect("the trickling clients were all closed")
    .expect("trickling task");
    assert_eq!(still_open, 0);
    assert_eq!(closed_by_server, MAX_HTTP_CONNECTIONS + 16);
    search(&mut grpc, "river", 5)
        .await
        .expect("the gRPC client still answers");
}

/// Sends `n` searches at once with a budget of `budget_ms` each.
fn queries(
    root: &SearchClient<tonic::transport::Channel>,
    n: usize,
    budget_ms: u32,
) -> impl std::future::Future<Output = Vec<Result<SearchResponse, tonic::Status>>> + use<> {
    let mut batch = tokio::task::JoinSet::new();
    for _ in 0..n {
        let mut root = root.clone();
        batch.spawn(async move {
            send(
                &mut root,
                SearchRequest {
                    query: "river".into(),
                    top_k: 10,
                    budget_ms,
                    ..Default::default()
                },
            )
            .await
        });
    }
    batch.join_all()
}

/// The pid of the node process whose command line has an argument
/// containing `needle`.
fn pid_with_arg(binary: &str, needle: &str) -> u32 {
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with(binary))
            && args.iter().any(|a| a.contains(needle))
        {
            return pid;
        }
    }
    panic!("no {binary} process with an argument containing {needle:?}");
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill only sends a signal to the process we name.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_resuming_from_a_stall_answers_in_full() {
    let _one = ONE_AT_A_TIME.lock().await;
    let fx = fixture(TMP);
    // Uncached: the same query must reach the stalled parent every time.
    // Admission off: this is about connections surviving a storm of reset
    // streams, and the stall (every answer partial at a 40 ms budget, on a
    // debug build whose leaves refuse what they cannot start in time) is
    // what admission rightly takes for overload and sheds after.
    let mut topology = Topology::load(&fx.sharded.join(TOPOLOGY_FILE)).expect("topology");
    topology.root.cache_mb = Some(0);
    topology.root.admission = Some(false);
    for parent in &mut topology.parents {
        parent.cache_mb = Some(0);
    }
    let path = fx.sharded.join("stall.toml");
    std::fs::write(&path, topology.to_toml()).expect("write topology");
    let tree = start_tree(&path).await;
    let mut root = client(tree.root_addr()).await;
    let full = search(&mut root, "river", 10).await.expect("answers");
    assert_eq!(full.coverage.unwrap().shards_ok, 4);

    // parent-0 is the parent whose child is leaf-0.
    let parent = pid_with_arg(
        "searchtree-parent",
        &format!("@{}", node_addr(&tree, "leaf-0")),
    );
    signal(parent, libc::SIGSTOP);
    // Queries with short budgets time out against the stalled parent: the
    // root drops each call to it, which resets the stream. The parent reads
    // all of those resets at once when it resumes.
    let stalled_until = Instant::now() + Duration::from_secs(3);
    let (mut sent, mut cut_off) = (0, 0);
    while Instant::now() < stalled_until {
        for answer in queries(&root, 16, 40).await {
            sent += 1;
            if answer.is_ok_and(|a| a.coverage.is_some_and(|c| c.shards_timed_out == 2)) {
                cut_off += 1;
            }
        }
    }
    eprintln!("{sent} queries timed out against the stalled parent");
    assert!(cut_off > 20, "only {cut_off} of {sent} queries timed out");
    // Queries in flight when it resumes, queued behind those resets, are
    // answered in full: none fails with the connection torn down.
    let in_flight = tokio::spawn(queries(&root, 8, 5_000));
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(parent, libc::SIGCONT);
    for answer in in_flight.await.unwrap() {
        let c = answer.expect("answers").coverage.expect("coverage");
        assert_eq!((c.shards_ok, c.shards_failed), (4, 0), "{:?}", c.failures);
    }

    // The next queries are answered in full. While the parent catches up a
    // shard may still time out, but none may fail: a failure is the
    // connection to the parent torn down.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = search(&mut root, "river", 10).await.expect("answers");
        let c = answer.coverage.expect("coverage");
        assert_eq!(c.shards_failed, 0, "after the stall: {:?}", c.failures);
        if c.shards_ok == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "never full again: {c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        let answer = search(&mut root, "river", 10).await.expect("answers");
        let c = answer.coverage.expect("coverage");
        assert_eq!((c.shards_ok, c.shards_failed), (4, 0), "{:?}", c.failures);
    }
    tree.shutdown().await;
}
