//! `searchtree simulate` as an operator runs it: a sweep written as JSON
//! and a plot, and a simulation drawing leaf latencies measured on a real
//! leaf with `searchtree bench --save-latency`.

use std::process::Command;

use searchtree_tests::{fixture, searchtree, start_sharded_tree};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run searchtree");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_sweep_writes_a_report_per_setting_and_a_plot() {
    let f = fixture(TMP);
    let json = f.dir.join(format!("sim-sweep-{}.json", std::process::id()));
    let plot = f.dir.join(format!("sim-sweep-{}.svg", std::process::id()));
    let table = run(searchtree()
        .args([
            "simulate",
            "--leaves",
            "40",
            "--fanout",
            "6",
            "--replicas",
            "2",
        ])
        .args(["--straggler-prob", "0.02", "--straggler-ms", "500"])
        .args(["--budget-ms", "100", "--queries", "300", "--rate", "100"])
        .args(["--sweep", "hedge-ratio=0,0.2", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&plot));
    assert!(
        table.contains("hedge-ratio=0 ") && table.contains("hedge-ratio=0.2 "),
        "{table}"
    );
    let reports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let reports = reports.as_array().expect("one report per setting");
    assert_eq!(reports.len(), 2);
    for r in reports {
        assert_eq!(r["sent"], 300, "{r}");
        assert_eq!(r["completed"], 300, "{r}");
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(r["latency_us"][key].as_u64().unwrap() > 0, "{r}");
        }
        assert!(r["coverage_mean"].as_f64().unwrap() > 0.9, "{r}");
        assert!(r["leaf_requests"].as_u64().unwrap() >= 40 * 300, "{r}");
    }
    // Hedging sends more leaf requests, and loses fewer shards.
    let (off, on) = (&reports[0], &reports[1]);
    assert!(on["leaf_requests"].as_u64() > off["leaf_requests"].as_u64());
    assert!(on["coverage_mean"].as_f64() >= off["coverage_mean"].as_f64());
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("hedge-ratio=0.2"),
        "{svg:.200}"
    );
}

#[test]
fn a_simulation_draws_from_latencies_measured_on_a_real_leaf() {
    let f = fixture(TMP);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tree = rt.block_on(start_sharded_tree(f));
    let leaf = searchtree_tests::node_addr(&tree, "leaf-0");
    let saved = f
        .dir
        .join(format!("leaf-latency-{}.txt", std::process::id()));
    run(searchtree()
        .args(["bench", "--root", &leaf.to_string()])
        .args([
            "--rate",
            "50",
            "--duration",
            "2s",
            "--warmup",
            "0s",
            "--save-latency",
        ])
        .arg(&saved));
    let text = std::fs::read_to_string(&saved).unwrap();
    let counted: u64 = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(counted >= 50, "{counted} latencies saved:\n{text}");

    let json = f
        .dir
        .join(format!("sim-measured-{}.json", std::process::id()));
    run(searchtree()
        .args([
            "simulate",
            "--leaves",
            "4",
            "--fanout",
            "2",
            "--queries",
            "200",
            // Two copies of the tree on two threads, 100 queries each.
            "--parallel",
            "2",
        ])
        .arg("--leaf-latency")
        .arg(&saved)
        .arg("--json")
        .arg(&json));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["completed"], 200, "{r}");
    assert_eq!(r["coverage_mean"], 1.0, "{r}");
    // No faster than the fastest leaf answer measured.
    let fastest: u64 = text
        .lines()
        .find(|l| !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(r["latency_us"]["p50"].as_u64().unwrap() >= fastest, "{r}");
    drop(tree);
}
