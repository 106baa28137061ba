//! HTTP endpoints.

use super::*;

pub(super) const METRICS: [&str; 7] = [
    "etcd_server_has_leader 1",
    "etcd_server_proposals_failed_total ",
    "etcd_mvcc_db_total_size_in_bytes ",
    "etcd_debugging_mvcc_keys_total ",
    "etcd_disk_wal_fsync_duration_seconds_count ",
    "etcd_disk_backend_commit_duration_seconds_count ",
    "grpc_server_handled_total{",
];

/// The value of the metric line that starts with `prefix` (`name ` or `name{labels} `).
pub(super) fn metric(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub(super) fn check_metrics(fails: &mut Vec<String>, what: &str, body: &str, keys: f64) {
    for m in METRICS {
        if !body.lines().any(|l| l.starts_with(m)) {
            fails.push(format!("{what}: no line starting with `{m}`"));
        }
    }
    let checks = [
        (
            "etcd_debugging_mvcc_keys_total ",
            metric(body, "etcd_debugging_mvcc_keys_total ").is_some_and(|v| v == keys),
        ),
        (
            "etcd_mvcc_db_total_size_in_bytes > 0",
            metric(body, "etcd_mvcc_db_total_size_in_bytes ").is_some_and(|v| v > 0.0),
        ),
        (
            "wal fsync count >= 1",
            metric(body, "etcd_disk_wal_fsync_duration_seconds_count ").is_some_and(|v| v >= 1.0),
        ),
        (
            "backend commit count >= 1",
            metric(body, "etcd_disk_backend_commit_duration_seconds_count ")
                .is_some_and(|v| v >= 1.0),
        ),
        (
            "handled Put OK >= 3",
            metric(body, PUT_OK).is_some_and(|v| v >= 3.0),
        ),
    ];
    for (name, ok) in checks {
        if !ok {
            fails.push(format!("{what}: {name} does not hold"));
        }
    }
}

pub(super) const PUT_OK: &str = r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} "#;

/// Every HTTP check on one server, as failure messages.
pub(super) fn http_checks(kind: Kind, rt: &tokio::runtime::Runtime) -> Vec<String> {
    let mut fails = Vec::new();
    let metrics_url = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let p = Proc::start(kind, &["--listen-metrics-urls", &metrics_url]);
    let mut c = rt.block_on(p.client());
    for k in ["m1", "m2", "m3"] {
        rt.block_on(c.put(k, "v", None)).unwrap();
    }
    rt.block_on(c.get("m1", None)).unwrap();
    for url in [p.client_url.as_str(), metrics_url.as_str()] {
        let at = |path: &str| format!("{kind:?} GET {url}{path}");
        let (code, _, body) = http_get(url, "/health");
        // 3.5 added the reason field.
        let want = if kind == Kind::Ours {
            r#"{"health":"true","reason":""}"#
        } else {
            r#"{"health":"true"}"#
        };
        if (code, body.trim_end()) != (200, want) {
            fails.push(format!(
                "{}: {code} {body:?}, want 200 {want:?}",
                at("/health")
            ));
        }

        let (code, _, body) = http_get(url, "/metrics");
        if code != 200 {
            fails.push(format!("{}: status {code}", at("/metrics")));
        }
        check_metrics(&mut fails, &at("/metrics"), &body, 3.0);

        // etcd 3.4 serves /version only on client URLs and has no /livez or /readyz.
        if kind == Kind::Ours || url == p.client_url {
            let (code, headers, body) = http_get(url, "/version");
            let (server, cluster) = if kind == Kind::Ours {
                ("3.5.", "3.5.0")
            } else {
                ("3.4.", "3.4.0")
            };
            let ok = code == 200
                && headers.contains("content-type: application/json")
                && body.starts_with(&format!(r#"{{"etcdserver":"{server}"#))
                && body
                    .trim_end()
                    .ends_with(&format!(r#","etcdcluster":"{cluster}"}}"#));
            if !ok {
                fails.push(format!("{}: {code} {body:?}\n{headers}", at("/version")));
            }
        }
        if kind == Kind::Ours {
            for path in ["/livez", "/readyz"] {
                let (code, _, body) = http_get(url, path);
                if (code, body.as_str()) != (200, "ok") {
                    fails.push(format!("{}: {code} {body:?}, want 200 \"ok\"", at(path)));
                }
            }
        }
        // An unknown path is a plain 404 on both URLs, as on etcd.
        let (code, headers, _) = http_get(url, "/no-such-path");
        if code != 404 {
            fails.push(format!(
                "{}: status {code}, want 404\n{headers}",
                at("/no-such-path")
            ));
        }
    }
    fails
}

#[test]
fn http_endpoints_on_client_and_metrics_urls() {
    let rt = rt();
    let mut fails = http_checks(Kind::Ours, &rt);
    if require(reference_etcd(), "reference etcd 3.4").is_some() {
        fails.extend(
            http_checks(Kind::Reference, &rt)
                .into_iter()
                .map(|f| format!("REFERENCE (the expectation is wrong): {f}")),
        );
    }
    assert!(fails.is_empty(), "HTTP endpoints:\n{}", fails.join("\n"));
}
