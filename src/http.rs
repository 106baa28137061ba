//! The operator's HTTP endpoints: `/metrics` (Prometheus) and `/healthz`.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Serves the endpoints on `listener` (already bound, so tests can use port 0) until
/// `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn render_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_healthz_and_metrics() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Metrics::new();
        metrics.reconciles.inc();
        metrics.errors.with_label_values(&["apply"]).inc();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics, async {
            let _ = stopped.await;
        }));
        assert!(get(addr, "/healthz").await.ends_with("ok"));
        let body = get(addr, "/metrics").await;
        assert!(body.contains("etcd_operator_reconcile_total 1"), "{body}");
        assert!(
            body.contains("etcd_operator_reconcile_errors_total{error=\"apply\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("etcd_operator_reconcile_duration_seconds_bucket"),
            "{body}"
        );
        let _ = stop.send(());
        server.await.expect("join").expect("serve");
    }
}
