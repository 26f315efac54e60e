//! `searchtree certs`: development certificates for a tree with TLS.

use std::path::PathBuf;

use clap::Args;

use crate::certs::{self, files};

/// Make a development CA, a certificate for the nodes (server and client
/// auth), one for operators' tools and an admin token: what
/// `searchtree up --tls-dir` and the nodes' --tls-* flags read.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// The directory to write them to.
    #[arg(long)]
    pub out: PathBuf,
    /// Host names and IP addresses the node certificate is valid for,
    /// comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = certs::DEFAULT_HOSTS.iter().map(|h| h.to_string()))]
    pub hosts: Vec<String>,
}

/// Runs `certs`.
pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    let dir = certs::generate(&args.out, &args.hosts)?;
    println!(
        "wrote {} (the CA clients trust), {} and {} (nodes), {} and {} (operators), {} (admin token)",
        dir.file(files::CA).display(),
        files::NODE,
        files::NODE_KEY,
        files::CLIENT,
        files::CLIENT_KEY,
        files::ADMIN_TOKEN,
    );
    Ok(())
}
