//! End-to-end tests against a real cluster (the current kubeconfig context), with the
//! operator image already loadable by the cluster: install deploy/, create a 3-member
//! EtcdCluster, wait for Available, then put and get through the client Service; roll out a
//! changed server flag and replace a member whose claim was deleted, checked through Events.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_operator::crd::EtcdCluster;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

fn kubectl(args: &[&str]) {
    let status = Command::new("kubectl")
        .args(args)
        .status()
        .expect("kubectl runs");
    assert!(status.success(), "kubectl {args:?} failed");
}

struct PortForward(Child);

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[tokio::test]
#[ignore = "needs cluster"]
async fn three_members_become_available_and_serve_through_the_client_service() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    kubectl(&["apply", "-f", &root.join("deploy").to_string_lossy()]);
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/etcdclusters.etcd.rustops.dev",
        "--timeout=60s",
    ]);
    kubectl(&[
        "-n",
        "etcd-operator-system",
        "rollout",
        "status",
        "deployment/etcd-operator",
        "--timeout=180s",
    ]);

    let client = Client::try_default().await.expect("kubeconfig");
    let ns = "default";
    let api: Api<EtcdCluster> = Api::namespaced(client, ns);
    let cluster: EtcdCluster = serde_yaml_ng::from_str(
        "apiVersion: etcd.rustops.dev/v1alpha1\nkind: EtcdCluster\nmetadata: {name: e2e}\nspec: {replicas: 3}\n",
    )
    .expect("valid");
    let _ = api.delete("e2e", &DeleteParams::default()).await;
    api.create(&PostParams::default(), &cluster)
        .await
        .expect("create");

    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let c = api.get("e2e").await.expect("get");
        let available = c
            .status
            .as_ref()
            .and_then(|s| etcd_operator::status::find(s, "Available"))
            .is_some_and(|c| c.status == "True");
        if available && c.status.as_ref().is_some_and(|s| s.ready_replicas == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not Available after 5 minutes: {:?}",
            c.status
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }

    let forward = PortForward(
        Command::new("kubectl")
            .args(["-n", ns, "port-forward", "svc/e2e-client", "23790:2379"])
            .stdout(Stdio::null())
            .spawn()
            .expect("port-forward"),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut etcd = etcd_client::Client::connect(["http://127.0.0.1:23790"], None)
        .await
        .expect("connect");
    etcd.put("e2e-key", "e2e-value", None).await.expect("put");
    let got = etcd.get("e2e-key", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"e2e-value");
    drop(forward);
    api.delete("e2e", &DeleteParams::default())
        .await
        .expect("delete");
}

