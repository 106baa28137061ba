//! The operator's view of etcd's Cluster and Maintenance APIs, behind a trait so the reconcile
//! pipeline can be tested without servers; [`EtcdClient`] implements it over gRPC with the
//! API types of the `etcd-api` crate.

use std::time::Duration;

use etcd_api::proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MemberUpdateRequest, MoveLeaderRequest, StatusRequest, cluster_client::ClusterClient,
    maintenance_client::MaintenanceClient,
};
use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};

/// Why a call to etcd failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No endpoint answered.
    #[error("failed to reach etcd at {endpoints}: {message}")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The client's error.
        message: String,
    },
    /// etcd answered with an error.
    #[error("failed to {op}: {message}")]
    Rejected {
        /// What was attempted.
        op: &'static str,
        /// etcd's error.
        message: String,
    },
}

/// etcd's strict-reconfiguration refusals: the cluster is still settling after the last
/// membership change (a member not yet connected long enough), and the same change will be
/// accepted a few seconds later.
const SETTLING: &[&str] = &[
    "etcdserver: unhealthy cluster",
    "etcdserver: re-configuration failed due to not enough started members",
];

impl Error {
    /// Whether etcd refused a membership change only because the cluster is still settling.
    pub fn is_settling(&self) -> bool {
        matches!(self, Self::Rejected { message, .. } if SETTLING.iter().any(|s| message.contains(s)))
    }
}

/// A member as etcd's member list reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMember {
    /// Member ID.
    pub id: u64,
    /// Name; empty until the member has started.
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs; empty until the member has started.
    pub client_urls: Vec<String>,
    /// Whether it is a learner.
    pub is_learner: bool,
}

/// etcd's member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberList {
    /// Cluster ID from the response header.
    pub cluster_id: u64,
    /// The members.
    pub members: Vec<ListedMember>,
}

/// One member's answer to `Maintenance.Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdStatus {
    /// The answering member's ID.
    pub member_id: u64,
    /// The leader it knows (0: none).
    pub leader: u64,
    /// etcd API version it reports.
    pub version: String,
    /// Its Raft index.
    pub raft_index: u64,
    /// Errors it reports (alarms).
    pub errors: Vec<String>,
}

/// What the operator needs from etcd.
pub trait EtcdAdmin: Send + Sync + 'static {
    /// Lists members through any of `endpoints`.
    fn member_list<'a>(
        &'a self,
        endpoints: &'a [String],
    ) -> BoxFuture<'a, Result<MemberList, Error>>;
    /// Asks the member at `endpoint` (only) for its status.
    fn status<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<EtcdStatus, Error>>;
    /// Adds a learner with `peer_url`; returns its ID.
    fn add_learner<'a>(
        &'a self,
        endpoints: &'a [String],
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<u64, Error>>;
    /// Promotes learner `id` to a voting member.
    fn promote<'a>(&'a self, endpoints: &'a [String], id: u64) -> BoxFuture<'a, Result<(), Error>>;
    /// Removes member `id`.
    fn remove<'a>(&'a self, endpoints: &'a [String], id: u64) -> BoxFuture<'a, Result<(), Error>>;
    /// Asks the leader at `leader_endpoint` to hand leadership to member `to`.
    fn move_leader<'a>(
        &'a self,
        leader_endpoint: &'a str,
        to: u64,
    ) -> BoxFuture<'a, Result<(), Error>>;
    /// Sets member `id`'s peer URLs to `[peer_url]` (`MemberUpdate`).
    fn update_peer_url<'a>(
        &'a self,
        endpoints: &'a [String],
        id: u64,
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>>;
    /// A snapshot of the member at `endpoint` (`Maintenance.Snapshot`): its revision (from
    /// the first message's header), then the bytes as they stream.
    fn snapshot<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<Snapshot, Error>> {
        Box::pin(async move {
            Err(Error::Unreachable {
                endpoints: endpoint.to_owned(),
                message: "this client takes no snapshots".to_owned(),
            })
        })
    }
    /// What the member at `endpoint` holds at `revision`: its `HashKV` and the number of
    /// keys (a count-only range over every key). How a restored backup is compared with the
    /// cluster it came from.
    fn digest<'a>(
        &'a self,
        endpoint: &'a str,
        revision: i64,
    ) -> BoxFuture<'a, Result<Digest, Error>> {
        let _ = revision;
        Box::pin(async move {
            Err(Error::Unreachable {
                endpoints: endpoint.to_owned(),
                message: "this client reads no digests".to_owned(),
            })
        })
    }
    /// The `/metrics` text at `url` (which certificates a member has loaded).
    fn metrics<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<String, Error>> {
        Box::pin(async move {
            Err(Error::Unreachable {
                endpoints: url.to_owned(),
                message: "this client reads no metrics".to_owned(),
            })
        })
    }
    /// The same client, presenting `tls` to `https://` endpoints (a cluster's own client
    /// certificate and trust bundle).
    fn with_tls(self: std::sync::Arc<Self>, tls: ClientTls) -> std::sync::Arc<dyn EtcdAdmin>;
}

