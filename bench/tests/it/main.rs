//! Integration test of the load generator: a real `etcd-server` process on free 127.0.0.1
//! ports, every workload run with a tiny total, and the reports checked for sanity.
//!
//! The server binary is the test kit's `server_binary()`: the one in this test's own target
//! directory (built by `cargo build --workspace`, as `scripts/test.sh` does), or
//! `ETCD_SERVER_BIN`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use etcd_bench::compare::{Cluster, ServerKind, Settings};
use etcd_bench::options::{
    ClientLib, Common, Consistency, LeaseOptions, PutOptions, RangeOptions, TxnPutOptions,
    WatchOptions, Workload,
};
use etcd_bench::{Report, run};

use etcd_test_kit::server_binary as server_bin;

fn common(endpoints: &[String], total: u64, conns: usize, clients: usize) -> Common {
    common_with(ClientLib::H2, endpoints, total, conns, clients)
}

fn common_with(
    lib: ClientLib,
    endpoints: &[String],
    total: u64,
    conns: usize,
    clients: usize,
) -> Common {
    let mut c = Common::new(endpoints.to_vec());
    (c.total, c.conns, c.clients, c.client) = (Some(total), conns, clients, lib);
    c.request_timeout = Duration::from_secs(20);
    c
}

fn assert_sane(r: &Report, ops: u64) {
    assert_eq!(r.errors_total, 0, "{}", r.to_text());
    assert_eq!(r.ops, ops, "{}", r.to_text());
    assert!(r.throughput > 0.0, "{}", r.to_text());
    let l = r.latency_ms;
    assert!(0.0 < l.min && l.min <= l.p50, "{}", r.to_text());
    assert!(
        l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max,
        "{}",
        r.to_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_completes_against_etcd_server() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = Settings {
        quota_backend_bytes: 1 << 30,
        snapshot_count: 10_000,
        log_level: "warn".into(),
        tls: None,
    };
    let mut cluster = Cluster::start(
        ServerKind::Ours,
        &server_bin(),
        1,
        &tmp.path().join("data"),
        &tmp.path().join("logs"),
        &settings,
    )
    .await
    .unwrap();
    let eps = cluster.endpoints();

    // The unary workloads with each client library; both count a server error by its kind.
    for lib in [ClientLib::H2, ClientLib::EtcdClient] {
        let mut c = common_with(lib, &eps, 200, 2, 10);
        c.target_leader = true;
        let put = PutOptions {
            val_size: 256,
            sequential_keys: true,
            ..PutOptions::default()
        };
        let r = run(&c, &Workload::Put(put)).await.unwrap();
        assert_sane(&r, 200);

        for consistency in [Consistency::Linearizable, Consistency::Serializable] {
            let range = RangeOptions {
                key: "00000001".into(),
                prefix: false,
                consistency,
            };
            let r = run(&common_with(lib, &eps, 200, 2, 10), &Workload::Range(range))
                .await
                .unwrap();
            assert_sane(&r, 200);
        }
        let prefix = RangeOptions {
            key: "0000".into(),
            prefix: true,
            ..RangeOptions::default()
        };
        let r = run(&common_with(lib, &eps, 20, 1, 2), &Workload::Range(prefix))
            .await
            .unwrap();
        assert_sane(&r, 20);

        let txn = TxnPutOptions {
            txn_ops: 4,
            ..TxnPutOptions::default()
        };
        let r = run(&common_with(lib, &eps, 100, 2, 5), &Workload::TxnPut(txn))
            .await
            .unwrap();
        assert_sane(&r, 100);
        let too_big = PutOptions {
            val_size: 2 * 1024 * 1024,
            ..PutOptions::default()
        };
        let r = run(&common_with(lib, &eps, 2, 1, 1), &Workload::Put(too_big))
            .await
            .unwrap();
        assert_eq!((r.ops, r.errors_total), (0, 2), "{lib:?}: {}", r.to_text());
        assert!(
            r.errors.keys().any(|k| k.starts_with("ResourceExhausted: grpc: received message larger than max")),
            "{lib:?}: {}",
            r.to_text()
        );
    }

    let watch = WatchOptions {
        watchers: 2,
        streams: 2,
        put_rate: 200.0,
        drain_timeout: Duration::from_secs(10),
        ..WatchOptions::default()
    };
    let r = run(&common(&eps, 20, 2, 1), &Workload::Watch(watch))
        .await
        .unwrap();
    assert_sane(&r, 40);
    assert_eq!(r.counters["puts"], 20);
    assert_eq!(r.counters["missing_events"], 0);

    let mut c = common(&eps, 100, 2, 4);
    c.total = None;
    c.duration = Some(Duration::from_millis(500));
    let r = run(&c, &Workload::LeaseKeepalive(LeaseOptions::default()))
        .await
        .unwrap();
    assert_eq!(r.errors_total, 0, "{}", r.to_text());
    assert!(r.ops > 0 && r.throughput > 0.0 && r.latency_ms.p50 <= r.latency_ms.max);

    let r = run(
        &common(&eps, 50, 1, 5),
        &Workload::Connect(RangeOptions::default()),
    )
    .await
    .unwrap();
    assert_sane(&r, 50);

    let samples = cluster.samples().unwrap();
    assert!(
        samples[0].rss_peak_bytes > 0 && samples[0].cpu_secs > 0.0,
        "{samples:?}"
    );
    cluster.check_alive().unwrap();
    cluster.stop();
}

/// `compare --tls`'s cluster: client and peer TLS with client certificates; the unary
/// workloads with both client libraries and the connection workload over TLS, and a client
/// without a certificate refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_run_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = etcd_bench::tls::make_cert_set(&tmp.path().join("certs")).unwrap();
    let settings = Settings {
        quota_backend_bytes: 1 << 30,
        snapshot_count: 10_000,
        log_level: "warn".into(),
        tls: Some(certs.clone()),
    };
    let mut cluster = Cluster::start(
        ServerKind::Ours,
        &server_bin(),
        1,
        &tmp.path().join("data"),
        &tmp.path().join("logs"),
        &settings,
    )
    .await
    .unwrap();
    let eps = cluster.endpoints();
    assert!(eps[0].starts_with("https://"), "{eps:?}");
    for lib in [ClientLib::H2, ClientLib::EtcdClient] {
        let mut c = common_with(lib, &eps, 100, 2, 10);
        c.tls = certs.clone();
        let r = run(&c, &Workload::Put(PutOptions::default()))
            .await
            .unwrap();
        assert_sane(&r, 100);
    }
    let mut c = common(&eps, 30, 1, 3);
    c.tls = certs.clone();
    let r = run(&c, &Workload::Connect(RangeOptions::default()))
        .await
        .unwrap();
    assert_sane(&r, 30);
    // Without a client certificate the handshake is refused: every request fails.
    c.tls.cert = None;
    c.tls.key = None;
    let r = run(&c, &Workload::Connect(RangeOptions::default()))
        .await
        .unwrap();
    assert_eq!(r.ops, 0, "{}", r.to_text());
    cluster.stop();
}
