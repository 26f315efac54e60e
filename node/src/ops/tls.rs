//! TLS for a node: its identity (certificate and key, from files), the CA
//! it trusts when it calls other nodes, and whether its callers must show
//! a certificate of their own (mutual TLS). rustls: the node makes its
//! gRPC port's handshakes itself, so that one port serves HTTP/2 and
//! frames over TLS alike; tonic's settings for its calls over HTTP/2.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use tokio_rustls::rustls;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// What a caller of frames over TLS asks for in the handshake (ALPN), so
/// that the node serves the connection as frames rather than HTTP/2.
pub const FRAMES_ALPN: &[u8] = b"stframe1";

/// The TLS flags of a node.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Serve TLS with this certificate chain (PEM); with --tls-key. The
    /// node also presents it as its client identity to children that ask
    /// for one.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) that signed the other nodes' certificates: calls to
    /// children are made over TLS, verified against it.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Require every caller to present a certificate signed by this CA
    /// (PEM): mutual TLS. A verified caller counts as an admin (see
    /// --admin-token-file).
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The certificates of a PEM file given as flag `what`.
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(&read(path, what)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))
}

/// The certificates of a PEM file given as flag `what`, at least one:
/// rustls would otherwise take an empty or mistaken file for "trust
/// nothing" and fail every handshake later, naming no file.
fn read_some_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = read_certs(path, what)?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} {}: no certificate in it (a PEM file with -----BEGIN CERTIFICATE----- blocks \
             is expected)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The certificates of the CA file given as flag `what`, as rustls trusts
/// them: at least one, each one webpki can read.
fn read_roots(path: &Path, what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_some_certs(path, what)? {
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The identity in `cert` and `key`, given as flags `cert_flag` and
/// `key_flag` (e.g. `--client-cert`, `--client-key`), checked as
/// [`read_pair`] checks it.
pub fn identity_from(
    cert: &Path,
    cert_flag: &str,
    key: &Path,
    key_flag: &str,
) -> Result<Identity, TlsError> {
    read_pair(cert, cert_flag, key, key_flag)?;
    Ok(Identity::from_pem(
        read(cert, cert_flag)?,
        read(key, key_flag)?,
    ))
}

/// The certificate chain and key of `cert` and `key`, checked to go
/// together: a key from another pair, or a file of the wrong kind, is said
/// at start naming both files, not as a transport error at the first
/// handshake.
fn read_pair(
    cert: &Path,
    cert_flag: &str,
    key: &Path,
    key_flag: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = read_some_certs(cert, cert_flag)?;
    let private = PrivateKeyDer::from_pem_slice(&read(key, key_flag)?).map_err(|e| {
        TlsError(format!(
            "{key_flag} {}: {e} (a PEM private key is expected)",
            key.display()
        ))
    })?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(chain.clone(), private.clone_key())
        })
        .map_err(|e| {
            TlsError(format!(
                "{cert_flag} {} and {key_flag} {} do not make a usable identity: {e} (is the \
                 key the one the certificate was made for?)",
                cert.display(),
                key.display()
            ))
        })?;
    check_in_date(&chain[0], cert_flag, cert)?;
    Ok((chain, private))
}

