//! The TLS flags beyond the certificate pair, each on a real member with real certificates:
//! `--client-crl-file` and `--peer-crl-file`, `--cipher-suites`, `--tls-min-version` and
//! `--tls-max-version` (read off the handshake a rustls client makes), the `ETCD_*`
//! environment variables alone, and `--auto-tls` on the client port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_test_kit::certs::{Ca, Leaf, write_atomically};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{CipherSuite, ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{CertSet, ctl, start_member, start_tls};
use crate::harness::{Kind, Proc, Spec, etcdctl, free_port, server_binary};

/// A CA that numbers its leaves and signs CRLs (the kit's `Ca` does neither).
struct RevokingCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl RevokingCa {
    fn new(cn: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `cn` with `sans` and serial number `serial` (below 0x80: one DER byte).
    fn leaf(&self, cn: &str, sans: &[&str], serial: u8) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(vec![serial]));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A CRL revoking the leaves numbered `serials`, PEM.
    fn crl(&self, serials: &[u8]) -> String {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(vec![serials.len() as u8 + 1]),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(vec![*s]),
                    revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .expect("CRL")
            .pem()
            .expect("CRL PEM")
    }
}

/// What a TLS client offers: protocol versions, TLS 1.2 cipher suites (empty: rustls'
/// defaults) and its certificate (`<name>.crt` of the set; `None`: none).
#[derive(Debug, Clone, Copy)]
struct Offer {
    versions: &'static [&'static SupportedProtocolVersion],
    suites: &'static [CipherSuite],
    cert: Option<&'static str>,
}

const ANY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

impl Offer {
    /// Every version and suite, with the client certificate `cert`.
    fn with(cert: &'static str) -> Self {
        Self {
            versions: ANY,
            suites: &[],
            cert: Some(cert),
        }
    }
}

