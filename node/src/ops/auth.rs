//! Who may call what. Health checks and reflection are always open (load
//! balancers and `grpcurl list` need them); searches are open unless a
//! search token is set; everything else — stats and status, loads,
//! publishes, copies between replicas — is an admin call, which needs the
//! admin token (`authorization: Bearer TOKEN`) or, under mutual TLS, a
//! verified client certificate, once either is configured.
//!
//! The check runs before any service, on the request's headers alone, so a
//! refusal is immediate: `UNAUTHENTICATED` without credentials,
//! `PERMISSION_DENIED` with wrong ones — never a hang.

use std::path::{Path, PathBuf};

use clap::Args;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The authentication flags of a node.
#[derive(Debug, Clone, Default, Args)]
pub struct AuthArgs {
    /// Admin calls (NodeStats, Corpus: stats, status, load, publish, ...)
    /// need this bearer token, read from the file's first line — or, with
    /// --tls-client-ca, a verified client certificate. The node also sends
    /// it on its own calls to other nodes.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Searches (Search, Fetch) need this bearer token (or the admin token,
    /// or a verified client certificate). Without it, searching is open.
    #[arg(long)]
    pub search_token_file: Option<PathBuf>,
}

/// Reads a token file: its first line, trimmed; an empty one is refused.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    if token
        .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
        .is_err()
    {
        return Err(format!(
            "token file {}: the token must be printable ASCII",
            path.display()
        ));
    }
    Ok(token)
}

/// What a node requires of its callers.
#[derive(Debug, Clone, Default)]
pub struct AuthPolicy {
    /// The admin token, if one is set.
    pub admin_token: Option<String>,
    /// The search token, if searching is protected.
    pub search_token: Option<String>,
    /// Whether callers present verified certificates (mutual TLS); a
    /// verified certificate is an admin identity.
    pub mutual_tls: bool,
}

impl AuthPolicy {
    /// The policy the flags describe.
    pub fn from_args(auth: &AuthArgs, mutual_tls: bool) -> Result<Self, String> {
        Ok(AuthPolicy {
            admin_token: auth
                .admin_token_file
                .as_deref()
                .map(read_token)
                .transpose()?,
            search_token: auth
                .search_token_file
                .as_deref()
                .map(read_token)
                .transpose()?,
            mutual_tls,
        })
    }

    /// Whether anything is checked at all.
    pub fn is_open(&self) -> bool {
        self.admin_token.is_none() && self.search_token.is_none() && !self.mutual_tls
    }

    /// Judges a call to `path` with this `authorization` header and (under
    /// mutual TLS) whether a verified certificate came with it.
    pub fn check(
        &self,
        path: &str,
        authorization: Option<&[u8]>,
        has_certificate: bool,
    ) -> Result<(), tonic::Status> {
        self.check_class(class_of(path), authorization, has_certificate)
    }

    /// Judges a request to the node's HTTP port for `path`, with this
    /// `authorization` header and whether the connection came with a
    /// verified client certificate: the page itself is open (it asks for a
    /// token when its calls are refused); the search behind it is a
    /// search; metrics and the tree's status are admin reads, held to the
    /// same rules as the gRPC port's admin calls. So under mutual TLS alone
    /// a scraper needs a client certificate, and a browser without one
    /// sees only the page (give the node an admin token to let it in).
    pub fn check_http(
        &self,
        path: &str,
        authorization: Option<&[u8]>,
        has_certificate: bool,
    ) -> Result<(), tonic::Status> {
        let class = match path {
            "/" => Class::Open,
            "/api/search" => Class::Search,
            _ => Class::Admin,
        };
        self.check_class(class, authorization, has_certificate)
    }

