//! An etcd v3 compatible server: etcd's gRPC API over an MVCC store replicated by Raft.
//!
//! # Layout
//!
//! Layers, each importing only the ones below it:
//!
//! 1. Edge: `serve` (client connections; unary KV calls answered on the connection's task,
//!    everything else through the tonic/axum router), `http` (`/health`, `/livez`, `/readyz`,
//!    `/version`, `/metrics`), `authority` (etcdctl 3.4's scheme-prefixed `:authority`).
//! 2. `api`: one module per etcd gRPC service and the peer service; validates requests and
//!    converts errors to etcd's exact gRPC statuses. `concurrency`: etcd's lock/election
//!    recipes, run in-process for those services.
//! 3. `server`: the member façade (`propose`, `read_barrier`, membership, status), with its
//!    bootstrap, its apply loop and the leader's lease clock in submodules.
//! 4. [`raft`] (the raft-rs driver thread, its input queue, WAL and peer sockets), `apply`
//!    (etcd's applier), `lease` (the lessor), `watch` (the watch hub), `alarm` (alarms and
//!    the quota), `membership` (member and cluster identity), `compactor` (auto-compaction).
//! 5. `mvcc` (key index in memory, revisions in the backend), then `backend` (redb).
//!
//! Beside the layers: [`config`] (etcd's flags and `ETCD_*` variables), `error` (etcd's
//! client-visible errors), `metrics` (etcd's metric names), [`snapshot`] (offline `snapshot
//! status` and `snapshot restore`), [`proto`] (the generated API, from the `etcd-api` crate).
//! Only [`config`], [`snapshot`], [`raft::wire`] and [`proto`] are public; everything else is
//! crate-private.

pub(crate) mod alarm;
pub(crate) mod api;
pub(crate) mod apply;
pub(crate) mod authority;
pub(crate) mod backend;
pub(crate) mod compactor;
pub(crate) mod concurrency;
pub mod config;
pub(crate) mod error;
pub(crate) mod http;
pub(crate) mod lease;
pub(crate) mod membership;
pub(crate) mod metrics;
pub(crate) mod mvcc;
pub mod raft;
pub(crate) mod serve;
pub(crate) mod server;
pub mod snapshot;
pub mod tls;
pub(crate) mod watch;

pub use etcd_api::proto;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{Config, GRPC_OVERHEAD_BYTES};
use crate::server::{EtcdServer, StartError};

/// Listeners the caller has already bound (so tests can bind port 0).
#[derive(Debug)]
pub struct Listeners {
    /// Client listeners: gRPC plus the HTTP endpoints.
    pub client: Vec<BoundListener>,
    /// `--listen-metrics-urls` listeners: the HTTP endpoints only.
    pub metrics: Vec<BoundListener>,
    /// Peer listeners: the member-to-member protocol.
    pub peer: Vec<BoundListener>,
}

/// One listener, bound by the caller.
#[derive(Debug)]
pub struct BoundListener {
    /// The socket.
    pub listener: TcpListener,
    /// What it serves.
    pub schemes: Schemes,
}

/// What a listener serves: the schemes of the listen URLs on its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schemes {
    /// Plain (`http://`).
    Http,
    /// TLS (`https://`).
    Https,
    /// Both, on one port (an `http://` and an `https://` URL with the same address, which
    /// etcd refuses): each connection is told apart by its first byte, a TLS handshake or not.
    /// This is how a running cluster moves between plain and TLS without a moment where a
    /// member serves neither.
    Both,
}

impl Schemes {
    /// The schemes of the URLs (`true` for `https://`) on one address.
    pub fn of(tls: impl IntoIterator<Item = bool>) -> Self {
        let (mut plain, mut secure) = (false, false);
        for t in tls {
            if t {
                secure = true;
            } else {
                plain = true;
            }
        }
        match (plain, secure) {
            (true, true) => Self::Both,
            (false, true) => Self::Https,
            _ => Self::Http,
        }
    }

    /// Whether it serves TLS at all.
    pub fn tls(self) -> bool {
        self != Self::Http
    }
}

/// Errors from [`run`].
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The member could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Serving gRPC failed.
    #[error("failed to serve client requests: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The cluster removed this member.
    #[error(
        "{}; remove its data directory before adding it again",
        membership::REMOVED_MESSAGE
    )]
    Removed,
    /// The client or peer port's TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Serving a client or metrics listener failed.
    #[error("failed to serve client or metrics connections: {0}")]
    Http(#[source] std::io::Error),
}

