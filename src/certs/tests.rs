//! Issuing real certificates and reading them back; the files; the metrics a member exposes.

use std::time::{Duration, SystemTime};

use super::*;
use crate::crd::KeyAlgorithm;

#[test]
fn issued_certificates_chain_and_name_what_they_should() {
    let now = SystemTime::now();
    for alg in [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa4096,
    ] {
        let ca = issue::new_ca("c-ca", alg, Duration::from_secs(3600), now).expect("ca");
        let sans = vec!["127.0.0.10".to_owned(), "*.c-peer.ns.svc".to_owned()];
        let leaf = issue::leaf(
            &ca,
            LeafKind::Peer,
            "c-peer",
            &sans,
            alg,
            Duration::from_secs(60),
            now,
        )
        .expect("leaf");
        assert_eq!(leaf.info.common_name, "c-peer");
        assert_eq!(leaf.info.sha256.len(), 64);
        assert!(leaf.info.not_after <= issue::unix(now) + 60);
        let (_, parsed) = x509_parser::pem::parse_x509_pem(leaf.cert_pem.as_bytes()).expect("pem");
        let cert = parsed.parse_x509().expect("x509");
        let (_, ca_parsed) = x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes()).expect("pem");
        let ca_cert = ca_parsed.parse_x509().expect("x509");
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        let names = format!("{:?}", cert.subject_alternative_name());
        assert!(
            names.contains("c-peer.ns.svc") && names.contains("[127, 0, 0, 10]"),
            "{names}"
        );
    }
}

#[test]
fn files_hold_the_bundle_and_each_pair_key_first() {
    let spec: crate::crd::TlsSpec = serde_yaml_ng::from_str("enabled: true\n").expect("spec");
    let settings = Settings::of(&spec).expect("settings");
    let mut auth = Authority::default();
    let subjects = Subjects {
        server: vec!["localhost".into()],
        peer: vec!["localhost".into()],
    };
    apply(
        &mut auth,
        &CertStep::Bootstrap,
        &Requests::default(),
        "c",
        &subjects,
        &settings,
        SystemTime::now(),
    )
    .expect("bootstrap");
    auth.cas.push(auth.cas[0].clone());
    let files = files(&auth);
    let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "ca.crt",
            "peer-ca.crt",
            "server.key",
            "server.crt",
            "peer.key",
            "peer.crt",
            "client.key",
            "client.crt",
            "operator.key",
            "operator.crt"
        ]
    );
    assert_eq!(issue::inspect_all(&files[0].1).expect("bundle").len(), 2);
}

#[test]
fn loaded_material_is_read_from_the_expiry_metric() {
    let text = "# HELP etcd_server_tls_cert_expiry_seconds x\n\
        etcd_server_tls_cert_expiry_seconds{role=\"client\",sha256=\"aa\"} 1\n\
        etcd_server_tls_cert_expiry_seconds{role=\"client-ca\",sha256=\"c1\"} 1\n\
        etcd_server_tls_cert_expiry_seconds{role=\"client-ca\",sha256=\"c2\"} 1\n\
        etcd_server_tls_cert_expiry_seconds{role=\"peer\",sha256=\"bb\"} 1\n\
        etcd_server_tls_cert_expiry_seconds{role=\"peer-ca\",sha256=\"c1\"} 1\n\
        etcd_server_has_leader 1\n";
    let l = loaded_from_metrics(text);
    assert_eq!(l.server.as_deref(), Some("aa"));
    assert_eq!(l.client_cas, ["c1", "c2"]);
    assert_eq!(l.peer.as_deref(), Some("bb"));
    assert_eq!(l.peer_cas, ["c1"]);
}

#[test]
fn durations_are_go_durations_and_renewal_must_fit_validity() {
    let spec: crate::crd::TlsSpec =
        serde_yaml_ng::from_str("enabled: true\nvalidity: 24h\nrenewBefore: 48h\n").expect("spec");
    let e = Settings::of(&spec)
        .expect_err("renewBefore > validity")
        .to_string();
    assert!(e.contains("spec.tls.renewBefore"), "{e}");
    let spec: crate::crd::TlsSpec = serde_yaml_ng::from_str(
        "enabled: true\nvalidity: 24h\ncaValidity: 24h\nrenewBefore: 30h\n",
    )
    .expect("spec");
    let e = Settings::of(&spec)
        .expect_err("renewBefore > caValidity")
        .to_string();
    assert!(e.contains("renewBefore"), "{e}");
    let spec: crate::crd::TlsSpec =
        serde_yaml_ng::from_str("enabled: true\nvalidity: 1y\n").expect("spec");
    let e = Settings::of(&spec).expect_err("bad duration").to_string();
    assert!(e.contains("spec.tls.validity"), "{e}");
}