/// A member's keyspace at one revision, as [`EtcdAdmin::digest`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Digest {
    /// `HashKV` at the revision.
    pub hash: u32,
    /// Keys at the revision.
    pub keys: i64,
}

/// A snapshot being streamed from a member.
pub struct Snapshot {
    /// The revision it holds (the first message's header).
    pub revision: i64,
    /// The member's cluster ID.
    pub cluster_id: u64,
    /// The member's server version.
    pub version: String,
    /// The bytes: the first message's, then the rest as they come.
    pub chunks: futures::stream::BoxStream<'static, Result<Vec<u8>, Error>>,
}

/// The client certificate and trust bundle for `https://` members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientTls {
    /// A directory with `ca.crt` and `operator.crt`/`operator.key` (else `client.crt` and
    /// `client.key`), read at every connection
    /// (so a rotation is picked up): the local runtime's.
    Dir(std::path::PathBuf),
    /// The PEM texts themselves (from the cluster's Secrets).
    Pem {
        /// The trust bundle.
        ca: String,
        /// The client certificate.
        cert: String,
        /// Its key.
        key: String,
    },
}

/// [`EtcdAdmin`] over etcd's gRPC API, with a fresh connection per call: the operator talks
/// to many clusters rarely, so pooling would only keep stale connections around.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// For `https://` endpoints: the client certificate and the trust bundle.
    pub tls: Option<ClientTls>,
}

impl Default for EtcdClient {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// Why one call to one member failed.
#[derive(Debug)]
enum CallError {
    /// No connection.
    Connect(String),
    /// The member answered with an error.
    Status(tonic::Status),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => f.write_str(e),
            Self::Status(s) => write!(f, "{}", s.message()),
        }
    }
}

impl From<tonic::Status> for CallError {
    fn from(s: tonic::Status) -> Self {
        Self::Status(s)
    }
}

impl CallError {
    /// Whether another member may succeed where this one failed: it is unreachable, a
    /// learner, or reports itself unavailable.
    fn try_next(&self) -> bool {
        match self {
            Self::Connect(_) => true,
            Self::Status(s) => {
                s.code() == tonic::Code::Unavailable
                    || s.code() == tonic::Code::DeadlineExceeded
                    || s.message().contains("learner")
            }
        }
    }
}

/// etcd's gRPC clients on one connection.
struct Conn {
    cluster: ClusterClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
}

