//! A small etcd v3 client over the cluster's gRPC API: ranges and puts,
//! leases and watches, spread over the cluster's endpoints.
//!
//! Every endpoint gets a lazily connected channel. A call goes to the
//! endpoint that last answered; if that fails (the member is down, or has no
//! leader), the call moves on to the next endpoint, so losing a minority of
//! the cluster, or its leader, costs a retry, not an error. Every call has a
//! timeout: a member that hangs is passed over like one that refuses.
//!
//! An etcd that serves TLS is reached over `https://` endpoints with the
//! CA that signed its certificate (and a client certificate, for etcd's
//! `--client-cert-auth`); one with authentication enabled, as a user whose
//! token every call carries, renewed when etcd says it is stale.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::pb;
use crate::pb::auth_client::AuthClient;
use crate::pb::kv_client::KvClient;
use crate::pb::lease_client::LeaseClient;
use crate::pb::maintenance_client::MaintenanceClient;
use crate::pb::watch_client::WatchClient;

/// How long one unary call to one member may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting to one member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest answer read from etcd, in bytes: as etcd's own client takes.
/// A prefix read returns every record under the prefix in one message, and
/// etcd takes records of up to 1.5 MiB each: a handful of large ones (junk
/// written under the prefix) already pass gRPC's default limit of 4 MiB,
/// and a node held to that limit could never read its tree's membership.
const MAX_ANSWER_BYTES: usize = i32::MAX as usize;

/// A KV client on `channel` that reads answers of any size etcd sends.
fn kv(channel: EtcdChannel) -> KvClient<EtcdChannel> {
    KvClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES)
}

/// How this process reaches etcd: over TLS or not, as a user or not.
#[derive(Debug, Clone, Default)]
pub struct EtcdSecurity {
    /// TLS for `https://` endpoints: the CA that signed etcd's certificate,
    /// and a client certificate for an etcd that asks for one. `None`:
    /// plaintext, `http://` endpoints only.
    pub tls: Option<ClientTlsConfig>,
    /// The user to authenticate as, for an etcd with authentication
    /// enabled.
    pub credentials: Option<EtcdCredentials>,
}

/// An etcd user and its password.
#[derive(Clone)]
pub struct EtcdCredentials {
    /// The user's name.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for EtcdCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCredentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a call to etcd goes through: a member's channel, carrying the
/// user's token when there is one.
pub type EtcdChannel = InterceptedService<Channel, TokenHeader>;

/// Puts the user's token on a call (etcd reads it from the `token`
/// header).
#[derive(Debug, Clone)]
pub struct TokenHeader(Option<MetadataValue<Ascii>>);

impl Interceptor for TokenHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("token", token.clone());
        }
        Ok(request)
    }
}

/// The user's credentials and the token they last got.
struct Auth {
    credentials: EtcdCredentials,
    token: std::sync::Mutex<Option<MetadataValue<Ascii>>>,
}

impl Auth {
    /// The token last got, locked.
    fn held(&self) -> std::sync::MutexGuard<'_, Option<MetadataValue<Ascii>>> {
        self.token.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether etcd refused a call for its token (expired, or issued before
/// the users or roles changed) rather than for what it asked: a new token
/// may get it through.
fn stale_token(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unauthenticated
        || status.message().contains("invalid auth token")
        || status.message().contains("auth store is old")
}

/// Why an etcd call failed (on every endpoint it was tried on).
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// An endpoint is not a valid URI.
    #[error("etcd endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No member answered.
    #[error("etcd unavailable ({endpoints}): {errors}")]
    Unavailable {
        /// The endpoints tried.
        endpoints: String,
        /// Each member's error, "; "-separated.
        errors: String,
    },
    /// A stream (watch or keep-alive) ended or failed.
    #[error("etcd stream ended: {0}")]
    Stream(String),
}

/// A failed call's status as an operator reads it: its code, its message
/// (empty from a server that is not etcd), and the transport's causes.
fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}", status.code());
    if !status.message().is_empty() {
        text.push_str(": ");
        text.push_str(status.message());
    }
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = std::error::Error::source(cause);
    }
    text
}

/// One watch event, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `key` now holds `value`.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
    },
    /// `key` was deleted (or its lease expired).
    Delete {
        /// The key.
        key: String,
    },
}

