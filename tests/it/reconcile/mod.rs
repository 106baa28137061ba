//! Reconciles against a mock apiserver (kube-rs's `tower_test::mock::pair` pattern): each
//! scenario lists the requests the reconciler must make, in order — method, path, and a check
//! of the body — and the mock's replies. A timeout catches requests that never came.

use std::sync::Arc;
use std::time::Duration;

use etcd_operator::build::build;
use etcd_operator::controller::{Context, error_policy, reconcile};
use etcd_operator::crd::{EtcdCluster, EtcdClusterStatus};
use etcd_operator::etcd::EtcdAdmin;
use etcd_operator::metrics::Metrics;
use etcd_operator::observe::Observed;
use etcd_operator::plan::plan;
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use crate::fixtures::*;

mod backup;
mod restore;
mod tls;

/// What the mock answers.
enum Reply {
    /// 404 with a Kubernetes Status body.
    NotFound,
    /// 500 with a Kubernetes Status body.
    ServerError,
    /// The request body, as an apiserver answers an apply.
    Echo,
    /// This object.
    Object(Value),
}

/// One expected request.
struct Step {
    method: Method,
    path: String,
    check: Box<dyn Fn(&Value) + Send>,
    reply: Reply,
}

fn step(method: Method, path: &str, reply: Reply) -> Step {
    Step {
        method,
        path: path.to_owned(),
        check: Box::new(|_| {}),
        reply,
    }
}

fn checked(
    method: Method,
    path: &str,
    reply: Reply,
    check: impl Fn(&Value) + Send + 'static,
) -> Step {
    Step {
        method,
        path: path.to_owned(),
        check: Box::new(check),
        reply,
    }
}

const STS: &str = "/apis/apps/v1/namespaces/db/statefulsets/main";
const CM: &str = "/api/v1/namespaces/db/configmaps/main-config";
const PDB: &str = "/apis/policy/v1/namespaces/db/poddisruptionbudgets/main";
const PEER: &str = "/api/v1/namespaces/db/services/main-peer";
const CLIENT: &str = "/api/v1/namespaces/db/services/main-client";
const STATUS: &str = "/apis/etcd.rustops.dev/v1alpha1/namespaces/db/etcdclusters/main/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/db/events";
const PODS: &str = "/api/v1/namespaces/db/pods";

/// A member's pod as the apiserver lists it: on template revision `revision`, and, when
/// `message` is given, with the etcd container's last termination message.
fn pod(i: i32, revision: &str, message: Option<&str>) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("main-{i}"), "namespace": "db",
                     "labels": {"controller-revision-hash": revision}},
        "status": {"containerStatuses": [{
            "name": "etcd", "image": "etcd-server", "imageID": "", "ready": message.is_none(),
            "restartCount": 0, "state": {"running": {}}
        }]}
    });
    if let Some(m) = message {
        p["status"]["containerStatuses"][0]["lastState"] =
            json!({"terminated": {"exitCode": 1, "message": m}});
    }
    p
}

fn pod_list(pods: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods})
}

/// The reads of a reconcile of an existing cluster.
fn reads(sts: Value, cm: Value, pdb: Value, pods: Value) -> Vec<Step> {
    vec![
        step(Method::GET, STS, Reply::Object(sts)),
        step(Method::GET, CM, Reply::Object(cm)),
        step(Method::GET, PDB, Reply::Object(pdb)),
        checked(Method::GET, PODS, Reply::Object(pods), |_| {}),
    ]
}

/// The scenarios.
enum Scenario {
    /// Nothing exists: reads find nothing, an Event announces the bootstrap, every object is
    /// applied in order, then the status.
    Bootstrap,
    /// The spec is invalid: reads, a warning Event, the status; nothing applied.
    InvalidSpec,
    /// Everything exists and is healthy: reads, applies (no-ops), an Available status.
    InSync { sts: Value, cm: Value, pdb: Value },
    /// One more member wanted: reads, the MemberAdded Event, applies with 4 replicas.
    ScaleUp { sts: Value, cm: Value, pdb: Value },
    /// The apiserver fails the first read.
    ReadFails,
    /// An existing cluster whose reads return these objects and pods, then `then`.
    Existing {
        sts: Value,
        cm: Value,
        pdb: Value,
        pods: Value,
        then: Vec<Step>,
    },
}

