//! Plain HTTP endpoints etcd serves beside gRPC: `/health`, `/livez`, `/readyz`, `/version`
//! and `/metrics`, plus the middleware that counts gRPC requests.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::{CLUSTER_VERSION, ETCD_VERSION};
use crate::metrics;
use crate::proto::etcdserverpb::AlarmType;
use crate::server::EtcdServer;

const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the member is unhealthy, in etcd's words, or `None` if it is healthy.
async fn health_problem(server: &EtcdServer, linearizable: bool) -> Option<String> {
    if let Some(a) = server.alarms().list().first() {
        let name = AlarmType::try_from(a.alarm)
            .map(|t| t.as_str_name())
            .unwrap_or("UNKNOWN");
        return Some(format!("ALARM {name}"));
    }
    if server.raft_status().leader.load(Ordering::SeqCst) == 0 {
        return Some("RAFT NO LEADER".into());
    }
    if linearizable {
        match tokio::time::timeout(HEALTH_TIMEOUT, server.read_barrier()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Some(format!("QGET ERROR: {e}")),
            Err(_) => return Some("QGET ERROR: timed out".into()),
        }
    }
    None
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn health(server: Arc<EtcdServer>) -> Response {
    match health_problem(&server, true).await {
        None => json(StatusCode::OK, r#"{"health":"true","reason":""}"#.into()),
        Some(reason) => {
            let reason = reason.replace('"', "'");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(r#"{{"health":"false","reason":"{reason}"}}"#),
            )
        }
    }
}

/// `/livez`: the process serves; it does not depend on quorum, so a liveness probe never
/// restarts members of a cluster that lost quorum.
async fn livez(server: Arc<EtcdServer>) -> Response {
    if server.raft_status().stopped.load(Ordering::SeqCst) {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "[-]serializable_read failed: server stopped\nlivez check failed\n".into(),
        );
    }
    match server.store().read() {
        Ok(_) => text(StatusCode::OK, "ok".into()),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]serializable_read failed: {e}\nlivez check failed\n"),
        ),
    }
}

/// `/readyz`: the member has a leader, no alarm, and can serve a linearizable read.
async fn readyz(server: Arc<EtcdServer>) -> Response {
    match health_problem(&server, true).await {
        None => text(StatusCode::OK, "ok".into()),
        Some(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]{reason}\nreadyz check failed\n"),
        ),
    }
}

