//! The root's status and search page in a real browser: headless Chromium
//! loads `/?q=...` from the root's HTTP port, the page walks the tree and
//! runs the search, and the rendered page shows every node of the tree,
//! the hits, the coverage and the waterfall. The screenshot is decoded and
//! checked, not just fetched. And what the page shows is true: the tree's
//! data (`/api/tree`) follows a leaf that stops answering and comes back.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use searchtree_tests::up::UpProcess;
use searchtree_tests::{fixture, http_get, searchtree};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 1400;

/// Runs headless Chromium on `url` with `args`; its stdout.
fn chromium(url: &str, args: &[&str], profile_dir: &Path) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            &format!("--window-size={WIDTH},{HEIGHT}"),
            // Time for the page's fetches to come back and render.
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "chromium: {e} (install Debian's `chromium` package, as \
                 .ci/run does)"
            )
        });
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_page_renders_the_tree_and_a_search_in_a_real_browser() {
    let f = fixture(TMP);
    let up = UpProcess::start(
        &f.sharded.join("topology.toml"),
        &f.dir,
        &[],
        "warn,searchtree::commands::up=info",
    );
    let nodes = up.nodes();
    let root = nodes.node("root").expect("root");
    let page = format!("http://{}/", root.http.expect("root HTTP port"));
    // `up` says where the page is.
    let said = format!("status page: {page}");
    up.wait_for_log(&said);
    let url = format!("{page}?q=paris");
    let scratch = f.dir.join(format!("chromium-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    // Every inner node has answered once before the page looks.
    query(up.root, "paris");
    let leaf_version =
        tree(root.http.expect("root HTTP port"))["children"][0]["replicas"][0]["node"]["children"]
            [0]["replicas"][0]["node"]["version"]
            .as_u64()
            .expect("a leaf's version");
    assert!(leaf_version > 0);

    let dom = chromium(&url, &["--dump-dom"], &scratch.join("profile-dom"));
    for node in &nodes.nodes {
        assert!(
            dom.contains(&node.grpc.to_string()),
            "the page does not show {} ({}):\n{dom}",
            node.name,
            node.grpc
        );
    }
    assert_eq!(dom.matches(">SERVING<").count(), 7, "{dom}");
    // Inner nodes show the version they answer at, as leaves do: not 0.
    assert_eq!(
        dom.matches(&format!("version {leaf_version} · last minute"))
            .count(),
        7,
        "{dom}"
    );
    // Leaves show their disk next to the floor they keep; inner nodes none.
    assert_eq!(dom.matches("class=\"meta disk").count(), 4, "{dom}");
    let whole = tree(root.http.expect("root HTTP port"));
    let leaf = &whole["children"][0]["replicas"][0]["node"]["children"][0]["replicas"][0]["node"];
    let (free, total, floor) = (
        leaf["disk_free_bytes"].as_u64().unwrap(),
        leaf["disk_total_bytes"].as_u64().unwrap(),
        leaf["disk_floor_bytes"].as_u64().unwrap(),
    );
    assert!(free > 0 && free <= total && floor < total, "{leaf}");
    assert!(dom.contains(" free of "), "{dom}");
    // Every child, a lone one included, is health-checked by its parent.
    assert!(!dom.contains("unchecked"), "{dom}");
    assert_eq!(dom.matches(">healthy<").count(), 6, "{dom}");
    // Coverage is over the last minute's answers, and says so.
    assert!(dom.contains("coverage 100.0% of "), "{dom}");
    for text in [
        "4/4 shards answered",
        "Paris Commune",
        "Notre-Dame de Paris",
        "Where the time went",
    ] {
        assert!(
            dom.contains(text),
            "the page does not show {text:?}:\n{dom}"
        );
    }
    // The waterfall has a row for the root, both parents and all leaves.
    assert!(dom.matches("class=\"row\"").count() >= 7, "{dom}");

    let shot = scratch.join("page.png");
    chromium(
        &url,
        &[&format!("--screenshot={}", shot.display())],
        &scratch.join("profile-shot"),
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&shot).expect("screenshot written"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut pixels).expect("PNG frame");
    assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let rgb = |i: usize| {
        let p = &pixels[i * channels..i * channels + 3];
        (p[0], p[1], p[2])
    };
    let n = (info.width * info.height) as usize;
    let mut colours = std::collections::HashSet::new();
    let (mut header, mut ink, mut bars, mut white_in_header) = (0usize, 0usize, 0usize, 0usize);
    for i in 0..n {
        let (r, g, b) = rgb(i);
        colours.insert((r, g, b));
        match (r, g, b) {
            (0x1f, 0x3a, 0x5f) => header += 1,
            (0x4a, 0x78, 0xb5) => bars += 1,
            // The header is the top 40 rows or so.
            (0xff, 0xff, 0xff) if i < 40 * WIDTH as usize => white_in_header += 1,
            _ => {}
        }
        // Dark pixels: text.
        if u32::from(r) + u32::from(g) + u32::from(b) < 200 {
            ink += 1;
        }
    }
    assert!(
        colours.len() > 50,
        "a blank page: {} colours",
        colours.len()
    );
    assert!(
        header > (WIDTH as usize) * 30,
        "no header bar: {header} pixels"
    );
    assert!(bars > 500, "no waterfall bars: {bars} pixels");
    // A tree without tokens asks for none: no white token box in the
    // header, only its title's letters.
    assert!(
        white_in_header < 1_500,
        "the header shows a token box: {white_in_header} white pixels"
    );
    assert!(ink > n / 200, "hardly any text: {ink} dark pixels of {n}");
}

/// `/api/tree` from the root's HTTP port `http`.
fn tree(http: SocketAddr) -> Value {
    let (head, body) = http_get(http, "/api/tree");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Searches the tree at `root` once with the CLI (a generous budget).
fn query(root: SocketAddr, q: &str) -> String {
    let out = searchtree()
        .args([
            "query",
            "--root",
            &root.to_string(),
            "--budget-ms",
            "1000",
            q,
        ])
        .output()
        .expect("run searchtree query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The node at `addr` in `tree`, and the state its parent gives it.
fn find<'a>(tree: &'a Value, addr: &str) -> Option<(&'a Value, &'a str)> {
    for child in tree["children"].as_array()? {
        for replica in child["replicas"].as_array()? {
            if replica["address"] == addr {
                return Some((&replica["node"], replica["state"].as_str()?));
            }
            if let Some(found) = find(&replica["node"], addr) {
                return Some(found);
            }
        }
    }
    None
}

/// Polls `/api/tree` until `ok` holds, for at most `wait`; the last tree
/// read.
fn until(http: SocketAddr, wait: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let t = tree(http);
        if ok(&t) || start.elapsed() > wait {
            return t;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends `signal` (STOP, CONT) to `pid`.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

#[test]
fn a_lone_leaf_that_stops_answering_is_shown_ejected_and_its_partial_answers_age_out() {
    let f = fixture(TMP);
    let up = UpProcess::start(&f.sharded.join("topology.toml"), &f.dir, &[], "warn");
    let nodes = up.nodes();
    let http = nodes
        .node("root")
        .expect("root")
        .http
        .expect("root HTTP port");
    let leaf = nodes.node("leaf-0").expect("leaf-0");
    let leaf_addr = leaf.grpc.to_string();
    let parent_of = |t: &Value| -> Value {
        t["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["replicas"][0]["node"])
            .find(|p| find(p, &leaf_addr).is_some())
            .cloned()
            .expect("the leaf's parent")
    };

    let fresh = tree(http);
    assert_eq!(
        find(&fresh, &leaf_addr).expect("the leaf").1,
        "healthy",
        "{fresh}"
    );
    // No answers yet: no coverage to speak of (not "100%").
    assert_eq!(parent_of(&fresh)["answers"], 0, "{fresh}");

    // The leaf stops (a hung process): its shard times out, and its
    // parent's health checks eject it.
    let pid = leaf.pid.expect("leaf-0 runs");
    signal(pid, "STOP");
    for q in ["paris", "london", "rome"] {
        assert!(query(up.root, q).contains("PARTIAL"));
    }
    let stopped = until(http, Duration::from_secs(10), |t| {
        find(t, &leaf_addr).is_some_and(|(_, state)| state == "ejected")
    });
    signal(pid, "CONT");
    let (hung, state) = find(&stopped, &leaf_addr).unwrap();
    assert_eq!(state, "ejected", "{stopped}");
    // The walk says what the leaf's silence means, not just a code.
    assert_eq!(hung["health"], "UNREACHABLE", "{stopped}");
    assert!(
        hung["error"]
            .as_str()
            .unwrap()
            .contains("hung or overloaded"),
        "{stopped}"
    );
    let parent = parent_of(&stopped);
    // (An answer the root gave up waiting for is not one.)
    assert!(parent["answers"].as_u64().unwrap() >= 1, "{stopped}");
    assert_eq!(parent["coverage_mean"], 0.5, "{stopped}");

    // Back: in rotation again, and once its partial answers are older than
    // the status's window (two 30 s halves), the coverage is that of the
    // answers since: complete.
    let back = until(http, Duration::from_secs(10), |t| {
        find(t, &leaf_addr).is_some_and(|(_, state)| state == "healthy")
    });
    assert_eq!(find(&back, &leaf_addr).unwrap().1, "healthy", "{back}");
    // Queries all different: none answered from the root's cache.
    let asked = std::cell::Cell::new(0);
    let recovered = until(http, Duration::from_secs(90), |t| {
        asked.set(asked.get() + 1);
        query(up.root, &format!("paris x{}", asked.get()));
        parent_of(t)["coverage_mean"] == 1.0
    });
    let parent = parent_of(&recovered);
    assert_eq!(parent["coverage_mean"], 1.0, "{recovered}");
    assert!(parent["answers"].as_u64().unwrap() > 0, "{recovered}");
}
