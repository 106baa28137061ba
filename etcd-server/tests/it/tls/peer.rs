//! TLS between members, with real certificates: a cluster on `https://` peer URLs with mutual
//! TLS forms, elects and replicates while members with a certificate from another CA or with
//! another Common Name cannot join; `--peer-auto-tls`; a running cluster moved from http to
//! https peers through `member update` without a failed request; and the peer CA rotated on
//! disk, proven by a member that restarts with certificates only the new CA signs.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_test_kit::certs::{Ca, write_atomically};

use crate::harness::{Kind, Proc, Spec, free_port, free_port_on};

/// Peer certificates for members on 127.0.0.1, all with the Common Name `etcd-peer`.
struct PeerCerts {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl PeerCerts {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("etcd-peer-ca");
        write_atomically(&dir.path().join("ca.crt"), &ca.cert_pem);
        ca.leaf("etcd-peer", &["127.0.0.1", "localhost"], false)
            .write(dir.path(), "peer");
        ca.leaf("intruder", &["127.0.0.1"], false)
            .write(dir.path(), "wrong-cn");
        Ca::new("other-ca")
            .leaf("etcd-peer", &["127.0.0.1"], false)
            .write(dir.path(), "stranger");
        Self { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Peer mTLS flags with certificate `name`, members restricted to CN `etcd-peer`.
    fn flags(&self, name: &str) -> Vec<String> {
        vec![
            format!(
                "--peer-cert-file={}",
                self.path(&format!("{name}.crt")).display()
            ),
            format!(
                "--peer-key-file={}",
                self.path(&format!("{name}.key")).display()
            ),
            format!("--peer-trusted-ca-file={}", self.path("ca.crt").display()),
            "--peer-client-cert-auth".into(),
            "--peer-cert-allowed-cn=etcd-peer".into(),
        ]
    }
}

/// Launches members `m0..mN` whose peer URLs are `peers[i]` (listen `listen[i]`), with
/// `extra(i)` flags, and waits until each serves.
fn launch(
    dir: &std::path::Path,
    listen: &[String],
    peers: &[String],
    extra: impl Fn(usize) -> Vec<String>,
) -> Vec<Proc> {
    let initial = peers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("m{i}={p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<Proc> = (0..peers.len())
        .map(|i| {
            Proc::launch(
                Kind::Ours,
                Spec {
                    name: format!("m{i}"),
                    client_url: format!("http://127.0.0.1:{}", free_port()),
                    peer_url: listen[i].clone(),
                    advertise_peer_url: peers[i].clone(),
                    initial_cluster: initial.clone(),
                    initial_cluster_state: "new".into(),
                    data_dir: dir.join(format!("m{i}")),
                    extra: extra(i),
                },
            )
        })
        .collect();
    for m in &mut members {
        m.wait_ready(Duration::from_secs(30));
    }
    members
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn client(endpoints: Vec<String>) -> etcd_client::Client {
    etcd_client::Client::connect(
        endpoints,
        Some(
            etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(5)),
        ),
    )
    .await
    .expect("connect")
}

/// Writes on one member and reads the value back through every member (linearizable reads
/// go through the leader's read index, so every peer stream is exercised).
fn replicates(rt: &tokio::runtime::Runtime, members: &[Proc], key: &str) {
    rt.block_on(async {
        let mut c = client(vec![members[0].endpoint()]).await;
        c.put(key, "v", None).await.expect("put");
        for m in members {
            let mut c = client(vec![m.endpoint()]).await;
            let got = c.get(key, None).await.expect("get");
            assert_eq!(got.kvs()[0].value(), b"v", "read through {}", m.name);
        }
    });
}

fn metrics(m: &Proc) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "3",
            &format!("{}/metrics", m.client_url),
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn https_peers(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| format!("https://127.0.0.1:{}", free_port()))
        .collect()
}

#[test]
fn a_peer_mtls_cluster_forms_and_refuses_members_with_the_wrong_certificate() {
    let certs = PeerCerts::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let peers = https_peers(3);
    let mut members = launch(dir.path(), &peers, &peers, |_| certs.flags("peer"));
    let rt = rt();
    replicates(&rt, &members, "over-tls");
    let text = metrics(&members[0]);
    for role in ["peer", "peer-ca"] {
        assert!(
            text.contains(&format!(
                "etcd_server_tls_cert_expiry_seconds{{role=\"{role}\""
            )),
            "no {role} expiry series:\n{text}"
        );
    }
    // Two would-be members, one after the other, each added as a learner (so the cluster's
    // quorum is not at stake) and removed again: one with a certificate from another CA, one
    // with the right CA but another Common Name.
    for cert in ["stranger", "wrong-cn"] {
        let url = format!("https://127.0.0.1:{}", free_port());
        // A cluster refuses new members until every member has been connected for a while
        // ("unhealthy cluster", as etcd's strict reconfiguration check).
        let id = rt.block_on(async {
            let mut c = client(vec![members[0].endpoint()]).await;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let added = c
                    .member_add(
                        [url.clone()],
                        Some(etcd_client::MemberAddOptions::new().with_is_learner()),
                    )
                    .await;
                match added {
                    Ok(r) => break r.member().expect("added member").id(),
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("member add: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => panic!("member add: {e}"),
                }
            }
        });
        let initial = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}={p}"))
            .chain([format!("{cert}={url}")])
            .collect::<Vec<_>>()
            .join(",");
        let mut p = Proc::launch(
            Kind::Ours,
            Spec {
                name: cert.into(),
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: url.clone(),
                advertise_peer_url: url,
                initial_cluster: initial,
                initial_cluster_state: "existing".into(),
                data_dir: dir.path().join(cert),
                extra: certs.flags(cert),
            },
        );
        let joined = p.try_wait_ready(Duration::from_secs(6));
        assert!(
            joined.is_err(),
            "{} joined the cluster:\n{}",
            p.name,
            p.log()
        );
        p.kill();
        rt.block_on(async {
            let mut c = client(vec![members[0].endpoint()]).await;
            c.member_remove(id).await.expect("member remove");
        });
    }
    let logs: String = members.iter().map(Proc::log).collect();
    assert!(
        logs.contains("rejected a peer connection"),
        "no member logged the refused handshakes:\n{logs}"
    );
    // The cluster is unharmed.
    replicates(&rt, &members, "after-intruders");
    for m in &mut members {
        m.stop();
    }
}

#[test]
fn peer_auto_tls_encrypts_between_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peers = https_peers(3);
    let mut members = launch(dir.path(), &peers, &peers, |_| {
        vec!["--peer-auto-tls".into()]
    });
    replicates(&rt(), &members, "auto");
    for m in &members {
        assert!(
            m.data_dir().join("fixtures/peer/cert.pem").is_file(),
            "no self-signed peer certificate under {}",
            m.data_dir().display()
        );
    }
    for m in &mut members {
        m.stop();
    }
}