fn condition(status: &Value, type_: &str) -> (String, String) {
    let c = status["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"));
    (
        c["status"].as_str().unwrap_or_default().to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

fn applies(replicas: i64) -> Vec<Step> {
    vec![
        checked(Method::PATCH, CM, Reply::Echo, |b| {
            assert_eq!(b["kind"], "ConfigMap");
            assert!(
                b["data"]["main-0.yaml"]
                    .as_str()
                    .is_some_and(|f| f.contains("name: main-0"))
            );
        }),
        checked(Method::PATCH, PEER, Reply::Echo, |b| {
            assert_eq!(b["spec"]["clusterIP"], "None")
        }),
        checked(Method::PATCH, CLIENT, Reply::Echo, |b| {
            assert_eq!(b["spec"]["ports"][0]["port"], 2379)
        }),
        checked(Method::PATCH, PDB, Reply::Echo, |b| {
            assert_eq!(b["spec"]["maxUnavailable"], 1)
        }),
        checked(Method::PATCH, STS, Reply::Echo, move |b| {
            assert_eq!(b["kind"], "StatefulSet");
            assert_eq!(b["spec"]["replicas"], replicas);
            assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "EtcdCluster");
        }),
    ]
}

impl Scenario {
    fn steps(self) -> Vec<Step> {
        let reads_nothing = || {
            vec![
                step(Method::GET, STS, Reply::NotFound),
                step(Method::GET, CM, Reply::NotFound),
                step(Method::GET, PDB, Reply::NotFound),
            ]
        };
        match self {
            Scenario::Bootstrap => {
                let mut s = reads_nothing();
                s.push(checked(Method::POST, EVENTS, Reply::Echo, |b| {
                    assert_eq!(b["reason"], "Bootstrapping");
                    assert_eq!(b["type"], "Normal");
                    assert_eq!(b["regarding"]["kind"], "EtcdCluster");
                }));
                s.extend(applies(3));
                s.push(checked(Method::PATCH, STATUS, Reply::Echo, |b| {
                    assert_eq!(b["status"]["observedGeneration"], 1);
                    assert_eq!(
                        condition(b, "Progressing"),
                        ("True".into(), "Bootstrapping".into())
                    );
                    assert_eq!(
                        condition(b, "Available"),
                        ("False".into(), "Bootstrapping".into())
                    );
                    assert_eq!(condition(b, "Degraded"), ("False".into(), "Healthy".into()));
                }));
                s
            }
            Scenario::InvalidSpec => {
                let mut s = reads_nothing();
                s.push(checked(Method::POST, EVENTS, Reply::Echo, |b| {
                    assert_eq!(b["reason"], "InvalidSpec");
                    assert_eq!(b["type"], "Warning");
                    assert!(
                        b["note"].as_str().is_some_and(|n| n.contains("--bogus")),
                        "{b}"
                    );
                }));
                s.push(checked(Method::PATCH, STATUS, Reply::Echo, |b| {
                    assert_eq!(
                        condition(b, "Degraded"),
                        ("True".into(), "InvalidSpec".into())
                    );
                    assert_eq!(
                        condition(b, "Progressing"),
                        ("False".into(), "InvalidSpec".into())
                    );
                    assert_eq!(
                        condition(b, "Available"),
                        ("False".into(), "InvalidSpec".into())
                    );
                }));
                s
            }
            Scenario::InSync { sts, cm, pdb } => {
                let pods = pod_list((0..3).map(|i| pod(i, "r1", None)).collect());
                let mut s = reads(sts, cm, pdb, pods);
                s.extend(applies(3));
                s.push(checked(Method::PATCH, STATUS, Reply::Echo, |b| {
                    let st = &b["status"];
                    assert_eq!(
                        condition(b, "Available"),
                        ("True".into(), "QuorumAvailable".into())
                    );
                    assert_eq!(
                        condition(b, "Progressing"),
                        ("False".into(), "InSync".into())
                    );
                    assert_eq!(condition(b, "Degraded"), ("False".into(), "Healthy".into()));
                    assert_eq!(st["readyReplicas"], 3);
                    assert_eq!(st["leader"], "main-0");
                    assert_eq!(st["currentVersion"], "3.5.17");
                    assert_eq!(st["clusterId"], "00000000000000c1");
                    assert_eq!(st["members"].as_array().map(Vec::len), Some(3));
                    assert_eq!(st["members"][0]["isLeader"], true);
                    assert_eq!(st["members"][1]["id"], "0000000000000101");
                }));
                s
            }
            Scenario::ScaleUp { sts, cm, pdb } => {
                let pods = pod_list((0..3).map(|i| pod(i, "r1", None)).collect());
                let mut s = reads(sts, cm, pdb, pods);
                let mut a = applies(4);
                a[0] = checked(Method::PATCH, CM, Reply::Echo, |b| {
                    let f = b["data"]["main-3.yaml"]
                        .as_str()
                        .expect("a file for the new member");
                    assert!(f.contains("initial-cluster-state: existing"), "{f}");
                });
                s.extend(a);
                s.push(checked(Method::POST, EVENTS, Reply::Echo, |b| {
                    assert_eq!(b["reason"], "MemberAdded")
                }));
                s.push(checked(Method::PATCH, STATUS, Reply::Echo, |b| {
                    assert_eq!(
                        condition(b, "Progressing"),
                        ("True".into(), "ScalingUp".into())
                    );
                }));
                s
            }
            Scenario::ReadFails => vec![step(Method::GET, STS, Reply::ServerError)],
            Scenario::Existing {
                sts,
                cm,
                pdb,
                pods,
                then,
            } => {
                let mut s = reads(sts, cm, pdb, pods);
                s.extend(then);
                s
            }
        }
    }

