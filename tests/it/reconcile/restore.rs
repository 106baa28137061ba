//! An in-place restore through the controller, against the mock apiserver and a real S3
//! server holding the backup's metadata: the confirmation is used up first, the ConfigMap
//! carries the restore's source, every member's pod is deleted at once, and the status
//! records the restore under way.

use super::*;

use etcd_operator::backup::{Metadata, Store, metadata_key};
use etcd_operator::crd::BackupCompression;
use etcd_test_kit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

const SECRET: &str = "/api/v1/namespaces/db/secrets/s3";
const CLUSTER: &str = "/apis/etcd.rustops.dev/v1alpha1/namespaces/db/etcdclusters/main";
const KEY: &str = "etcd/db/main/main-20270101T000000Z-r42.snap.zst";

pub(super) fn secret() -> Value {
    use k8s_openapi::ByteString;
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("s3".into()),
            namespace: Some("db".into()),
            ..Default::default()
        },
        data: Some(
            [
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect(),
        ),
        ..Default::default()
    };
    let mut v = serde_json::to_value(secret).expect("json");
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_restore_uses_up_its_confirmation_and_restarts_every_member() {
    let s3 = tokio::task::spawn_blocking(|| S3Server::start("reconcile"))
        .await
        .expect("weed");
    let spec = format!(
        "  replicas: 3\n  backup:\n    schedule: '@daily'\n    s3: {{bucket: {}, endpoint: '{}', forcePathStyle: true, prefix: etcd/, credentialsSecretRef: {{name: s3}}}}\n",
        s3.bucket, s3.endpoint
    );
    // The backup's metadata in the bucket (the restore is chosen by it).
    let c = cluster(&spec);
    let location = c.spec.backup.as_ref().expect("test fixture").s3.clone();
    let store = Store::new(
        &location,
        "db",
        "main",
        Some(etcd_operator::backup::StaticCredentials {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            session_token: None,
        }),
    )
    .await;
    let meta = Metadata {
        key: KEY.into(),
        cluster: "main".into(),
        taken: 1_798_761_600,
        revision: 42,
        cluster_id: "c1".into(),
        members: 3,
        server_version: "3.4.23".into(),
        raw_size: 1,
        size: 1,
        sha256: String::new(),
        raw_sha256: String::new(),
        compression: BackupCompression::Zstd,
        verified: Some(true),
        verify_error: None,
        digest: None,
        spec: json!({}),
    };
    store
        .put(
            &metadata_key(KEY),
            serde_json::to_vec(&meta).expect("test fixture"),
        )
        .await
        .expect("metadata");

    let mut c = seen(c);
    c.metadata.annotations = Some(
        [
            ("etcd.rustops.dev/restore".to_owned(), KEY.to_owned()),
            (
                "etcd.rustops.dev/restore-confirm".to_owned(),
                "main".to_owned(),
            ),
        ]
        .into(),
    );
    let etcd = FakeEtcd::healthy(3);
    let (ctx, handle) = context(etcd.clone());
    let (sts, cm, pdb) = existing(&c);
    let pods = pod_list(vec![
        pod(0, "r1", None),
        pod(1, "r1", None),
        pod(2, "r1", None),
    ]);
    // What the apiserver answers the merge patch with: the object without the confirmation.
    let mut patched = serde_json::to_value(&c).expect("json");
    patched["metadata"]["annotations"]
        .as_object_mut()
        .expect("test fixture")
        .remove("etcd.rustops.dev/restore-confirm");
    let mut then = vec![
        step(Method::GET, SECRET, Reply::Object(secret())),
        // Recorded before anything acts on it (a merge patch naming every field).
        checked(Method::PATCH, STATUS, Reply::Object(patched.clone()), |b| {
            let r = &b["status"]["restore"];
            assert_eq!(r["phase"], "Restoring", "{b}");
            assert_eq!(r["key"], KEY, "{b}");
            assert_eq!(r["membersRestarted"], false, "{b}");
            assert!(r["clusterId"].is_null() && r["finished"].is_null(), "{b}");
        }),
        // Then the confirmation is used up: no retry without a new one.
        checked(
            Method::PATCH,
            CLUSTER,
            Reply::Object(patched.clone()),
            |b| {
                assert_eq!(
                    b["metadata"]["annotations"]["etcd.rustops.dev/restore-confirm"],
                    Value::Null,
                    "{b}"
                );
                assert!(
                    b["metadata"]["annotations"]
                        .as_object()
                        .is_some_and(|a| a.contains_key("etcd.rustops.dev/restore-confirm")),
                    "{b}"
                );
            },
        ),
        checked(Method::PATCH, CM, Reply::Echo, |b| {
            let text = b["data"]["restore.json"].as_str().expect("restore.json");
            let source: etcd_operator::backup::restore::Source =
                serde_json::from_str(text).expect("source");
            assert_eq!(source.key.as_deref(), Some(KEY));
            assert!(source.in_place.is_some());
        }),
    ];
    then.extend(applies(3).into_iter().skip(1));
    for i in 0..3 {
        then.push(step(
            Method::DELETE,
            &format!("/api/v1/namespaces/db/pods/main-{i}"),
            Reply::Echo,
        ));
    }
    then.push(checked(Method::POST, EVENTS, Reply::Echo, |b| {
        assert_eq!(b["reason"], "MemberRestarted", "{b}")
    }));
    then.push(checked(Method::POST, EVENTS, Reply::Echo, |b| {
        assert_eq!(b["reason"], "RestoreStarted", "{b}");
        assert!(b["note"].as_str().unwrap_or_default().contains(KEY), "{b}");
    }));
    // No backup pass while a restore is under way.
    then.push(checked(Method::PATCH, STATUS, Reply::Echo, |b| {
        let r = &b["status"]["restore"];
        assert_eq!(r["phase"], "Restoring", "{b}");
        assert_eq!(r["key"], KEY);
        assert_eq!(r["revision"], 42);
        assert_eq!(r["membersRestarted"], true);
        assert_eq!(r["previousClusterId"], "c1");
        assert!(r["id"].is_string());
        assert_eq!(
            condition(b, "Progressing"),
            ("True".into(), "Restoring".into())
        );
    }));
    // The object is read fresh first (restores follow status.restore, not the watch cache).
    let mut steps = vec![step(
        Method::GET,
        CLUSTER,
        Reply::Object(serde_json::to_value(&c).expect("json")),
    )];
    steps.extend(reads(sts, cm, pdb, pods));
    steps.extend(then);
    let server = run_steps(steps, handle);
    // The watch cache's copy may be older: here it has no annotations at all.
    let mut stale = c.clone();
    stale.metadata.annotations =
        Some([("etcd.rustops.dev/restore".to_owned(), KEY.to_owned())].into());
    reconcile(Arc::new(stale), ctx).await.expect("reconciles");
    finish(server).await;
    assert!(etcd.calls().is_empty(), "{:?}", etcd.calls());
}