/// Runs one member on already-bound listeners until `shutdown` resolves.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    use crate::proto::etcdserverpb::{
        cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
        maintenance_server::MaintenanceServer, watch_server::WatchServer,
    };
    let max_msg = config.max_request_bytes as usize + GRPC_OVERHEAD_BYTES;
    // Bad TLS material stops the member before it joins anything.
    let client_tls = match &config.client_tls {
        Some(files) => Some(tls::ReloadingTls::load(files.clone())?),
        None => None,
    };
    let peer_tls = match &config.peer_tls {
        Some(files) => Some(tls::ReloadingTls::load(files.clone())?),
        None => None,
    };
    let start_tls = peer_tls.clone();
    let server = tokio::task::spawn_blocking(move || EtcdServer::start(config, start_tls))
        .await
        .map_err(|e| StartError::DataDir {
            path: String::new(),
            reason: e.to_string(),
        })??;
    tracing::info!(
        member_id = format!("{:x}", server.member_id()),
        "member started"
    );
    let compactor = tokio::spawn(compactor::run(
        server.clone(),
        server.config().auto_compaction,
        server.config().auto_compaction_check,
    ));
    let leases = tokio::spawn(server::run_lease_expiry(server.clone()));
    let publish = {
        let s = server.clone();
        tokio::spawn(async move { s.publish_attributes().await })
    };
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let (client_stop, _) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let tls_watch: Vec<_> = client_tls
        .iter()
        .chain(&peer_tls)
        .map(|t| tokio::spawn(t.clone().watch()))
        .collect();
    for listener in listeners.client {
        let schemes = listener.schemes;
        let tls = schemes.tls().then(|| client_tls.clone()).flatten();
        let listener = listener.listener;
        let s = server.clone();
        let mut routes = tonic::service::Routes::builder();
        routes
            .add_service(
                KvServer::new(api::kv::KvService::new(s.clone()))
                    .max_decoding_message_size(max_msg),
            )
            .add_service(
                ClusterServer::new(api::cluster::ClusterService::new(s.clone()))
                    .max_decoding_message_size(max_msg),
            )
            .add_service(
                MaintenanceServer::new(api::maintenance::MaintenanceService::new(s.clone()))
                    .max_decoding_message_size(max_msg),
            )
            .add_service(
                LeaseServer::new(api::lease::LeaseService::new(s.clone()))
                    .max_decoding_message_size(max_msg),
            )
            .add_service(
                WatchServer::new(api::watch::WatchService::new(s.clone()))
                    .max_decoding_message_size(max_msg),
            )
            .add_service(crate::proto::v3lockpb::lock_server::LockServer::new(
                api::lock::LockService::new(s.clone()),
            ))
            .add_service(
                crate::proto::v3electionpb::election_server::ElectionServer::new(
                    api::election::ElectionService::new(s.clone()),
                ),
            );
        let app = routes
            .routes()
            .into_axum_router()
            .merge(http::router(s.clone()))
            .layer(axum::middleware::from_fn_with_state(
                s.clone(),
                http::client_edge,
            ));
        let service = serve::ClientService::new(app, s.clone(), max_msg);
        let stop = client_stop.subscribe();
        tasks.push(tokio::spawn(async move {
            serve::serve(listener, service, stop, tls, schemes)
                .await
                .map_err(RunError::Http)
        }));
    }
    for listener in listeners.peer {
        let schemes = listener.schemes;
        let tls = schemes.tls().then(|| peer_tls.clone()).flatten();
        let listener = listener.listener;
        let mut stop = stop_tx.subscribe();
        let svc = crate::proto::peerpb::peer_server::PeerServer::new(api::peer::PeerService::new(
            server.clone(),
        ))
        .max_decoding_message_size(64 * 1024 * 1024);
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_millis(500)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(2)))
            .add_service(svc);
        // Raft streams go to the Raft thread; everything else to the gRPC server.
        let (grpc_tx, grpc_rx) = tokio::sync::mpsc::channel(64);
        let (s, accept_stop) = (server.clone(), stop_tx.subscribe());
        tasks.push(tokio::spawn(async move {
            api::peer::route_connections(listener, tls, schemes, s, grpc_tx, accept_stop).await;
            Ok(())
        }));
        tasks.push(tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::ReceiverStream::new(grpc_rx),
                    async move {
                        let _ = stop.recv().await;
                    },
                )
                .await
                .map_err(RunError::Serve)
        }));
    }
    for listener in listeners.metrics {
        let app = http::router(server.clone());
        let mut stop = stop_tx.subscribe();
        let stopped = async move {
            let _ = stop.recv().await;
        };
        let tls = listener.schemes.tls().then(|| client_tls.clone()).flatten();
        tasks.push(tokio::spawn(async move {
            match tls {
                Some(tls) => {
                    let inner = listener.listener;
                    axum::serve(tls::TlsListener { inner, tls }, app)
                        .with_graceful_shutdown(stopped)
                        .await
                }
                None => {
                    axum::serve(listener.listener, app)
                        .with_graceful_shutdown(stopped)
                        .await
                }
            }
            .map_err(RunError::Http)
        }));
    }
    let removed = {
        let s = server.clone();
        async move {
            while !s.is_removed() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    let mut result = Ok(());
    tokio::select! {
        _ = shutdown => {}
        _ = removed => {
            tracing::error!("this member was removed from the cluster; shutting down");
            result = Err(RunError::Removed);
        }
    }
    compactor.abort();
    leases.abort();
    for t in tls_watch {
        t.abort();
    }
    publish.abort();
    let _ = stop_tx.send(());
    client_stop.send_replace(true);
    // Graceful shutdown waits for open connections (watch streams never end on their own):
    // give them a moment, then close them.
    for mut t in tasks {
        match tokio::time::timeout(std::time::Duration::from_secs(3), &mut t).await {
            Ok(Ok(Err(e))) if result.is_ok() => result = Err(e),
            Ok(_) => {}
            Err(_) => t.abort(),
        }
    }
    let s: Arc<EtcdServer> = server;
    tokio::task::spawn_blocking(move || s.stop()).await.ok();
    result
}
