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

/// Runs `etcd-operator backup ARGS` with the test S3 server's credentials.
fn operator_backup(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .arg("backup")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .expect("etcd-operator backup");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The backup CLI and the in-place restore: `etcd-operator backup now` takes and verifies a
/// backup of the running cluster, `backup list` shows it; a restore asked with the annotation
/// waits for its confirmation, then stops every member, restores all of them from the backup
/// (old data kept aside) and starts them: the keys, values, mod revisions and HashKV are the
/// backup's, writes made after it are gone, and the cluster ID is new. `backup restore` (the
/// init container) makes a new member's data dir from it once, and leaves it alone after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_cli_and_an_in_place_restore() {
    use etcd_client::GetOptions;
    let s3 = tokio::task::spawn_blocking(|| S3Server::start("inplace"))
        .await
        .expect("weed");
    let setup = Setup::new(Ipv4Addr::new(127, 0, 68, 10));
    write_backup_spec(&setup, &s3, "@every 1h", "");
    let yaml = std::fs::read_to_string(&setup.spec)
        .expect("spec")
        .replace("    verify: false\n", "");
    std::fs::write(&setup.spec, &yaml).expect("spec");
    let mut options = setup.options(Duration::from_millis(300));
    options.s3_credentials = Some(StaticCredentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
    });
    let state = options.state_dir.display().to_string();
    let mut rt = Runtime::start(options);
    rt.wait("3 members in sync", Duration::from_secs(60), in_sync(3))
        .await;
    let mut c = client(&setup.endpoint(0)).await;
    for i in 0..30 {
        c.put(format!("a/{i:03}"), format!("before {i}"), None)
            .await
            .expect("put");
    }
    let prefix = || Some(GetOptions::new().with_prefix());
    let backed_up = c.get("a/", prefix()).await.expect("keys");

    // backup now, against the running members.
    let spec = setup.spec.display().to_string();
    let base_ip = setup.addressing.base_ip.to_string();
    let client_port = setup.addressing.client_port.to_string();
    let peer_port = setup.addressing.peer_port.to_string();
    let server = server_binary().display().to_string();
    let (ok, text) = tokio::task::block_in_place(|| {
        operator_backup(&[
            "now",
            "-f",
            &spec,
            "--state-dir",
            &state,
            "--base-ip",
            &base_ip,
            "--client-port",
            &client_port,
            "--peer-port",
            &peer_port,
            "--etcd-server",
            &server,
        ])
    });
    assert!(ok && text.contains("verified"), "backup now: {text}");
    let (ok, text) =
        tokio::task::block_in_place(|| operator_backup(&["list", "-f", &spec, "--json"]));
    assert!(ok, "backup list: {text}");
    let listed: Vec<backup::Metadata> = serde_json::from_str(&text).expect("list --json");
    assert_eq!(listed.len(), 1, "{text}");
    let taken = listed[0].clone();
    assert_eq!(taken.verified, Some(true));
    let (ok, table) = tokio::task::block_in_place(|| operator_backup(&["list", "-f", &spec]));
    assert!(
        ok && table.contains(&taken.key) && table.contains("yes"),
        "{table}"
    );

    // Later writes, which the restore must undo.
    for i in 0..10 {
        c.put(format!("a/late/{i}"), "after", None)
            .await
            .expect("put");
    }
    c.delete("a/000", None).await.expect("delete");
    let old_id = c
        .member_list()
        .await
        .expect("members")
        .header()
        .expect("test fixture")
        .cluster_id();

    // Asked without the confirmation: recorded, nothing restored.
    let with = |annotations: &str| {
        let text = yaml.replace(
            "    note: backup\n",
            &format!("    note: backup\n{annotations}"),
        );
        let tmp = setup.spec.with_extension("tmp");
        std::fs::write(&tmp, text).expect("spec");
        std::fs::rename(&tmp, &setup.spec).expect("spec");
    };
    with(&format!(
        "    etcd.rustops.dev/restore: {}\n    etcd.rustops.dev/restore-confirm: other\n",
        taken.key
    ));
    let report = rt
        .wait("the request recorded", Duration::from_secs(20), |r| {
            count(r, "RestoreNotConfirmed") == 1
        })
        .await;
    let restore = report.status.restore.expect("status.restore");
    assert_eq!(
        restore.phase,
        etcd_operator::crd::RestorePhase::WaitingForConfirmation
    );
    assert!(c.get("a/late/0", None).await.expect("get").count() == 1);

    with(&format!(
        "    etcd.rustops.dev/restore: {}\n    etcd.rustops.dev/restore-confirm: local\n",
        taken.key
    ));
    let report = rt
        .wait("the restore done", Duration::from_secs(120), |r| {
            count(r, "RestoreCompleted") + count(r, "RestoreFailed") >= 1
        })
        .await;
    let restore = report.status.restore.clone().expect("status.restore");
    assert_eq!(
        restore.phase,
        etcd_operator::crd::RestorePhase::Completed,
        "{restore:?} {:?}",
        report.changes
    );
    assert_eq!(restore.key.as_deref(), Some(taken.key.as_str()));
    assert_eq!(restore.previous_cluster_id, Some(format!("{old_id:x}")));
    assert!(
        restore.cluster_id.is_some() && restore.cluster_id != restore.previous_cluster_id,
        "{restore:?}"
    );
    rt.wait(
        "3 members in sync after the restore",
        Duration::from_secs(60),
        in_sync(3),
    )
    .await;
    for i in 0..3 {
        let mut c = client(&setup.endpoint(i)).await;
        let kvs = retry_get(&mut c, "a/").await;
        let pairs = |r: &etcd_client::GetResponse| -> Vec<(Vec<u8>, Vec<u8>, i64)> {
            r.kvs()
                .iter()
                .map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision()))
                .collect()
        };
        assert_eq!(pairs(&kvs), pairs(&backed_up), "member {i}");
        let hash = c.hash_kv(taken.revision).await.expect("hash kv").hash();
        assert_eq!(Some(hash), taken.digest.map(|d| d.hash), "member {i}");
        let aside: Vec<_> = std::fs::read_dir(setup.member_dir(i))
            .expect("member dir")
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("data.pre-restore-")
            })
            .collect();
        assert_eq!(aside.len(), 1, "member {i}'s old data kept");
    }
    // The same request again does nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = rt.wait("later", Duration::from_secs(5), |_| true).await;
    assert_eq!(count(&again, "RestoreStarted"), 1);
    let mut c = client(&setup.endpoint(0)).await;
    c.put("a/after-restore", "kept", None).await.expect("put");
    rt.shutdown().await;
    // Restarted with the annotations still in the file: the restore is not run again, and
    // what was written after it stays.
    let mut options = setup.options(Duration::from_millis(300));
    options.s3_credentials = Some(StaticCredentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
    });
    let mut rt = Runtime::start(options);
    rt.wait(
        "3 members in sync after a restart",
        Duration::from_secs(60),
        in_sync(3),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = rt.wait("later", Duration::from_secs(5), |_| true).await;
    assert_eq!(count(&later, "RestoreStarted"), 0, "{:?}", later.changes);
    let mut c = client(&setup.endpoint(1)).await;
    let kept = retry_get(&mut c, "a/after-restore").await;
    assert_eq!(kept.kvs().len(), 1, "a write after the restore was lost");
    rt.shutdown().await;

    // The init container's step: a new member's data dir from the backup, once.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("member.yaml");
    std::fs::write(
        &config,
        format!(
            "name: copy-0\ndata-dir: {}\ninitial-cluster: copy-0=http://127.0.0.1:2380\ninitial-cluster-token: copy\ninitial-advertise-peer-urls: http://127.0.0.1:2380\ninitial-cluster-state: new\n",
            data.display()
        ),
    )
    .expect("config");
    let source = serde_json::json!({
        "s3": {"bucket": s3.bucket, "endpoint": s3.endpoint, "forcePathStyle": true, "prefix": "etcd"},
        "namespace": "default",
        "cluster": "local",
    })
    .to_string();
    let args = [
        "restore",
        "--config-file",
        &config.display().to_string(),
        "--source",
        &source,
        "--etcd-server",
        &server,
    ]
    .map(|s| s.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = tokio::task::block_in_place(|| operator_backup(&args));
    assert!(ok && text.contains("restored copy-0"), "{text}");
    assert!(data.join("member/snap/db").is_file(), "{text}");
    let (ok, text) = tokio::task::block_in_place(|| operator_backup(&args));
    assert!(ok && text.contains("already has data"), "{text}");

    // The in-place step (the init container during an in-place restore on Kubernetes): the
    // member's data is moved aside and made again from the backup under the new token, once
    // per restore ID; the source file wins over --source, and without it nothing happens.
    std::fs::write(data.join("old-marker"), "old").expect("mark the old data");
    let in_place = dir.path().join("restore.json");
    let in_place_arg = in_place.display().to_string();
    let in_place_args: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--in-place", in_place_arg.as_str()])
        .collect();
    let (ok, text) = tokio::task::block_in_place(|| operator_backup(&in_place_args));
    assert!(
        ok && text.contains("already has data"),
        "no file: the bootstrap source: {text}"
    );
    let target = serde_json::json!({
        "s3": {"bucket": s3.bucket, "endpoint": s3.endpoint, "forcePathStyle": true, "prefix": "etcd"},
        "namespace": "default",
        "cluster": "local",
        "key": taken.key,
        "inPlace": {"id": "42", "token": "copy-restore-42", "initialCluster": "copy-0=http://127.0.0.1:2380"},
    });
    std::fs::write(&in_place, target.to_string()).expect("restore.json");
    let (ok, text) = tokio::task::block_in_place(|| operator_backup(&in_place_args));
    assert!(ok && text.contains("restored copy-0"), "{text}");
    assert!(data.join("member/snap/db").is_file(), "{text}");
    assert!(
        !data.join("old-marker").exists(),
        "the old data is no longer in place"
    );
    assert!(
        dir.path().join("data.pre-restore-42/old-marker").is_file(),
        "the old data is kept aside"
    );
    let (ok, text) = tokio::task::block_in_place(|| operator_backup(&in_place_args));
    assert!(ok && text.contains("by restore 42 already"), "{text}");
    // The restored member runs: it serves the backup's keys.
    let port = etcd_test_kit::free_port_on(Ipv4Addr::LOCALHOST);
    let mut member = std::process::Command::new(server_binary())
        .arg("--data-dir")
        .arg(&data)
        .args(["--name", "copy-0"])
        .arg(format!("--listen-client-urls=http://127.0.0.1:{port}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{port}"))
        .arg(format!(
            "--listen-peer-urls=http://127.0.0.1:{}",
            etcd_test_kit::free_port_on(Ipv4Addr::LOCALHOST)
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the restored member");
    let mut c = client(&format!("http://127.0.0.1:{port}")).await;
    let kvs = retry_get(&mut c, "a/").await;
    let _ = member.kill();
    let _ = member.wait();
    assert_eq!(kvs.kvs().len(), backed_up.kvs().len());
}

/// A linearizable prefix read, retried while the restarted members elect a leader.
async fn retry_get(c: &mut etcd_client::Client, prefix: &str) -> etcd_client::GetResponse {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match c
            .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
            .await
        {
            Ok(r) => return r,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("read after restore: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("read after restore: {e}"),
        }
    }
}
