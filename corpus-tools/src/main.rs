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
            // A simulation frees and allocates again the same hundreds of
            // MiB for every batch of queries; giving them back (to fault
            // them in again, zeroed by the kernel) cost it a tenth of its
            // time.
            searchtree::allocator::set_purge_delay(-1);
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
