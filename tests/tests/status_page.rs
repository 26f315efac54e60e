//! The root's status and search page in a real browser: headless Chromium
//! loads `/?q=...` from the root's HTTP port, the page walks the tree and
//! runs the search, and the rendered page shows every node of the tree,
//! the hits, the coverage and the waterfall. The screenshot is decoded and
//! checked, not just fetched.

use std::path::Path;
use std::process::Command;

use searchtree_tests::fixture;
use searchtree_tests::up::UpProcess;

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
    let up = UpProcess::start(&f.sharded.join("topology.toml"), &f.dir, &[], "warn");
    let nodes = up.nodes();
    let root = nodes.node("root").expect("root");
    let url = format!("http://{}/?q=paris", root.http.expect("root HTTP port"));
    let scratch = f.dir.join(format!("chromium-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();

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
    // Every child, a lone one included, is health-checked by its parent.
    assert!(!dom.contains("unchecked"), "{dom}");
    assert_eq!(dom.matches(">healthy<").count(), 6, "{dom}");
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
