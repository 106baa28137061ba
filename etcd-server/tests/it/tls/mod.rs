//! TLS on the client port with real certificates: etcdctl 3.4.23 against our server and the
//! reference etcd 3.4.23 on the same certificate set (the same commands succeed and fail the
//! same way), and certificates and CAs rotated on disk under a continuous write load with no
//! failed request and no restart. `peer`: TLS between members; `flags`: CRLs, cipher suites,
//! TLS versions, the `ETCD_*` variables and `--auto-tls`.

mod flags;
mod peer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_server::proto::etcdserverpb::{PutRequest, kv_client::KvClient};
use etcd_test_kit::certs::{Ca, write_atomically};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::harness::{Kind, Proc, Spec, etcdctl, free_port, reference_etcd, require};

/// A CA, a server certificate for 127.0.0.1 and client certificates, on disk.
struct CertSet {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl CertSet {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("etcd-ca");
        write_atomically(&dir.path().join("ca.crt"), &ca.cert_pem);
        ca.leaf("server", &["127.0.0.1", "localhost"], false)
            .write(dir.path(), "server");
        ca.leaf("root", &[], false).write(dir.path(), "client");
        ca.leaf("root", &[], true).write(dir.path(), "expired");
        Ca::new("other-ca")
            .leaf("root", &[], false)
            .write(dir.path(), "stranger");
        Self { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server_flags(&self) -> Vec<String> {
        vec![
            format!("--cert-file={}", self.path("server.crt").display()),
            format!("--key-file={}", self.path("server.key").display()),
            format!("--trusted-ca-file={}", self.path("ca.crt").display()),
            "--client-cert-auth".into(),
        ]
    }
}

/// Starts a single member of `kind` serving TLS on its client URL (and plain HTTP on a second
/// one, for probes), and waits until etcdctl with a client certificate reaches it.
fn start_tls(kind: Kind, certs: &CertSet, extra: &[&str]) -> (Proc, String, tempfile::TempDir) {
    start_member(kind, certs, "http", extra)
}

/// [`start_tls`] with the peer URL's scheme (`https` needs the `--peer-*` flags in `extra`).
fn start_member(
    kind: Kind,
    certs: &CertSet,
    peer_scheme: &str,
    extra: &[&str],
) -> (Proc, String, tempfile::TempDir) {
    // Another test may take a picked port before the server binds it: pick again then.
    let mut last = String::new();
    for _ in 0..5 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (https, http, peer) = (free_port(), free_port(), free_port());
        let peer_url = format!("{peer_scheme}://127.0.0.1:{peer}");
        let mut flags = certs.server_flags();
        flags.extend(extra.iter().map(|s| s.to_string()));
        let https_url = format!("https://127.0.0.1:{https}");
        let mut p = Proc::launch(
            kind,
            Spec {
                name: "default".into(),
                client_url: format!("{https_url},http://127.0.0.1:{http}"),
                peer_url: peer_url.clone(),
                advertise_peer_url: peer_url.clone(),
                initial_cluster: format!("default={peer_url}"),
                initial_cluster_state: "new".into(),
                data_dir: tmp.path().join("data"),
                extra: flags,
            },
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready = loop {
            let (ok, _, _) = ctl(certs, &https_url, Some("client"), &["endpoint", "health"]);
            if ok {
                break true;
            }
            if !p.is_running() {
                last = p.log();
                assert!(
                    last.to_lowercase().contains("address already in use"),
                    "{kind:?} exited:\n{last}"
                );
                break false;
            }
            assert!(
                Instant::now() < deadline,
                "{kind:?} not ready over TLS:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        if ready {
            return (p, https_url, tmp);
        }
    }
    panic!("ports kept colliding:\n{last}");
}

/// etcdctl with the CA, and the client certificate `client` (`None`: no client certificate).
fn ctl(
    certs: &CertSet,
    endpoint: &str,
    client: Option<&str>,
    args: &[&str],
) -> (bool, String, String) {
    let bin = etcdctl().expect("etcdctl");
    let mut cmd = std::process::Command::new(bin);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=3s")
        .arg("--dial-timeout=2s")
        .arg(format!("--cacert={}", certs.path("ca.crt").display()));
    if let Some(c) = client {
        cmd.arg(format!(
            "--cert={}",
            certs.path(&format!("{c}.crt")).display()
        ))
        .arg(format!(
            "--key={}",
            certs.path(&format!("{c}.key")).display()
        ));
    }
    let out = cmd.args(args).output().expect("run etcdctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One transcript line per command: whether it succeeded, and its output with the parts that
/// differ between servers (IDs, ports, paths) left out.
fn transcript(kind: Kind, certs: &CertSet) -> Vec<String> {
    let (p, url, _tmp) = start_tls(kind, certs, &[]);
    let plain = url.replace("https://", "http://");
    let snap = _tmp.path().join("snap.db");
    let snap_arg = snap.display().to_string();
    let steps: Vec<(&str, &str, Option<&str>, Vec<&str>)> = vec![
        ("put", url.as_str(), Some("client"), vec!["put", "k", "v"]),
        (
            "get",
            url.as_str(),
            Some("client"),
            vec!["get", "k", "--print-value-only"],
        ),
        (
            "lease",
            url.as_str(),
            Some("client"),
            vec!["lease", "grant", "60"],
        ),
        (
            "members",
            url.as_str(),
            Some("client"),
            vec!["member", "list"],
        ),
        (
            "snapshot",
            url.as_str(),
            Some("client"),
            vec!["snapshot", "save", &snap_arg],
        ),
        (
            "no client certificate",
            url.as_str(),
            None,
            vec!["get", "k"],
        ),
        (
            "certificate of another CA",
            url.as_str(),
            Some("stranger"),
            vec!["get", "k"],
        ),
        (
            "expired certificate",
            url.as_str(),
            Some("expired"),
            vec!["get", "k"],
        ),
        (
            "plain HTTP to the TLS port",
            plain.as_str(),
            None,
            vec!["get", "k"],
        ),
    ];
    let mut t = Vec::new();
    for (what, ep, client, args) in steps {
        let (ok, out, _) = ctl(certs, ep, client, &args);
        let shown = match what {
            "get" => out.trim().to_owned(),
            "lease" => out.split_whitespace().skip(2).collect::<Vec<_>>().join(" "),
            "members" => format!("{} member(s)", out.lines().count()),
            _ => String::new(),
        };
        t.push(format!(
            "{what}: {} {shown}",
            if ok { "ok" } else { "refused" }
        ));
    }
    // The watch stream over TLS sees a put.
    let watcher = {
        let bin = etcdctl().expect("etcdctl");
        std::process::Command::new(bin)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={url}"))
            .arg(format!("--cacert={}", certs.path("ca.crt").display()))
            .arg(format!("--cert={}", certs.path("client.crt").display()))
            .arg(format!("--key={}", certs.path("client.key").display()))
            .args(["watch", "w"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcdctl watch")
    };
    std::thread::sleep(Duration::from_millis(700));
    ctl(certs, &url, Some("client"), &["put", "w", "seen"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut watcher = watcher;
    let _ = watcher.kill();
    let out = watcher.wait_with_output().expect("watch output");
    let seen = String::from_utf8_lossy(&out.stdout).contains("seen");
    t.push(format!("watch: {seen}"));
    drop(p);
    t
}

#[test]
fn etcdctl_over_tls_side_by_side_with_etcd() {
    let certs = CertSet::new();
    let ours = transcript(Kind::Ours, &certs);
    let expected = vec![
        "put: ok ",
        "get: ok v",
        "lease: ok granted with TTL(60s)",
        "members: ok 1 member(s)",
        "snapshot: ok ",
        "no client certificate: refused ",
        "certificate of another CA: refused ",
        "expired certificate: refused ",
        "plain HTTP to the TLS port: refused ",
        "watch: true",
    ];
    assert_eq!(ours, expected, "ours");
    if require(reference_etcd(), "reference etcd").is_some() {
        assert_eq!(transcript(Kind::Reference, &certs), expected, "etcd 3.4.23");
    }
}

/// A bad certificate set stops the member at start-up with the flag and file named.
#[test]
fn bad_tls_material_stops_the_member_with_the_flag_named() {
    let certs = CertSet::new();
    let other = Ca::new("x").leaf("server", &["127.0.0.1"], false);
    write_atomically(&certs.path("other.key"), &other.key_pem);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--key-file=/nonexistent/server.key".into()],
            "--key-file /nonexistent/server.key",
        ),
        (
            vec![format!("--key-file={}", certs.path("other.key").display())],
            "is not the key of --cert-file",
        ),
        (
            vec![
                format!("--cert-file={}", certs.path("expired.crt").display()),
                format!("--key-file={}", certs.path("expired.key").display()),
            ],
            "expired",
        ),
    ];
    for (extra, needle) in cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Each case replaces one or two of the good flags.
        let name = |f: &str| f.split('=').next().unwrap_or_default().to_owned();
        let mut flags: Vec<String> = certs
            .server_flags()
            .into_iter()
            .filter(|f| !extra.iter().any(|e| name(e) == name(f)))
            .collect();
        flags.extend(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-server"))
            .arg(format!("--data-dir={}", tmp.path().join("d").display()))
            .arg(format!(
                "--listen-client-urls=https://127.0.0.1:{}",
                free_port()
            ))
            .arg(format!(
                "--listen-peer-urls=http://127.0.0.1:{}",
                free_port()
            ))
            .args(&flags)
            .output()
            .expect("run etcd-server");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{needle}: started");
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // The peer side, on an https peer URL, names the --peer-* flags.
    let cert = format!("--peer-cert-file={}", certs.path("server.crt").display());
    let key = format!("--peer-key-file={}", certs.path("server.key").display());
    let ca = format!("--peer-trusted-ca-file={}", certs.path("ca.crt").display());
    let peer_cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![cert.clone()],
            "--peer-cert-file: needs --peer-key-file",
        ),
        (
            vec![
                cert.clone(),
                "--peer-key-file=/nonexistent/p.key".into(),
                ca.clone(),
            ],
            "--peer-key-file /nonexistent/p.key",
        ),
        (
            vec![
                cert.clone(),
                format!("--peer-key-file={}", certs.path("other.key").display()),
                ca.clone(),
            ],
            "is not the key of --peer-cert-file",
        ),
        (
            vec![cert.clone(), key.clone()],
            "--peer-trusted-ca-file: is needed with --peer-cert-file",
        ),
        (
            vec![
                cert,
                key,
                ca,
                "--peer-cert-allowed-cn=a".into(),
                "--peer-cert-allowed-hostname=b".into(),
            ],
            "--peer-cert-allowed-cn: cannot be used together with --peer-cert-allowed-hostname",
        ),
    ];
    for (flags, needle) in peer_cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        let peer = format!("https://127.0.0.1:{}", free_port());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-server"))
            .arg(format!("--data-dir={}", tmp.path().join("d").display()))
            .arg(format!(
                "--listen-client-urls=http://127.0.0.1:{}",
                free_port()
            ))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .args(&flags)
            .output()
            .expect("run etcd-server");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{needle}: started");
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

/// A TLS client of the KV API with `client` (`<name>.crt`/`.key` under `dir`), trusting
/// `trust` (PEM).
async fn kv(
    url: &str,
    trust: &str,
    dir: &Path,
    client: &str,
) -> Result<KvClient<tonic::transport::Channel>, String> {
    let cert = std::fs::read(dir.join(format!("{client}.crt"))).map_err(|e| e.to_string())?;
    let key = std::fs::read(dir.join(format!("{client}.key"))).map_err(|e| e.to_string())?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(trust))
        .identity(Identity::from_pem(cert, key))
        .domain_name("127.0.0.1");
    let ch = Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
    Ok(KvClient::new(ch))
}

/// The fingerprint of the client certificate the member serves, from its plain metrics port.
async fn served_fingerprint(metrics_url: &str) -> Option<String> {
    let body = tokio::task::spawn_blocking({
        let url = format!("{metrics_url}/metrics");
        move || {
            std::process::Command::new("curl")
                .args(["-s", "--max-time", "2", &url])
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        }
    })
    .await
    .ok()??;
    body.lines()
        .find(|l| l.starts_with("etcd_server_tls_cert_expiry_seconds{"))
        .and_then(|l| l.split("sha256=\"").nth(1))
        .map(|l| l[..64].to_owned())
}

async fn wait_fingerprint_change(metrics_url: &str, from: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(f) = served_fingerprint(metrics_url).await
            && f != from
        {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "the member never picked up the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The server certificate, then the CA (through a two-CA bundle) are rotated on disk while a
/// client writes on one long-lived connection and another opens a new connection per write:
/// no request fails, new connections see the new material within seconds, the process is the
/// same one, and once the old CA is dropped its client certificates are refused.
#[tokio::test(flavor = "multi_thread")]
async fn certificates_and_cas_rotate_under_load_without_a_failed_request() {
    let certs = CertSet::new();
    let d = certs.path("");
    let new_ca = Ca::new("etcd-ca-2");
    let trust = format!("{}{}", certs.ca.cert_pem, new_ca.cert_pem);
    let (mut p, url, _tmp) = tokio::task::block_in_place(|| start_tls(Kind::Ours, &certs, &[]));
    let pid = p.pid();
    let metrics_url = p.client_url.split(',').nth(1).expect("http url").to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // The client certificate the writers use, switched to the new CA's when the server trusts it.
    let client_name = Arc::new(std::sync::Mutex::new("client".to_owned()));
    let mut load = Vec::new();
    for fresh in [false, true] {
        let (url, trust, dir) = (url.clone(), trust.clone(), d.clone());
        let (stop, ok, failed, errors, client_name) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            errors.clone(),
            client_name.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut long = None;
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let name = client_name.lock().unwrap().clone();
                let client = if fresh || long.is_none() {
                    match kv(&url, &trust, &dir, &name).await {
                        Ok(c) => Some(c),
                        Err(e) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            errors.lock().unwrap().push(format!("connect: {e}"));
                            None
                        }
                    }
                } else {
                    None
                };
                if !fresh && long.is_none() {
                    long = client.clone();
                }
                let Some(mut c) = client.or_else(|| long.clone()) else {
                    continue;
                };
                let put = PutRequest {
                    key: format!("rot/{fresh}/{i}").into_bytes(),
                    value: b"v".to_vec(),
                    ..Default::default()
                };
                match c.put(put).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.lock().unwrap().push(format!("put: {e}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(if fresh { 50 } else { 5 })).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = served_fingerprint(&metrics_url).await.expect("fingerprint");

    // 1. A new server certificate from the same CA.
    certs
        .ca
        .leaf("server", &["127.0.0.1", "localhost"], false)
        .write(&d, "server");
    let second = wait_fingerprint_change(&metrics_url, &first).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 2. CA rotation: trust both CAs, then a server certificate from the new CA, then client
    //    certificates from the new CA, then drop the old CA.
    write_atomically(&certs.path("ca.crt"), &trust);
    tokio::time::sleep(Duration::from_secs(2)).await;
    new_ca
        .leaf("server", &["127.0.0.1", "localhost"], false)
        .write(&d, "server");
    let third = wait_fingerprint_change(&metrics_url, &second).await;
    new_ca.leaf("root", &[], false).write(&d, "client2");
    *client_name.lock().unwrap() = "client2".into();
    tokio::time::sleep(Duration::from_secs(1)).await;
    write_atomically(&certs.path("ca.crt"), &new_ca.cert_pem);
    tokio::time::sleep(Duration::from_secs(2)).await;

    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.expect("load task");
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert_eq!(
        failed,
        0,
        "{failed} failed requests of {}: {:?}",
        ok + failed,
        errors.lock().unwrap()
    );
    assert!(ok > 100, "too little load: {ok}");
    assert_ne!(second, third);
    assert_eq!(p.pid(), pid, "the member restarted");
    assert!(p.is_running());
    // The old CA's client certificate is refused on a new connection now.
    let refused = kv(&url, &trust, &d, "client").await;
    let refused = match refused {
        Err(_) => true,
        Ok(mut c) => c
            .put(PutRequest {
                key: b"x".to_vec(),
                ..Default::default()
            })
            .await
            .is_err(),
    };
    assert!(refused, "a certificate of the dropped CA still gets in");
}

/// The `etcd-client` crate (tonic and rustls, as Go clientv3 is grpc-go and crypto/tls)
/// connects with a client certificate, writes, reads and watches; without a client
/// certificate it cannot.
#[tokio::test(flavor = "multi_thread")]
async fn the_etcd_client_crate_connects_with_tls() {
    use etcd_client::{Certificate as Ca_, ConnectOptions, Identity as Id, TlsOptions};
    let certs = CertSet::new();
    let (_p, url, _tmp) = tokio::task::block_in_place(|| start_tls(Kind::Ours, &certs, &[]));
    let read = |name: &str| std::fs::read(certs.path(name)).expect("read pem");
    let tls = TlsOptions::new()
        .ca_certificate(Ca_::from_pem(read("ca.crt")))
        .identity(Id::from_pem(read("client.crt"), read("client.key")))
        .domain_name("127.0.0.1");
    let mut c =
        etcd_client::Client::connect([url.as_str()], Some(ConnectOptions::new().with_tls(tls)))
            .await
            .expect("connects");
    let mut stream = c.watch("tls/k", None).await.expect("watch");
    c.put("tls/k", "v", None).await.expect("put");
    let got = c.get("tls/k", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"v");
    let value = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let msg = stream
                .message()
                .await
                .expect("watch stream")
                .expect("a message");
            if let Some(ev) = msg.events().first() {
                return ev.kv().map(|kv| kv.value().to_vec());
            }
        }
    })
    .await
    .expect("an event in time");
    assert_eq!(value.as_deref(), Some(&b"v"[..]));
    drop(stream);

    let anonymous = TlsOptions::new()
        .ca_certificate(Ca_::from_pem(read("ca.crt")))
        .domain_name("127.0.0.1");
    let opts = ConnectOptions::new()
        .with_tls(anonymous)
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(2));
    let refused = match etcd_client::Client::connect([url.as_str()], Some(opts)).await {
        Err(_) => true,
        Ok(mut c) => c.get("tls/k", None).await.is_err(),
    };
    assert!(refused, "a client without a certificate got in");
}

/// `--client-cert-allowed-hostname`: a client certificate from the trusted CA gets in only if
/// it names the host in a DNS SAN.
#[test]
fn client_certificates_must_name_the_allowed_hostname() {
    let certs = CertSet::new();
    // `client` has no SAN at all; start_tls probes with it, so give the probe one that fits.
    certs
        .ca
        .leaf("root", &["client.etcd.example"], false)
        .write(certs.dir.path(), "client");
    certs
        .ca
        .leaf("root", &["other.example"], false)
        .write(certs.dir.path(), "misnamed");
    let (_p, url, _tmp) = start_tls(
        Kind::Ours,
        &certs,
        &["--client-cert-allowed-hostname=client.etcd.example"],
    );
    let (ok, _, _) = ctl(&certs, &url, Some("client"), &["put", "k", "v"]);
    assert!(ok, "the certificate naming the host is refused");
    let (ok, _, _) = ctl(&certs, &url, Some("misnamed"), &["put", "k", "v"]);
    assert!(!ok, "a certificate naming another host got in");
}

/// An `http://` and an `https://` client URL on the same address share one port (etcd
/// refuses this; the operator uses it to move a running cluster between the schemes): etcdctl
/// gets in both ways, and the TLS side still wants a client certificate.
#[test]
fn one_port_serves_http_and_https_together() {
    let certs = CertSet::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (port, peer) = (free_port(), free_port());
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut p = Proc::launch(
        Kind::Ours,
        Spec {
            name: "default".into(),
            client_url: format!("http://127.0.0.1:{port},https://127.0.0.1:{port}"),
            peer_url: peer_url.clone(),
            advertise_peer_url: peer_url.clone(),
            initial_cluster: format!("default={peer_url}"),
            initial_cluster_state: "new".into(),
            data_dir: tmp.path().join("data"),
            extra: certs.server_flags(),
        },
    );
    let (http, https) = (
        format!("http://127.0.0.1:{port}"),
        format!("https://127.0.0.1:{port}"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ctl(&certs, &https, Some("client"), &["put", "k", "tls"]).0 {
        assert!(p.is_running(), "exited:\n{}", p.log());
        assert!(Instant::now() < deadline, "not ready:\n{}", p.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out, err) = ctl(&certs, &http, None, &["get", "k", "--print-value-only"]);
    assert!(ok && out.trim() == "tls", "plain read: {out} {err}");
    let (ok, _, err) = ctl(&certs, &http, None, &["put", "k", "plain"]);
    assert!(ok, "plain write: {err}");
    let (ok, out, err) = ctl(
        &certs,
        &https,
        Some("client"),
        &["get", "k", "--print-value-only"],
    );
    assert!(ok && out.trim() == "plain", "TLS read: {out} {err}");
    let (ok, _, _) = ctl(&certs, &https, None, &["get", "k"]);
    assert!(!ok, "TLS without a client certificate got in");
    let (ok, _, _) = ctl(&certs, &https, Some("stranger"), &["get", "k"]);
    assert!(!ok, "another CA's certificate got in");
    p.stop();
}

/// An `https://` `--listen-metrics-urls` serves `/metrics` and `/health` with the client
/// port's certificates, and refuses a client without a certificate.
#[test]
fn the_metrics_port_serves_tls_with_the_client_material() {
    let certs = CertSet::new();
    let metrics = format!("https://127.0.0.1:{}", free_port());
    let flag = format!("--listen-metrics-urls={metrics}");
    let (_p, _url, _tmp) = start_tls(Kind::Ours, &certs, &[flag.as_str()]);
    let curl = |with_cert: bool, path: &str| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-s", "--max-time", "3", "--cacert"])
            .arg(certs.path("ca.crt"));
        if with_cert {
            cmd.arg("--cert")
                .arg(certs.path("client.crt"))
                .arg("--key")
                .arg(certs.path("client.key"));
        }
        let out = cmd.arg(format!("{metrics}{path}")).output().expect("curl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, body) = curl(true, "/metrics");
    assert!(ok && body.contains("etcd_server_has_leader 1"), "{body}");
    assert!(
        body.contains("etcd_server_tls_cert_expiry_seconds{role=\"client\""),
        "{body}"
    );
    let (ok, body) = curl(true, "/health");
    assert!(ok && body.contains("\"health\":\"true\""), "{body}");
    let (ok, _) = curl(false, "/metrics");
    assert!(!ok, "a client without a certificate read the metrics");
}
