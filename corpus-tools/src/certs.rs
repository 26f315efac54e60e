//! Development certificates: a CA, one certificate every node uses (as
//! server and as client of its children), one for operators' tools, and a
//! random admin token — what a local tree needs to run with TLS, mutual TLS
//! and authenticated admin calls. Real deployments bring their own PKI; the
//! nodes only read PEM files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files `searchtree certs` writes, by name within the directory.
pub mod files {
    /// The CA certificate: what clients and nodes trust.
    pub const CA: &str = "ca.pem";
    /// The CA's key (keep it to make more certificates; nothing reads it).
    pub const CA_KEY: &str = "ca.key";
    /// The nodes' certificate (server and client auth).
    pub const NODE: &str = "node.pem";
    /// Its key.
    pub const NODE_KEY: &str = "node.key";
    /// The operators' client certificate (mutual TLS).
    pub const CLIENT: &str = "client.pem";
    /// Its key.
    pub const CLIENT_KEY: &str = "client.key";
    /// The admin token (one line).
    pub const ADMIN_TOKEN: &str = "admin.token";
}

/// The hosts a development certificate is valid for by default.
pub const DEFAULT_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// A directory of development certificates.
#[derive(Debug, Clone)]
pub struct CertDir(pub PathBuf);

impl CertDir {
    /// The path of one of its [`files`].
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Whether every file is there.
    pub fn is_complete(&self) -> bool {
        [
            files::CA,
            files::NODE,
            files::NODE_KEY,
            files::CLIENT,
            files::CLIENT_KEY,
            files::ADMIN_TOKEN,
        ]
        .iter()
        .all(|f| self.file(f).is_file())
    }
}

/// Writes a CA, a node certificate valid for `hosts` (names and IP
/// addresses), a client certificate and an admin token into `dir`.
pub fn generate(dir: &Path, hosts: &[String]) -> anyhow::Result<CertDir> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "searchtree development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |name: &str, sans: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = usages;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        anyhow::Ok((cert.pem(), key.serialize_pem()))
    };
    let (node, node_key) = leaf(
        "searchtree node",
        hosts.to_vec(),
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    let (client, client_key) = leaf(
        "searchtree operator",
        Vec::new(),
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    let token = random_token()?;
    let out = CertDir(dir.to_path_buf());
    for (name, text, secret) in [
        (files::CA, ca_pem, false),
        (files::CA_KEY, ca_key_pem, true),
        (files::NODE, node, false),
        (files::NODE_KEY, node_key, true),
        (files::CLIENT, client, false),
        (files::CLIENT_KEY, client_key, true),
        (files::ADMIN_TOKEN, format!("{token}\n"), true),
    ] {
        write_file(&out.file(name), &text, secret)?;
    }
    Ok(out)
}

/// 128 bits from the operating system's CSPRNG, as 32 hex digits.
fn random_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the admin token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `text` to `path`; secrets readable by their owner only.
fn write_file(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let _ = secret;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_and_the_node_certificate_names_its_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let hosts: Vec<String> = DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect();
        let certs = generate(dir.path(), &hosts).unwrap();
        assert!(certs.is_complete());
        let node = std::fs::read_to_string(certs.file(files::NODE)).unwrap();
        assert!(node.starts_with("-----BEGIN CERTIFICATE-----"));
        let token = std::fs::read_to_string(certs.file(files::ADMIN_TOKEN)).unwrap();
        assert_eq!(token.trim().len(), 32);
        // The nodes load what was written.
        let args = searchtree_node::ops::tls::TlsArgs {
            tls_cert: Some(certs.file(files::NODE)),
            tls_key: Some(certs.file(files::NODE_KEY)),
            tls_ca: Some(certs.file(files::CA)),
            tls_client_ca: Some(certs.file(files::CA)),
        };
        assert!(args.grpc_server().unwrap().is_some());
        assert!(args.client().unwrap().is_some());
        assert!(args.frames_client().unwrap().is_some());
    }
}