    /// Serves the scenario's requests in order, asserting each.
    fn run(self, handle: Handle<Request<Body>, Response<Body>>) -> tokio::task::JoinHandle<()> {
        run_steps(self.steps(), handle)
    }
}

/// Serves `steps` in order, asserting each.
fn run_steps(
    steps: Vec<Step>,
    mut handle: Handle<Request<Body>, Response<Body>>,
) -> tokio::task::JoinHandle<()> {
    {
        tokio::spawn(async move {
            for (i, s) in steps.into_iter().enumerate() {
                let (request, send) = handle
                    .next_request()
                    .await
                    .unwrap_or_else(|| panic!("request {i} never came"));
                assert_eq!(request.method(), s.method, "request {i}: {}", request.uri());
                assert_eq!(request.uri().path(), s.path, "request {i}");
                if s.method == Method::PATCH {
                    let query = request.uri().query().unwrap_or_default();
                    let apply = request
                        .headers()
                        .get(http::header::CONTENT_TYPE)
                        .is_some_and(|t| t.as_bytes().starts_with(b"application/apply-patch"));
                    // Every write under the operator's field manager; applies forced.
                    assert!(
                        query.contains("fieldManager=etcd-operator")
                            && (!apply || query.contains("force=true")),
                        "request {i}: {query}"
                    );
                }
                let bytes = request.into_body().collect_bytes().await.expect("body");
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).expect("JSON body")
                };
                (s.check)(&body);
                let (code, reply) = match s.reply {
                    Reply::NotFound => (StatusCode::NOT_FOUND, status_body(404, "NotFound")),
                    Reply::ServerError => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        status_body(500, "InternalError"),
                    ),
                    Reply::Echo => (StatusCode::OK, echo(body)),
                    Reply::Object(v) => (StatusCode::OK, v),
                };
                let bytes = serde_json::to_vec(&reply).expect("json");
                send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(bytes))
                        .expect("response"),
                );
            }
        })
    }
}

/// An apply's answer: the object, with the fields an apiserver always sets.
fn echo(mut body: Value) -> Value {
    if body["metadata"].is_object() && body["metadata"]["name"].is_null() {
        body["metadata"]["name"] = json!("main");
    }
    if body["metadata"].is_null() {
        body["metadata"] = json!({"name": "main", "namespace": "db"});
    }
    // A status apply carries only the status; the apiserver answers with the whole object.
    if body["kind"] == "EtcdCluster" && body["spec"].is_null() {
        body["spec"] = json!({});
    }
    body
}

fn status_body(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": reason, "reason": reason, "code": code})
}

