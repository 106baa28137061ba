//! `spec.backup` in the local runtime against a real S3 server (`weed mini` on 127.0.0.1):
//! scheduled backups whose objects match their metadata (SHA-256 of the object and of the
//! snapshot, a revision that holds what was written, a snapshot `etcd-server snapshot status`
//! reads), retention deleting what `keepLast` no longer keeps, and an on-demand backup through
//! the `etcd.rustops.dev/backup-now` annotation.

use super::*;

use etcd_operator::backup::{self, StaticCredentials, Store};
use etcd_test_kit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use sha2::Digest;

fn write_backup_spec(setup: &Setup, s3: &S3Server, schedule: &str, annotations: &str) {
    let yaml = format!(
        "apiVersion: etcd.rustops.dev/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: local\n  annotations:\n    note: backup\n{annotations}\
         spec:\n  replicas: 3\n  server:\n    heartbeatIntervalMs: 50\n    electionTimeoutMs: 500\n  backup:\n    schedule: \"{schedule}\"\n    verify: false\n    retention:\n      keepLast: 2\n    s3:\n      bucket: {}\n      endpoint: {}\n      forcePathStyle: true\n      prefix: etcd\n",
        s3.bucket, s3.endpoint
    );
    let tmp = setup.spec.with_extension("tmp");
    std::fs::write(&tmp, yaml).expect("write spec");
    std::fs::rename(&tmp, &setup.spec).expect("rename spec");
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn count(r: &Report, reason: &str) -> usize {
    r.changes.iter().filter(|c| c.reason() == reason).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_match_their_metadata_and_retention_keeps_the_last_two() {
    let s3 = tokio::task::spawn_blocking(|| S3Server::start("backups"))
        .await
        .expect("weed");
    let setup = Setup::new(Ipv4Addr::new(127, 0, 64, 10));
    write_backup_spec(&setup, &s3, "@every 4s", "");
    let mut options = setup.options(Duration::from_millis(300));
    let credentials = StaticCredentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
    };
    options.s3_credentials = Some(credentials.clone());
    let mut rt = Runtime::start(options);
    rt.wait("3 members in sync", Duration::from_secs(60), in_sync(3))
        .await;
    let mut c = client(&setup.endpoint(0)).await;
    for i in 0..100 {
        c.put(format!("k{i:03}"), "v", None).await.expect("put");
    }
    let written = c
        .get("k099", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();

    // Four backups at least; retention deletes all but the last two.
    let report = rt
        .wait(
            "four backups and two retention deletions",
            Duration::from_secs(90),
            |r| count(r, "BackupTaken") >= 4 && count(r, "BackupDeleted") >= 2,
        )
        .await;
    assert_eq!(count(&report, "BackupFailed"), 0, "{:?}", report.changes);
    let status = report.status.backup.clone().expect("status.backup");
    assert!(status.last_success.is_some() && status.next_scheduled.is_some());
    let condition = |t: &str| {
        report
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    assert_eq!(
        condition("BackupReady"),
        Some(("True".into(), "BackupSucceeded".into()))
    );
    assert_eq!(
        condition("BackupOverdue"),
        Some(("False".into(), "OnSchedule".into()))
    );
    assert_eq!(status.recent.len(), 2, "{status:?}");

    let location: etcd_operator::crd::S3Location = serde_yaml_ng::from_str(&format!(
        "bucket: {}\nendpoint: {}\nforcePathStyle: true\nprefix: etcd\n",
        s3.bucket, s3.endpoint
    ))
    .expect("location");
    let store = Store::new(&location, "default", "local", Some(credentials)).await;
    let all = backup::list(&store).await.expect("list");
    assert_eq!(all.len(), 2, "retention left {all:?}");
    let objects = store.list().await.expect("objects");
    assert_eq!(
        objects.len(),
        4,
        "a snapshot and its metadata each: {objects:?}"
    );
    let newest = &all[0];
    assert!(
        newest.key.starts_with("etcd/default/local/local-") && newest.key.ends_with(".snap.zst")
    );
    assert!(
        newest.revision >= written,
        "{} < {written}",
        newest.revision
    );
    let object = store.get(&newest.key).await.expect("object");
    assert_eq!(object.len() as u64, newest.size);
    assert_eq!(hex(&sha2::Sha256::digest(&object)), newest.sha256);
    let raw = zstd::decode_all(object.as_slice()).expect("zstd");
    assert_eq!(raw.len() as u64, newest.raw_size);
    assert_eq!(hex(&sha2::Sha256::digest(&raw)), newest.raw_sha256);
    let file = setup.dir.path().join("newest.snap");
    std::fs::write(&file, &raw).expect("write snapshot");
    let out = std::process::Command::new(server_binary())
        .args(["snapshot", "status", "-w", "json"])
        .arg(&file)
        .output()
        .expect("snapshot status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("\"revision\":{}", newest.revision)),
        "{text}"
    );

    // On demand: a long schedule, then the annotation.
    write_backup_spec(&setup, &s3, "@every 1h", "");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = count(
        &rt.wait("spec reloaded", Duration::from_secs(10), |_| true)
            .await,
        "BackupTaken",
    );
    write_backup_spec(
        &setup,
        &s3,
        "@every 1h",
        "    etcd.rustops.dev/backup-now: \"1\"\n",
    );
    let report = rt
        .wait("the backup asked for", Duration::from_secs(30), |r| {
            count(r, "BackupTaken") > before
        })
        .await;
    let status = report.status.backup.expect("status.backup");
    assert_eq!(status.last_request.as_deref(), Some("1"));
    // Asked once: no second backup for the same value.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = rt.wait("later", Duration::from_secs(5), |_| true).await;
    assert_eq!(count(&again, "BackupTaken"), before + 1);
    rt.shutdown().await;
}

/// `verify: true`: each backup is restored into a scratch member and compared with what the
/// cluster held at its revision before it counts, so retention keeps verified ones; a tampered
/// object, and a restore that holds other data than the cluster did, are caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_verified_by_restoring_them_and_tampering_is_caught() {
    use etcd_operator::etcd::{Digest, EtcdClient};
    let s3 = tokio::task::spawn_blocking(|| S3Server::start("verified"))
        .await
        .expect("weed");
    let setup = Setup::new(Ipv4Addr::new(127, 0, 65, 10));
    let yaml = format!(
        "apiVersion: etcd.rustops.dev/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: local\n\
         spec:\n  replicas: 3\n  server:\n    heartbeatIntervalMs: 50\n    electionTimeoutMs: 500\n  backup:\n    schedule: \"@every 3s\"\n    retention:\n      keepLast: 1\n    s3:\n      bucket: {}\n      endpoint: {}\n      forcePathStyle: true\n",
        s3.bucket, s3.endpoint
    );
    std::fs::write(&setup.spec, yaml).expect("write spec");
    let credentials = StaticCredentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
    };
    let mut options = setup.options(Duration::from_millis(300));
    options.s3_credentials = Some(credentials.clone());
    let mut rt = Runtime::start(options);
    rt.wait("3 members in sync", Duration::from_secs(60), in_sync(3))
        .await;
    let mut c = client(&setup.endpoint(1)).await;
    for i in 0..50 {
        c.put(format!("v{i:03}"), format!("{i}"), None)
            .await
            .expect("put");
    }
    let report = rt
        .wait(
            "two verified backups, the older deleted",
            Duration::from_secs(120),
            |r| count(r, "BackupVerified") >= 2 && count(r, "BackupDeleted") >= 1,
        )
        .await;
    assert_eq!(
        count(&report, "BackupVerificationFailed"),
        0,
        "{:?}",
        report.changes
    );
    let status = report.status.backup.expect("status.backup");
    assert!(status.recent.iter().all(|b| b.verified), "{status:?}");

    let location: etcd_operator::crd::S3Location = serde_yaml_ng::from_str(&format!(
        "bucket: {}\nendpoint: {}\nforcePathStyle: true\n",
        s3.bucket, s3.endpoint
    ))
    .expect("location");
    let store = Store::new(&location, "default", "local", Some(credentials)).await;
    let newest = backup::list(&store).await.expect("list").remove(0);
    assert_eq!(newest.verified, Some(true));
    let digest = newest.digest.expect("the source's digest");
    assert!(digest.keys >= 50, "{digest:?}");
    let etcd = EtcdClient::default();
    let bin = server_binary();
    // The same backup against other expectations: the comparison is real.
    let other = Digest {
        keys: digest.keys + 1,
        ..digest
    };
    let e = backup::verify::verify(&etcd, &store, &newest, other, &bin)
        .await
        .expect_err("another key count passed")
        .to_string();
    assert!(e.contains("keys"), "{e}");
    backup::verify::verify(&etcd, &store, &newest, digest, &bin)
        .await
        .expect("verifies again");
    // One flipped byte in the object.
    let mut object = store.get(&newest.key).await.expect("object");
    let middle = object.len() / 2;
    object[middle] ^= 0xff;
    store.put(&newest.key, object).await.expect("tamper");
    let e = backup::verify::verify(&etcd, &store, &newest, digest, &bin)
        .await
        .expect_err("a tampered object passed")
        .to_string();
    assert!(e.contains("SHA-256"), "{e}");
    rt.shutdown().await;
}