impl EtcdClient {
    /// One connection to `endpoint`, with TLS for `https://`, for membership calls and
    /// metrics. The member may serve the other scheme than `endpoint` says (while a cluster
    /// moves between plain and TLS, members not yet restarted serve only the scheme they
    /// had), so the other is tried too: TLS first when the operator holds the cluster's
    /// client certificate (only this order tells at connect time: a TLS handshake with a
    /// plain member fails at once, while HTTP/2 to a TLS member looks connected until the
    /// first call), and plain after a TLS endpoint the operator has no certificate for yet
    /// (TLS being turned on). A member serving only TLS is never reached in plain, so a
    /// settled TLS cluster is never spoken to in the clear. Health checks use [`Self::status`],
    /// which keeps to the scheme the member advertises.
    async fn channel(&self, endpoint: &str) -> Result<(Channel, String), CallError> {
        let url = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("http://{endpoint}")
        };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or(&url)
            .to_owned();
        let (secure, plain) = (format!("https://{rest}"), format!("http://{rest}"));
        let order = match (&self.tls, url.starts_with("https://")) {
            (Some(_), _) => [secure, plain],
            (None, true) => [url.clone(), plain],
            (None, false) => return self.channel_to(&url).await,
        };
        // Both failed: report the attempt in the scheme asked for.
        let mut errors = Vec::new();
        for candidate in order {
            match self.channel_to(&candidate).await {
                Ok(c) => return Ok(c),
                Err(e) => errors.push((candidate, e)),
            }
        }
        let pick = errors.iter().position(|(c, _)| *c == url).unwrap_or(0);
        Err(errors.swap_remove(pick).1)
    }

    async fn channel_to(&self, url: &str) -> Result<(Channel, String), CallError> {
        let (url, endpoint) = (url.to_owned(), url);
        let mut ep = Endpoint::from_shared(url.clone())
            .map_err(|e| CallError::Connect(format!("bad endpoint {endpoint}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout);
        if url.starts_with("https://") {
            let (ca, cert, key) = match &self.tls {
                None => {
                    return Err(CallError::Connect(format!(
                        "{endpoint} is https but the operator has no client certificate"
                    )));
                }
                Some(ClientTls::Dir(dir)) => {
                    let read = |name: &str| {
                        std::fs::read(dir.join(name)).map_err(|e| {
                            CallError::Connect(format!(
                                "failed to read {}: {e}",
                                dir.join(name).display()
                            ))
                        })
                    };
                    // The operator's own pair, else (files published before it existed)
                    // the users'.
                    let own =
                        dir.join("operator.crt").exists() && dir.join("operator.key").exists();
                    let (cert, key) = if own {
                        ("operator.crt", "operator.key")
                    } else {
                        ("client.crt", "client.key")
                    };
                    (read("ca.crt")?, read(cert)?, read(key)?)
                }
                Some(ClientTls::Pem { ca, cert, key }) => (
                    ca.clone().into_bytes(),
                    cert.clone().into_bytes(),
                    key.clone().into_bytes(),
                ),
            };
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .identity(tonic::transport::Identity::from_pem(cert, key));
            ep = ep
                .tls_config(tls)
                .map_err(|e| CallError::Connect(format!("{e}: {}", source_chain(&e))))?;
        }
        let channel = ep
            .connect()
            .await
            .map_err(|e| CallError::Connect(format!("{e}: {}", source_chain(&e))))?;
        Ok((channel, url))
    }

    async fn connect(&self, endpoint: &str) -> Result<Conn, CallError> {
        let (channel, _) = self.channel(endpoint).await?;
        Ok(Conn {
            cluster: ClusterClient::new(channel.clone()),
            maintenance: MaintenanceClient::new(channel),
        })
    }

    /// A member's `/metrics` text (over TLS for `https://`), read from its client port: how
    /// the operator learns which certificates a member has loaded.
    pub async fn read_metrics(&self, endpoint: &str) -> Result<String, Error> {
        use tonic::codegen::Service;
        let fail = |message: String| Error::Unreachable {
            endpoints: endpoint.to_owned(),
            message,
        };
        let (mut channel, url) = self
            .channel(endpoint)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let uri: tonic::codegen::http::Uri = format!("{}/metrics", url.trim_end_matches('/'))
            .parse()
            .map_err(|e| fail(format!("bad URL: {e}")))?;
        let req = tonic::codegen::http::Request::get(uri)
            .body(tonic::body::Body::empty())
            .map_err(|e| fail(e.to_string()))?;
        std::future::poll_fn(|cx| channel.poll_ready(cx))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let resp = channel.call(req).await.map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("/metrics answered {}", resp.status())));
        }
        let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 16 << 20)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Runs `call` against each endpoint in turn, each on its own connection, until one
    /// answers: one learner (which refuses membership calls) or one member that is down must
    /// not fail the call.
    async fn on_each<T, F, Fut>(
        &self,
        endpoints: &[String],
        op: &'static str,
        unreachable_is_rejection: bool,
        call: F,
    ) -> Result<T, Error>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let mut last = None;
        for endpoint in endpoints {
            let result = match self.connect(endpoint).await {
                Ok(conn) => call(conn).await.map_err(CallError::from),
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) if e.try_next() => {
                    last = Some(if unreachable_is_rejection {
                        Error::Rejected {
                            op,
                            message: e.to_string(),
                        }
                    } else {
                        Error::Unreachable {
                            endpoints: endpoint.clone(),
                            message: e.to_string(),
                        }
                    });
                }
                Err(e) => {
                    return Err(Error::Rejected {
                        op,
                        message: e.to_string(),
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Unreachable {
            endpoints: endpoints.join(","),
            message: "no endpoints".to_owned(),
        }))
    }
}

