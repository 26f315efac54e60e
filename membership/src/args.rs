//! The flags that put a node in a tree whose membership lives in etcd.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::etcd::{Etcd, EtcdCredentials, EtcdSecurity};

/// The longest lease a node may ask for, in seconds.
pub const MAX_LEASE_TTL_SECS: u64 = 3600;

/// Membership flags every node takes.
#[derive(Debug, Clone, Args)]
pub struct MembershipArgs {
    /// etcd endpoints (`http://host:port`, comma-separated): the node
    /// registers itself there under --tree, and an inner node whose
    /// `--child` names only shards finds that child's replicas there.
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// The tree's name: its members live under `/searchtree/<tree>/` in etcd.
    #[arg(long)]
    pub tree: Option<String>,
    /// The address callers reach this node at, registered in etcd (default:
    /// the address it listens on, which must then not be a wildcard such as
    /// 0.0.0.0).
    #[arg(long)]
    pub advertise: Option<String>,
    /// How long the registration outlives a node that stops renewing it
    /// (crashed, or cut off from etcd), in seconds: 1 to 3600 (a longer one
    /// would keep a crashed node listed, and its callers trying it, for
    /// hours).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_LEASE_TTL_SECS))]
    pub lease_ttl_secs: u64,
    /// How etcd is reached: TLS, a user.
    #[command(flatten)]
    pub access: EtcdAccessArgs,
}

/// How a process reaches etcd when etcd is not open to anyone who can
/// reach it: over TLS, as a user. The nodes and `searchtree members` take
/// the same flags.
#[derive(Debug, Clone, Default, Args)]
pub struct EtcdAccessArgs {
    /// The CA (PEM) that signed etcd's certificate: etcd is reached over
    /// TLS, at `https://` endpoints.
    #[arg(long)]
    pub etcd_ca: Option<PathBuf>,
    /// A client certificate (PEM) for an etcd that asks for one
    /// (`--client-cert-auth`); with --etcd-key and --etcd-ca.
    #[arg(long, requires_all = ["etcd_key", "etcd_ca"])]
    pub etcd_cert: Option<PathBuf>,
    /// The private key (PEM) of --etcd-cert.
    #[arg(long, requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// The etcd user to act as, for an etcd with authentication enabled
    /// (`etcdctl auth enable`); with --etcd-password-file.
    #[arg(long, requires = "etcd_password_file")]
    pub etcd_user: Option<String>,
    /// A file whose first line is --etcd-user's password (a file, so that
    /// the password is not in the process list).
    #[arg(long, requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
}

/// The contents of the file given as flag `what`.
fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

impl EtcdAccessArgs {
    /// The same flags, to pass on to a node this process starts (paths
    /// made absolute, since the node may run elsewhere).
    pub fn to_flags(&self) -> Result<Vec<String>, String> {
        let mut flags = Vec::new();
        let files = [
            ("--etcd-ca", &self.etcd_ca),
            ("--etcd-cert", &self.etcd_cert),
            ("--etcd-key", &self.etcd_key),
            ("--etcd-password-file", &self.etcd_password_file),
        ];
        for (flag, path) in files {
            if let Some(path) = path {
                let path = std::path::absolute(path)
                    .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
                flags.push(format!("{flag}={}", path.display()));
            }
        }
        if let Some(user) = &self.etcd_user {
            flags.push(format!("--etcd-user={user}"));
        }
        Ok(flags)
    }

    /// How these flags say to reach etcd, their files read.
    pub fn security(&self) -> Result<EtcdSecurity, String> {
        let tls = match &self.etcd_ca {
            None => None,
            Some(ca) => {
                let ca_pem = read_file(ca, "--etcd-ca")?;
                if !String::from_utf8_lossy(&ca_pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(format!(
                        "--etcd-ca {}: no certificate in it (a PEM file with -----BEGIN \
                         CERTIFICATE----- blocks is expected)",
                        ca.display()
                    ));
                }
                let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
                if let (Some(cert), Some(key)) = (&self.etcd_cert, &self.etcd_key) {
                    tls = tls.identity(Identity::from_pem(
                        read_file(cert, "--etcd-cert")?,
                        read_file(key, "--etcd-key")?,
                    ));
                }
                Some(tls)
            }
        };
        let credentials = match (&self.etcd_user, &self.etcd_password_file) {
            (Some(user), Some(file)) => {
                let text = read_file(file, "--etcd-password-file")?;
                let text = String::from_utf8(text).map_err(|_| {
                    format!("--etcd-password-file {}: not UTF-8 text", file.display())
                })?;
                let password = text.lines().next().unwrap_or_default().to_string();
                if password.is_empty() {
                    return Err(format!(
                        "--etcd-password-file {}: its first line is empty",
                        file.display()
                    ));
                }
                Some(EtcdCredentials {
                    user: user.clone(),
                    password,
                })
            }
            _ => None,
        };
        Ok(EtcdSecurity { tls, credentials })
    }
}

