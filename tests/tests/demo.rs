//! The README's first command, `searchtree demo`, run as a newcomer runs it.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use searchtree_tests::{http_get, searchtree, terminate};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// A directory of this test's own (the demo builds its corpus itself: no
/// shared fixture needed).
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(TMP).join(format!("demo-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The example queries the demo printed, each with its coverage line.
fn answered_examples(stdout: &str) -> Vec<(String, String)> {
    let mut answers = Vec::new();
    let mut query = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("$ searchtree query ") {
            query = Some(rest.to_string());
        } else if line.starts_with("coverage:")
            && let Some(q) = query.take()
        {
            answers.push((q, line.to_string()));
        }
    }
    answers
}

#[test]
fn the_demo_once_answers_every_example_from_every_shard_and_cleans_up() {
    let tmp = scratch("demo-once");
    let out = searchtree()
        .args(["demo", "--once"])
        // Its corpus and indexes go to a temporary directory, removed on exit.
        .env("TMPDIR", &tmp)
        // A shell set up to call some TLS tree: the demo calls its own.
        .env("SEARCHTREE_TLS_CA", "/nonexistent/ca.pem")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("READY root=127.0.0.1:"), "{stdout}");
    assert!(
        stderr.contains("a plaintext tree of its own") && stderr.contains("are not used"),
        "{stderr}"
    );
    let answers = answered_examples(&stdout);
    assert_eq!(answers.len(), 6, "{stdout}");
    for (query, coverage) in &answers {
        assert!(
            coverage.starts_with(
                "coverage: 4/4 shards ok, 0 timed out, 0 failed; 10033/10033 documents searched"
            ),
            "{query}: {coverage}"
        );
    }
    assert!(stdout.contains("Solar System  [solar_system"), "{stdout}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
}

#[test]
fn the_serving_demo_shows_its_status_page_and_stops_on_sigterm() {
    let dir = scratch("demo-serving");
    let data = dir.join("data");
    let mut demo = searchtree()
        .args(["demo", "--data-dir", data.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the demo");
    let mut stdout = BufReader::new(demo.stdout.take().unwrap());
    let mut printed = String::new();
    let page = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let _ = demo.kill();
            panic!("the demo ended without a status page: {printed}");
        }
        printed.push_str(&line);
        if let Some(url) = line.trim().split_once("http://").map(|(_, a)| a) {
            break url
                .trim_end_matches('/')
                .parse::<std::net::SocketAddr>()
                .unwrap();
        }
    };
    let root = printed
        .lines()
        .find_map(|l| l.strip_prefix("READY root="))
        .unwrap_or_else(|| panic!("{printed}"))
        .to_string();
    assert_eq!(answered_examples(&printed).len(), 6, "{printed}");
    assert!(
        printed.contains(&format!("query --root {root} ")),
        "{printed}"
    );

    let (head, body) = http_get(page, "/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("<html"), "{body}");
    let (head, body) = http_get(page, "/api/search?q=volcano&k=3");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["hits"].as_array().map(Vec::len), Some(3), "{body}");
    let (_, metrics) = http_get(page, "/metrics");
    assert!(metrics.contains("searchtree_"), "{metrics}");

    let query = searchtree()
        .args(["query", "--root", &root, "-k", "1", "title:jazz"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&query.stdout);
    assert!(
        query.status.success() && text.contains("Jazz  [jazz"),
        "{text}"
    );

    let status = terminate(&mut demo);
    assert!(status.success(), "the demo exited with {status}");
    // Its data directory was the user's: kept.
    assert!(data.join("index").join("topology.toml").is_file());
}
