//! A due backup runs in the background: the reconcile that starts it finishes at once (the
//! member's snapshot takes seconds here), and a later one collects its outcome, with its
//! Event and status.

use super::*;

use etcd_test_kit::s3::S3Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_backup_runs_in_the_background_and_a_later_pass_collects_it() {
    let s3 = tokio::task::spawn_blocking(|| S3Server::start("background"))
        .await
        .expect("weed");
    let spec = format!(
        "  replicas: 3\n  backup:\n    schedule: '@daily'\n    s3: {{bucket: {}, endpoint: '{}', forcePathStyle: true, credentialsSecretRef: {{name: s3}}}}\n",
        s3.bucket, s3.endpoint
    );
    let mut c = seen(cluster(&spec));
    c.metadata.annotations =
        Some([("etcd.rustops.dev/backup-now".to_owned(), "1".to_owned())].into());
    let mut fake = Arc::into_inner(FakeEtcd::healthy(3)).expect("one owner");
    // Each of the three members fails after a second: 3 s in all.
    fake.snapshot_delay = Some(Duration::from_secs(1));
    let etcd = Arc::new(fake);
    let (ctx, handle) = context(etcd.clone());
    let (sts, cm, pdb) = existing(&c);
    let pods = || {
        pod_list(vec![
            pod(0, "r1", None),
            pod(1, "r1", None),
            pod(2, "r1", None),
        ])
    };

    // The first pass starts the backup and does not wait for it; the second, once it
    // finished, reports it: the member failed mid-snapshot.
    let mut then = reads(sts.clone(), cm.clone(), pdb.clone(), pods());
    then.extend(applies(3));
    then.push(step(
        Method::GET,
        "/api/v1/namespaces/db/secrets/s3",
        Reply::Object(super::restore::secret()),
    ));
    then.push(checked(Method::PATCH, STATUS, Reply::Echo, |b| {
        assert!(b["status"]["backup"].is_null(), "{b}")
    }));
    then.extend(reads(sts, cm, pdb, pods()));
    then.extend(applies(3));
    then.push(checked(Method::POST, EVENTS, Reply::Echo, |b| {
        assert_eq!(b["reason"], "BackupFailed", "{b}");
        assert!(
            b["note"].as_str().unwrap_or_default().contains("went away"),
            "{b}"
        );
    }));
    then.push(checked(Method::PATCH, STATUS, Reply::Echo, |b| {
        let backup = &b["status"]["backup"];
        assert!(
            backup["lastFailureReason"]
                .as_str()
                .unwrap_or_default()
                .contains("went away"),
            "{b}"
        );
        assert_eq!(backup["lastRequest"], "1", "{b}");
    }));
    let server = run_steps(then, handle);
    let started = std::time::Instant::now();
    let action = reconcile(Arc::new(c.clone()), ctx.clone())
        .await
        .expect("reconciles");
    // Not a timing claim: the snapshots alone take 3 s, and this pass returned without them.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the reconcile waited for the backup"
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(
        etcd.calls().iter().any(|c| c.starts_with("snapshot ")),
        "{:?}",
        etcd.calls()
    );
    reconcile(Arc::new(c), ctx).await.expect("reconciles");
    finish(server).await;
}