/// etcd's documented way to move peers to TLS: every member listens on an http and an https
/// peer URL, `member update` moves each to https under load, then each restarts with https
/// only (which proves the cluster no longer needs http).
#[test]
fn a_running_cluster_moves_from_http_to_https_peers() {
    let certs = PeerCerts::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let http: Vec<String> = (0..3)
        .map(|_| format!("http://127.0.0.1:{}", free_port()))
        .collect();
    // Each member serves both schemes on its one peer port while the cluster moves.
    let https: Vec<String> = http
        .iter()
        .map(|u| u.replacen("http", "https", 1))
        .collect();
    let listen: Vec<String> = (0..3)
        .map(|i| format!("{},{}", http[i], https[i]))
        .collect();
    let mut members = launch(dir.path(), &listen, &http, |_| certs.flags("peer"));
    let rt = rt();
    let endpoints: Vec<String> = members.iter().map(Proc::endpoint).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = rt.spawn({
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let endpoints = endpoints.clone();
        async move {
            let mut c = client(endpoints).await;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match c.put(format!("load/{i}"), "x", None).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("put failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                i += 1;
            }
        }
    });
    rt.block_on(async {
        let mut c = client(endpoints.clone()).await;
        let list = c.member_list().await.expect("member list");
        for (i, url) in https.iter().enumerate() {
            let id = list
                .members()
                .iter()
                // By peer URL: the name is published through Raft a moment after the member
                // serves, and a busy machine may ask before it lands.
                .find(|m| m.peer_urls().contains(&http[i]))
                .expect("member")
                .id();
            c.member_update(id, [url.clone()])
                .await
                .expect("member update");
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let list = c.member_list().await.expect("member list");
        for m in list.members() {
            assert!(
                m.peer_urls()[0].starts_with("https://"),
                "{:?}",
                m.peer_urls()
            );
        }
    });
    stop.store(true, Ordering::Relaxed);
    rt.block_on(writer).expect("writer");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed writes during the move"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "too few writes to mean anything"
    );
    // Restart each member with the https peer URL only.
    for (i, m) in members.iter_mut().enumerate() {
        m.stop();
        m.peer_url = https[i].clone();
        m.advertise_peer_url = https[i].clone();
        m.spawn();
    }
    replicates(&rt, &members, "https-only");
    let total = rt.block_on(async {
        let mut c = client(endpoints).await;
        let r = c
            .get(
                "load/",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only(),
                ),
            )
            .await
            .expect("count");
        r.count()
    });
    assert_eq!(total as u64, ok.load(Ordering::Relaxed));
    for m in &mut members {
        m.stop();
    }
}

