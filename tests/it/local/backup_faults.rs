//! Backups under bad input and faults, against a real S3 server and a real cluster: wrong
//! credentials, a missing bucket, an unreachable endpoint, a member whose snapshot stream dies
//! halfway (a proxy owned by the test cuts it), a truncated object and a full disk. Each gives
//! a clear error, condition and Event; nothing half-written is listed; no good backup is
//! deleted; and the next backup still runs.

use super::*;

use etcd_operator::backup::{self, Inputs, StaticCredentials, Store};
use etcd_operator::crd::{EtcdCluster, S3Location};
use etcd_operator::etcd::{EtcdAdmin, EtcdClient};
use etcd_operator::names::ClusterNames;
use etcd_test_kit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP proxy to `upstream` that cuts every connection once `limit` bytes came back from
/// upstream: a member that dies in the middle of streaming a snapshot. Stops with the task.
async fn cutting_proxy(upstream: String, limit: usize) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("proxy bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut dr, mut dw) = down.split();
                let (mut ur, mut uw) = up.split();
                let to_up = tokio::io::copy(&mut dr, &mut uw);
                let to_down = async {
                    let mut sent = 0;
                    let mut buf = vec![0u8; 16 << 10];
                    while sent < limit {
                        let n = match ur.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n.min(limit - sent),
                        };
                        if dw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n;
                    }
                };
                tokio::select! {
                    _ = to_up => {}
                    _ = to_down => {}
                }
            });
        }
    });
    (url, task)
}