impl Default for MembershipArgs {
    fn default() -> Self {
        MembershipArgs {
            etcd: Vec::new(),
            tree: None,
            advertise: None,
            lease_ttl_secs: 10,
            access: EtcdAccessArgs::default(),
        }
    }
}

/// A node's place in an etcd-backed tree: the cluster and the tree's name.
#[derive(Debug, Clone)]
pub struct TreeMembership {
    /// The etcd client.
    pub etcd: Etcd,
    /// The tree's name.
    pub tree: String,
    /// The lease TTL.
    pub ttl: Duration,
    /// The address to register, if set.
    pub advertise: Option<String>,
}

/// Refuses a `--tree` name that cannot be a key prefix in etcd: empty, or
/// with a '/'. Nodes and `searchtree members` check it alike.
pub fn check_tree_name(tree: &str) -> Result<(), String> {
    if tree.is_empty() || tree.contains('/') {
        return Err(format!(
            "--tree {tree:?} must be a non-empty name without '/'"
        ));
    }
    Ok(())
}

/// Refuses an `--advertise` address callers could not reach: not
/// `HOST:PORT`, port 0, or a wildcard host.
fn check_advertise(addr: &str) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "--advertise {addr:?} {why}: give HOST:PORT where callers reach this node, e.g. \
             10.0.0.5:7001 or leaf-0.search:7001"
        ))
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return refuse("is not HOST:PORT");
    };
    match port.parse::<u16>() {
        Ok(0) => return refuse("has port 0"),
        Ok(_) => {}
        Err(_) => return refuse("has no valid port"),
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() || bare.contains(char::is_whitespace) || bare.contains('/') {
        return refuse("has no valid host");
    }
    if bare
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
    {
        return refuse("is a wildcard address, which no caller can dial");
    }
    Ok(())
}

impl MembershipArgs {
    /// The membership these flags ask for: none without --etcd; --etcd
    /// needs --tree.
    pub fn membership(&self) -> Result<Option<TreeMembership>, String> {
        if self.etcd.is_empty() {
            if self.tree.is_some() {
                return Err(
                    "--tree needs --etcd (the cluster the tree's membership lives in)".into(),
                );
            }
            return Ok(None);
        }
        let Some(tree) = self.tree.clone() else {
            return Err("--etcd needs --tree NAME (the tree this node belongs to)".into());
        };
        check_tree_name(&tree)?;
        if !(1..=MAX_LEASE_TTL_SECS).contains(&self.lease_ttl_secs) {
            return Err(format!(
                "--lease-ttl-secs {} must be from 1 to {MAX_LEASE_TTL_SECS}",
                self.lease_ttl_secs
            ));
        }
        if let Some(addr) = &self.advertise {
            check_advertise(addr)?;
        }
        let etcd =
            Etcd::with_security(&self.etcd, &self.access.security()?).map_err(|e| e.to_string())?;
        Ok(Some(TreeMembership {
            etcd,
            tree,
            ttl: Duration::from_secs(self.lease_ttl_secs),
            advertise: self.advertise.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_advertise_address_is_refused() {
        for good in ["10.0.0.5:7001", "leaf-0.search:7001", "[::1]:7001"] {
            assert_eq!(check_advertise(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("junk", "is not HOST:PORT"),
            (":0", "has port 0"),
            ("host:x", "has no valid port"),
            (":7001", "has no valid host"),
            ("0.0.0.0:7001", "wildcard"),
            ("[::]:7001", "wildcard"),
        ] {
            let err = check_advertise(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
