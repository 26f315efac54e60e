//! `searchtree`: the operator CLI.

use clap::{Parser, Subcommand};
use searchtree::client_args::ClientArgs;
use searchtree::commands::{
    bench, build, certs, demo, discard, load, members, publish, query, restart, simulate, stats,
    up, verify, versions,
};

/// A faster allocator than the system's for what the CLI does in bulk
/// (`simulate`, `bench`, `build`).
#[global_allocator]
static ALLOCATOR: searchtree::allocator::MiMalloc = searchtree::allocator::MiMalloc;

/// Tells the allocator to keep what it frees rather than return it to the
/// OS after a delay: a simulation frees and allocates again the same
/// hundreds of MiB for every batch of queries, and giving them back (to
/// fault them in again, zeroed by the kernel) cost it a tenth of its time.
fn keep_freed_memory() {
    use std::ffi::{c_int, c_long};
    // `mi_option_purge_delay` in mimalloc.h (v2 and v3 alike); -1: never.
    const MI_OPTION_PURGE_DELAY: c_int = 15;
    unsafe extern "C" {
        fn mi_option_set(option: c_int, value: c_long);
    }
    // SAFETY: sets one of the allocator's options; it reads no memory of
    // ours and options may be changed at any time.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// Build, run and query a scatter/gather search tree.
#[derive(Debug, Parser)]
#[command(name = "searchtree", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How client commands call the tree.
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    Build(build::BuildArgs),
    Up(up::UpArgs),
    Query(query::QueryArgs),
    Demo(demo::DemoArgs),
    // Boxed: the load tester's many flags would make every variant its size.
    Bench(Box<bench::BenchArgs>),
    Stats(stats::StatsArgs),
    Load(load::LoadArgs),
    Publish(publish::PublishArgs),
    Discard(discard::DiscardArgs),
    Versions(versions::VersionsArgs),
    Verify(verify::VerifyArgs),
    Certs(certs::CertsArgs),
    Restart(restart::RestartArgs),
    Members(members::MembersArgs),
    Simulate(simulate::SimulateArgs),
}

#[tokio::main]
async fn main() {
    // `searchtree … | head` ends quietly, whichever command prints.
    searchtree::closed_output::exit_quietly_when_closed();
    searchtree_node::serving::init_tracing();
    let cli = Cli::parse();
    match &cli.command {
        // `up` sets its own from --tls-dir; these call no node at all, and a
        // shell's SEARCHTREE_TLS_CA for some tree must not stop them.
        Command::Up(_) | Command::Build(_) | Command::Certs(_) | Command::Simulate(_) => {}
        // The demo calls the plaintext tree it starts, whatever the shell
        // exports for calling other trees.
        Command::Demo(_) => {
            if cli.client.is_set() {
                eprintln!(
                    "note: the demo starts and calls a plaintext tree of its own: \
                     --tls-ca, --client-cert, --client-key and --token-file \
                     (and SEARCHTREE_TLS_CA, SEARCHTREE_TOKEN_FILE) are not used"
                );
            }
        }
        _ => {
            if let Err(err) = cli.client.install() {
                eprintln!("error: {err:#}");
                std::process::exit(2);
            }
        }
    }
    let result = match &cli.command {
        Command::Build(args) => build::run(args),
        Command::Up(args) => up::run(args).await,
        Command::Query(args) => query::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Stats(args) => stats::run(args).await,
        Command::Load(args) => load::run(args).await,
        Command::Publish(args) => publish::run(args).await,
        Command::Discard(args) => discard::run(args).await,
        Command::Versions(args) => versions::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Certs(args) => certs::run(args),
        Command::Restart(args) => restart::run(args).await,
        Command::Members(args) => members::run(args).await,
        // Its own runtime, on a paused clock, on a thread of its own.
        Command::Simulate(args) => std::thread::scope(|s| {
            keep_freed_memory();
            s.spawn(|| simulate::run(args))
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the simulation panicked")))
        }),
    };
    if let Err(err) = result {
        let chain = format!("{err:#}");
        eprintln!("error: {chain}");
        if let Some(hint) = searchtree::connection_hint::hint(&chain, cli.client.tls_ca.is_some()) {
            eprintln!("hint: {hint}");
        }
        std::process::exit(1);
    }
}
