//! The operator's view of etcd's Cluster and Maintenance APIs, behind a trait so the reconcile
//! pipeline can be tested without servers; [`EtcdClient`] implements it with `etcd-client`.

use std::time::Duration;

use futures::future::BoxFuture;

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
}

/// [`EtcdAdmin`] over the `etcd-client` crate, with a fresh connection per call: the operator
/// talks to many clusters rarely, so pooling would only keep stale connections around.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

impl Default for EtcdClient {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl EtcdClient {
    async fn connect(&self, endpoints: &[String]) -> Result<etcd_client::Client, Error> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout);
        etcd_client::Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| Error::Unreachable {
                endpoints: endpoints.join(","),
                message: e.to_string(),
            })
    }
}

fn rejected(op: &'static str) -> impl FnOnce(etcd_client::Error) -> Error {
    move |e| Error::Rejected {
        op,
        message: e.to_string(),
    }
}

/// Whether another member may succeed where this one failed: it is unreachable, a learner,
/// or reports itself unavailable.
fn try_next(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable || s.message().contains("learner")
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

impl EtcdClient {
    /// Runs `call` against each endpoint in turn, each on its own connection, until one
    /// answers. etcd-client balances a multi-endpoint connection without failing over on
    /// errors, so one learner (which refuses membership calls) or one member that is down
    /// would otherwise fail calls at random.
    async fn on_each<T, F, Fut>(
        &self,
        endpoints: &[String],
        op: &'static str,
        unreachable_is_rejection: bool,
        call: F,
    ) -> Result<T, Error>
    where
        F: Fn(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for endpoint in endpoints {
            let client = match self.connect(std::slice::from_ref(endpoint)).await {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match call(client).await {
                Ok(v) => return Ok(v),
                Err(e) if try_next(&e) => {
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
                Err(e) => return Err(rejected(op)(e)),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unreachable {
            endpoints: endpoints.join(","),
            message: "no endpoints".to_owned(),
        }))
    }
}

impl EtcdAdmin for EtcdClient {
    fn member_list<'a>(
        &'a self,
        endpoints: &'a [String],
    ) -> BoxFuture<'a, Result<MemberList, Error>> {
        Box::pin(async move {
            let resp = self
                .on_each(endpoints, "list members", false, |mut c| async move {
                    c.member_list().await
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
                cluster_id: resp.header().map(|h| h.cluster_id()).unwrap_or_default(),
                members: resp
                    .members()
                    .iter()
                    .map(|m| ListedMember {
                        id: m.id(),
                        name: m.name().to_owned(),
                        peer_urls: m.peer_urls().to_vec(),
                        client_urls: m.client_urls().to_vec(),
                        is_learner: m.is_learner(),
                    })
                    .collect(),
            })
        })
    }

    fn status<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<EtcdStatus, Error>> {
        Box::pin(async move {
            let endpoints = [endpoint.to_owned()];
            let mut client = self.connect(&endpoints).await?;
            let s = client.status().await.map_err(|e| Error::Unreachable {
                endpoints: endpoint.to_owned(),
                message: e.to_string(),
            })?;
            Ok(EtcdStatus {
                member_id: s.header().map(|h| h.member_id()).unwrap_or_default(),
                leader: s.leader(),
                version: s.version().to_owned(),
                raft_index: s.raft_index(),
                errors: s.errors().to_vec(),
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
                    let options = etcd_client::MemberAddOptions::new().with_is_learner();
                    c.member_add([peer_url], Some(options)).await
                })
                .await?;
            Ok(resp.member().map(|m| m.id()).unwrap_or_default())
        })
    }

    fn promote<'a>(&'a self, endpoints: &'a [String], id: u64) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.on_each(endpoints, "promote a learner", true, |mut c| async move {
                c.member_promote(id).await
            })
            .await?;
            Ok(())
        })
    }

    fn remove<'a>(&'a self, endpoints: &'a [String], id: u64) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.on_each(endpoints, "remove a member", true, |mut c| async move {
                c.member_remove(id).await
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
            let mut client = self.connect(&[leader_endpoint.to_owned()]).await?;
            client
                .move_leader(to)
                .await
                .map_err(rejected("move the leader"))?;
            Ok(())
        })
    }
}