/// The `role` series of the TLS expiry metric: (fingerprint) per line.
fn expiry_series(m: &Proc, role: &str) -> Vec<String> {
    let prefix = format!("etcd_server_tls_cert_expiry_seconds{{role=\"{role}\",sha256=\"");
    metrics(m)
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|l| l.chars().take(64).collect())
        .collect()
}

/// Waits until every member in `members` reports `want` for `role`.
fn wait_series(members: &[Proc], role: &str, want: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !members.iter().all(|m| want(&expiry_series(m, role))) {
        assert!(
            Instant::now() < deadline,
            "members did not load the new {role} material"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What etcd cannot do: a peer CA rotation without restarting anyone. A two-CA bundle goes
/// on disk, then certificates of the new CA, then the bundle loses the old CA. A member
/// restarted after each step (new connections both ways) proves the others, never
/// restarted, trust what is on disk.
#[test]
fn the_peer_ca_rotates_without_restarting_the_members() {
    let certs = PeerCerts::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let peers = https_peers(3);
    let mut members = launch(dir.path(), &peers, &peers, |_| certs.flags("peer"));
    let rt = rt();
    let pids: Vec<Option<u32>> = members.iter().map(Proc::pid).collect();
    let old_leaf = expiry_series(&members[1], "peer");
    let new_ca = Ca::new("etcd-peer-ca-2");
    write_atomically(
        &certs.path("ca.crt"),
        &format!("{}{}", certs.ca.cert_pem, new_ca.cert_pem),
    );
    wait_series(&members, "peer-ca", |s| s.len() == 2);
    new_ca
        .leaf("etcd-peer", &["127.0.0.1", "localhost"], false)
        .write(certs.dir.path(), "peer");
    wait_series(&members, "peer", |s| {
        s.len() == 1 && s != old_leaf.as_slice()
    });
    members[0].stop();
    members[0].spawn();
    replicates(&rt, &members, "new-leaves");
    write_atomically(&certs.path("ca.crt"), &new_ca.cert_pem);
    wait_series(&members, "peer-ca", |s| s.len() == 1);
    members[0].stop();
    members[0].spawn();
    replicates(&rt, &members, "new-ca-only");
    for (i, m) in members.iter().enumerate().skip(1) {
        assert_eq!(m.pid(), pids[i], "{} restarted", m.name);
    }
    for m in &mut members {
        m.stop();
    }
}

/// Two members with certificates `certs` and `flags`; m1 `behind` 127.0.0.2 (see below).
struct PeerCase {
    what: &'static str,
    certs: [&'static str; 2],
    behind: bool,
    flags: &'static [&'static str],
    /// `None`: the cluster forms; else it does not, and m0 logs this.
    refused: Option<&'static str>,
}

/// `--peer-cert-allowed-hostname`, and the peer port's check of the address a member dials
/// from against its certificate's SANs (off with
/// `--experimental-peer-skip-client-san-verification`): two members form a cluster only
/// when each takes the other's certificate. A member listening on 127.0.0.1 and 127.0.0.2
/// dials from the first and advertises the second, which alone its certificate names.
#[test]
fn peers_are_checked_for_the_allowed_hostname_and_their_address() {
    let certs = PeerCerts::new();
    let d = certs.dir.path();
    certs
        .ca
        .leaf("etcd-peer", &["localhost", "127.0.0.1"], false)
        .write(d, "named");
    certs
        .ca
        .leaf("etcd-peer", &["127.0.0.1"], false)
        .write(d, "unnamed");
    certs
        .ca
        .leaf("etcd-peer", &["127.0.0.2"], false)
        .write(d, "elsewhere");
    const HOSTNAME: &str = "--peer-cert-allowed-hostname=localhost";
    const SKIP: &str = "--experimental-peer-skip-client-san-verification";
    let cases = [
        PeerCase {
            what: "both name the allowed host",
            certs: ["named", "named"],
            behind: false,
            flags: &[HOSTNAME],
            refused: None,
        },
        PeerCase {
            what: "m1's certificate lacks the allowed host",
            certs: ["named", "unnamed"],
            behind: false,
            flags: &[HOSTNAME],
            refused: Some("rejected a peer connection: TLS handshake failed"),
        },
        PeerCase {
            what: "m1 dials from an address its certificate does not name",
            certs: ["peer", "elsewhere"],
            behind: true,
            flags: &[],
            refused: Some("does not name its address"),
        },
        PeerCase {
            what: "the same with the address check skipped",
            certs: ["peer", "elsewhere"],
            behind: true,
            flags: &[SKIP],
            refused: None,
        },
    ];
    for PeerCase {
        what,
        certs: names,
        behind,
        flags,
        refused,
    } in cases
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let m0 = format!("https://127.0.0.1:{}", free_port());
        let (listen1, m1) = if behind {
            let local = std::net::Ipv4Addr::new(127, 0, 0, 2);
            let advertised = format!("https://127.0.0.2:{}", free_port_on(local));
            let dial_from = format!("https://127.0.0.1:{}", free_port());
            (format!("{dial_from},{advertised}"), advertised)
        } else {
            let url = format!("https://127.0.0.1:{}", free_port());
            (url.clone(), url)
        };
        let initial = format!("m0={m0},m1={m1}");
        let mut members: Vec<Proc> = [(m0.clone(), m0), (listen1, m1)]
            .into_iter()
            .enumerate()
            .map(|(i, (listen, advertise))| {
                // The allowed CN and the allowed hostname cannot go together.
                let mut extra: Vec<String> = certs
                    .flags(names[i])
                    .into_iter()
                    .filter(|f| !f.starts_with("--peer-cert-allowed-cn"))
                    .collect();
                extra.extend(flags.iter().map(|f| f.to_string()));
                Proc::launch(
                    Kind::Ours,
                    Spec {
                        name: format!("m{i}"),
                        client_url: format!("http://127.0.0.1:{}", free_port()),
                        peer_url: listen,
                        advertise_peer_url: advertise,
                        initial_cluster: initial.clone(),
                        initial_cluster_state: "new".into(),
                        data_dir: dir.path().join(format!("m{i}")),
                        extra,
                    },
                )
            })
            .collect();
        match refused {
            None => {
                for m in &mut members {
                    m.wait_ready(Duration::from_secs(30));
                }
                replicates(&rt(), &members, "checked");
            }
            Some(needle) => {
                let formed = members[0].try_wait_ready(Duration::from_secs(8));
                assert!(formed.is_err(), "{what}: the cluster formed");
                let log = members[0].log();
                assert!(
                    log.contains(needle),
                    "{what}: m0 did not log {needle:?}:\n{log}"
                );
            }
        }
        for m in &mut members {
            m.stop();
        }
    }
}
