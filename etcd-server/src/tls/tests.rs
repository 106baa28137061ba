//! Unit tests of TLS loading and reloading, on real certificates.

use etcd_test_kit::certs::{Ca, write_atomically};

use super::verify::san_matches;
use super::*;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::Digest;
use std::path::Path;

/// Spoils one file of a good set.
type Spoil = Box<dyn Fn(&Path)>;

fn files(dir: &Path, ca: Option<&Path>) -> TlsFiles {
    TlsFiles {
        role: Role::Client,
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        trusted_ca: ca.map(Path::to_owned),
        client_cert_auth: ca.is_some(),
        crl: None,
        allowed_cn: None,
        allowed_hostname: None,
        skip_san_verification: false,
        self_signed: false,
        cipher_suites: Vec::new(),
        min_version: TlsVersion::Tls12,
        max_version: TlsVersion::Tls13,
    }
}

fn setup() -> (tempfile::TempDir, Ca, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test-ca");
    let ca_path = dir.path().join("ca.crt");
    write_atomically(&ca_path, &ca.cert_pem);
    ca.leaf("server", &["localhost", "127.0.0.1"], false)
        .write(dir.path(), "server");
    (dir, ca, ca_path)
}

#[test]
fn loads_good_material_and_refuses_bad_input_naming_flag_and_file() {
    let (dir, ca, ca_path) = setup();
    let d = dir.path();
    let tls = ReloadingTls::load(files(d, Some(&ca_path))).expect("loads");
    assert_eq!(tls.fingerprint().len(), 64);

    let other = Ca::new("other").leaf("server", &["localhost"], false);
    let expired = ca.leaf("server", &["localhost"], true);
    let cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "missing key",
            Box::new(|d: &Path| std::fs::remove_file(d.join("server.key")).expect("rm")),
            "--key-file",
        ),
        (
            "garbage certificate",
            Box::new(|d: &Path| write_atomically(&d.join("server.crt"), "not a certificate")),
            "--cert-file",
        ),
        (
            "key of another certificate",
            Box::new(move |d: &Path| write_atomically(&d.join("server.key"), &other.key_pem)),
            "is not the key of --cert-file",
        ),
        (
            "expired certificate",
            Box::new(move |d: &Path| {
                write_atomically(&d.join("server.crt"), &expired.cert_pem);
                write_atomically(&d.join("server.key"), &expired.key_pem);
            }),
            "expired",
        ),
        (
            "garbage CA",
            Box::new(|d: &Path| write_atomically(&d.join("ca.crt"), "junk")),
            "--trusted-ca-file",
        ),
    ];
    for (what, spoil, needle) in cases {
        let (dir, _ca, ca_path) = setup();
        spoil(dir.path());
        let e = ReloadingTls::load(files(dir.path(), Some(&ca_path)))
            .expect_err(what)
            .to_string();
        assert!(e.contains(needle), "{what}: {e}");
    }
    let mut no_ca = files(d, None);
    no_ca.client_cert_auth = true;
    let e = ReloadingTls::load(no_ca).expect_err("cca without ca");
    assert!(e.to_string().contains("--client-cert-auth"), "{e}");
    let mut suites = files(d, None);
    suites.cipher_suites = vec!["TLS_RSA_WITH_RC4_128_SHA".into()];
    let e = ReloadingTls::load(suites).expect_err("bad suite");
    assert!(e.to_string().contains("--cipher-suites"), "{e}");
}