/// Waits (bounded) until EtcdCluster `name` is Available with `ready` ready members and
/// nothing in progress.
async fn wait_settled(api: &Api<EtcdCluster>, name: &str, ready: i32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let c = api.get(name).await.expect("get");
        let status = c.status.as_ref();
        let cond = |t: &str| {
            status
                .and_then(|s| etcd_operator::status::find(s, t))
                .cloned()
        };
        let available = cond("Available").is_some_and(|c| c.status == "True");
        let in_sync = cond("Progressing").is_some_and(|c| c.reason == "InSync");
        if available && in_sync && status.is_some_and(|s| s.ready_replicas == ready) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not settled after 10 minutes: {status:?}"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Reasons of the operator's Events about EtcdCluster `name`, oldest first.
fn event_reasons(ns: &str, name: &str) -> Vec<String> {
    let out = Command::new("kubectl")
        .args([
            "-n",
            ns,
            "get",
            "events.events.k8s.io",
            "--field-selector",
            &format!("regarding.name={name}"),
            "--sort-by=.metadata.creationTimestamp",
            "-o",
            "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
        ])
        .output()
        .expect("kubectl get events");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A changed server flag is rolled out pod by pod (restarts, then a leader transfer, then the
/// old leader); then a member's claim and pod are deleted, and the operator replaces the lost
/// member (removed, added again, promoted).
#[tokio::test]
#[ignore = "needs cluster"]
async fn rolling_update_then_lost_member_replacement() {
    let client = Client::try_default().await.expect("kubeconfig");
    let ns = "default";
    let name = "e2e-ops";
    let api: Api<EtcdCluster> = Api::namespaced(client, ns);
    let cluster: EtcdCluster = serde_yaml_ng::from_str(&format!(
        "apiVersion: etcd.rustops.dev/v1alpha1\nkind: EtcdCluster\nmetadata: {{name: {name}}}\nspec: {{replicas: 3}}\n"
    ))
    .expect("valid");
    let _ = api.delete(name, &DeleteParams::default()).await;
    api.create(&PostParams::default(), &cluster)
        .await
        .expect("create");
    wait_settled(&api, name, 3, "created").await;

    kubectl(&[
        "-n",
        ns,
        "patch",
        "etcdcluster",
        name,
        "--type=merge",
        "-p",
        "{\"spec\":{\"server\":{\"snapshotCount\":5000}}}",
    ]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    wait_settled(&api, name, 3, "rolled out").await;
    let reasons = event_reasons(ns, name);
    let rollout: Vec<&str> = reasons
        .iter()
        .map(String::as_str)
        .filter(|r| matches!(*r, "MemberRestarted" | "LeaderMoved"))
        .collect();
    assert_eq!(
        rollout,
        [
            "MemberRestarted",
            "MemberRestarted",
            "LeaderMoved",
            "MemberRestarted"
        ],
        "{reasons:?}"
    );

    kubectl(&[
        "-n",
        ns,
        "delete",
        "pvc",
        &format!("data-{name}-1"),
        "--wait=false",
    ]);
    kubectl(&["-n", ns, "delete", "pod", &format!("{name}-1")]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    wait_settled(&api, name, 3, "lost member replaced").await;
    let reasons = event_reasons(ns, name);
    for want in ["LostMemberRemoved", "MemberReadded", "MemberPromoted"] {
        assert!(reasons.iter().any(|r| r == want), "no {want}: {reasons:?}");
    }
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
}

/// A client for EtcdCluster `name` through a port-forward of its client Service on `port`,
/// with the client certificate Secret `secret` (`ca.crt`, `tls.crt`, `tls.key`).
async fn tls_client_from_secret(
    ns: &str,
    name: &str,
    secret: &str,
    port: u16,
) -> (PortForward, etcd_client::Client) {
    use k8s_openapi::api::core::v1::Secret;
    let client = Client::try_default().await.expect("kubeconfig");
    let secrets: Api<Secret> = Api::namespaced(client, ns);
    let s = secrets.get(secret).await.expect("client Secret");
    let get = |k: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| b.0.clone())
            .unwrap_or_else(|| panic!("{secret} has no {k}"))
    };
    let forward = PortForward(
        Command::new("kubectl")
            .args([
                "-n",
                ns,
                "port-forward",
                &format!("svc/{name}-client"),
                &format!("{port}:2379"),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("port-forward"),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tls = etcd_client::TlsOptions::new()
        .domain_name(format!("{name}-client.{ns}.svc"))
        .ca_certificate(etcd_client::Certificate::from_pem(get("ca.crt")))
        .identity(etcd_client::Identity::from_pem(
            get("tls.crt"),
            get("tls.key"),
        ));
    let c = etcd_client::Client::connect(
        [format!("https://127.0.0.1:{port}")],
        Some(etcd_client::ConnectOptions::new().with_tls(tls)),
    )
    .await
    .expect("connect over TLS");
    (forward, c)
}

/// Waits (bounded) until `CertificatesReady` says `reason`.
async fn wait_certificates(api: &Api<EtcdCluster>, name: &str, reason: &str) -> EtcdCluster {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let c = api.get(name).await.expect("get");
        let ready = c
            .status
            .as_ref()
            .and_then(|s| etcd_operator::status::find(s, "CertificatesReady"))
            .is_some_and(|c| c.reason == reason);
        if ready {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "CertificatesReady is not {reason} after 10 minutes: {:?}",
            c.status
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// The operator as the CA on a real cluster: a TLS cluster serves through its client Service
/// with the `<name>-client-tls` Secret; a requested CA rotation finishes (`Idle` with a new
/// CA) while the data stays readable with the re-issued client certificate; then TLS is
/// turned off and on again for the running cluster, each peer URL moving by `MemberUpdate`.
#[tokio::test]
#[ignore = "needs cluster"]
async fn tls_cluster_rotates_its_ca_and_turns_tls_off_and_on() {
    let client = Client::try_default().await.expect("kubeconfig");
    let (ns, name) = ("default", "e2e-tls");
    let api: Api<EtcdCluster> = Api::namespaced(client, ns);
    let cluster: EtcdCluster = serde_yaml_ng::from_str(&format!(
        "apiVersion: etcd.rustops.dev/v1alpha1\nkind: EtcdCluster\nmetadata: {{name: {name}}}\nspec: {{replicas: 3, tls: {{enabled: true}}}}\n"
    ))
    .expect("valid");
    let _ = api.delete(name, &DeleteParams::default()).await;
    api.create(&PostParams::default(), &cluster)
        .await
        .expect("create");
    wait_settled(&api, name, 3, "created").await;
    let before = wait_certificates(&api, name, "Ready").await;
    let ca = |c: &EtcdCluster| {
        c.status
            .as_ref()
            .and_then(|s| s.tls.as_ref())
            .and_then(|t| t.certificates.first())
            .map(|c| c.sha256.clone())
    };
    let (forward, mut etcd) =
        tls_client_from_secret(ns, name, &format!("{name}-client-tls"), 23791).await;
    etcd.put("tls-key", "v", None).await.expect("put over TLS");
    drop(forward);

    kubectl(&[
        "-n",
        ns,
        "annotate",
        "--overwrite",
        "etcdcluster",
        name,
        "etcd.rustops.dev/rotate-ca=1",
    ]);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let c = wait_certificates(&api, name, "Ready").await;
        let idle = c
            .status
            .as_ref()
            .and_then(|s| s.tls.as_ref())
            .is_some_and(|t| t.phase == "Idle");
        if idle && ca(&c) != ca(&before) {
            break;
        }
        assert!(Instant::now() < deadline, "the CA did not rotate");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let (forward, mut etcd) =
        tls_client_from_secret(ns, name, &format!("{name}-client-tls"), 23792).await;
    let got = etcd
        .get("tls-key", None)
        .await
        .expect("get after the rotation");
    assert_eq!(got.kvs()[0].value(), b"v");
    drop(forward);

    for on in [false, true] {
        kubectl(&[
            "-n",
            ns,
            "patch",
            "etcdcluster",
            name,
            "--type=merge",
            "-p",
            &format!("{{\"spec\":{{\"tls\":{{\"enabled\":{on}}}}}}}"),
        ]);
        tokio::time::sleep(Duration::from_secs(10)).await;
        wait_settled(&api, name, 3, "TLS moved").await;
        let moved = event_reasons(ns, name)
            .iter()
            .filter(|r| *r == "PeerUrlMoved")
            .count();
        assert_eq!(moved, if on { 6 } else { 3 }, "peer URL moves");
    }
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
}

/// `provider: CertManager` on a real cluster with cert-manager installed: a self-signed CA
/// issuer, the cluster's three Certificates issued by it, members serving the mounted Secrets,
/// `status.tls` reporting them `Ready`, and a client with `<name>-client-tls` getting in.
#[tokio::test]
#[ignore = "needs cluster"]
async fn cert_manager_issues_the_certificates_of_a_cluster() {
    let (ns, name) = ("default", "e2e-cm");
    let issuers = format!(
        "apiVersion: cert-manager.io/v1\nkind: Issuer\nmetadata: {{name: e2e-selfsigned, namespace: {ns}}}\nspec: {{selfSigned: {{}}}}\n---\n\
         apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {{name: e2e-ca, namespace: {ns}}}\n\
         spec: {{isCA: true, commonName: e2e-ca, secretName: e2e-ca, privateKey: {{algorithm: ECDSA, size: 256}}, issuerRef: {{name: e2e-selfsigned, kind: Issuer}}}}\n---\n\
         apiVersion: cert-manager.io/v1\nkind: Issuer\nmetadata: {{name: e2e-ca, namespace: {ns}}}\nspec: {{ca: {{secretName: e2e-ca}}}}\n"
    );
    let file = std::env::temp_dir().join("e2e-cert-manager-issuers.yaml");
    std::fs::write(&file, issuers).expect("write issuers");
    kubectl(&["apply", "-f", &file.to_string_lossy()]);
    kubectl(&[
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        "certificate/e2e-ca",
        "--timeout=120s",
    ]);
    let client = Client::try_default().await.expect("kubeconfig");
    let api: Api<EtcdCluster> = Api::namespaced(client, ns);
    let cluster: EtcdCluster = serde_yaml_ng::from_str(&format!(
        "apiVersion: etcd.rustops.dev/v1alpha1\nkind: EtcdCluster\nmetadata: {{name: {name}}}\n\
         spec: {{replicas: 3, tls: {{enabled: true, provider: CertManager, certManager: {{issuerName: e2e-ca, issuerKind: Issuer}}}}}}\n"
    ))
    .expect("valid");
    let _ = api.delete(name, &DeleteParams::default()).await;
    api.create(&PostParams::default(), &cluster)
        .await
        .expect("create");
    wait_settled(&api, name, 3, "created").await;
    let c = wait_certificates(&api, name, "Ready").await;
    let phase = c
        .status
        .as_ref()
        .and_then(|s| s.tls.as_ref())
        .map(|t| t.phase.clone());
    assert_eq!(phase.as_deref(), Some("External"));
    let (forward, mut etcd) =
        tls_client_from_secret(ns, name, &format!("{name}-client-tls"), 23793).await;
    etcd.put("cm-key", "v", None).await.expect("put over TLS");
    drop(forward);
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    kubectl(&["delete", "-f", &file.to_string_lossy()]);
}