fn location(s3: &S3Server, bucket: &str, endpoint: &str) -> S3Location {
    serde_yaml_ng::from_str(&format!(
        "bucket: {bucket}\nendpoint: {endpoint}\nforcePathStyle: true\nprefix: faults/\n"
    ))
    .unwrap_or_else(|e| panic!("location for {}: {e}", s3.endpoint))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_faults_are_reported_and_the_next_backup_still_runs() {
    let s3 = tokio::task::spawn_blocking(|| S3Server::start("faults"))
        .await
        .expect("weed");
    let setup = Setup::new(Ipv4Addr::new(127, 0, 69, 10));
    setup.set_replicas(1);
    let mut rt = Runtime::start(setup.options(Duration::from_millis(300)));
    rt.wait("1 member", Duration::from_secs(60), in_sync(1))
        .await;
    let member = setup.endpoint(0);
    let mut c = client(&member).await;
    let value = "x".repeat(1024);
    for i in 0..400 {
        c.put(format!("f/{i:04}"), value.as_str(), None)
            .await
            .expect("put");
    }
    let cluster: EtcdCluster = serde_yaml_ng::from_str(&format!(
        "apiVersion: etcd.rustops.dev/v1alpha1\nkind: EtcdCluster\nmetadata: {{name: local, namespace: default}}\n\
         spec:\n  replicas: 1\n  backup:\n    schedule: '@every 1h'\n    retention: {{keepLast: 1}}\n    s3: {{bucket: {}, endpoint: '{}', forcePathStyle: true, prefix: faults/}}\n",
        s3.bucket, s3.endpoint
    ))
    .expect("cluster");
    let names = ClusterNames::of(&cluster).expect("names");
    let etcd = EtcdClient::default();
    let good_credentials = StaticCredentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
    };
    let good = Store::new(
        &location(&s3, &s3.bucket, &s3.endpoint),
        "default",
        "local",
        Some(good_credentials.clone()),
    )
    .await;
    let bin = server_binary();
    let mut now = 1_800_000_000;
    let pass = async |store: &Store,
                      sources: Vec<String>,
                      previous: Option<etcd_operator::crd::BackupStatus>,
                      now: i64| {
        let mut c = cluster.clone();
        c.metadata.annotations =
            Some([(backup::BACKUP_NOW_ANNOTATION.to_owned(), format!("{now}"))].into());
        backup::pass(Inputs {
            etcd: &etcd as &dyn EtcdAdmin,
            cluster: &c,
            names: &names,
            sources,
            members: 1,
            store,
            previous: previous.as_ref(),
            server_bin: Some(&bin),
            now,
        })
        .await
        .expect("a pass with a valid spec")
        .expect("spec.backup is set")
    };

    // A good backup first: the faults below must leave it alone.
    let first = pass(&good, vec![member.clone()], None, now).await;
    assert!(first.status.last_success.is_some(), "{:?}", first.changes);
    let kept = backup::list(&good).await.expect("list");
    assert_eq!(kept.len(), 1);
    let objects = good.list().await.expect("objects");

    let wrong = Store::new(
        &location(&s3, &s3.bucket, &s3.endpoint),
        "default",
        "local",
        Some(StaticCredentials {
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: "not-the-secret".into(),
            session_token: None,
        }),
    )
    .await;
    let missing = Store::new(
        &location(&s3, "no-such-bucket", &s3.endpoint),
        "default",
        "local",
        Some(good_credentials.clone()),
    )
    .await;
    let closed = etcd_test_kit::free_port_on(Ipv4Addr::LOCALHOST);
    let unreachable = Store::new(
        &location(&s3, &s3.bucket, &format!("http://127.0.0.1:{closed}")),
        "default",
        "local",
        Some(good_credentials.clone()),
    )
    .await;
    let upstream = member.trim_start_matches("http://").to_owned();
    let (cut, proxy) = cutting_proxy(upstream, 100 << 10).await;
    let table: Vec<(&str, &Store, Vec<String>, &[&str])> = vec![
        (
            "wrong credentials",
            &wrong,
            vec![member.clone()],
            &[
                "SignatureDoesNotMatch",
                "AccessDenied",
                "InvalidAccessKeyId",
            ],
        ),
        (
            "a missing bucket",
            &missing,
            vec![member.clone()],
            &["NoSuchBucket"],
        ),
        (
            "an unreachable endpoint",
            &unreachable,
            vec![member.clone()],
            &["dispatch failure", "connect", "Connection refused"],
        ),
        (
            "a member dying mid-snapshot",
            &good,
            vec![cut.clone()],
            &["snapshot"],
        ),
    ];
    let mut status = first.status.clone();
    for (what, store, sources, expect) in table {
        now += 60;
        let out = pass(store, sources, Some(status.clone()), now).await;
        let reason = out.status.last_failure_reason.clone().unwrap_or_default();
        assert!(
            out.status.last_failure.is_some() && expect.iter().any(|e| reason.contains(e)),
            "{what}: {reason:?} {:?}",
            out.changes
        );
        assert!(
            out.changes.iter().any(|c| c.reason() == "BackupFailed"),
            "{what}: no BackupFailed Event: {:?}",
            out.changes
        );
        let ready = out
            .conditions
            .iter()
            .find(|c| c.0 == "BackupReady")
            .expect("BackupReady");
        assert_eq!((ready.1, ready.2), (false, "BackupFailed"), "{what}");
        assert_eq!(out.status.last_success, first.status.last_success, "{what}");
        // Nothing half-written, nothing deleted.
        assert_eq!(good.list().await.expect("objects"), objects, "{what}");
        status = out.status;
    }
    proxy.abort();

    // A member that dies mid-snapshot is skipped for the next healthy one.
    now += 60;
    let (cut, proxy) =
        cutting_proxy(member.trim_start_matches("http://").to_owned(), 100 << 10).await;
    let out = pass(&good, vec![cut, member.clone()], Some(status.clone()), now).await;
    proxy.abort();
    assert_eq!(
        out.status.last_success.as_ref().map(|t| t.0.as_second()),
        Some(now),
        "{:?}",
        out.changes
    );
    let ready = out
        .conditions
        .iter()
        .find(|c| c.0 == "BackupReady")
        .expect("BackupReady");
    assert_eq!((ready.1, ready.2), (true, "BackupSucceeded"));
    let all = backup::list(&good).await.expect("list");
    assert_eq!(all.len(), 1, "keepLast: 1 after a verified backup");
    let newest = all[0].clone();
    assert_eq!(newest.verified, Some(true));

    // A truncated object: it fails its sum, and nothing is left where it was downloaded to.
    let object = good.get(&newest.key).await.expect("object");
    good.put(&newest.key, object[..object.len() / 2].to_vec())
        .await
        .expect("truncate");
    let dir = tempfile::tempdir().expect("tempdir");
    let to = dir.path().join("restore.snap");
    let e = backup::verify::download(&good, &newest, &to)
        .await
        .expect_err("a truncated object downloaded");
    assert!(
        matches!(e, backup::Error::Verify { .. }) && e.to_string().contains("SHA-256"),
        "{e}"
    );
    assert!(!to.exists());
    let from = etcd_operator::crd::FromBackup {
        s3: None,
        cluster: None,
        key: Some(newest.key.clone()),
    };
    let chosen = backup::restore::choose(&good, &from).await.expect("choose");
    let e = backup::restore::fetch(&good, &chosen, dir.path())
        .await
        .expect_err("restored a truncated backup");
    assert!(e.to_string().contains("SHA-256"), "{e}");
    good.put(&newest.key, object).await.expect("put back");

    // A full disk (/dev/full, through a link the test owns): the machine's fault, not the
    // backup's, so the backup is not marked failed.
    let full = dir.path().join("full.snap");
    std::os::unix::fs::symlink("/dev/full", &full).expect("symlink");
    let e = backup::verify::download(&good, &newest, &full)
        .await
        .expect_err("wrote to a full disk");
    assert!(
        matches!(e, backup::Error::Unverifiable { .. }) && e.to_string().contains("No space left"),
        "{e}"
    );
    assert!(std::path::Path::new("/dev/full").exists());
    backup::verify::download(&good, &newest, &to)
        .await
        .expect("the backup itself is good");
    rt.shutdown().await;
}
