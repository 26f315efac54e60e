//! `searchtree bench` end to end: a short open-loop run against a real tree
//! and against one index in-process, with every output it promises.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use searchtree::bundled;
use searchtree_bench::schedule::{Arrival, Live, LoadConfig, Pacing, open_loop};
use searchtree_bench::target::{GrpcTarget, Target};
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use searchtree_tests::{fixture, searchtree, start_sharded_tree};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

fn check_report(json: &serde_json::Value) {
    let sent = json["sent"].as_u64().unwrap();
    let completed = json["completed"].as_u64().unwrap();
    let errors: u64 = json["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(sent >= 50, "{json}");
    assert_eq!(completed + errors, sent, "{json}");
    let l = &json["latency_us"];
    let p = |k: &str| l[k].as_u64().unwrap();
    assert_percentiles_in_order(l, json);
    let coverage = json["coverage_mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&coverage));
    let partial = json["partial_fraction"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&partial));
    let achieved = json["rate_achieved"].as_f64().unwrap();
    assert!(achieved > 0.0);

    // What the overload work reads: goodput, the latency of answers alone,
    // rejections apart, and the load tester's own CPU.
    let goodput = json["goodput"].as_f64().unwrap();
    assert!(goodput > 0.0 && goodput <= achieved + 1e-9, "{json}");
    let good = json["good"].as_u64().unwrap();
    assert!(good <= completed, "{json}");
    assert_eq!(json["budget_ms"], 2000, "{json}");
    let rejected = json["rejected"].as_u64().unwrap();
    assert_eq!(
        rejected,
        json["errors"]["RESOURCE_EXHAUSTED"].as_u64().unwrap_or(0),
        "{json}"
    );
    let ok = &json["latency_ok_us"];
    let k = |key: &str| ok[key].as_u64().unwrap();
    assert_percentiles_in_order(ok, json);
    assert!(k("p50") <= p("p99") && k("max") <= p("max"), "{json}");
    let cpu = json["loadgen_cpu"].as_f64().unwrap();
    assert!(cpu > 0.0 && cpu < 64.0, "{json}");
}

/// Runs a 2-second open-loop `searchtree bench` against `target` (e.g.
/// `--root ADDR` or `--direct DIR`) with `extra` flags; returns its stdout
/// and the JSON report written to `json`.
fn short_run(
    target: &[&str],
    json: &std::path::Path,
    extra: &[&std::ffi::OsStr],
) -> (String, serde_json::Value) {
    let out = searchtree()
        .arg("bench")
        .args(target)
        .args([
            "--rate",
            "40",
            "--duration",
            "2s",
            "--warmup",
            "500ms",
            "--budget-ms",
            "2000",
        ])
        .arg("--json")
        .arg(json)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    check_report(&report);
    (stdout, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_reports_consistent_numbers_and_writes_its_files() {
    let fx = fixture(TMP);
    let tree = start_sharded_tree(fx).await;
    let dir = fx.dir.join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let (json, hgrm, svg) = (dir.join("r.json"), dir.join("r.hgrm"), dir.join("r.svg"));
    let root = tree.root_addr().to_string();
    let (stdout, report) = short_run(
        &["--root", &root],
        &json,
        &[
            "--hgrm".as_ref(),
            hgrm.as_os_str(),
            "--plot".as_ref(),
            svg.as_os_str(),
        ],
    );
    assert!(stdout.contains("latency:   p50"), "{stdout}");
    assert!(stdout.contains("latency ok: p50"), "{stdout}");
    assert!(stdout.contains("goodput"), "{stdout}");
    assert!(stdout.contains("loadgen:   CPU"), "{stdout}");
    // A small tree, lightly loaded, with a generous budget: every answer is
    // complete and in time.
    assert_eq!(report["good"], report["completed"], "{report}");
    assert_eq!(report["target_in_process"], false);
    assert_eq!(report["mode"], "open_loop");
    assert_eq!(report["coverage_mean"], 1.0);
    // The tester took a real-time priority, or says why it could not.
    let priority = report["tester_priority"].as_str().unwrap();
    assert!(
        priority.starts_with("real-time (SCHED_FIFO")
            || priority.starts_with("normal (real-time refused"),
        "{priority}"
    );
    assert!(stdout.contains(&format!("priority {priority}")), "{stdout}");
    let hgrm = std::fs::read_to_string(&hgrm).unwrap();
    assert!(
        hgrm.contains("Percentile") && hgrm.contains("#[Max"),
        "{hgrm}"
    );
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<polyline"));

    // The transport's floor: health checks of a node at the same rate, every
    // one answered SERVING and counted as a complete answer.
    let (_, report) = short_run(
        &["--ping", &root],
        &json,
        &["--tester-priority".as_ref(), "normal".as_ref()],
    );
    assert_eq!(report["tester_priority"], "normal", "{report}");
    assert!(
        report["target"].as_str().unwrap().contains("health checks"),
        "{report}"
    );
    assert_eq!(report["good"], report["completed"], "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    tree.shutdown().await;

    // The floor: the same queries against one index in-process.
    let direct = fx.whole.join("shards/shard-000");
    let (_, report) = short_run(&["--direct", direct.to_str().unwrap()], &json, &[]);
    assert!(report["target"].as_str().unwrap().contains("one index"));
    assert_eq!(report["target_in_process"], true);
    // Searches in the tester's own process keep the normal priority.
    assert!(report.get("tester_priority").is_none(), "{report}");
}

/// The step-load scenario, very short: C from a 1 s closed loop, then 1 s
/// steps at 0.5x and 1x C; the JSON has the capacity and one entry per
/// step, and the chart is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_step_load_reports_each_step_and_plots_them() {
    let fx = fixture(TMP);
    let tree = start_sharded_tree(fx).await;
    let dir = fx.dir.join("bench-steps");
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("steps.json"), dir.join("steps.svg"));
    let out = searchtree()
        .args(["bench", "--root", &tree.root_addr().to_string()])
        .args(["--step-load", "--step-factors", "0.5,1"])
        .args(["--capacity-duration", "1s", "--capacity-workers", "4"])
        .args([
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--budget-ms",
            "2000",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tree.shutdown().await;
    assert!(stdout.contains("capacity:  C = "), "{stdout}");
    assert!(
        stdout.contains("goodput") && stdout.contains("p99 ok"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let capacity = report["capacity"].as_f64().unwrap();
    assert!(capacity > 0.0, "{report}");
    assert_eq!(report["capacity_run"]["mode"], "closed_loop", "{report}");
    assert_eq!(report["budget_ms"], 2000, "{report}");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{report}");
    for (step, factor) in steps.iter().zip([0.5, 1.0]) {
        assert_eq!(step["factor"], factor, "{report}");
        let offered = step["offered"].as_f64().unwrap();
        assert!((offered - factor * capacity).abs() < 1e-6, "{report}");
        let goodput = step["goodput"].as_f64().unwrap();
        let achieved = step["achieved"].as_f64().unwrap();
        assert!(goodput > 0.0 && goodput <= achieved + 1e-9, "{report}");
        for key in ["rejected", "other_errors", "p99_us", "p99_ok_us", "sent"] {
            assert!(step[key].as_u64().is_some(), "{key}: {report}");
        }
        assert!(step["p99_ok_us"].as_u64().unwrap() > 0, "{report}");
        let partial = step["partial_fraction"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&partial), "{report}");
        assert!(step["loadgen_cpu"].as_f64().is_some(), "{report}");
    }
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.contains("goodput") && svg.contains("p99 of answers"),
        "{svg}"
    );
    assert_eq!(svg.matches("<circle").count(), 4, "{svg}");
}

/// A target that notes when each of its requests came back and whether it
/// was answered (requests the tester gave up on never come back), so a run
/// can be read second by second.
struct Timed {
    inner: Arc<GrpcTarget>,
    start: Instant,
    finished: Arc<Mutex<Vec<(Duration, bool)>>>,
}

impl Target for Timed {
    fn search(
        &self,
        request: SearchRequest,
    ) -> BoxFuture<'static, Result<SearchResponse, tonic::Status>> {
        let (call, start, finished) = (
            self.inner.search(request),
            self.start,
            Arc::clone(&self.finished),
        );
        Box::pin(async move {
            let result = call.await;
            finished
                .lock()
                .unwrap()
                .push((start.elapsed(), result.is_ok()));
            result
        })
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

fn stall_load(rate: f64, duration: Duration) -> LoadConfig {
    LoadConfig {
        rate,
        arrival: Arrival::Uniform,
        seed: 1,
        zipf: None,
        duration,
        warmup: Duration::ZERO,
        max_in_flight: None,
        // The tester gives up on (and so cancels, with an HTTP/2 reset) any
        // request the stalled root holds for more than this.
        timeout: Duration::from_millis(500),
        top_k: 10,
        budget_ms: 200,
        profile: false,
        pacing: Pacing::Thread,
    }
}

/// The root stops (SIGSTOP) for 2 s under an open-loop load with a 200 ms
/// budget: the tester gives up on everything sent meanwhile, and the root,
/// when it resumes, finds a burst of requests cancelled before it read them.
/// The tester's connections survive that (or are replaced), without
/// restarting it: the last seconds of the same run are answered again, and a
/// second run over the same connections has no errors at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_testers_connections_survive_a_stalled_root_and_its_own_cancellations() {
    let fx = fixture(TMP);
    let tree = start_sharded_tree(fx).await;
    let root_pid = tree.pid("root").expect("root running") as libc::pid_t;
    let grpc = Arc::new(
        GrpcTarget::connect(&tree.root_addr().to_string(), 2)
            .await
            .unwrap(),
    );
    let queries = Arc::new(
        bundled::queries()
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>(),
    );
    let start = Instant::now();
    let finished = Arc::new(Mutex::new(Vec::new()));
    let target: Arc<dyn Target> = Arc::new(Timed {
        inner: Arc::clone(&grpc),
        start,
        finished: Arc::clone(&finished),
    });
    let config = stall_load(40.0, Duration::from_secs(6));
    let running = {
        let (target, queries) = (Arc::clone(&target), Arc::clone(&queries));
        tokio::spawn(
            async move { open_loop(target, queries, &config, Arc::new(Live::default())).await },
        )
    };
    tokio::time::sleep_until((start + Duration::from_secs(1)).into()).await;
    // SAFETY: kill(2) with a pid of a child of this process; no memory involved.
    assert_eq!(unsafe { libc::kill(root_pid, libc::SIGSTOP) }, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(root_pid, libc::SIGCONT) }, 0);
    let (recorded, _) = running.await.unwrap();
    eprintln!(
        "stalled run: sent {}, completed {}, errors {:?}",
        recorded.sent, recorded.completed, recorded.errors
    );

    let finished = finished.lock().unwrap().clone();
    let mut per_second = [(0u32, 0u32); 7];
    for &(at, ok) in &finished {
        let s = (at.as_secs() as usize).min(6);
        per_second[s].0 += u32::from(ok);
        per_second[s].1 += u32::from(!ok);
    }
    eprintln!("(answered, gRPC errors) per second of the run: {per_second:?}");
    // The stall cost answers (the tester gave up on what it sent)...
    assert!(
        recorded.errors.values().sum::<u64>() >= 40,
        "{:?}",
        recorded.errors
    );
    // ...but the run's last two seconds, from 1 s after the root resumed,
    // were answered again, on the same tester.
    let last: Vec<bool> = finished
        .iter()
        .filter(|(at, _)| *at >= Duration::from_secs(4))
        .map(|&(_, ok)| ok)
        .collect();
    assert!(
        last.len() >= 60,
        "only {} finished in the last 2 s",
        last.len()
    );
    let answered = last.iter().filter(|&&ok| ok).count();
    assert!(
        answered * 100 >= last.len() * 95,
        "{answered} of {} answered in the last 2 s: {per_second:?}",
        last.len()
    );

    // A second run over the very same channels: nothing fails.
    let (recorded, _) = open_loop(
        grpc,
        queries,
        &stall_load(40.0, Duration::from_secs(2)),
        Arc::new(Live::default()),
    )
    .await;
    assert!(recorded.sent >= 70, "{}", recorded.sent);
    assert_eq!(
        recorded.errors.values().sum::<u64>(),
        0,
        "{:?}",
        recorded.errors
    );
    assert_eq!(recorded.completed, recorded.sent);
    tree.shutdown().await;
}

#[test]
fn bad_query_files_are_refused_with_line_numbers() {
    let fx = fixture(TMP);
    let path = fx.dir.join("bad-queries.txt");
    std::fs::write(&path, format!("paris\n{}\n", "y".repeat(5000))).unwrap();
    let out = searchtree()
        .args(["bench", "--root", "127.0.0.1:1", "--queries"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad-queries.txt:2: query is 5000 bytes long"),
        "{err}"
    );
}

/// A report's percentiles (`latency_us` or `latency_ok_us`): present, above
/// zero, and in order.
fn assert_percentiles_in_order(l: &serde_json::Value, report: &serde_json::Value) {
    let p = |k: &str| l[k].as_u64().unwrap();
    assert!(p("p50") > 0, "{report}");
    assert!(
        p("p50") <= p("p90")
            && p("p90") <= p("p99")
            && p("p99") <= p("p999")
            && p("p999") <= p("max"),
        "{report}"
    );
}