#[test]
fn the_condition_follows_the_lifecycle() {
    let spec: crate::crd::TlsSpec = serde_yaml_ng::from_str("enabled: true\n").expect("spec");
    let settings = Settings::of(&spec).expect("settings");
    let now = SystemTime::now();
    let unix = issue::unix(now);
    let mut auth = Authority::default();
    let (_, r) = status::tls_status(&auth, &CertStep::Bootstrap, None, unix, 0);
    assert_eq!((r.ready, r.reason), (false, "NotIssued"));
    let subjects = Subjects {
        server: vec!["localhost".into()],
        peer: vec!["localhost".into()],
    };
    apply(
        &mut auth,
        &CertStep::Bootstrap,
        &Requests::default(),
        "c",
        &subjects,
        &settings,
        now,
    )
    .expect("bootstrap");
    let renew = settings.policy.renew_before;
    let (tls, r) = status::tls_status(&auth, &CertStep::Idle, None, unix, renew);
    assert_eq!(
        (r.ready, r.reason, tls.phase.as_str()),
        (true, "Ready", "Idle")
    );
    // The CA, server, peer, the users' client and the operator's own.
    assert_eq!(tls.certificates.len(), 5);
    let wait = CertStep::Wait {
        reason: "waiting for m1".into(),
    };
    let (_, r) = status::tls_status(&auth, &wait, Some(unix), unix + 5, renew);
    assert_eq!(r.reason, "RotationInProgress");
    let (_, r) = status::tls_status(&auth, &wait, Some(unix), unix + 601, renew);
    assert_eq!(r.reason, "RotationStuck");
    let late = auth.server.as_ref().expect("server").info.not_after - 10;
    let (_, r) = status::tls_status(&auth, &CertStep::Idle, None, late, renew);
    assert_eq!(r.reason, "CertificateExpiringSoon");
    let (_, r) = status::tls_status(&auth, &CertStep::Idle, None, late + 20, renew);
    assert_eq!((r.ready, r.reason), (false, "Expired"));
}

/// `status.tls` for certificates in Secrets the operator does not issue: missing Secrets,
/// members still on older certificates, an approaching expiry, and all well.
#[test]
fn external_certificates_are_reported_from_their_secrets_and_the_members() {
    use status::{ExternalSecret, external_status};
    let now = SystemTime::now();
    let t = issue::unix(now);
    let alg = KeyAlgorithm::EcdsaP256;
    let ca = issue::new_ca("my-ca", alg, Duration::from_secs(90 * 86400), now).expect("ca");
    let leaf = |kind, cn: &str, days: u64| {
        issue::leaf(
            &ca,
            kind,
            cn,
            &[],
            alg,
            Duration::from_secs(days * 86400),
            now,
        )
        .expect("leaf")
    };
    let (server, peer, client) = (
        leaf(LeafKind::Server, "srv", 60),
        leaf(LeafKind::Peer, "peer", 60),
        leaf(LeafKind::Client, "root", 10),
    );
    let secret = |role, issued: &Issued| ExternalSecret {
        role,
        name: format!("my-{role}"),
        cert: Some(issued.cert_pem.clone()),
        ca: Some(ca.cert_pem.clone()),
    };
    let secrets = vec![
        secret("server", &server),
        secret("peer", &peer),
        secret("client", &client),
    ];
    let on = |s: &Issued, p: &Issued| Loaded {
        server: Some(s.info.sha256.clone()),
        peer: Some(p.info.sha256.clone()),
        ..Loaded::default()
    };
    let members = |loaded: Vec<Option<Loaded>>| -> Vec<(String, Option<Loaded>)> {
        loaded
            .into_iter()
            .enumerate()
            .map(|(i, l)| (format!("c-{i}"), l))
            .collect()
    };
    let day = 86400;
    // All loaded, the client certificate 10 days from expiry: Ready with 5 days' margin,
    // expiring soon with 30.
    let all = members(vec![Some(on(&server, &peer)); 3]);
    let (tls, r) = external_status(&secrets, &all, t, 5 * day);
    assert_eq!((tls.phase.as_str(), r.reason), ("External", "Ready"));
    let roles: Vec<&str> = tls.certificates.iter().map(|c| c.role.as_str()).collect();
    assert_eq!(roles, ["ca", "server", "peer", "client"]);
    assert_eq!(tls.certificates[1].sha256, server.info.sha256);
    let (_, r) = external_status(&secrets, &all, t, 30 * day);
    assert_eq!(r.reason, "CertificateExpiringSoon");
    // A member still on an older server certificate, one not answering.
    let old = leaf(LeafKind::Server, "srv", 60);
    let mixed = members(vec![Some(on(&server, &peer)), Some(on(&old, &peer)), None]);
    let (_, r) = external_status(&secrets, &mixed, t, 5 * day);
    assert_eq!(r.reason, "RotationInProgress");
    assert!(r.message.contains("c-1, c-2"), "{}", r.message);
    // A Secret not issued yet.
    let mut missing = secrets.clone();
    missing[1].cert = None;
    let (_, r) = external_status(&missing, &all, t, 5 * day);
    assert_eq!((r.ready, r.reason), (false, "NotIssued"));
    assert!(r.message.contains("my-peer"), "{}", r.message);
    // Past the client certificate's expiry.
    let (_, r) = external_status(&secrets, &all, t + 11 * day as i64, 5 * day);
    assert_eq!((r.ready, r.reason), (false, "Expired"));
}

