//! Reconciles of clusters with `spec.tls`, against the same mock apiserver: the operator as
//! CA (its Secrets before anything else), and cert-manager's certificates reported from the
//! Secrets cert-manager writes.

use super::*;

/// `spec.tls` on a new cluster: no CA record yet, so the operator becomes the CA and applies
/// the three Secrets (the record first) before anything else; the ConfigMap's files use
/// https and the mounted paths; the StatefulSet mounts the Secret; the status reports the
/// certificates.
#[tokio::test]
async fn a_tls_cluster_gets_its_certificates_before_its_members() {
    const CA: &str = "/api/v1/namespaces/db/secrets/main-ca";
    const TLS: &str = "/api/v1/namespaces/db/secrets/main-tls";
    const CLIENT_TLS: &str = "/api/v1/namespaces/db/secrets/main-client-tls";
    let (ctx, handle) = context(Arc::new(FakeEtcd::default()));
    let mut steps = vec![step(Method::GET, CA, Reply::NotFound)];
    steps.extend([
        step(Method::GET, STS, Reply::NotFound),
        step(Method::GET, CM, Reply::NotFound),
        step(Method::GET, PDB, Reply::NotFound),
        checked(Method::PATCH, CA, Reply::Echo, |b| {
            assert_eq!(b["kind"], "Secret");
            assert!(b["data"]["authority.json"].is_string(), "{b}");
        }),
        checked(Method::PATCH, TLS, Reply::Echo, |b| {
            let keys: Vec<&str> = b["data"]
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            assert_eq!(
                keys,
                [
                    "ca.crt",
                    "peer-ca.crt",
                    "peer.crt",
                    "peer.key",
                    "server.crt",
                    "server.key"
                ]
            );
        }),
        checked(Method::PATCH, CLIENT_TLS, Reply::Echo, |b| {
            assert_eq!(b["type"], "kubernetes.io/tls");
            assert!(b["data"]["tls.crt"].is_string() && b["data"]["ca.crt"].is_string());
        }),
        checked(Method::POST, EVENTS, Reply::Echo, |b| {
            assert_eq!(b["reason"], "CertificatesIssued")
        }),
        checked(Method::POST, EVENTS, Reply::Echo, |b| {
            assert_eq!(b["reason"], "Bootstrapping")
        }),
    ]);
    let mut a = applies(3);
    a[0] = checked(Method::PATCH, CM, Reply::Echo, |b| {
        let f = b["data"]["main-0.yaml"].as_str().expect("member file");
        for want in [
            "listen-client-urls: https://0.0.0.0:2379",
            "initial-advertise-peer-urls: https://main-0.main-peer.db.svc:2380",
            "listen-metrics-urls: http://0.0.0.0:2381",
            "cert-file: /etc/etcd-tls/server.crt",
            "cert-file: /etc/etcd-tls/peer.crt",
            "trusted-ca-file: /etc/etcd-tls/ca.crt",
        ] {
            assert!(f.contains(want), "{want} not in\n{f}");
        }
    });
    a[4] = checked(Method::PATCH, STS, Reply::Echo, |b| {
        let pod = &b["spec"]["template"]["spec"];
        let volumes = pod["volumes"].as_array().expect("volumes");
        assert!(
            volumes
                .iter()
                .any(|v| v["name"] == "tls" && v["secret"]["secretName"] == "main-tls"),
            "{volumes:?}"
        );
        let c = &pod["containers"][0];
        assert!(
            c["volumeMounts"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["mountPath"] == "/etc/etcd-tls"))
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
    });
    steps.extend(a);
    steps.push(checked(Method::PATCH, STATUS, Reply::Echo, |b| {
        let tls = &b["status"]["tls"];
        assert_eq!(tls["phase"], "Idle");
        // The CA, server, peer, the users' client and the operator's own.
        assert_eq!(tls["certificates"].as_array().map(Vec::len), Some(5));
        assert_eq!(
            condition(b, "CertificatesReady"),
            ("True".into(), "Ready".into())
        );
    }));
    let server = run_steps(steps, handle);
    let cluster = cluster("  tls:\n    enabled: true\n");
    reconcile(Arc::new(cluster), ctx).await.expect("reconciles");
    finish(server).await;
}