/// What a watch stream delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// Changes up to and including `revision`.
    Events {
        /// The store's revision after these events.
        revision: i64,
        /// The changes, in order.
        events: Vec<Event>,
    },
    /// The watch can no longer deliver every change since the revision it
    /// started at (compacted, or cancelled by the member): list again.
    Lost(String),
}

/// A client of one etcd cluster.
#[derive(Clone)]
pub struct Etcd {
    endpoints: Arc<Vec<(String, Channel)>>,
    /// The endpoint that answered last: calls start there.
    current: Arc<AtomicUsize>,
    /// The user calls are made as, if any.
    auth: Option<Arc<Auth>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoint_names())
            .finish()
    }
}

/// The range end that, with `prefix` as the key, selects every key starting
/// with `prefix` (etcd's convention: the prefix with its last byte plus one).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

impl Etcd {
    /// A client of the cluster whose members answer at `endpoints`
    /// (`http://host:port` or `host:port`, comma-separated or as a list),
    /// in plaintext and as nobody. Connects lazily: a cluster that is down
    /// now is not an error yet.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<Self, EtcdError> {
        Self::with_security(endpoints, &EtcdSecurity::default())
    }

    /// [`Etcd::new`], reaching the cluster as `security` says: with TLS,
    /// endpoints are `https://host:port` (or `host:port`).
    pub fn with_security<S: AsRef<str>>(
        endpoints: &[S],
        security: &EtcdSecurity,
    ) -> Result<Self, EtcdError> {
        let tls = security.tls.as_ref();
        let mut list = Vec::new();
        for endpoint in endpoints
            .iter()
            .flat_map(|e| e.as_ref().split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let uri = if endpoint.contains("://") {
                endpoint.to_string()
            } else if tls.is_some() {
                format!("https://{endpoint}")
            } else {
                format!("http://{endpoint}")
            };
            let refuse = |reason: &str| EtcdError::Endpoint {
                endpoint: endpoint.to_string(),
                reason: reason.to_string(),
            };
            let mut parsed = Endpoint::from_shared(uri).map_err(|e| refuse(&e.to_string()))?;
            match (parsed.uri().scheme_str(), tls) {
                (Some("http"), None) => {}
                (Some("https"), Some(tls)) => {
                    parsed = parsed
                        .tls_config(tls.clone())
                        .map_err(|e| refuse(&e.to_string()))?;
                }
                (Some("https"), None) => {
                    return Err(refuse(
                        "is https://: give --etcd-ca, the CA (PEM) that signed etcd's \
                         certificate",
                    ));
                }
                (Some("http"), Some(_)) => {
                    return Err(refuse(
                        "is http://, but etcd is reached over TLS (--etcd-ca): give \
                         https://HOST:PORT",
                    ));
                }
                _ => {
                    return Err(refuse(
                        "give it as http://HOST:PORT (or https://HOST:PORT with --etcd-ca)",
                    ));
                }
            }
            if parsed.uri().port_u16().is_none() {
                return Err(refuse(
                    "has no port: give it as http://HOST:PORT (etcd's client port is \
                     usually 2379)",
                ));
            }
            let channel = parsed
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(3))
                .keep_alive_while_idle(true)
                .connect_lazy();
            list.push((endpoint.to_string(), channel));
        }
        if list.is_empty() {
            return Err(EtcdError::Endpoint {
                endpoint: String::new(),
                reason: "no endpoint given".into(),
            });
        }
        Ok(Etcd {
            endpoints: Arc::new(list),
            current: Arc::new(AtomicUsize::new(0)),
            auth: security.credentials.clone().map(|credentials| {
                Arc::new(Auth {
                    credentials,
                    token: std::sync::Mutex::new(None),
                })
            }),
        })
    }

    /// The token calls carry: none without credentials; the last one
    /// etcd gave unless `renew`; else a new one, from `channel`'s member.
    async fn token(
        &self,
        channel: &Channel,
        renew: bool,
    ) -> Result<Option<MetadataValue<Ascii>>, tonic::Status> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        if !renew && let Some(token) = auth.held().clone() {
            return Ok(Some(token));
        }
        let request = pb::AuthenticateRequest {
            name: auth.credentials.user.clone(),
            password: auth.credentials.password.clone(),
        };
        let response = AuthClient::new(channel.clone())
            .authenticate(request)
            .await
            .map_err(|status| {
                tonic::Status::new(
                    status.code(),
                    format!(
                        "authenticating as {:?}: {}",
                        auth.credentials.user,
                        status.message()
                    ),
                )
            })?
            .into_inner();
        let token = response
            .token
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| {
                tonic::Status::unauthenticated("etcd gave a token that is not a header value")
            })?;
        *auth.held() = Some(token.clone());
        Ok(Some(token))
    }

    /// `channel` carrying `token`.
    fn with_token(channel: &Channel, token: Option<MetadataValue<Ascii>>) -> EtcdChannel {
        InterceptedService::new(channel.clone(), TokenHeader(token))
    }

    /// The endpoints, as given.
    pub fn endpoint_names(&self) -> Vec<String> {
        self.endpoints.iter().map(|(e, _)| e.clone()).collect()
    }

    /// The endpoints in the order a call tries them: the last one that
    /// answered first.
    fn order(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        (0..n).map(move |k| (start + k) % n)
    }

    /// Runs `call` against each endpoint in turn (the last one that
    /// answered first), each within [`CALL_TIMEOUT`], until one succeeds;
    /// calls then start at that one.
    async fn first_answer<T, F, Fut>(&self, mut call: F) -> Result<T, EtcdError>
    where
        F: FnMut(&str, EtcdChannel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut errors = Vec::new();
        for i in self.order().collect::<Vec<_>>() {
            let (name, channel) = &self.endpoints[i];
            // With credentials, a call refused for its token is made once
            // more with a new one.
            let attempt = async {
                let token = self.token(channel, false).await?;
                match call(name, Self::with_token(channel, token)).await {
                    Err(status) if self.auth.is_some() && stale_token(&status) => {
                        let token = self.token(channel, true).await?;
                        call(name, Self::with_token(channel, token)).await
                    }
                    answer => answer,
                }
            };
            match tokio::time::timeout(CALL_TIMEOUT, attempt).await {
                Ok(Ok(answer)) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(Err(status)) => errors.push(format!("{name}: {}", describe(&status))),
                Err(_) => errors.push(format!("{name}: no answer within {CALL_TIMEOUT:?}")),
            }
        }
        Err(EtcdError::Unavailable {
            endpoints: self.endpoint_names().join(","),
            errors: errors.join("; "),
        })
    }

    /// A unary call, on the first member that answers it.
    async fn unary<T, F, Fut>(&self, mut call: F) -> Result<T, EtcdError>
    where
        F: FnMut(EtcdChannel) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.first_answer(|_, channel| {
            let response = call(channel);
            async move { Ok(response.await?.into_inner()) }
        })
        .await
    }

    /// Every key starting with `prefix` and its value, and the store's
    /// revision they were read at (a linearizable read).
    pub async fn get_prefix(
        &self,
        prefix: &str,
    ) -> Result<(Vec<(String, Vec<u8>)>, i64), EtcdError> {
        let request = pb::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            ..Default::default()
        };
        let response = self
            .unary(|c| {
                let request = request.clone();
                async move { kv(c).range(request).await }
            })
            .await?;
        let revision = response.header.map_or(0, |h| h.revision);
        let kvs = response
            .kvs
            .into_iter()
            .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.value))
            .collect();
        Ok((kvs, revision))
    }

    /// The value of `key` and the lease it is attached to (0: none), or
    /// `None` if there is no such key (a linearizable read).
    pub async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, EtcdError> {
        let request = pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let response = self
            .unary(|c| {
                let request = request.clone();
                async move { kv(c).range(request).await }
            })
            .await?;
        Ok(response
            .kvs
            .into_iter()
            .next()
            .map(|kv| (kv.value, kv.lease)))
    }

    /// Sets `key` to `value`, attached to `lease` (0: none).
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<(), EtcdError> {
        let request = pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            prev_kv: false,
        };
        self.unary(|c| {
            let request = request.clone();
            async move { kv(c).put(request).await }
        })
        .await
        .map(drop)
    }

    /// Sets `key` to `value` (no lease) and returns the value it replaced,
    /// if there was one: for writers that must not lower what another
    /// wrote meanwhile (see [`crate::published::announce`]).
    pub async fn swap(&self, key: &str, value: Vec<u8>) -> Result<Option<Vec<u8>>, EtcdError> {
        let request = pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease: 0,
            prev_kv: true,
        };
        let response = self
            .unary(|c| {
                let request = request.clone();
                async move { kv(c).put(request).await }
            })
            .await?;
        Ok(response.prev_kv.map(|kv| kv.value))
    }

    /// Grants a lease of `ttl`; returns its id and the TTL granted (etcd may
    /// raise a TTL below its minimum).
    pub async fn grant(&self, ttl: Duration) -> Result<(i64, Duration), EtcdError> {
        let request = pb::LeaseGrantRequest {
            ttl: ttl.as_secs().max(1) as i64,
            id: 0,
        };
        let response = self
            .unary(|c| async move { LeaseClient::new(c).lease_grant(request).await })
            .await?;
        if !response.error.is_empty() {
            return Err(EtcdError::Unavailable {
                endpoints: self.endpoint_names().join(","),
                errors: response.error,
            });
        }
        Ok((response.id, Duration::from_secs(response.ttl.max(1) as u64)))
    }

    /// Revokes a lease: every key attached to it is deleted at once.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        let request = pb::LeaseRevokeRequest { id: lease };
        self.unary(|c| async move { LeaseClient::new(c).lease_revoke(request).await })
            .await
            .map(drop)
    }

    /// Opens a keep-alive stream for `lease` on the first member that takes
    /// it, renewing the lease once on the way (its answer is read here, so
    /// that each [`KeepAlive::renew`] reads its own); `None` if the lease
    /// is gone (expired or revoked).
    pub async fn keep_alive(&self, lease: i64) -> Result<Option<KeepAlive>, EtcdError> {
        self.first_answer(|_, channel| async move {
            let (mut tx, rx) = mpsc::channel(1);
            tx.send(pb::LeaseKeepAliveRequest { id: lease })
                .await
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
            let mut rx = LeaseClient::new(channel)
                .lease_keep_alive(rx)
                .await?
                .into_inner();
            match rx.message().await? {
                Some(first) if first.ttl > 0 => Ok(Some(KeepAlive { lease, tx, rx })),
                Some(_) => Ok(None),
                None => Err(tonic::Status::unavailable("keep-alive stream closed")),
            }
        })
        .await
    }

    /// Watches every key starting with `prefix`, from `revision` on, on the
    /// first member that takes the watch. The member must have a leader
    /// (`hasleader`): one cut off from the quorum cancels the watch rather
    /// than go silent, and the watcher moves on.
    pub async fn watch_prefix(&self, prefix: &str, revision: i64) -> Result<Watch, EtcdError> {
        self.first_answer(|name, channel| {
            let endpoint = name.to_string();
            async move {
                let (mut tx, rx) = mpsc::channel(1);
                let create = pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                        pb::WatchCreateRequest {
                            key: prefix.as_bytes().to_vec(),
                            range_end: prefix_end(prefix.as_bytes()),
                            start_revision: revision,
                            progress_notify: true,
                            ..Default::default()
                        },
                    )),
                };
                tx.send(create)
                    .await
                    .map_err(|e| tonic::Status::internal(e.to_string()))?;
                let mut request = tonic::Request::new(rx);
                request.metadata_mut().insert(
                    "hasleader",
                    tonic::metadata::MetadataValue::from_static("true"),
                );
                let mut stream = WatchClient::new(channel)
                    .max_decoding_message_size(MAX_ANSWER_BYTES)
                    .watch(request)
                    .await?
                    .into_inner();
                // The first message confirms the watch (or refuses it).
                match stream.message().await? {
                    Some(first) if first.created && !first.canceled => Ok(Watch {
                        _tx: tx,
                        stream,
                        endpoint,
                    }),
                    Some(first) => Err(tonic::Status::unavailable(format!(
                        "watch refused: {}",
                        first.cancel_reason
                    ))),
                    None => Err(tonic::Status::unavailable("watch stream closed")),
                }
            }
        })
        .await
    }

    /// Each member's status (`None` for one that does not answer): its id,
    /// the leader it knows, its version.
    pub async fn statuses(&self) -> Vec<(String, Option<pb::StatusResponse>)> {
        let calls = self.endpoints.iter().map(|(name, channel)| async move {
            let token = self.auth.as_ref().and_then(|auth| auth.held().clone());
            let mut client = MaintenanceClient::new(Self::with_token(channel, token));
            let call = client.status(pb::StatusRequest {});
            let status = match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(response)) => Some(response.into_inner()),
                _ => None,
            };
            (name.clone(), status)
        });
        futures::future::join_all(calls).await
    }
}