    fn check_class(
        &self,
        class: Class,
        authorization: Option<&[u8]>,
        has_certificate: bool,
    ) -> Result<(), tonic::Status> {
        let tokens: Vec<&str> = match class {
            Class::Open => return Ok(()),
            Class::Search => {
                // Under mutual TLS the gRPC port admits no caller without a
                // certificate, so searching is never open then: a caller
                // without one (on the HTTP port) needs a token that allows it.
                if self.search_token.is_none() && !self.mutual_tls {
                    return Ok(());
                }
                [self.search_token.as_deref(), self.admin_token.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect()
            }
            Class::Admin => {
                if self.admin_token.is_none() && !self.mutual_tls {
                    return Ok(());
                }
                self.admin_token.as_deref().into_iter().collect()
            }
        };
        if self.mutual_tls && has_certificate {
            return Ok(());
        }
        let what = match class {
            Class::Search => "searching",
            _ => "this admin call",
        };
        let Some(header) = authorization else {
            return Err(tonic::Status::unauthenticated(format!(
                "{what} needs credentials: send `authorization: Bearer TOKEN`{}",
                if self.mutual_tls {
                    " or a client certificate"
                } else {
                    ""
                }
            )));
        };
        let Some(given) = header.strip_prefix(b"Bearer ") else {
            return Err(tonic::Status::unauthenticated(
                "the authorization header must be `Bearer TOKEN`",
            ));
        };
        if tokens.iter().any(|t| constant_time_eq(t.as_bytes(), given)) {
            Ok(())
        } else {
            Err(tonic::Status::permission_denied(format!(
                "the token given does not allow {what}"
            )))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Open,
    Search,
    Admin,
}

fn class_of(path: &str) -> Class {
    if path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.") {
        Class::Open
    } else if path.starts_with("/searchtree.v1.Search/") {
        Class::Search
    } else {
        Class::Admin
    }
}

/// Compares without an early exit, so the time taken says nothing of how
/// much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AuthPolicy {
    /// Judges `request` (its path, `authorization` header and, under mutual
    /// TLS, its verified certificate): `Err` with the refusal to send.
    pub fn judge<B>(&self, request: &http::Request<B>) -> Result<(), tonic::Status> {
        if self.is_open() {
            return Ok(());
        }
        let has_certificate = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs())
            .is_some_and(|certs| !certs.is_empty());
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        self.check(request.uri().path(), authorization, has_certificate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn policy(admin: Option<&str>, search: Option<&str>, mtls: bool) -> AuthPolicy {
        AuthPolicy {
            admin_token: admin.map(Into::into),
            search_token: search.map(Into::into),
            mutual_tls: mtls,
        }
    }

    const STATS: &str = "/searchtree.v1.NodeStats/GetStats";
    const LOAD: &str = "/searchtree.v1.Corpus/Load";
    const SEARCH: &str = "/searchtree.v1.Search/Search";
    const HEALTH: &str = "/grpc.health.v1.Health/Check";

    fn code(r: Result<(), tonic::Status>) -> Option<Code> {
        r.err().map(|s| s.code())
    }

    #[test]
    fn the_http_port_asks_for_the_tokens_the_grpc_port_does() {
        let p = policy(Some("s3cret"), Some("look"), false);
        assert_eq!(
            code(p.check_http("/", None, false)),
            None,
            "the page is open"
        );
        for admin in ["/metrics", "/api/tree"] {
            assert_eq!(
                code(p.check_http(admin, None, false)),
                Some(Code::Unauthenticated)
            );
            assert_eq!(
                code(p.check_http(admin, Some(b"Bearer look"), false)),
                Some(Code::PermissionDenied),
                "the search token is not an admin's"
            );
            assert_eq!(
                code(p.check_http(admin, Some(b"Bearer s3cret"), false)),
                None
            );
        }
        assert_eq!(
            code(p.check_http("/api/search", None, false)),
            Some(Code::Unauthenticated)
        );
        assert_eq!(
            code(p.check_http("/api/search", Some(b"Bearer look"), false)),
            None
        );
        assert_eq!(
            code(p.check_http("/api/search", Some(b"Bearer s3cret"), false)),
            None
        );
        // Nothing configured: all open, as before.
        let open = policy(None, None, false);
        assert_eq!(code(open.check_http("/metrics", None, false)), None);
        // Mutual TLS alone: everything but the page needs a verified
        // certificate, as every call on the gRPC port does.
        let mtls = policy(None, None, true);
        for admin in ["/metrics", "/api/tree", "/api/search"] {
            assert_eq!(
                code(mtls.check_http(admin, None, false)),
                Some(Code::Unauthenticated)
            );
            assert_eq!(code(mtls.check_http(admin, None, true)), None);
        }
        assert_eq!(code(mtls.check_http("/", None, false)), None);
        // Mutual TLS and an admin token: either lets an admin in.
        let both = policy(Some("s3cret"), None, true);
        assert_eq!(code(both.check_http("/metrics", None, true)), None);
        assert_eq!(
            code(both.check_http("/metrics", Some(b"Bearer s3cret"), false)),
            None
        );
        assert_eq!(
            code(both.check_http("/metrics", None, false)),
            Some(Code::Unauthenticated)
        );
    }

    #[test]
    fn admin_calls_need_the_admin_token_and_searches_stay_open() {
        let p = policy(Some("s3cret"), None, false);
        assert_eq!(
            code(p.check(STATS, None, false)),
            Some(Code::Unauthenticated)
        );
        assert_eq!(
            code(p.check(LOAD, Some(b"Bearer nope"), false)),
            Some(Code::PermissionDenied)
        );
        assert_eq!(
            code(p.check(LOAD, Some(b"s3cret"), false)),
            Some(Code::Unauthenticated)
        );
        assert_eq!(code(p.check(LOAD, Some(b"Bearer s3cret"), false)), None);
        assert_eq!(code(p.check(SEARCH, None, false)), None);
        assert_eq!(code(p.check(HEALTH, None, false)), None);
        assert_eq!(
            code(p.check(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                None,
                false
            )),
            None
        );
        assert_eq!(
            code(p.check("/other.Service/Anything", None, false)),
            Some(Code::Unauthenticated)
        );
    }

    #[test]
    fn a_search_token_protects_searches_and_the_admin_token_opens_them_too() {
        let p = policy(Some("admin"), Some("reader"), false);
        assert_eq!(
            code(p.check(SEARCH, None, false)),
            Some(Code::Unauthenticated)
        );
        assert_eq!(code(p.check(SEARCH, Some(b"Bearer reader"), false)), None);
        assert_eq!(code(p.check(SEARCH, Some(b"Bearer admin"), false)), None);
        assert_eq!(
            code(p.check(STATS, Some(b"Bearer reader"), false)),
            Some(Code::PermissionDenied)
        );
    }

    #[test]
    fn a_verified_certificate_is_an_admin_identity_under_mutual_tls() {
        let p = policy(None, Some("reader"), true);
        assert_eq!(code(p.check(STATS, None, true)), None);
        assert_eq!(code(p.check(SEARCH, None, true)), None);
        assert_eq!(
            code(p.check(STATS, None, false)),
            Some(Code::Unauthenticated)
        );
        assert!(policy(None, None, false).is_open());
        assert_eq!(
            code(policy(None, None, false).check(LOAD, None, false)),
            None
        );
    }

    #[test]
    fn token_files_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "  abc123 \nignored\n").unwrap();
        assert_eq!(read_token(&good).unwrap(), "abc123");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(read_token(&empty).unwrap_err().contains("empty"));
        assert!(read_token(&dir.join("missing")).is_err());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