fn context(etcd: Arc<dyn EtcdAdmin>) -> (Arc<Context>, Handle<Request<Body>, Response<Body>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    (
        Arc::new(Context::new(
            client,
            etcd,
            Metrics::new(),
            Some("test".into()),
        )),
        handle,
    )
}

async fn finish(server: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("the scenario timed out")
        .expect("the scenario failed");
}

/// The objects of a settled cluster of 3, as the apiserver returns them.
fn existing(cluster: &EtcdCluster) -> (Value, Value, Value) {
    let c = validated(cluster);
    let desired = plan(Ok(&c), &Observed::default()).desired.expect("objects");
    let o = build(&c, &desired).expect("builds");
    let mut sts = serde_json::to_value(&o.statefulset).expect("json");
    sts["metadata"]["generation"] = json!(1);
    sts["status"] = json!({"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3, "observedGeneration": 1, "currentRevision": "r1", "updateRevision": "r1"});
    (
        sts,
        config_map_json(&c, 3),
        serde_json::to_value(o.pdb.expect("pdb")).expect("json"),
    )
}

fn seen(mut cluster: EtcdCluster) -> EtcdCluster {
    cluster.status = Some(EtcdClusterStatus {
        observed_generation: cluster.metadata.generation,
        ..EtcdClusterStatus::default()
    });
    cluster
}

#[tokio::test]
async fn bootstrap_applies_everything_in_order_then_status() {
    let (ctx, handle) = context(Arc::new(FakeEtcd::default()));
    let server = Scenario::Bootstrap.run(handle);
    let action = reconcile(Arc::new(default_cluster()), ctx)
        .await
        .expect("reconciles");
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    finish(server).await;
}

#[tokio::test]
async fn invalid_spec_is_reported_and_nothing_applied() {
    let (ctx, handle) = context(Arc::new(FakeEtcd::default()));
    let server = Scenario::InvalidSpec.run(handle);
    let cluster = cluster("  server:\n    extraArgs: {bogus: \"1\"}\n");
    let action = reconcile(Arc::new(cluster), ctx)
        .await
        .expect("an invalid spec is not an error");
    assert_eq!(action, Action::await_change());
    finish(server).await;
}

#[tokio::test]
async fn healthy_cluster_is_in_sync_and_available() {
    let etcd = FakeEtcd::healthy(3);
    let (ctx, handle) = context(etcd.clone());
    let cluster = seen(default_cluster());
    let (sts, cm, pdb) = existing(&cluster);
    let server = Scenario::InSync { sts, cm, pdb }.run(handle);
    let action = reconcile(Arc::new(cluster), ctx).await.expect("reconciles");
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    finish(server).await;
    assert!(
        etcd.calls().is_empty(),
        "no membership change: {:?}",
        etcd.calls()
    );
}

#[tokio::test]
async fn scale_up_adds_a_learner_before_growing_the_statefulset() {
    let etcd = FakeEtcd::healthy(3);
    let (ctx, handle) = context(etcd.clone());
    let three = seen(default_cluster());
    let (sts, cm, pdb) = existing(&three);
    let mut four = three.clone();
    four.spec.replicas = 4;
    let server = Scenario::ScaleUp { sts, cm, pdb }.run(handle);
    reconcile(Arc::new(four), ctx).await.expect("reconciles");
    finish(server).await;
    assert_eq!(etcd.calls(), vec![format!("add {}", names().peer_url(3))]);
}

#[tokio::test]
async fn failures_back_off_per_cluster_and_are_counted() {
    let (ctx, handle) = context(Arc::new(FakeEtcd::default()));
    let server = Scenario::ReadFails.run(handle);
    let cluster = Arc::new(default_cluster());
    let err = reconcile(cluster.clone(), ctx.clone())
        .await
        .expect_err("the read fails");
    finish(server).await;
    assert_eq!(err.metric_label(), "observe");
    assert!(
        err.to_string()
            .starts_with("failed to read StatefulSet main"),
        "{err}"
    );
    assert_eq!(
        error_policy(cluster.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(cluster.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    let mut other = (*cluster).clone();
    other.metadata.name = Some("other".into());
    assert_eq!(
        error_policy(Arc::new(other), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(ctx.metrics.errors.with_label_values(&["observe"]).get(), 3);
    assert!(
        ctx.metrics
            .encode()
            .contains("etcd_operator_reconcile_errors_total{error=\"observe\"} 3")
    );
}

/// Reconciles `cluster` once against the mock, which serves the reads of `objects`
/// (StatefulSet, ConfigMap, budget, pods) and then `then`.
async fn run_existing(
    cluster: EtcdCluster,
    ctx: Arc<Context>,
    handle: Handle<Request<Body>, Response<Body>>,
    (sts, cm, pdb, pods): (Value, Value, Value, Value),
    then: Vec<Step>,
) {
    let server = Scenario::Existing {
        sts,
        cm,
        pdb,
        pods,
        then,
    }
    .run(handle);
    reconcile(Arc::new(cluster), ctx).await.expect("reconciles");
    finish(server).await;
}

/// `reason` Event, then a status whose Progressing condition has `progressing`.
fn event_and_status(reason: &'static str, progressing: &'static str) -> Vec<Step> {
    vec![
        checked(Method::POST, EVENTS, Reply::Echo, move |b| {
            assert_eq!(b["reason"], reason, "{b}")
        }),
        checked(Method::PATCH, STATUS, Reply::Echo, move |b| {
            assert_eq!(
                condition(b, "Progressing"),
                ("True".into(), progressing.into())
            );
        }),
    ]
}

#[tokio::test]
async fn rolling_update_deletes_one_stale_follower_pod() {
    // Pods 0 (the leader) and 1 run the old revision: follower 1 goes first.
    let etcd = FakeEtcd::healthy(3);
    let (ctx, handle) = context(etcd.clone());
    let cluster = seen(default_cluster());
    let (mut sts, cm, pdb) = existing(&cluster);
    sts["status"]["updateRevision"] = json!("r2");
    let pods = pod_list(vec![
        pod(0, "r1", None),
        pod(1, "r1", None),
        pod(2, "r2", None),
    ]);
    let mut then = applies(3);
    then.push(step(
        Method::DELETE,
        "/api/v1/namespaces/db/pods/main-1",
        Reply::Echo,
    ));
    then.extend(event_and_status("MemberRestarted", "RollingOut"));
    run_existing(cluster, ctx, handle, (sts, cm, pdb, pods), then).await;
    assert!(etcd.calls().is_empty(), "{:?}", etcd.calls());
}

#[tokio::test]
async fn a_member_whose_data_is_lost_is_removed_first() {
    let mut etcd = FakeEtcd::healthy(3);
    Arc::get_mut(&mut etcd)
        .expect("unshared")
        .statuses
        .remove(&names().client_url(1));
    let (ctx, handle) = context(etcd.clone());
    let cluster = seen(default_cluster());
    let (sts, cm, pdb) = existing(&cluster);
    let lost = "etcd-server: member 101 has already been bootstrapped";
    let pods = pod_list(vec![
        pod(0, "r1", None),
        pod(1, "r1", Some(lost)),
        pod(2, "r1", None),
    ]);
    let mut then = applies(3);
    then.extend(event_and_status("LostMemberRemoved", "ReplacingMember"));
    run_existing(cluster, ctx, handle, (sts, cm, pdb, pods), then).await;
    assert_eq!(etcd.calls(), vec![format!("remove {:x}", member_id(1))]);
}

#[tokio::test]
async fn a_removed_lost_member_is_added_again_and_its_claim_and_pod_deleted() {
    let mut etcd = FakeEtcd::healthy(3);
    {
        let e = Arc::get_mut(&mut etcd).expect("unshared");
        e.statuses.remove(&names().client_url(1));
        e.members.as_mut().expect("members").remove(1);
    }
    let (ctx, handle) = context(etcd.clone());
    let cluster = seen(default_cluster());
    let (sts, cm, pdb) = existing(&cluster);
    let removed = "the member has been permanently removed from the cluster";
    let pods = pod_list(vec![
        pod(0, "r1", None),
        pod(1, "r1", Some(removed)),
        pod(2, "r1", None),
    ]);
    let mut then = applies(3);
    then[0] = checked(Method::PATCH, CM, Reply::Echo, |b| {
        let f = b["data"]["main-1.yaml"].as_str().expect("main-1's file");
        assert!(f.contains("initial-cluster-state: existing"), "{f}");
        let f0 = b["data"]["main-0.yaml"].as_str().expect("main-0's file");
        assert!(f0.contains("initial-cluster-state: new"), "{f0}");
    });
    then.push(step(
        Method::DELETE,
        "/api/v1/namespaces/db/persistentvolumeclaims/data-main-1",
        Reply::Echo,
    ));
    then.push(step(
        Method::DELETE,
        "/api/v1/namespaces/db/pods/main-1",
        Reply::Echo,
    ));
    then.extend(event_and_status("MemberReadded", "ReplacingMember"));
    run_existing(cluster, ctx, handle, (sts, cm, pdb, pods), then).await;
    assert_eq!(etcd.calls(), vec![format!("add {}", names().peer_url(1))]);
}

/// Records what a runtime was asked to do.
#[derive(Default)]
struct RecordingRuntime {
    calls: Vec<String>,
}

impl etcd_operator::runtime::MemberRuntime for RecordingRuntime {
    type Error = etcd_operator::etcd::Error;

    fn apply<'a>(
        &'a mut self,
        _: &'a etcd_operator::validate::ValidatedCluster,
        desired: &'a etcd_operator::plan::Desired,
    ) -> futures::future::BoxFuture<'a, Result<(), Self::Error>> {
        self.calls.push(format!("apply {}", desired.replicas));
        Box::pin(async { Ok(()) })
    }

    fn restart<'a>(
        &'a mut self,
        _: &'a etcd_operator::validate::ValidatedCluster,
        ordinal: i32,
    ) -> futures::future::BoxFuture<'a, Result<(), Self::Error>> {
        self.calls.push(format!("restart {ordinal}"));
        Box::pin(async { Ok(()) })
    }

    fn wipe<'a>(
        &'a mut self,
        _: &'a etcd_operator::validate::ValidatedCluster,
        ordinal: i32,
    ) -> futures::future::BoxFuture<'a, Result<(), Self::Error>> {
        self.calls.push(format!("wipe {ordinal}"));
        Box::pin(async { Ok(()) })
    }
}

/// etcd's strict reconfiguration ("unhealthy cluster" right after a promotion) makes a step
/// wait: no error, and nothing else of the step happens before the change (a scale-in must
/// not stop a member etcd still counts). Any other refusal is an error, and nothing is
/// applied either.
#[tokio::test]
async fn a_settling_cluster_defers_the_whole_step() {
    use etcd_operator::plan::{Desired, Plan, Step};
    let v = validated(&default_cluster());
    let plan = Plan {
        step: Step::RemoveMember {
            name: names().member(2),
            id: Some(member_id(2)),
        },
        desired: Some(Desired {
            replicas: 2,
            members: bootstrap_configs(2).into_values().collect(),
        }),
        requeue_after: Duration::from_secs(5),
        tls_moving: false,
    };
    for (refusal, deferred) in [
        ("etcdserver: unhealthy cluster", true),
        (
            "etcdserver: re-configuration failed due to not enough started members",
            true,
        ),
        ("etcdserver: member not found", false),
    ] {
        let mut etcd = FakeEtcd::default();
        etcd.refuse = Some(refusal.to_owned());
        let mut members = RecordingRuntime::default();
        let result = etcd_operator::runtime::execute(&etcd, &mut members, &v, 3, &plan).await;
        assert_eq!(
            etcd.calls(),
            vec![format!("remove {:x}", member_id(2))],
            "{refusal}"
        );
        assert!(members.calls.is_empty(), "{refusal}: {:?}", members.calls);
        match result {
            Ok(None) => assert!(deferred, "{refusal}: deferred, but is a failure"),
            Err(e) => assert!(!deferred, "{refusal}: {e}"),
            Ok(Some(c)) => panic!("{refusal}: {c:?}"),
        }
    }
    // Accepted: the change, then the objects.
    let etcd = FakeEtcd::default();
    let mut members = RecordingRuntime::default();
    let change = etcd_operator::runtime::execute(&etcd, &mut members, &v, 3, &plan)
        .await
        .expect("executes");
    assert!(change.is_some());
    assert_eq!(members.calls, vec!["apply 2".to_owned()]);
}
