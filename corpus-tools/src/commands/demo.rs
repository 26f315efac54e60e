//! `searchtree demo`: the whole system on the bundled corpus, in one command.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use searchtree_proto::pb::SearchRequest;
use searchtree_proto::pb::search_client::SearchClient;

use crate::build::corpus::FieldNames;
use crate::build::{self, BuildOptions, Input, TOPOLOGY_FILE};
use crate::bundled;
use crate::commands::build::print_report;
use crate::commands::up::{STATE_DIR, print_ready, serve_until_stopped, start_tree};
use crate::output;
use crate::tree::supervisor::{RestartPolicy, StartOptions};

/// Queries the demo runs, one for each kind of syntax.
pub const EXAMPLE_QUERIES: [&str; 6] = [
    "solar system",
    "\"theory of relativity\"",
    "title:jazz",
    "+volcano -hawaii",
    "ancient AND rome",
    "photosynthesis chlorophyll",
];

/// Build the bundled Wikipedia corpus, start a tree of real processes over
/// it, run example queries, and keep serving until Ctrl-C.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of shards (leaves).
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// Number of parents between the root and the leaves.
    #[arg(long, default_value_t = 2)]
    pub parents: u32,
    /// Where to put the corpus and indexes (default: a temporary directory,
    /// removed on exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Exit after the example queries instead of serving.
    #[arg(long)]
    pub once: bool,
    /// Hits shown per example query.
    #[arg(short = 'k', long = "top-k", default_value_t = 5)]
    pub top_k: u32,
}

/// Runs the demo.
pub async fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("searchtree-demo-{}", std::process::id())),
            true,
        ),
    };
    let result = demo(args, &data_dir).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    result
}

async fn demo(args: &DemoArgs, data_dir: &std::path::Path) -> anyhow::Result<()> {
    // Listen for Ctrl-C and SIGTERM from the start, so that one that comes
    // while the corpus builds or the tree starts ends the demo here (and
    // its temporary directory is removed) rather than killing the process.
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        searchtree_node::serving::shutdown_signal().await;
        let _ = stop_tx.send(());
    });
    let corpus = bundled::write_corpus(data_dir)?;
    let out = data_dir.join("index");
    eprintln!(
        "building the bundled corpus ({} Wikipedia summaries) into {} shards...",
        bundled::CORPUS_DOCUMENTS,
        args.shards
    );
    let options = BuildOptions {
        input: Input::Lines(corpus),
        shards: args.shards,
        out: out.clone(),
        parents: args.parents,
        replicas: 1,
        fields: FieldNames::default(),
        skip_invalid: false,
        progress: true,
    };
    let mut building = tokio::task::spawn_blocking(move || build::build(&options));
    let report = tokio::select! {
        report = &mut building => report??,
        _ = &mut stop => {
            // The build cannot be cut short: let it end before its
            // directory is removed.
            let _ = building.await;
            eprintln!("interrupted while building: stopped");
            return Ok(());
        }
    };
    print_report(&mut std::io::stderr().lock(), &report, &out);

    let start = StartOptions {
        default_log: Some("warn".into()),
        forward_logs: true,
        // The status page is the demo's window on the tree.
        metrics: true,
        ..StartOptions::default()
    };
    // The leaves' state belongs to the build just replaced: start afresh.
    let state_dir = data_dir.join(STATE_DIR);
    if state_dir.exists() {
        std::fs::remove_dir_all(&state_dir)?;
    }
    let topology = out.join(TOPOLOGY_FILE);
    let tree = tokio::select! {
        tree = start_tree(&topology, &state_dir, &start) => tree?,
        _ = &mut stop => {
            // Dropping the start stops the nodes started so far.
            eprintln!("interrupted while starting the tree: stopped");
            return Ok(());
        }
    };
    eprintln!(
        "started {} node processes (1 root, {} parents, {} leaves)",
        tree.addresses().len(),
        args.parents,
        args.shards
    );
    print_ready(&tree);

    let result = examples(tree.root_addr(), args.top_k).await;
    if let Err(e) = result {
        tree.shutdown().await;
        return Err(e);
    }
    if args.once {
        tree.shutdown().await;
        return Ok(());
    }
    println!(
        "\nserving; try: cargo run --release -- query --root {} 'your query'   (Ctrl-C stops)",
        tree.root_addr()
    );
    if let Some(http) = tree.root_http() {
        println!("status page (the tree, its latencies, a search box): http://{http}/");
    }
    serve_until_stopped(tree, &RestartPolicy::default()).await
}

async fn examples(root: std::net::SocketAddr, top_k: u32) -> anyhow::Result<()> {
    let mut client = SearchClient::connect(format!("http://{root}")).await?;
    for query in EXAMPLE_QUERIES {
        let started = Instant::now();
        let response = client
            .search(SearchRequest {
                query: query.to_string(),
                top_k,
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow::anyhow!("query {query:?} failed: {}", s.message()))?
            .into_inner();
        println!(
            "\n$ searchtree query {query:?}   ({:.2?} round trip)",
            started.elapsed()
        );
        print!("{}", output::render(&response, false));
    }
    Ok(())
}
