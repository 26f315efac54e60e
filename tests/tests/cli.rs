//! The operator's view: the real `searchtree` binary, as a user runs it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use searchtree_tests::{fixture, searchtree, terminate};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = fixture(TMP).dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn build_up_query_and_stop_as_a_user_would() {
    let fx = fixture(TMP);
    let dir = scratch("cli-user");
    let out = dir.join("index");
    // A shell set up to call some TLS tree builds all the same: `build`
    // calls no node.
    let (ok, summary, err) = run(searchtree()
        .env("SEARCHTREE_TLS_CA", "/nonexistent/ca.pem")
        .args([
            "build",
            "--input",
            fx.corpus.to_str().unwrap(),
            "--shards",
            "3",
            "--parents",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]));
    assert!(ok, "build failed: {err}");
    assert!(
        summary.contains("built 10033 documents into 3 shards"),
        "{summary}{err}"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["num_shards"], 3);
    assert_eq!(manifest["input"]["documents"], 10033);
    let per_shard: u64 = manifest["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["num_docs"].as_u64().unwrap())
        .sum();
    assert_eq!(per_shard, 10033);

    let mut up = searchtree()
        .args([
            "up",
            "--topology",
            out.join("topology.toml").to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(up.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let root = line
        .trim()
        .strip_prefix("READY root=")
        .unwrap_or_else(|| panic!("first line of up was {line:?}"))
        .to_string();

    let (ok, text, err) =
        run(searchtree().args(["query", "--root", &root, "-k", "3", "eiffel tower"]));
    assert!(ok, "{err}");
    assert!(text.contains("Eiffel Tower"), "{text}");
    assert!(text.contains("coverage: 3/3 shards ok"), "{text}");

    let (ok, text, err) =
        run(searchtree().args(["query", "--root", &root, "--json", "title:paris"]));
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
    assert_eq!(json["hits"][0]["doc_id"], "paris");
    assert_eq!(json["coverage"]["shards_ok"], 3);
    assert_eq!(json["partial"], false);

    // Every leaf was given a state directory of its own beside the topology.
    let mut state: Vec<String> = std::fs::read_dir(out.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    state.sort();
    assert_eq!(state, ["leaf-0", "leaf-1", "leaf-2"]);
    let (ok, text, err) = run(searchtree().args(["versions", "--root", &root]));
    assert!(ok, "{err}");
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows[0].starts_with("shard  replica"), "{text}");
    assert_eq!(rows.len(), 5, "a header, 3 leaves, the pin: {text}");
    assert!(
        rows[1].starts_with("0 ") && rows[1].contains(" yes "),
        "{text}"
    );
    assert_eq!(rows[4], "pinned: version 1", "{text}");
    let (ok, text, err) = run(searchtree().args(["verify", "--root", &root]));
    assert!(ok, "{text}{err}");
    assert!(
        text.contains("ok: every reachable leaf is at version 1"),
        "{text}"
    );

    let (ok, _, err) = run(searchtree().args(["query", "--root", &root, "\"unclosed"]));
    assert!(!ok);
    assert!(
        err.contains("InvalidArgument") && err.contains("cannot parse query"),
        "{err}"
    );

    let status = terminate(&mut up);
    assert!(status.success(), "up exited with {status}");
    // Nothing is left listening: the nodes went down with `up`.
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(
        rest.trim().is_empty(),
        "up printed more than one line: {rest:?}"
    );
    assert!(
        std::net::TcpStream::connect(&root).is_err(),
        "root still listening"
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn build(input: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let mut cmd = searchtree();
    cmd.args(["build", "--shards", "2", "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra);
    let (ok, out, err) = run(&mut cmd);
    // The summary on stdout, refusals and warnings on stderr.
    (ok, format!("{out}{err}"))
}

#[test]
fn verify_passes_a_build_and_names_what_was_tampered_with() {
    let dir = scratch("cli-verify");
    let input = dir.join("c.jsonl");
    let lines: String = (0..60)
        .map(|i| {
            format!(
                "{{\"id\":\"d{i}\",\"body\":\"word {} number {i}\"}}\n",
                i % 5
            )
        })
        .collect();
    write(&input, &lines);
    let out = dir.join("index");
    let (ok, err) = build(&input, &out, &[]);
    assert!(ok, "{err}");
    let verify = || run(searchtree().arg("verify").arg(&out));

    let (ok, text, err) = verify();
    assert!(ok, "{text}{err}");
    assert!(
        text.contains("ok: all 60 documents are in the shard their id hashes to"),
        "{text}"
    );
    assert!(text.lines().all(|l| l.starts_with("ok: ")), "{text}");

    let meta = out.join("shards/shard-001/shard.json");
    let original = std::fs::read_to_string(&meta).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&original).unwrap();
    edited["corpus"]["num_docs"] = serde_json::json!(61);
    write(&meta, &edited.to_string());
    let (ok, text, err) = verify();
    assert!(!ok, "{text}");
    assert!(
        text.starts_with(&format!(
            "problem: {}: corpus CorpusTotals {{ num_docs: 61,",
            meta.display()
        )),
        "{text}"
    );
    assert!(err.contains("verification failed: 1 problem(s)"), "{err}");
    write(&meta, &original);

    let doc_freqs = out.join("shards/shard-000/doc_freqs.bin");
    let bytes = std::fs::read(&doc_freqs).unwrap();
    std::fs::write(&doc_freqs, &bytes[..bytes.len() - 8]).unwrap();
    let (ok, text, _) = verify();
    assert!(!ok, "{text}");
    assert!(
        text.starts_with("problem: shard 0 does not open: ") && text.contains("doc_freqs.bin"),
        "{text}"
    );
    std::fs::write(&doc_freqs, &bytes).unwrap();
    assert!(verify().0, "restored");

    let (ok, text, _) = run(searchtree().arg("verify").arg(dir.join("nowhere")));
    assert!(!ok && text.contains("manifest.json"), "{text}");
}

#[test]
fn bad_corpus_lines_are_named_and_never_replace_a_good_build() {
    let dir = scratch("cli-bad-corpus");
    let good = dir.join("good.jsonl");
    write(
        &good,
        "{\"id\":\"a\",\"title\":\"Alpha\",\"body\":\"first letter\"}\n\
         {\"id\":\"b\",\"title\":\"Beta\",\"body\":\"second letter\"}\n\
         {\"id\":\"c\",\"title\":\"Gamma\",\"body\":\"third letter\"}\n",
    );
    let out = dir.join("index");
    let (ok, err) = build(&good, &out, &[]);
    assert!(ok, "{err}");
    let manifest_before = std::fs::read_to_string(out.join("manifest.json")).unwrap();

    let bad = dir.join("bad.jsonl");
    write(
        &bad,
        "{\"id\":\"a\",\"body\":\"ok\"}\n\n{\"id\":\"b\",\"title\":\"no body\"}\n{not json\n\
         {\"id\":\"c\",\"body\":\"ok too\"}\n",
    );
    let (ok, err) = build(&bad, &out, &[]);
    assert!(!ok);
    assert!(err.contains("bad.jsonl:3: missing \"body\""), "{err}");
    assert!(err.contains("--skip-invalid"), "{err}");
    // The good build is untouched and nothing half-built is left beside it.
    assert_eq!(
        std::fs::read_to_string(out.join("manifest.json")).unwrap(),
        manifest_before
    );
    assert_nothing_left_in(&dir);

    let (ok, err) = build(&bad, &out, &["--skip-invalid"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("skipped 2 invalid lines or non-text files"),
        "{err}"
    );
    assert!(err.contains("bad.jsonl:4: not valid JSON"), "{err}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["input"]["documents"], 2);
    assert_eq!(manifest["input"]["skipped"], 2);

    let dup = dir.join("dup.jsonl");
    write(
        &dup,
        "{\"id\":\"a\",\"body\":\"x\"}\n{\"id\":\"b\",\"body\":\"y\"}\n{\"id\":\"a\",\"body\":\"z\"}\n",
    );
    let (ok, err) = build(&dup, &out, &["--skip-invalid"]);
    assert!(!ok);
    assert!(err.contains("dup.jsonl:3: duplicate id \"a\""), "{err}");

    let (ok, err) = build(&dir.join("missing.jsonl"), &out, &[]);
    assert!(!ok);
    assert!(err.contains("missing.jsonl"), "{err}");
}

/// Checks no staging or set-aside directory (hidden) was left in `dir`.
fn assert_nothing_left_in(dir: &Path) {
    let hidden: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        hidden.is_empty(),
        "left behind in {}: {hidden:?}",
        dir.display()
    );
}

/// Every file below `dir` with its bytes, to check nothing was touched.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

const THREE_DOCS: &str = "{\"id\":\"a\",\"body\":\"first letter\"}\n\
                          {\"id\":\"b\",\"body\":\"second letter\"}\n\
                          {\"id\":\"c\",\"body\":\"third letter\"}\n";

#[test]
fn build_never_replaces_what_is_not_a_previous_build() {
    let dir = scratch("cli-foreign-out");
    // A directory of someone's files, the corpus among them.
    let foreign = dir.join("work");
    std::fs::create_dir_all(foreign.join("notes")).unwrap();
    let corpus = foreign.join("corpus.jsonl");
    write(&corpus, THREE_DOCS);
    write(&foreign.join("notes/todo.txt"), "do not delete\n");
    let before = snapshot(&foreign);
    let (ok, err) = build(&corpus, &foreign, &[]);
    assert!(!ok, "build replaced a foreign directory");
    assert!(err.contains("lies inside --out"), "{err}");
    // Even with the corpus elsewhere: the directory is not a build.
    let outside = dir.join("corpus.jsonl");
    write(&outside, THREE_DOCS);
    let (ok, err) = build(&outside, &foreign, &[]);
    assert!(!ok, "build replaced a foreign directory");
    assert!(
        err.contains("is a directory but not a previous build") && err.contains("refusing"),
        "{err}"
    );
    assert_eq!(snapshot(&foreign), before, "the foreign directory changed");

    // A file as --out: refused, and the file stays where and what it was.
    let file = dir.join("precious.txt");
    write(&file, "precious bytes\n");
    let (ok, err) = build(&outside, &file, &[]);
    assert!(!ok, "build replaced a file");
    assert!(err.contains("is an existing file"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious bytes\n");
    let (ok, err) = build(&file, &file, &[]);
    assert!(!ok, "build replaced its own input");
    assert!(err.contains("are the same"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious bytes\n");
    assert_nothing_left_in(&dir);

    // An empty directory is taken, and a previous build is rebuilt over.
    let out = dir.join("index");
    std::fs::create_dir(&out).unwrap();
    let (ok, err) = build(&outside, &out, &[]);
    assert!(ok, "{err}");
    let mut cmd = searchtree();
    cmd.args(["build", "--shards", "3", "--input"])
        .arg(&outside)
        .arg("--out")
        .arg(&out);
    let (ok, summary, err) = run(&mut cmd);
    assert!(ok, "rebuild failed: {err}");
    assert!(
        summary.contains("built 3 documents into 3 shards"),
        "{summary}"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["num_shards"], 3);
    assert_nothing_left_in(&dir);

    // A build a running leaf serves is not rebuilt in place: the leaf's
    // files would go, and it could not restart over the new build.
    let (mut leaf, _) = searchtree_tests::spawn_leaf(&out.join("shards/shard-001"), &[]);
    let (ok, _, err) = run(&mut cmd);
    assert!(!ok, "rebuilt a build a leaf serves");
    assert!(
        err.contains("a running leaf serves") && err.contains("shard-001"),
        "{err}"
    );
    assert!(out.join("manifest.json").exists(), "the served build stays");
    leaf.kill().unwrap();
    leaf.wait().unwrap();
    let (ok, _, err) = run(&mut cmd);
    assert!(ok, "rebuild once the leaf is gone: {err}");
    assert_nothing_left_in(&dir);

    // A previous build holding a file a build does not write is not replaced.
    let mine = out.join("my-topology.toml");
    write(&mine, "# hand-written\n");
    let (ok, err) = build(&outside, &out, &[]);
    assert!(!ok);
    assert!(err.contains("also holds \"my-topology.toml\""), "{err}");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "# hand-written\n");
}

#[test]
fn build_bounds_shards_and_id_length() {
    let dir = scratch("cli-build-limits");
    let corpus = dir.join("three.jsonl");
    write(&corpus, THREE_DOCS);
    let out = dir.join("index");
    let shards = |n: &str| {
        let mut cmd = searchtree();
        cmd.args(["build", "--shards", n, "--input"])
            .arg(&corpus)
            .arg("--out")
            .arg(&out);
        run(&mut cmd)
    };
    let (ok, _, err) = shards("100000");
    assert!(!ok);
    assert!(err.contains("100000 is not in 1..=256"), "{err}");
    let (ok, _, err) = shards("4");
    assert!(!ok);
    assert!(
        err.contains("three.jsonl: 3 documents cannot fill 4 shards: use --shards 3 or fewer"),
        "{err}"
    );
    assert!(!out.exists(), "a refused build left output");
    assert_nothing_left_in(&dir);
    let (ok, err) = build(&corpus, &out, &["--replicas", "17"]);
    assert!(!ok);
    assert!(err.contains("17 is not in 1..=16"), "{err}");

    let long = dir.join("long.jsonl");
    write(
        &long,
        &format!(
            "{{\"id\":\"a\",\"body\":\"x\"}}\n{{\"id\":\"{}\",\"body\":\"y\"}}\n{{\"id\":\"c\",\"body\":\"z\"}}\n",
            "i".repeat(70_000)
        ),
    );
    let (ok, err) = build(&long, &out, &[]);
    assert!(!ok);
    assert!(
        err.contains(
            "long.jsonl:2: \"id\": the id is 70000 bytes long; ids may be at most 1024 bytes"
        ),
        "{err}"
    );
    let (ok, err) = build(&long, &out, &["--skip-invalid"]);
    assert!(ok, "{err}");
    assert!(err.contains("built 2 documents"), "{err}");
    assert!(
        err.contains("long.jsonl:2: \"id\": the id is 70000"),
        "{err}"
    );
}

#[test]
fn up_refuses_a_bad_topology_naming_the_entry() {
    let fx = fixture(TMP);
    let dir = scratch("cli-bad-topology");
    let shard = |s: u32| fx.sharded.join(format!("shards/shard-{s:03}"));
    let leaf = |name: &str, s: u32, index: &Path| {
        format!(
            "[[leaf]]\nname = \"{name}\"\nshard = {s}\nindex = \"{}\"\n",
            index.display()
        )
    };
    let all_leaves: String = (0..4)
        .map(|s| leaf(&format!("leaf-{s}"), s, &shard(s)))
        .collect();
    let cases = [
        (
            format!(
                "[root]\nchildren = [\"leaf-0\", \"leaf-1\", \"leaf-2\", \"leaf-3\", \"leaf-7\"]\n{all_leaves}"
            ),
            "unknown child \"leaf-7\"",
        ),
        (
            format!(
                "[root]\nchildren = [\"leaf-0\", \"leaf-1\", \"leaf-2\", \"leaf-3\"]\n\
                 [[parent]]\nname = \"p\"\nchildren = [\"q\"]\n[[parent]]\nname = \"q\"\nchildren = [\"p\"]\n{all_leaves}"
            ),
            "cycle: p -> q -> p",
        ),
        (
            format!(
                "[root]\nchildren = [\"leaf-0\", \"leaf-1\", \"leaf-3\"]\n{}{}{}",
                leaf("leaf-0", 0, &shard(0)),
                leaf("leaf-1", 1, &shard(1)),
                leaf("leaf-3", 3, &shard(3))
            ),
            "shard 2 is missing",
        ),
        (
            format!(
                "[root]\nchildren = [\"p\", \"leaf-0b\"]\n[[parent]]\nname = \"p\"\nchildren = [\"leaf-0\"]\n{}{}",
                leaf("leaf-0", 0, &shard(0)),
                leaf("leaf-0b", 0, &shard(0))
            ),
            "shard 0 is listed twice, under different parents",
        ),
        (
            format!(
                "[root]\nchildren = [\"leaf-0\"]\n{}",
                leaf("leaf-0", 0, &dir.join("nowhere"))
            ),
            "leaf \"leaf-0\": index directory",
        ),
    ];
    for (i, (text, should_say)) in cases.iter().enumerate() {
        let path = dir.join(format!("t{i}.toml"));
        write(&path, text);
        let (ok, stdout, err) =
            run(searchtree().args(["up", "--topology", path.to_str().unwrap()]));
        assert!(!ok, "case {i} started");
        assert!(stdout.is_empty(), "case {i} printed {stdout:?}");
        assert!(err.contains(should_say), "case {i}: {err}");
    }
}

#[test]
fn a_node_that_cannot_start_stops_up_with_its_error() {
    let fx = fixture(TMP);
    let dir = scratch("cli-broken-node");
    // A copy of a one-shard build that lost its statistics file.
    let broken = dir.join("shard-000");
    std::fs::create_dir_all(&broken).unwrap();
    for entry in std::fs::read_dir(fx.whole.join("shards/shard-000")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "doc_freqs.bin" {
            std::fs::copy(entry.path(), broken.join(entry.file_name())).unwrap();
        }
    }
    let path = dir.join("topology.toml");
    write(
        &path,
        &format!(
            "[root]\nchildren = [\"leaf-0\"]\n[[leaf]]\nname = \"leaf-0\"\nshard = 0\nindex = \"{}\"\n",
            broken.display()
        ),
    );
    // The clock starts once the binaries are built: it times `up`, not cargo.
    let mut up = searchtree();
    up.args(["up", "--topology", path.to_str().unwrap()]);
    let started = Instant::now();
    let (ok, stdout, err) = run(&mut up);
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout:?}");
    assert!(
        err.contains("leaf-0 exited before it was listening"),
        "{err}"
    );
    assert!(err.contains("doc_freqs.bin"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    // As `searchtree … | head -0`: the reader is gone before the first line.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = searchtree()
        .args([
            "simulate",
            "--leaves",
            "4",
            "--fanout",
            "2",
            "--queries",
            "10",
        ])
        .stdout(writer)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn a_second_up_on_the_same_ports_is_refused() {
    let fx = fixture(TMP);
    let dir = scratch("cli-second-up");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
    };
    let (root, leaf) = (free(), free());
    let path = dir.join("topology.toml");
    write(
        &path,
        &format!(
            "[root]\nlisten = \"{root}\"\nchildren = [\"leaf-0\"]\n\
             [[leaf]]\nname = \"leaf-0\"\nshard = 0\nlisten = \"{leaf}\"\nindex = \"{}\"\n",
            fx.whole.join("shards/shard-000").display()
        ),
    );
    let first = searchtree_tests::up::UpProcess::start(&path, &dir, &["--no-metrics"], "warn");
    assert_eq!(first.root, root);
    // The same topology again: the nodes would bind (SO_REUSEPORT) and
    // share the ports with the first tree's, so `up` refuses first.
    let (ok, stdout, err) = run(searchtree().args(["up", "--topology", path.to_str().unwrap()]));
    assert!(!ok, "a second tree started");
    assert!(stdout.is_empty(), "{stdout:?}");
    assert!(
        err.contains(&format!("{leaf} is already served by another process")),
        "{err}"
    );
    // The first tree still answers, alone on its ports.
    let (ok, stdout, err) = run(searchtree().args(["query", "--root", &root.to_string(), "river"]));
    assert!(ok, "{err}");
    assert!(!stdout.is_empty());
}

#[test]
fn commands_against_a_stopped_node_fail_naming_it_instead_of_waiting() {
    let fx = fixture(TMP);
    let index = fx.whole.join("shards/shard-000");
    let (mut leaf, addr) = searchtree_tests::spawn_leaf(&index, &["--shard", "0"]);
    let addr = addr.to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &leaf.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    // Stopped, its kernel still accepts connections; nothing answers.
    signal("-STOP");
    for command in [
        vec!["query", "--root", &addr, "river"],
        vec!["versions", "--root", &addr],
        vec!["stats", "--addr", &addr],
    ] {
        let started = Instant::now();
        let (ok, _, err) = run(searchtree().args(&command));
        assert!(!ok, "{command:?} succeeded");
        assert!(
            err.contains(&format!("{addr} did not answer within 5 s")),
            "{command:?}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(30), "{command:?}");
    }
    signal("-CONT");
    let (ok, stdout, err) = run(searchtree().args(["query", "--root", &addr, "river"]));
    assert!(ok, "{err}");
    assert!(!stdout.is_empty());
    terminate(&mut leaf);
}

#[test]
fn ctrl_c_on_up_stops_the_tree_with_every_node_draining() {
    use std::os::unix::process::CommandExt;

    let fx = fixture(TMP);
    // As at a terminal: `up` leads its own process group, and Ctrl-C sends
    // SIGINT to the whole group.
    let mut up = searchtree();
    up.args(["up", "--topology"])
        .arg(fx.sharded.join("topology.toml"))
        .arg("--state-dir")
        .arg(scratch("cli-ctrl-c").join("state"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut up = up.spawn().expect("start up");
    let mut ready = String::new();
    BufReader::new(up.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("READY root="), "{ready:?}");
    let group = format!("-{}", up.id());
    let ok = Command::new("kill")
        .args(["-INT", "--", &group])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let log = std::io::read_to_string(up.stderr.take().unwrap()).unwrap();
    let status = up.wait().unwrap();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("stopping the tree"), "{log}");
    assert!(
        !log.contains("second stop signal"),
        "a node did not drain:\n{log}"
    );
    // Each of the 7 nodes drained once, the root first.
    let drained: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("draining: health says NOT_SERVING"))
        .collect();
    assert_eq!(drained.len(), 7, "{log}");
    assert!(drained[0].starts_with("[root]"), "{log}");
}