/// Refuses a certificate that is expired or not yet valid: every caller
/// would refuse it at each handshake, naming nothing the node's operator
/// sees. Only the dates are checked (webpki checks them before anything
/// else, so trusting the certificate itself for the check is enough); who
/// signed it and which names it holds are for the callers to judge.
fn check_in_date(cert: &CertificateDer<'static>, flag: &str, path: &Path) -> Result<(), TlsError> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::{CertificateError, Error};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut itself = RootCertStore::empty();
    if itself.add(cert.clone()).is_err() {
        return Ok(()); // Not one webpki reads: rustls's own check has spoken.
    }
    let Ok(verifier) =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(itself), provider)
            .build()
    else {
        return Ok(());
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a valid name");
    let now = rustls::pki_types::UnixTime::now();
    match verifier.verify_server_cert(cert, &[], &name, &[], now) {
        Err(Error::InvalidCertificate(
            e @ (CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. }),
        )) => Err(TlsError(format!(
            "{flag} {}: {e} (make a new one: `searchtree certs --out DIR` for development)",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// What callers that trust `ca` (the tree's CA: this node's own --tls-ca)
/// would find wrong with `chain` when they dial it by `host`: a certificate
/// that does not chain to that CA, or does not name that host. Every
/// handshake would fail, and the failure would show in the callers' logs
/// as a transport error, not here; so it is said at start. `host` is
/// `None` when the node listens on a wildcard address and has no
/// advertised one: then only the chain is checked. A node whose callers
/// trust another CA than the one it trusts for its own calls (a tree with
/// a CA per level) is told so in a warning it may ignore, which is why
/// these are warnings and not refusals.
pub fn callers_would_refuse(
    chain: &[CertificateDer<'static>],
    ca: &[CertificateDer<'static>],
    host: Option<&str>,
) -> Vec<String> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::{CertificateError, Error};
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Vec::new();
    };
    let mut roots = RootCertStore::empty();
    for cert in ca {
        let _ = roots.add(cert.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
    else {
        return Vec::new();
    };
    // webpki checks the chain before the name: a name it does not hold is
    // the only error once the chain is good.
    let dialed = host.unwrap_or("localhost");
    let Ok(name) = rustls::pki_types::ServerName::try_from(dialed.to_string()) else {
        return Vec::new();
    };
    let now = rustls::pki_types::UnixTime::now();
    match verifier.verify_server_cert(end_entity, intermediates, &name, &[], now) {
        Ok(_) => Vec::new(),
        Err(Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) if host.is_none() => Vec::new(),
        Err(Error::InvalidCertificate(
            e @ (CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. }),
        )) => vec![format!(
            "--tls-cert does not name {dialed}, the host callers dial: they will refuse it \
             ({e}); make it for that name too (for development: `searchtree certs --out DIR \
             --hosts localhost,{dialed}`)"
        )],
        Err(e) => vec![format!(
            "--tls-cert does not verify against --tls-ca: callers that trust that CA will \
             refuse it ({e})"
        )],
    }
}

impl TlsArgs {
    /// The node's identity, if it has one.
    pub fn identity(&self) -> Result<Option<Identity>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                identity_from(cert, "--tls-cert", key, "--tls-key").map(Some)
            }
            _ => Ok(None),
        }
    }

    /// What callers trusting this node's --tls-ca would refuse in its
    /// --tls-cert when they dial `host` ([`callers_would_refuse`]); nothing
    /// without both flags.
    pub fn check_certificate_for(&self, host: Option<&str>) -> Result<Vec<String>, TlsError> {
        let (Some(cert), Some(ca)) = (&self.tls_cert, &self.tls_ca) else {
            return Ok(Vec::new());
        };
        let chain = read_some_certs(cert, "--tls-cert")?;
        let ca = read_some_certs(ca, "--tls-ca")?;
        Ok(callers_would_refuse(&chain, &ca, host))
    }

    /// The TLS settings of the node's HTTP port, or `None` for plain HTTP:
    /// the same certificate and key as its gRPC port, HTTP/1.1. Under mutual
    /// TLS a client certificate is asked for and verified against
    /// --tls-client-ca when one is offered, but not required: a browser
    /// seldom has one, and the page itself is open (what a caller without
    /// one may read is [`super::auth::AuthPolicy::check_http`]'s to say).
    pub fn http_server(&self) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
        self.rustls_server(true, vec![b"http/1.1".to_vec()], "the HTTP port's TLS")
    }

    /// The TLS settings of the node's gRPC port, or `None` for plaintext:
    /// HTTP/2 for gRPC callers, [`FRAMES_ALPN`] for callers of frames (the
    /// node tells them apart by what the handshake agreed). Under mutual
    /// TLS every caller must present a certificate --tls-client-ca signed.
    pub fn grpc_server(&self) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
        self.rustls_server(
            false,
            vec![b"h2".to_vec(), FRAMES_ALPN.to_vec()],
            "the gRPC port's TLS",
        )
    }

    /// A server config of the node's certificate and key speaking `alpn`;
    /// under mutual TLS, client certificates verified against
    /// --tls-client-ca, required unless `optional_client_cert`.
    fn rustls_server(
        &self,
        optional_client_cert: bool,
        alpn: Vec<Vec<u8>>,
        what: &str,
    ) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let (chain, key) = read_pair(cert, "--tls-cert", key, "--tls-key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let clients = match &self.tls_client_ca {
            None => WebPkiClientVerifier::no_client_auth(),
            Some(ca) => {
                let invalid = |e: &dyn std::fmt::Display| {
                    TlsError(format!("--tls-client-ca {}: {e}", ca.display()))
                };
                let builder = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(read_roots(ca, "--tls-client-ca")?),
                    Arc::clone(&provider),
                );
                let builder = if optional_client_cert {
                    builder.allow_unauthenticated()
                } else {
                    builder
                };
                builder.build().map_err(|e| invalid(&e))?
            }
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_client_cert_verifier(clients)
                    .with_single_cert(chain, key)
            })
            .map_err(|e| TlsError(format!("{what}: {e}")))?;
        config.alpn_protocols = alpn;
        Ok(Some(Arc::new(config)))
    }

    /// How this node calls its children as frames over TLS: trusting
    /// --tls-ca, presenting its own certificate to children that ask for
    /// one; `None` (plaintext) without --tls-ca.
    pub fn frames_client(&self) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let roots = read_roots(ca, "--tls-ca")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("--tls-ca {}: {e}", ca.display())))?
            .with_root_certificates(roots);
        let mut config = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let (chain, key) = read_pair(cert, "--tls-cert", key, "--tls-key")?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError(format!("--tls-cert {}: {e}", cert.display())))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![FRAMES_ALPN.to_vec()];
        Ok(Some(Arc::new(config)))
    }

    /// How this node calls others: TLS against --tls-ca (with its own
    /// identity for mutual TLS), or plaintext without it.
    pub fn client(&self) -> Result<Option<ClientTlsConfig>, TlsError> {
        client_tls(self.tls_ca.as_deref(), self.identity()?)
    }
}

/// The client TLS settings for a CA file and an optional identity, or
/// `None` (plaintext) without a CA.
pub fn client_tls(
    ca: Option<&Path>,
    identity: Option<Identity>,
) -> Result<Option<ClientTlsConfig>, TlsError> {
    let Some(ca) = ca else {
        return Ok(None);
    };
    read_some_certs(ca, "--tls-ca")?;
    let mut config =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?));
    if let Some(identity) = identity {
        config = config.identity(identity);
    }
    Ok(Some(config))
}