/// A lease's keep-alive stream on one member.
pub struct KeepAlive {
    lease: i64,
    tx: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    rx: tonic::Streaming<pb::LeaseKeepAliveResponse>,
}

impl KeepAlive {
    /// Renews the lease once; returns the TTL it now has (zero: the lease
    /// is gone, expired or revoked).
    pub async fn renew(&mut self) -> Result<Duration, EtcdError> {
        let exchange = async {
            self.tx
                .send(pb::LeaseKeepAliveRequest { id: self.lease })
                .await
                .map_err(|e| EtcdError::Stream(e.to_string()))?;
            match self.rx.message().await {
                Ok(Some(response)) => Ok(Duration::from_secs(response.ttl.max(0) as u64)),
                Ok(None) => Err(EtcdError::Stream("keep-alive stream closed".into())),
                Err(status) => Err(EtcdError::Stream(status.message().to_string())),
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(EtcdError::Stream("keep-alive not answered".into())))
    }
}

/// A watch on one member.
pub struct Watch {
    /// Held so the request side of the stream stays open.
    _tx: mpsc::Sender<pb::WatchRequest>,
    stream: tonic::Streaming<pb::WatchResponse>,
    endpoint: String,
}

impl Watch {
    /// The member this watch runs on.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next changes; progress notifications (no events) come as empty
    /// batches that still advance the revision.
    pub async fn next(&mut self) -> Result<WatchMessage, EtcdError> {
        let response = match self.stream.next().await {
            Some(Ok(response)) => response,
            Some(Err(status)) => return Err(EtcdError::Stream(status.message().to_string())),
            None => return Err(EtcdError::Stream("watch stream closed".into())),
        };
        if response.compact_revision != 0 {
            return Ok(WatchMessage::Lost(format!(
                "compacted at revision {}",
                response.compact_revision
            )));
        }
        if response.canceled {
            return Ok(WatchMessage::Lost(format!(
                "cancelled: {}",
                response.cancel_reason
            )));
        }
        let revision = response.header.map_or(0, |h| h.revision);
        let events = response
            .events
            .into_iter()
            .filter_map(|e| {
                let kv = e.kv?;
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                Some(if e.r#type == pb::mvccpb::event::EventType::Delete as i32 {
                    Event::Delete { key }
                } else {
                    Event::Put {
                        key,
                        value: kv.value,
                    }
                })
            })
            .collect();
        Ok(WatchMessage::Events { revision, events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_past_every_key_that_starts_with_it() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[tokio::test]
    async fn endpoints_take_a_scheme_or_not_and_commas() {
        let etcd = Etcd::new(&["127.0.0.1:2379, http://127.0.0.1:2479"]).unwrap();
        assert_eq!(
            etcd.endpoint_names(),
            ["127.0.0.1:2379", "http://127.0.0.1:2479"]
        );
        assert!(Etcd::new::<&str>(&[]).is_err());
        assert!(Etcd::new(&[" , "]).is_err());
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_call_names_every_endpoint_and_its_cause() {
        let dead = |_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (a, b) = (dead(0), dead(1));
        let etcd = Etcd::new(&[format!("http://{a},http://{b}")]).unwrap();
        let err = etcd.get_prefix("/x").await.unwrap_err().to_string();
        for addr in [a, b] {
            assert!(
                err.contains(&format!("http://{addr}: Unavailable: ")),
                "{addr}: {err}"
            );
        }
        assert!(err.contains("Connection refused"), "{err}");
    }

    #[tokio::test]
    async fn endpoints_need_a_scheme_that_matches_tls_and_a_port() {
        assert!(Etcd::new(&["http://127.0.0.1:2379,etcd-b:2379"]).is_ok());
        for (bad, why) in [
            ("https://etcd:2379", "give --etcd-ca"),
            ("http://etcd", "has no port"),
            ("etcd", "has no port"),
            ("ftp://etcd:2379", "http://HOST:PORT"),
        ] {
            let err = Etcd::new(&[bad]).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let tls = EtcdSecurity {
            tls: Some(ClientTlsConfig::new()),
            credentials: None,
        };
        assert!(Etcd::with_security(&["https://etcd-a:2379,etcd-b:2379"], &tls).is_ok());
        let err = Etcd::with_security(&["http://etcd:2379"], &tls)
            .unwrap_err()
            .to_string();
        assert!(err.contains("give https://HOST:PORT"), "{err}");
    }

    #[test]
    fn a_password_is_never_printed() {
        let credentials = EtcdCredentials {
            user: "searchtree".into(),
            password: "hunter2".into(),
        };
        let printed = format!("{credentials:?}");
        assert!(printed.contains("searchtree") && !printed.contains("hunter2"));
    }
}