async fn version() -> Response {
    json(
        StatusCode::OK,
        format!(r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{CLUSTER_VERSION}"}}"#),
    )
}

/// Refreshes the gauges that are read from server state, then renders all metrics.
fn metrics_text(server: &EtcdServer) -> String {
    let raft = server.raft_status();
    let leader = raft.leader.load(Ordering::SeqCst);
    metrics::HAS_LEADER.set(if leader != 0 { 1.0 } else { 0.0 });
    metrics::IS_LEADER.set(if leader == server.member_id() {
        1.0
    } else {
        0.0
    });
    metrics::LEADER_CHANGES.set(raft.leader_changes.load(Ordering::SeqCst) as f64);
    let commit = raft.commit.load(Ordering::SeqCst);
    let applied = server.applied_index();
    metrics::PROPOSALS_COMMITTED.set(commit as f64);
    metrics::PROPOSALS_APPLIED.set(applied as f64);
    metrics::PROPOSALS_PENDING.set(
        raft.last_index
            .load(Ordering::SeqCst)
            .saturating_sub(commit) as f64,
    );
    metrics::DB_SIZE.set(server.store().backend().size() as f64);
    metrics::KEYS_TOTAL.set(server.store().keys_total() as f64);
    metrics::CURRENT_REVISION.set(server.store().current_rev() as f64);
    // Counted where proposals fail; shown (as 0) from the first scrape on, as etcd does.
    std::sync::LazyLock::force(&metrics::PROPOSALS_FAILED);
    metrics::render()
}

/// The HTTP routes, served on client URLs (next to gRPC) and on `--listen-metrics-urls`.
pub fn router(server: Arc<EtcdServer>) -> Router {
    let (s1, s2, s3, s4) = (server.clone(), server.clone(), server.clone(), server);
    Router::new()
        .route("/health", get(move || health(s1.clone())))
        .route("/livez", get(move || livez(s2.clone())))
        .route("/readyz", get(move || readyz(s3.clone())))
        .route("/version", get(version))
        .route(
            "/metrics",
            get(move || {
                let s = s4.clone();
                async move { text(StatusCode::OK, metrics_text(&s)) }
            }),
        )
}

/// The one middleware in front of every client request: the gRPC metrics around etcd's
/// learner interceptor. One layer rather than two: each axum middleware layer costs a boxed
/// future and a clone of the inner service per request.
pub async fn client_edge(
    axum::extract::State(server): axum::extract::State<Arc<EtcdServer>>,
    req: Request,
    next: Next,
) -> Response {
    grpc_metrics(req, |req| learner_guard(server, req, next)).await
}

/// etcd's learner interceptor: a learner serves only `Status` and serializable `Range` (the
/// Range handler refuses linearizable ones); every other RPC gets
/// `etcdserver: rpc not supported for learner`.
async fn learner_guard(server: Arc<EtcdServer>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let allowed = !path.starts_with("/etcdserverpb.")
        && !path.starts_with("/v3lockpb.")
        && !path.starts_with("/v3electionpb.")
        || path == "/etcdserverpb.Maintenance/Status"
        || path == "/etcdserverpb.KV/Range";
    if allowed || !server.is_learner() {
        return next.run(req).await;
    }
    let status: tonic::Status = crate::error::EtcdError::NotSupportedForLearner.into();
    status.into_http::<axum::body::Body>().into_response()
}

/// grpc-go rejects a request above the receive limit with ResourceExhausted and
/// "grpc: received message larger than max (N vs. M)"; tonic says OutOfRange with its own
/// text. Clients match on grpc-go's, so rewrite it.
fn oversized_to_resource_exhausted(resp: &mut Response) {
    let h = resp.headers();
    if h.get("grpc-status").and_then(|v| v.to_str().ok()) != Some("11") {
        return;
    }
    let Some(msg) = h.get("grpc-message").and_then(|v| v.to_str().ok()) else {
        return;
    };
    let decoded = percent_encoding::percent_decode_str(msg).decode_utf8_lossy();
    let Some(rest) = decoded.strip_prefix("Error, decoded message length too large: found ") else {
        return;
    };
    let nums: Vec<&str> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    let [found, limit, ..] = nums.as_slice() else {
        return;
    };
    let text = format!("grpc: received message larger than max ({found} vs. {limit})");
    let headers = resp.headers_mut();
    headers.insert("grpc-status", axum::http::HeaderValue::from_static("8"));
    if let Ok(v) = axum::http::HeaderValue::from_str(&text) {
        headers.insert("grpc-message", v);
    }
}

/// Counts gRPC requests under go-grpc-prometheus' names around `next`. Plain HTTP requests
/// for unknown paths get 404, not gRPC's "unimplemented".
async fn grpc_metrics<F, Fut>(req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !is_grpc {
        let resp = next(req).await;
        if resp.headers().get("grpc-status").is_some() {
            return StatusCode::NOT_FOUND.into_response();
        }
        return resp;
    }
    let path = req.uri().path().to_owned();
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return next(req).await;
    };
    if !service.contains('.') {
        return next(req).await;
    }
    let kind = metrics::grpc_type(service, method);
    metrics::GRPC_STARTED
        .with_label_values(&[kind, service, method])
        .inc();
    let start = Instant::now();
    let mut resp = next(req).await;
    oversized_to_resource_exhausted(&mut resp);
    // Errors from unary handlers travel as trailers-only responses, so the status is a header.
    let code = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
        .unwrap_or(tonic::Code::Ok);
    metrics::GRPC_HANDLED
        .with_label_values(&[kind, service, method, metrics::code_name(code)])
        .inc();
    metrics::GRPC_SECONDS
        .with_label_values(&[kind, service, method])
        .observe(start.elapsed().as_secs_f64());
    resp
}