#[test]
fn reload_picks_up_new_material_and_keeps_the_last_good_one() {
    let (dir, ca, ca_path) = setup();
    let d = dir.path();
    let tls = ReloadingTls::load(files(d, Some(&ca_path))).expect("loads");
    let first = tls.fingerprint();
    assert!(!tls.reload().expect("unchanged"), "nothing changed on disk");

    ca.leaf("server", &["localhost"], false).write(d, "server");
    assert!(
        tls.reload().expect("reloads"),
        "a new certificate is picked up"
    );
    let second = tls.fingerprint();
    assert_ne!(first, second);
    let metric = crate::metrics::TLS_CERT_EXPIRY.with_label_values(&["client", &second]);
    assert!(metric.get() > 0.0);

    // A certificate written without its key (mid-rotation), then garbage: refused, and the
    // material in use stays.
    let next = ca.leaf("server", &["localhost"], false);
    write_atomically(&d.join("server.crt"), &next.cert_pem);
    assert!(tls.reload().is_err());
    assert_eq!(tls.fingerprint(), second);
    write_atomically(&d.join("server.crt"), "garbage");
    assert!(tls.reload().is_err());
    assert_eq!(tls.fingerprint(), second);
    // The same refused bytes are not parsed again (nor logged again) until they change.
    assert!(!tls.reload().expect("nothing new"));
    assert_eq!(tls.fingerprint(), second);
    // The pair completed: picked up.
    next.write(d, "server");
    assert!(tls.reload().expect("reloads"));
    assert_ne!(tls.fingerprint(), second);

    // A bundle of two CAs is accepted (CA rotation), and each CA shows in the metric.
    let new_ca = Ca::new("new-ca");
    // Fingerprints of this test's CAs (other tests in the same process may load others).
    let ours: Vec<String> = [&ca.cert_pem, &new_ca.cert_pem]
        .iter()
        .map(|pem| {
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
            hex(&sha2::Sha256::digest(&der))
        })
        .collect();
    let ca_series = || {
        let families = crate::metrics::REGISTRY.gather();
        families
            .iter()
            .filter(|f| f.name() == "etcd_server_tls_cert_expiry_seconds")
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                let labels = m.get_label();
                labels.iter().any(|l| l.value() == "client-ca")
                    && labels.iter().any(|l| ours.iter().any(|fp| fp == l.value()))
            })
            .count()
    };
    assert_eq!(ca_series(), 1);
    write_atomically(&ca_path, &format!("{}{}", ca.cert_pem, new_ca.cert_pem));
    assert!(tls.reload().expect("two CAs"));
    assert_eq!(ca_series(), 2);
    write_atomically(&ca_path, &new_ca.cert_pem);
    assert!(tls.reload().expect("the new CA alone"));
    assert_eq!(ca_series(), 1);
}

#[test]
fn auto_tls_makes_a_certificate_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = auto_tls(Role::Client, dir.path(), &["127.0.0.1".into()]).expect("made");
    let first = std::fs::read(&cert).expect("cert");
    let again = auto_tls(Role::Client, dir.path(), &["127.0.0.1".into()]).expect("reused");
    assert_eq!((cert.clone(), key.clone()), again);
    assert_eq!(std::fs::read(&cert).expect("cert"), first);
    let mut f = files(dir.path(), None);
    (f.cert, f.key) = (cert, key);
    ReloadingTls::load(f).expect("the generated pair loads");
}

#[test]
fn allowed_hostname_matches_sans_and_wildcards() {
    for (name, host, ok) in [
        ("etcd.example", "etcd.example", true),
        ("*.example", "etcd.example", true),
        ("*.example", "a.b.example", false),
        ("*.example", "example", false),
        ("other.example", "etcd.example", false),
    ] {
        assert_eq!(san_matches(name, host), ok, "{name} vs {host}");
    }
}

#[tokio::test]
async fn a_peer_address_must_be_named_by_its_certificate() {
    let ca = Ca::new("peer-ca");
    let der = |sans: &[&str]| {
        let leaf = ca.leaf("etcd-peer", sans, false);
        CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("pem")
    };
    let local: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    let mapped: std::net::IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
    for (sans, ok) in [
        (&[][..], true),
        (&["127.0.0.1"][..], true),
        (&["10.1.2.3"][..], false),
        // A DNS name that resolves to the address.
        (&["10.1.2.3", "localhost"][..], true),
        (&["etcd-0.invalid"][..], false),
        // Wildcards cannot be resolved: accepted when nothing else is named.
        (&["*.etcd.invalid"][..], true),
        (&["*.etcd.invalid", "10.1.2.3"][..], false),
    ] {
        let cert = der(sans);
        assert_eq!(
            check_peer_address(&cert, local).await.is_ok(),
            ok,
            "{sans:?}"
        );
        assert_eq!(
            check_peer_address(&cert, mapped).await.is_ok(),
            ok,
            "{sans:?} (v4-mapped)"
        );
    }
}