#[test]
fn the_auto_certificates_name_every_member_the_services_and_localhost() {
    let names = ClusterNames {
        cluster: "main".into(),
        namespace: "db".into(),
        addressing: Addressing::Dns,
        client_tls: true,
        peer_tls: true,
        tls_moving: false,
    };
    let s = subjects(&names, &["etcd.example.com".to_owned()]);
    for want in [
        "*.main-peer.db.svc",
        "*.main-peer.db.svc.cluster.local",
        "main-client.db.svc",
        "main-client.db.svc.cluster.local",
        "localhost",
        "127.0.0.1",
        "etcd.example.com",
    ] {
        assert!(
            s.server.iter().any(|h| h == want),
            "server lacks {want}: {:?}",
            s.server
        );
    }
    // Each member's DNS name is covered by the wildcard.
    for i in 0..7 {
        let host = names.member_host(i);
        let (_, parent) = host.split_once('.').expect("a pod DNS name");
        assert!(s.server.contains(&format!("*.{parent}")), "{host}");
        assert!(s.peer.contains(&format!("*.{parent}")), "{host}");
    }
    // Peers are reached by their member names only.
    assert!(
        !s.peer
            .iter()
            .any(|h| h == "localhost" || h.contains("client"))
    );
}

#[test]
fn the_operator_uses_its_own_client_certificate_and_migrates_to_it() {
    let spec: crate::crd::TlsSpec = serde_yaml_ng::from_str("enabled: true\n").expect("spec");
    let settings = Settings::of(&spec).expect("settings");
    let mut auth = Authority::default();
    let subjects = Subjects {
        server: vec!["localhost".into()],
        peer: vec!["localhost".into()],
    };
    apply(
        &mut auth,
        &CertStep::Bootstrap,
        &Requests::default(),
        "c",
        &subjects,
        &settings,
        SystemTime::now(),
    )
    .expect("bootstrap");
    let own = auth.operator.clone().expect("the operator's certificate");
    match client_tls(&auth) {
        Some(crate::etcd::ClientTls::Pem { cert, key, .. }) => {
            assert_eq!((cert, key), (own.cert_pem.clone(), own.key_pem.clone()));
        }
        other => panic!("{other:?}"),
    }
    // The users' Secret carries theirs, never the operator's.
    let files: std::collections::BTreeMap<&str, String> = files(&auth).into_iter().collect();
    assert_ne!(files["client.key"], own.key_pem);
    // A record from before the operator had its own: it still connects (with the users'),
    // and the planner issues the missing certificate.
    let mut old = auth.clone();
    old.operator = None;
    let json = serde_json::to_string(&old).expect("json");
    assert!(!json.contains("\"operator\""));
    let old: Authority = serde_json::from_str(&json).expect("reads back");
    assert!(matches!(
        client_tls(&old),
        Some(crate::etcd::ClientTls::Pem { .. })
    ));
    let policy = settings.policy;
    let step = rotation::next(
        &old,
        &policy,
        &Requests::default(),
        &[],
        issue::unix(SystemTime::now()),
    );
    assert!(
        matches!(&step, CertStep::RenewLeaves { reason } if reason.contains("missing")),
        "{step:?}"
    );
}