/// `spec.bootstrap.fromBackup`: a new cluster (another name, other addresses) starts from the
/// newest verified backup of another: every member restored from the same snapshot, the same
/// keys and values, and the same HashKV at the backup's revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_starts_from_the_newest_verified_backup_of_another() {
    let s3 = tokio::task::spawn_blocking(|| S3Server::start("restore"))
        .await
        .expect("weed");
    let credentials = StaticCredentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
    };
    let source = Setup::new(Ipv4Addr::new(127, 0, 66, 10));
    write_backup_spec(&source, &s3, "@every 1h", "");
    let yaml = std::fs::read_to_string(&source.spec)
        .expect("spec")
        .replace("    verify: false\n", "");
    std::fs::write(&source.spec, yaml).expect("spec");
    let mut options = source.options(Duration::from_millis(300));
    options.s3_credentials = Some(credentials.clone());
    let mut rt = Runtime::start(options);
    rt.wait("3 members in sync", Duration::from_secs(60), in_sync(3))
        .await;
    let mut c = client(&source.endpoint(0)).await;
    for i in 0..40 {
        c.put(format!("r{i:03}"), format!("value {i}"), None)
            .await
            .expect("put");
    }
    c.delete("r000", None).await.expect("delete");
    let yaml = std::fs::read_to_string(&source.spec)
        .expect("spec")
        .replace(
            "    note: backup\n",
            "    note: backup\n    etcd.rustops.dev/backup-now: \"restore-me\"\n",
        );
    std::fs::write(&source.spec, yaml).expect("spec");
    rt.wait("a verified backup", Duration::from_secs(60), |r| {
        count(r, "BackupVerified") >= 1
    })
    .await;
    let location: etcd_operator::crd::S3Location = serde_yaml_ng::from_str(&format!(
        "bucket: {}\nendpoint: {}\nforcePathStyle: true\nprefix: etcd\n",
        s3.bucket, s3.endpoint
    ))
    .expect("location");
    let store = Store::new(&location, "default", "local", Some(credentials.clone())).await;
    let backup = backup::list(&store).await.expect("list").remove(0);
    let source_kvs = c
        .get("r", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .expect("source keys");
    rt.shutdown().await;

    let copy = Setup::new(Ipv4Addr::new(127, 0, 67, 10));
    let yaml = format!(
        "apiVersion: etcd.rustops.dev/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: copy\n\
         spec:\n  replicas: 3\n  server:\n    heartbeatIntervalMs: 50\n    electionTimeoutMs: 500\n  bootstrap:\n    fromBackup:\n      cluster: local\n      s3:\n        bucket: {}\n        endpoint: {}\n        forcePathStyle: true\n        prefix: etcd\n",
        s3.bucket, s3.endpoint
    );
    std::fs::write(&copy.spec, yaml).expect("spec");
    let mut options = copy.options(Duration::from_millis(300));
    options.s3_credentials = Some(credentials);
    let mut rt = Runtime::start(options);
    rt.wait(
        "the restored cluster in sync",
        Duration::from_secs(60),
        in_sync(3),
    )
    .await;
    for i in 0..3 {
        let mut c = client(&copy.endpoint(i)).await;
        let kvs = c
            .get("r", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .expect("restored keys");
        let pairs = |r: &etcd_client::GetResponse| -> Vec<(Vec<u8>, Vec<u8>, i64)> {
            r.kvs()
                .iter()
                .map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision()))
                .collect()
        };
        assert_eq!(pairs(&kvs), pairs(&source_kvs), "member {i}");
        let hash = c.hash_kv(backup.revision).await.expect("hash kv").hash();
        assert_eq!(
            Some(hash),
            backup.digest.map(|d| d.hash),
            "member {i} at revision {}",
            backup.revision
        );
    }
    rt.shutdown().await;
}