/// A rustls client configuration trusting the set's `ca.crt`, offering `offer`, speaking h2.
fn client_config(dir: &Path, offer: Offer) -> ClientConfig {
    let mut provider = rustls::crypto::ring::default_provider();
    if !offer.suites.is_empty() {
        provider.cipher_suites.retain(|s| {
            s.version() == &rustls::version::TLS13 || offer.suites.contains(&s.suite())
        });
    }
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(dir.join("ca.crt")).expect("read ca.crt") {
        roots.add(ca.expect("CA PEM")).expect("add CA");
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(offer.versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match offer.cert {
        Some(name) => {
            let certs = CertificateDer::pem_file_iter(dir.join(format!("{name}.crt")))
                .expect("read certificate")
                .collect::<Result<Vec<_>, _>>()
                .expect("certificate PEM");
            let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).expect("key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Connects to `url` (`https://host:port`) with `config`, and proves the server serves the
/// connection: it answers the HTTP/2 preface. Returns the version and suite negotiated
/// (`"TLSv1_3 TLS13_AES_256_GCM_SHA384"`), or why the server would not serve it. With TLS 1.3
/// a client certificate is refused after the client's side of the handshake ends, so only
/// the server's answer tells.
fn serves(url: &str, offer: Offer, dir: &Path) -> Result<String, String> {
    let addr = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let config = client_config(dir, offer);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let step = Duration::from_secs(5);
    rt.block_on(async move {
        let tcp = tokio::time::timeout(step, tokio::net::TcpStream::connect(&addr))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let mut tls = tokio::time::timeout(step, connector.connect(name, tcp))
            .await
            .map_err(|_| "handshake timed out".to_owned())?
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, conn) = tls.get_ref();
        let negotiated = format!(
            "{:?} {:?}",
            conn.protocol_version().expect("version"),
            conn.negotiated_cipher_suite().expect("suite").suite()
        );
        tls.write_all(H2_PREFACE)
            .await
            .map_err(|e| format!("write: {e}"))?;
        tls.flush().await.map_err(|e| format!("flush: {e}"))?;
        let mut head = [0u8; 9];
        match tokio::time::timeout(step, tls.read(&mut head)).await {
            Ok(Ok(n)) if n > 0 => Ok(negotiated),
            Ok(Ok(_)) => Err("closed without an answer".into()),
            Ok(Err(e)) => Err(format!("read: {e}")),
            Err(_) => Err("no answer".into()),
        }
    })
}

/// Peer TLS flags with the set's server certificate, requiring client certificates.
fn peer_flags(certs: &CertSet) -> Vec<String> {
    vec![
        format!("--peer-cert-file={}", certs.path("server.crt").display()),
        format!("--peer-key-file={}", certs.path("server.key").display()),
        format!("--peer-trusted-ca-file={}", certs.path("ca.crt").display()),
        "--peer-client-cert-auth".into(),
    ]
}

/// `--client-crl-file` and `--peer-crl-file`: a certificate the CRL lists is refused at the
/// handshake on either port, one it does not list gets in, and so does one of a trusted CA
/// the CRL does not speak for (etcd only looks the serial up in the list). The CRL is read
/// again when it changes, as etcd reads it on every handshake.
#[test]
fn revoked_certificates_are_refused_at_the_handshake() {
    let certs = CertSet::new();
    let d = certs.dir.path();
    let ca = RevokingCa::new("crl-ca");
    let other = Ca::new("crl-free-ca");
    write_atomically(
        &certs.path("ca.crt"),
        &format!("{}{}", ca.cert_pem, other.cert_pem),
    );
    ca.leaf("server", &["127.0.0.1", "localhost"], 1)
        .write(d, "server");
    ca.leaf("root", &[], 2).write(d, "client");
    ca.leaf("root", &[], 3).write(d, "revoked");
    other.leaf("root", &[], false).write(d, "outsider");
    write_atomically(&certs.path("crl.pem"), &ca.crl(&[3]));
    let crl = certs.path("crl.pem").display().to_string();
    let mut extra = peer_flags(&certs);
    extra.push(format!("--client-crl-file={crl}"));
    extra.push(format!("--peer-crl-file={crl}"));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (p, client_url, _tmp) = start_member(Kind::Ours, &certs, "https", &extra);
    let ports = [("client", client_url.clone()), ("peer", p.peer_url.clone())];
    let admitted = |ports: &[(&str, String)], table: &[(&'static str, bool)]| {
        for (port, url) in ports {
            for (cert, want) in table {
                let got = serves(url, Offer::with(cert), d);
                assert_eq!(got.is_ok(), *want, "{port} port, {cert}: {got:?}");
            }
        }
    };
    admitted(
        &ports,
        &[("client", true), ("revoked", false), ("outsider", true)],
    );
    let (ok, _, _) = ctl(&certs, &client_url, Some("revoked"), &["get", "k"]);
    assert!(!ok, "etcdctl with a revoked certificate got in");

    // A new CRL also revokes `client`: new connections see it within seconds.
    write_atomically(&certs.path("crl.pem"), &ca.crl(&[2, 3]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while serves(&client_url, Offer::with("client"), d).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the new CRL was not used:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    admitted(
        &ports,
        &[("client", false), ("revoked", false), ("outsider", true)],
    );
}

/// A client's offer, and the start of the `"version suite"` it negotiates (`None`: refused).
type Expect = (Offer, Option<&'static str>);

/// `--tls-min-version`, `--tls-max-version` and `--cipher-suites` (TLS 1.2 suites only, as in
/// Go): what each server negotiates with clients that offer less or more.
#[test]
fn tls_versions_and_cipher_suites_are_enforced_at_the_handshake() {
    use rustls::CipherSuite::{
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 as AES128,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 as CHACHA,
    };
    let certs = CertSet::new();
    let offer = |versions, suites| Offer {
        versions,
        suites,
        cert: Some("client"),
    };
    let only_aes128 = "--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256";
    // (server flags, [(offer, the negotiated "version suite" starts with this, or refused)])
    let cases: Vec<(Vec<&str>, Vec<Expect>)> = vec![
        (
            vec![],
            vec![
                (offer(ANY, &[]), Some("TLSv1_3")),
                (offer(TLS12, &[]), Some("TLSv1_2")),
            ],
        ),
        (
            vec!["--tls-min-version=TLS1.3"],
            vec![
                (offer(TLS12, &[]), None),
                (offer(ANY, &[]), Some("TLSv1_3")),
            ],
        ),
        (
            vec!["--tls-max-version=TLS1.2"],
            vec![
                (offer(ANY, &[]), Some("TLSv1_2")),
                (offer(TLS13, &[]), None),
            ],
        ),
        (
            vec!["--tls-max-version=TLS1.2", only_aes128],
            vec![
                (offer(TLS12, &[CHACHA]), None),
                (
                    offer(TLS12, &[AES128]),
                    Some("TLSv1_2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
                ),
                (
                    offer(ANY, &[]),
                    Some("TLSv1_2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
                ),
            ],
        ),
        // The TLS 1.3 suites are not the flag's to restrict.
        (
            vec![only_aes128],
            vec![
                (offer(TLS12, &[CHACHA]), None),
                (offer(ANY, &[CHACHA]), Some("TLSv1_3")),
            ],
        ),
    ];
    for (flags, clients) in cases {
        let (p, url, _tmp) = start_tls(Kind::Ours, &certs, &flags);
        for (offer, want) in clients {
            let got = serves(&url, offer, certs.dir.path());
            match want {
                Some(want) => assert!(
                    got.as_ref().is_ok_and(|g| g.starts_with(want)),
                    "{flags:?}, client {offer:?}: {got:?}, expected {want}"
                ),
                None => assert!(
                    got.is_err(),
                    "{flags:?}, client {offer:?} got in: {got:?}\n{}",
                    p.log()
                ),
            }
        }
    }
}

/// A server process started with environment variables only (no flags), stopped when dropped.
struct EnvMember {
    child: Child,
    log: PathBuf,
}

impl EnvMember {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for EnvMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A member configured by `ETCD_*` variables alone serves TLS on the client port, wants a
/// client certificate there and on the peer port, applies the peer's allowed CN and the
/// minimum TLS version.
#[test]
fn etcd_environment_variables_configure_tls() {
    let certs = CertSet::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    let client_url = format!("https://127.0.0.1:{}", free_port());
    let peer_url = format!("https://127.0.0.1:{}", free_port());
    let file = |name: &str| certs.path(name).display().to_string();
    let env: Vec<(&str, String)> = vec![
        ("ETCD_NAME", "env".into()),
        (
            "ETCD_DATA_DIR",
            tmp.path().join("data").display().to_string(),
        ),
        ("ETCD_LISTEN_CLIENT_URLS", client_url.clone()),
        ("ETCD_ADVERTISE_CLIENT_URLS", client_url.clone()),
        ("ETCD_LISTEN_PEER_URLS", peer_url.clone()),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", peer_url.clone()),
        ("ETCD_INITIAL_CLUSTER", format!("env={peer_url}")),
        ("ETCD_CERT_FILE", file("server.crt")),
        ("ETCD_KEY_FILE", file("server.key")),
        ("ETCD_TRUSTED_CA_FILE", file("ca.crt")),
        ("ETCD_CLIENT_CERT_AUTH", "true".into()),
        ("ETCD_PEER_CERT_FILE", file("server.crt")),
        ("ETCD_PEER_KEY_FILE", file("server.key")),
        ("ETCD_PEER_TRUSTED_CA_FILE", file("ca.crt")),
        ("ETCD_PEER_CLIENT_CERT_AUTH", "true".into()),
        ("ETCD_PEER_CERT_ALLOWED_CN", "root".into()),
        ("ETCD_TLS_MIN_VERSION", "TLS1.3".into()),
    ];
    let log = tmp.path().join("server.log");
    let mut member = EnvMember {
        child: Command::new(server_binary())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn etcd-server"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ctl(&certs, &client_url, Some("client"), &["put", "k", "v"]).0 {
        let exited = member.child.try_wait().expect("try_wait");
        assert!(exited.is_none(), "exited:\n{}", member.log());
        assert!(Instant::now() < deadline, "not ready:\n{}", member.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    for (who, client) in [
        ("no client certificate", None),
        ("another CA's certificate", Some("stranger")),
    ] {
        let (ok, _, _) = ctl(&certs, &client_url, client, &["get", "k"]);
        assert!(!ok, "{who} got in");
    }
    let d = certs.dir.path();
    let table: [(&str, &str, Offer, bool); 5] = [
        ("client", &client_url, Offer::with("client"), true),
        (
            "client",
            &client_url,
            Offer {
                versions: TLS12,
                ..Offer::with("client")
            },
            false,
        ),
        ("peer", &peer_url, Offer::with("client"), true),
        (
            "peer",
            &peer_url,
            Offer {
                cert: None,
                ..Offer::with("client")
            },
            false,
        ),
        // Signed by the CA, but its Common Name is not the allowed one.
        ("peer", &peer_url, Offer::with("server"), false),
    ];
    for (port, url, offer, want) in table {
        let got = serves(url, offer, d);
        assert_eq!(got.is_ok(), want, "{port} port, {offer:?}: {got:?}");
    }
}

/// etcdctl without any certificate, with `tls` (its TLS flags: none is plain HTTP).
fn bare_ctl(url: &str, tls: &[&str], args: &[&str]) -> (bool, String) {
    let out = Command::new(etcdctl().expect("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(["--command-timeout=3s", "--dial-timeout=2s"])
        .args(tls)
        .args(args)
        .output()
        .expect("run etcdctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// etcdctl 3.4 skips verifying the server only with TLS switched on explicitly.
const SKIP_VERIFY: &[&str] = &["--insecure-transport=false", "--insecure-skip-tls-verify"];

/// `--auto-tls` with an `https://` client URL and no certificate files: the member makes a
/// self-signed certificate under `<data-dir>/fixtures/client` and serves TLS with it.
#[test]
fn auto_tls_serves_the_client_port_with_a_self_signed_certificate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = format!("https://127.0.0.1:{}", free_port());
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let mut p = Proc::launch(
        Kind::Ours,
        Spec {
            name: "default".into(),
            client_url: url.clone(),
            peer_url: peer_url.clone(),
            advertise_peer_url: peer_url.clone(),
            initial_cluster: format!("default={peer_url}"),
            initial_cluster_state: "new".into(),
            data_dir: tmp.path().join("data"),
            extra: vec!["--auto-tls".into()],
        },
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bare_ctl(&url, SKIP_VERIFY, &["put", "k", "auto"]).0 {
        assert!(p.is_running(), "exited:\n{}", p.log());
        assert!(Instant::now() < deadline, "not ready:\n{}", p.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out) = bare_ctl(&url, SKIP_VERIFY, &["get", "k", "--print-value-only"]);
    assert!(ok && out.trim() == "auto", "{out}");
    let cert = p.data_dir().join("fixtures/client/cert.pem");
    let pem = std::fs::read_to_string(&cert).expect("the generated certificate");
    // The certificate served is the generated one.
    let shown = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(url.trim_start_matches("https://"))
        .stdin(Stdio::null())
        .output();
    if let Ok(shown) = shown {
        let shown = String::from_utf8_lossy(&shown.stdout);
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let served: String = shown
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        assert_eq!(served, body, "openssl s_client saw:\n{shown}");
    }
    // Nobody gets in without TLS, and the certificate is nobody's CA's.
    let plain = url.replace("https://", "http://");
    assert!(!bare_ctl(&plain, &[], &["get", "k"]).0, "plain HTTP got in");
    let other_ca = tmp.path().join("other-ca.crt");
    write_atomically(&other_ca, &Ca::new("other-ca").cert_pem);
    let cacert = format!("--cacert={}", other_ca.display());
    let (ok, _) = bare_ctl(&url, &[cacert.as_str()], &["get", "k"]);
    assert!(!ok, "a certificate no CA signed was accepted");
    p.stop();
}