/// The causes under a transport error (its own text is only "transport error").
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

impl EtcdAdmin for EtcdClient {
    fn member_list<'a>(
        &'a self,
        endpoints: &'a [String],
    ) -> BoxFuture<'a, Result<MemberList, Error>> {
        Box::pin(async move {
            let resp = self
                .on_each(endpoints, "list members", false, |mut c| async move {
                    c.cluster
                        .member_list(MemberListRequest {
                            linearizable: false,
                        })
                        .await
                        .map(tonic::Response::into_inner)
                })
                .await
                .map_err(|e| match e {
                    Error::Rejected { message, .. } => Error::Unreachable {
                        endpoints: endpoints.join(","),
                        message,
                    },
                    e => e,
                })?;
            Ok(MemberList {
                cluster_id: resp.header.map(|h| h.cluster_id).unwrap_or_default(),
                members: resp
                    .members
                    .into_iter()
                    .map(|m| ListedMember {
                        id: m.id,
                        name: m.name,
                        peer_urls: m.peer_ur_ls,
                        client_urls: m.client_ur_ls,
                        is_learner: m.is_learner,
                    })
                    .collect(),
            })
        })
    }

    fn status<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<EtcdStatus, Error>> {
        Box::pin(async move {
            let unreachable = |e: CallError| Error::Unreachable {
                endpoints: endpoint.to_owned(),
                message: e.to_string(),
            };
            // The scheme the member advertises, strictly: a health check must not pass on
            // the other scheme when the advertised one is broken.
            let url = if endpoint.contains("://") {
                endpoint.to_owned()
            } else {
                format!("http://{endpoint}")
            };
            let (channel, _) = self.channel_to(&url).await.map_err(unreachable)?;
            let mut conn = Conn {
                cluster: ClusterClient::new(channel.clone()),
                maintenance: MaintenanceClient::new(channel),
            };
            let s = conn
                .maintenance
                .status(StatusRequest {})
                .await
                .map_err(|e| unreachable(e.into()))?
                .into_inner();
            Ok(EtcdStatus {
                member_id: s.header.map(|h| h.member_id).unwrap_or_default(),
                leader: s.leader,
                version: s.version,
                raft_index: s.raft_index,
                errors: s.errors,
            })
        })
    }

    fn add_learner<'a>(
        &'a self,
        endpoints: &'a [String],
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(async move {
            let resp = self
                .on_each(endpoints, "add a learner", true, |mut c| async move {
                    c.cluster
                        .member_add(MemberAddRequest {
                            peer_ur_ls: vec![peer_url.to_owned()],
                            is_learner: true,
                        })
                        .await
                        .map(tonic::Response::into_inner)
                })
                .await?;
            Ok(resp.member.map(|m| m.id).unwrap_or_default())
        })
    }

    fn promote<'a>(&'a self, endpoints: &'a [String], id: u64) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.on_each(endpoints, "promote a learner", true, |mut c| async move {
                c.cluster.member_promote(MemberPromoteRequest { id }).await
            })
            .await?;
            Ok(())
        })
    }

    fn remove<'a>(&'a self, endpoints: &'a [String], id: u64) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.on_each(endpoints, "remove a member", true, |mut c| async move {
                c.cluster.member_remove(MemberRemoveRequest { id }).await
            })
            .await?;
            Ok(())
        })
    }

    fn update_peer_url<'a>(
        &'a self,
        endpoints: &'a [String],
        id: u64,
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.on_each(endpoints, "update a member", true, |mut c| async move {
                c.cluster
                    .member_update(MemberUpdateRequest {
                        id,
                        peer_ur_ls: vec![peer_url.to_owned()],
                    })
                    .await
            })
            .await?;
            Ok(())
        })
    }

    fn move_leader<'a>(
        &'a self,
        leader_endpoint: &'a str,
        to: u64,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let rejected = |e: CallError| Error::Rejected {
                op: "move the leader",
                message: e.to_string(),
            };
            let mut conn = self.connect(leader_endpoint).await.map_err(rejected)?;
            conn.maintenance
                .move_leader(MoveLeaderRequest { target_id: to })
                .await
                .map_err(|e| rejected(e.into()))?;
            Ok(())
        })
    }

    fn metrics<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<String, Error>> {
        Box::pin(self.read_metrics(url))
    }

    fn digest<'a>(
        &'a self,
        endpoint: &'a str,
        revision: i64,
    ) -> BoxFuture<'a, Result<Digest, Error>> {
        use etcd_api::proto::etcdserverpb::{HashKvRequest, RangeRequest, kv_client::KvClient};
        Box::pin(async move {
            let fail = |message: String| Error::Unreachable {
                endpoints: endpoint.to_owned(),
                message,
            };
            let (channel, _) = self
                .channel(endpoint)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let hash = MaintenanceClient::new(channel.clone())
                .hash_kv(HashKvRequest { revision })
                .await
                .map_err(|e| fail(e.message().to_owned()))?
                .into_inner()
                .hash;
            let keys = KvClient::new(channel)
                .range(RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    revision,
                    count_only: true,
                    ..RangeRequest::default()
                })
                .await
                .map_err(|e| fail(e.message().to_owned()))?
                .into_inner()
                .count;
            Ok(Digest { hash, keys })
        })
    }

    fn snapshot<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<Snapshot, Error>> {
        use futures::StreamExt;
        Box::pin(async move {
            let fail = |message: String| Error::Unreachable {
                endpoints: endpoint.to_owned(),
                message,
            };
            let (channel, _) = self
                .channel(endpoint)
                .await
                .map_err(|e| fail(e.to_string()))?;
            // No overall deadline: a large snapshot streams for as long as it takes.
            let mut client = MaintenanceClient::new(channel);
            let mut stream = client
                .snapshot(etcd_api::proto::etcdserverpb::SnapshotRequest {})
                .await
                .map_err(|e| fail(e.message().to_owned()))?
                .into_inner();
            let first = stream
                .message()
                .await
                .map_err(|e| fail(e.message().to_owned()))?
                .ok_or_else(|| fail("the snapshot stream ended at once".to_owned()))?;
            let header = first.header.unwrap_or_default();
            let endpoint = endpoint.to_owned();
            let rest = stream.map(move |m| {
                m.map(|m| m.blob).map_err(|e| Error::Unreachable {
                    endpoints: endpoint.clone(),
                    message: format!("the snapshot stream broke: {}", e.message()),
                })
            });
            Ok(Snapshot {
                revision: header.revision,
                cluster_id: header.cluster_id,
                version: first.version.clone(),
                chunks: futures::stream::once(async move { Ok(first.blob) })
                    .chain(rest)
                    .boxed(),
            })
        })
    }

    fn with_tls(self: std::sync::Arc<Self>, tls: ClientTls) -> std::sync::Arc<dyn EtcdAdmin> {
        let mut c = (*self).clone();
        c.tls = Some(tls);
        std::sync::Arc::new(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_reconfiguration_refusals_are_settling() {
        let rejected = |message: &str| Error::Rejected {
            op: "add a learner",
            message: message.to_owned(),
        };
        assert!(rejected("etcdserver: unhealthy cluster").is_settling());
        assert!(
            rejected("etcdserver: re-configuration failed due to not enough started members")
                .is_settling()
        );
        assert!(!rejected("etcdserver: member not found").is_settling());
        let unreachable = Error::Unreachable {
            endpoints: "a".into(),
            message: "etcdserver: unhealthy cluster".into(),
        };
        assert!(!unreachable.is_settling());
    }
}
