//! How the CLI calls a tree: the flags every client command shares (TLS,
//! a client certificate, a token), set once for the whole process.

use std::path::PathBuf;

use clap::Args;
use searchtree_node::ops::{auth, client, tls};

/// The client flags of every command that calls a node.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientArgs {
    /// Call nodes over TLS, trusting this CA certificate (PEM).
    #[arg(long, global = true, env = "SEARCHTREE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Present this client certificate (PEM) to nodes that require mutual
    /// TLS; with --client-key.
    #[arg(long, global = true, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The key of --client-cert (PEM).
    #[arg(long, global = true, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Send the bearer token in this file (its first line) on every call:
    /// admin calls (load, publish, stats) and protected searches need it.
    #[arg(long, global = true, env = "SEARCHTREE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl ClientArgs {
    /// Whether any of the flags (or their environment variables) is given:
    /// a command that does not use them says so rather than ignore them.
    pub fn is_set(&self) -> bool {
        self.tls_ca.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
            || self.token_file.is_some()
    }

    /// Sets how this process calls nodes.
    pub fn install(&self) -> anyhow::Result<()> {
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(tls::identity_from(
                cert,
                "--client-cert",
                key,
                "--client-key",
            )?),
            _ => None,
        };
        if identity.is_some() && self.tls_ca.is_none() {
            anyhow::bail!(
                "--client-cert needs --tls-ca (the CA that signed the nodes' certificates)"
            );
        }
        let tls = tls::client_tls(self.tls_ca.as_deref(), identity)?;
        let token = self
            .token_file
            .as_deref()
            .map(auth::read_token)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        // The CLI calls the root over gRPC only: no frames.
        client::set_security(client::ClientSecurity {
            tls,
            frames_tls: None,
            token,
        })
        .map_err(anyhow::Error::msg)
    }
}
