//! Prometheus metrics, under etcd's own metric names where etcd has one.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry, TextEncoder,
};

/// The registry every metric of this process is registered in.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<T: prometheus::core::Collector + Clone + 'static>(m: T) -> T {
    // Names are static and unique, so registration cannot collide.
    let _ = REGISTRY.register(Box::new(m.clone()));
    m
}

fn gauge(name: &str, help: &str) -> Gauge {
    register(Gauge::new(name, help).expect("valid metric"))
}

fn exp_buckets(start: f64, factor: f64, n: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, factor, n).expect("valid buckets")
}

/// `etcd_server_has_leader`.
pub static HAS_LEADER: LazyLock<Gauge> = LazyLock::new(|| {
    gauge(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
    )
});
/// `etcd_server_is_leader`.
pub static IS_LEADER: LazyLock<Gauge> = LazyLock::new(|| {
    gauge(
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
    )
});
/// `etcd_server_leader_changes_seen_total`.
pub static LEADER_CHANGES: LazyLock<Gauge> = LazyLock::new(|| {
    gauge(
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen.",
    )
});
/// `etcd_server_proposals_committed_total` (a gauge in etcd too).
pub static PROPOSALS_COMMITTED: LazyLock<Gauge> = LazyLock::new(|| {
    gauge(
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
    )
});
/// `etcd_server_proposals_applied_total`.
pub static PROPOSALS_APPLIED: LazyLock<Gauge> = LazyLock::new(|| {
    gauge(
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
    )
});
/// `etcd_server_proposals_pending`.
pub static PROPOSALS_PENDING: LazyLock<Gauge> = LazyLock::new(|| {
    gauge(
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit.",
    )
});
/// `etcd_server_proposals_failed_total`.
pub static PROPOSALS_FAILED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "etcd_server_proposals_failed_total",
            "The total number of failed proposals seen.",
        )
        .expect("valid metric"),
    )
});
/// `etcd_mvcc_db_total_size_in_bytes`.
pub static DB_SIZE: LazyLock<Gauge> = LazyLock::new(|| {
    gauge(
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
    )
});
/// `etcd_debugging_mvcc_keys_total`.
pub static KEYS_TOTAL: LazyLock<Gauge> =
    LazyLock::new(|| gauge("etcd_debugging_mvcc_keys_total", "Total number of keys."));
/// `etcd_mvcc_current_revision`... etcd exposes it as `etcd_debugging_mvcc_current_revision`.
pub static CURRENT_REVISION: LazyLock<Gauge> = LazyLock::new(|| {
    gauge(
        "etcd_debugging_mvcc_current_revision",
        "The current revision of store.",
    )
});
/// `etcd_disk_wal_fsync_duration_seconds`.
pub static WAL_FSYNC: LazyLock<Histogram> = LazyLock::new(|| {
    register(
        Histogram::with_opts(
            HistogramOpts::new(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
            )
            .buckets(exp_buckets(0.001, 2.0, 14)),
        )
        .expect("valid metric"),
    )
});
/// `etcd_disk_backend_commit_duration_seconds`.
pub static BACKEND_COMMIT: LazyLock<Histogram> = LazyLock::new(|| {
    register(
        Histogram::with_opts(
            HistogramOpts::new(
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
            )
            .buckets(exp_buckets(0.001, 2.0, 14)),
        )
        .expect("valid metric"),
    )
});
/// `grpc_server_started_total` (go-grpc-prometheus names, as etcd exposes them).
pub static GRPC_STARTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
            ),
            &["grpc_type", "grpc_service", "grpc_method"],
        )
        .expect("valid metric"),
    )
});
/// `grpc_server_handled_total`.
pub static GRPC_HANDLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
            ),
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        )
        .expect("valid metric"),
    )
});
/// `grpc_server_handling_seconds`.
pub static GRPC_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(HistogramVec::new(HistogramOpts::new("grpc_server_handling_seconds", "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.").buckets(exp_buckets(0.0005, 2.0, 16)), &["grpc_type", "grpc_service", "grpc_method"]).expect("valid metric"))
});

/// `etcd_network_active_peers{Local,Remote}`: 1 while this member's Raft stream to the
/// peer is up.
pub static ACTIVE_PEERS: LazyLock<prometheus::GaugeVec> = LazyLock::new(|| {
    register(
        prometheus::GaugeVec::new(
            Opts::new(
                "etcd_network_active_peers",
                "The current number of active peer connections.",
            ),
            &["Local", "Remote"],
        )
        .expect("valid metric"),
    )
});
/// `etcd_server_tls_cert_expiry_seconds{role,sha256}`: the Unix time at which each loaded
/// certificate expires, labelled by what it serves (`client`) and its SHA-256 fingerprint, so
/// that whoever rotates certificates can confirm a member picked up the new one.
pub static TLS_CERT_EXPIRY: LazyLock<prometheus::GaugeVec> = LazyLock::new(|| {
    register(
        prometheus::GaugeVec::new(
            Opts::new(
                "etcd_server_tls_cert_expiry_seconds",
                "Unix time at which a loaded TLS certificate expires, by role and SHA-256.",
            ),
            &["role", "sha256"],
        )
        .expect("valid metric"),
    )
});
/// `etcd_network_disconnected_peers_total{Local,Remote}`.
pub static DISCONNECTED_PEERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "etcd_network_disconnected_peers_total",
                "The total number of disconnected peers.",
            ),
            &["Local", "Remote"],
        )
        .expect("valid metric"),
    )
});
/// `etcd_network_peer_sent_bytes_total{To}`.
pub static PEER_SENT_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "etcd_network_peer_sent_bytes_total",
                "The total number of bytes sent to peers.",
            ),
            &["To"],
        )
        .expect("valid metric"),
    )
});
/// `etcd_network_peer_received_bytes_total{From}`.
pub static PEER_RECEIVED_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "etcd_network_peer_received_bytes_total",
                "The total number of bytes received from peers.",
            ),
            &["From"],
        )
        .expect("valid metric"),
    )
});

/// Times a closure into `h`.
pub fn time<R>(h: &Histogram, f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = f();
    h.observe(start.elapsed().as_secs_f64());
    r
}

/// The gRPC method kind, as go-grpc-prometheus labels it.
pub fn grpc_type(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("etcdserverpb.Watch", "Watch") | ("etcdserverpb.Lease", "LeaseKeepAlive") => "bidi_stream",
        ("etcdserverpb.Maintenance", "Snapshot") | ("v3electionpb.Election", "Observe") => {
            "server_stream"
        }
        _ => "unary",
    }
}

/// Name of a gRPC status code as go-grpc-prometheus writes it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Renders every metric in the Prometheus text format.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&REGISTRY.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
