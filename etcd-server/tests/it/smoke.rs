//! Smoke test: the harness starts our server and the reference etcd, and both answer.

use crate::harness::{Kind, Proc, reference_etcd, require};

#[tokio::test(flavor = "multi_thread")]
async fn both_servers_start_and_answer() {
    let ours = tokio::task::spawn_blocking(|| Proc::start(Kind::Ours, &[]))
        .await
        .unwrap();
    let mut c = ours.client().await;
    c.put("k", "v", None).await.unwrap();
    let r = c.get("k", None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), b"v");
    if require(reference_etcd(), "reference etcd").is_some() {
        let theirs = tokio::task::spawn_blocking(|| Proc::start(Kind::Reference, &[]))
            .await
            .unwrap();
        let mut c = theirs.client().await;
        c.put("k", "v", None).await.unwrap();
        assert_eq!(
            c.get("k", None).await.unwrap().header().unwrap().revision(),
            2
        );
    }
}

/// `curl` against `url`: (HTTP version, status, response headers and body as one text).
fn curl(args: &[String], url: &str) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--max-time",
            "5",
            "-w",
            "\nVERSION=%{http_version}",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = text
        .rsplit_once("VERSION=")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    (version, text)
}

/// One client port serves HTTP/1.1 and HTTP/2 (prior knowledge) for the HTTP endpoints and
/// gRPC; malformed unary KV requests get gRPC errors (grpc-go's text for an oversized one),
/// and the member keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn one_port_serves_http1_h2c_and_grpc_and_rejects_bad_kv_frames() {
    if require(
        Some(std::path::PathBuf::from("/usr/bin/curl")).filter(|p| p.exists()),
        "curl",
    )
    .is_none()
    {
        return;
    }
    let ours = tokio::task::spawn_blocking(|| Proc::start(Kind::Ours, &[]))
        .await
        .unwrap();
    let base = ours.client_url.clone();
    let put = format!("{base}/etcdserverpb.KV/Put");
    let dir = tempfile::tempdir().unwrap();
    let oversized = dir.path().join("oversized");
    let truncated = dir.path().join("truncated");
    std::fs::write(&oversized, [0u8, 1, 0, 0, 0]).unwrap();
    std::fs::write(&truncated, [0u8, 0, 0, 0, 10, 0x0a, 1, b'k']).unwrap();
    let oversized = format!("@{}", oversized.display());
    let truncated = format!("@{}", truncated.display());
    let grpc_post = |body: &str| {
        [
            "--http2-prior-knowledge",
            "-X",
            "POST",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain(["--data-binary".to_owned(), body.to_owned()])
        .collect::<Vec<String>>()
    };
    let h2 = || vec!["--http2-prior-knowledge".to_owned()];
    let cases: Vec<(&str, Vec<String>, String, &str, &str)> = vec![
        (
            "HTTP/1.1 /health",
            vec![],
            format!("{base}/health"),
            "1.1",
            "\"health\":\"true\"",
        ),
        (
            "HTTP/2 /health",
            h2(),
            format!("{base}/health"),
            "2",
            "\"health\":\"true\"",
        ),
        (
            "HTTP/2 /metrics",
            h2(),
            format!("{base}/metrics"),
            "2",
            "etcd_server_has_leader 1",
        ),
        (
            "HTTP/2 unknown path",
            h2(),
            format!("{base}/nope"),
            "2",
            "HTTP/2 404",
        ),
        // A prefix announcing 16 MiB: refused before the body is read, as grpc-go words it.
        (
            "oversized Put",
            grpc_post(&oversized),
            put.clone(),
            "2",
            "grpc-status: 8",
        ),
        // A prefix announcing 10 bytes followed by 3.
        (
            "truncated Put",
            grpc_post(&truncated),
            put.clone(),
            "2",
            "grpc-status: 13",
        ),
    ];
    for (name, args, url, want_version, want) in &cases {
        let (version, text) = curl(args, url);
        assert_eq!(&version, want_version, "{name}: {text}");
        assert!(text.contains(want), "{name}: want {want:?} in {text}");
    }
    let (_, text) = curl(&grpc_post(&oversized), &put);
    assert!(
        text.contains("received%20message%20larger%20than%20max%20(16777216%20vs."),
        "{text}"
    );
    // Still serving, through the direct path and the router.
    let mut c = ours.client().await;
    c.put("k", "v", None).await.unwrap();
    assert_eq!(c.get("k", None).await.unwrap().kvs()[0].value(), b"v");
    assert!(c.status().await.is_ok());
}