/// `provider: CertManager` on a new cluster: the operator asks for its client certificate's
/// Secret (not issued yet), applies the three cert-manager Certificates, reads the Secrets
/// cert-manager writes (server and peer issued, client not yet), builds the members on the
/// mapped files, and reports what the Secrets hold, `NotIssued` while one is missing.
#[tokio::test]
async fn a_cert_manager_cluster_reports_what_its_secrets_hold() {
    use etcd_operator::certs::{LeafKind, issue};
    use std::time::SystemTime;
    const CERTS: &str = "/apis/cert-manager.io/v1/namespaces/db/certificates";
    const SECRETS: &str = "/api/v1/namespaces/db/secrets";
    let now = SystemTime::now();
    let alg = etcd_operator::crd::KeyAlgorithm::EcdsaP256;
    let ca = issue::new_ca("issuer-ca", alg, Duration::from_secs(86400 * 365), now).expect("ca");
    let secret = |role: &str, kind| {
        let leaf = issue::leaf(
            &ca,
            kind,
            role,
            &[],
            alg,
            Duration::from_secs(86400 * 90),
            now,
        )
        .expect("leaf");
        use k8s_openapi::ByteString;
        let data = [
            ("tls.crt", &leaf.cert_pem),
            ("tls.key", &leaf.key_pem),
            ("ca.crt", &ca.cert_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
        .collect();
        let mut secret = k8s_openapi::api::core::v1::Secret {
            data: Some(data),
            type_: Some("kubernetes.io/tls".into()),
            ..Default::default()
        };
        secret.metadata.name = Some(format!("main-{role}-tls"));
        secret.metadata.namespace = Some("db".into());
        let mut v = serde_json::to_value(secret).expect("json");
        v["apiVersion"] = json!("v1");
        v["kind"] = json!("Secret");
        v
    };
    let (server, peer) = (
        secret("server", LeafKind::Server),
        secret("peer", LeafKind::Peer),
    );
    let (ctx, handle) = context(Arc::new(FakeEtcd::default()));
    let client_secret = format!("{SECRETS}/main-client-tls");
    let mut steps = vec![
        step(Method::GET, &client_secret, Reply::NotFound),
        step(Method::GET, STS, Reply::NotFound),
        step(Method::GET, CM, Reply::NotFound),
        step(Method::GET, PDB, Reply::NotFound),
    ];
    for role in ["server", "peer", "client"] {
        steps.push(checked(
            Method::PATCH,
            &format!("{CERTS}/main-{role}"),
            Reply::Echo,
            move |b| {
                assert_eq!(b["kind"], "Certificate");
                assert_eq!(b["spec"]["secretName"], format!("main-{role}-tls"));
                assert_eq!(b["spec"]["issuerRef"]["name"], "corp-ca");
            },
        ));
    }
    steps.extend([
        step(
            Method::GET,
            &format!("{SECRETS}/main-server-tls"),
            Reply::Object(server),
        ),
        step(
            Method::GET,
            &format!("{SECRETS}/main-peer-tls"),
            Reply::Object(peer),
        ),
        step(Method::GET, &client_secret, Reply::NotFound),
        checked(Method::POST, EVENTS, Reply::Echo, |b| {
            assert_eq!(b["reason"], "Bootstrapping")
        }),
    ]);
    let mut a = applies(3);
    a[4] = checked(Method::PATCH, STS, Reply::Echo, |b| {
        let volumes = b["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes");
        let tls = volumes
            .iter()
            .find(|v| v["name"] == "tls")
            .expect("tls volume");
        let sources = tls["projected"]["sources"].as_array().expect("projected");
        let secrets: Vec<&str> = sources
            .iter()
            .filter_map(|s| s["secret"]["name"].as_str())
            .collect();
        assert_eq!(secrets, ["main-server-tls", "main-peer-tls"], "{tls}");
    });
    steps.extend(a);
    steps.push(checked(Method::PATCH, STATUS, Reply::Echo, |b| {
        let tls = &b["status"]["tls"];
        assert_eq!(tls["phase"], "External");
        let roles: Vec<&str> = tls["certificates"]
            .as_array()
            .expect("certificates")
            .iter()
            .filter_map(|c| c["role"].as_str())
            .collect();
        assert_eq!(roles, ["ca", "server", "peer"]);
        let (status, reason) = condition(b, "CertificatesReady");
        assert_eq!((status.as_str(), reason.as_str()), ("False", "NotIssued"));
        let message = b["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "CertificatesReady"))
            .map(|c| c["message"].to_string())
            .unwrap_or_default();
        assert!(message.contains("main-client-tls"), "{message}");
    }));
    let server = run_steps(steps, handle);
    let cluster = cluster(
        "  tls:\n    enabled: true\n    provider: CertManager\n    certManager:\n      issuerName: corp-ca\n      issuerKind: ClusterIssuer\n",
    );
    reconcile(Arc::new(cluster), ctx).await.expect("reconciles");
    finish(server).await;
}
