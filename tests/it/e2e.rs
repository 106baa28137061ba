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
