//! Auto-compaction.

use super::*;

/// The flags are accepted; nothing is compacted before the first compaction interval.
#[tokio::test(flavor = "multi_thread")]
async fn auto_compaction_flags_are_accepted() {
    for p in servers(&[
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "2",
    ])
    .await
    {
        let k = p.kind;
        let mut c = p.client().await;
        for i in 0..5 {
            c.put("k", format!("v{i}"), None).await.unwrap();
        }
        let r = c
            .get("k", Some(GetOptions::new().with_revision(2)))
            .await
            .unwrap();
        assert_eq!(
            kvs(&r),
            vec![kv("k", "v0", 2, 2, 1)],
            "{k:?}: revision 2 still readable"
        );
    }
}

/// etcd's revision compactor runs every 5 minutes and compacts at `current - retention`
/// (observed on etcd 3.4.23: revision 11, retention 3, "Starting auto-compaction at revision 8"
/// exactly 5 minutes after start). Runs both servers side by side.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "slow (~5 minutes: etcd's revision compactor checks every 5 minutes); the fast variant below covers our server"]
async fn auto_compaction_revision_mode_side_by_side_with_etcd() {
    async fn scenario(p: Proc) {
        let k = p.kind;
        let mut c = p.client().await;
        for i in 0..10 {
            c.put("k", format!("v{i}"), None).await.unwrap();
        }
        // Revision 11 now; the compactor should compact at 11 - 3 = 8.
        assert_eq!(cur_rev(&mut c).await, 11, "{k:?}");
        let deadline = Instant::now() + Duration::from_secs(330);
        loop {
            let r = c.get("k", Some(GetOptions::new().with_revision(7))).await;
            if r.is_err() {
                assert_status(
                    r,
                    Code::OutOfRange,
                    COMPACTED,
                    &format!("{k:?}: read below the auto-compaction revision"),
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{k:?}: no auto-compaction within 330 s"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Exactly current - retention is still readable, and compacting there again is refused.
        let r = c
            .get("k", Some(GetOptions::new().with_revision(8)))
            .await
            .unwrap();
        assert_eq!(kvs(&r), vec![kv("k", "v6", 2, 8, 7)], "{k:?}");
        assert_status(
            c.compact(8, None).await,
            Code::OutOfRange,
            COMPACTED,
            &format!("{k:?}: compact 8 again"),
        );
        // No further writes: the compactor does not compact again (rev - retention is unchanged).
        assert_eq!(cur_rev(&mut c).await, 11, "{k:?}");
    }
    let procs = servers(&[
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "3",
    ])
    .await;
    futures::future::join_all(procs.into_iter().map(|p| tokio::spawn(scenario(p))))
        .await
        .into_iter()
        .for_each(|r| r.unwrap());
}

/// Polls until a read of "k" at `rev` is refused as compacted.
pub(super) async fn wait_compacted_at(c: &mut Client, rev: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get("k", Some(GetOptions::new().with_revision(rev))).await;
        if r.is_err() {
            assert_status(r, Code::OutOfRange, COMPACTED, what);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: revision {rev} not auto-compacted within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Our server only: the hidden `--auto-compaction-check-interval-ms` (not an etcd flag) replaces
/// etcd's 5-minute check, so the compactor can be watched following `current - retention`.
/// Retention 0 disables auto-compaction, as in etcd.
#[tokio::test(flavor = "multi_thread")]
async fn auto_compaction_revision_mode_follows_current_minus_retention() {
    const ON: &[&str] = &[
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "3",
        "--auto-compaction-check-interval-ms",
        "50",
    ];
    const OFF: &[&str] = &[
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "0",
        "--auto-compaction-check-interval-ms",
        "50",
    ];
    let on = tokio::task::spawn_blocking(|| Proc::start(Kind::Ours, ON));
    let off = tokio::task::spawn_blocking(|| Proc::start(Kind::Ours, OFF));
    let (on, off) = (on.await.unwrap(), off.await.unwrap());

    let mut c = on.client().await;
    for i in 0..10 {
        c.put("k", format!("v{i}"), None).await.unwrap();
    }
    // Revision 11: the compactor settles at 11 - 3 = 8, which stays readable.
    wait_compacted_at(&mut c, 7, "retention 3 at revision 11").await;
    let r = c
        .get("k", Some(GetOptions::new().with_revision(8)))
        .await
        .unwrap();
    assert_eq!(
        kvs(&r),
        vec![kv("k", "v6", 2, 8, 7)],
        "revision 8 is the compaction revision"
    );
    for rev in [7, 8] {
        assert_status(
            c.compact(rev, None).await,
            Code::OutOfRange,
            COMPACTED,
            &format!("compact {rev} after auto"),
        );
    }
    assert_eq!(
        cur_rev(&mut c).await,
        11,
        "auto-compaction does not bump the revision"
    );
    // It follows new writes: revision 14 compacts to 11.
    for i in 10..13 {
        c.put("k", format!("v{i}"), None).await.unwrap();
    }
    wait_compacted_at(&mut c, 10, "retention 3 at revision 14").await;
    let r = c
        .get("k", Some(GetOptions::new().with_revision(11)))
        .await
        .unwrap();
    assert_eq!(
        kvs(&r),
        vec![kv("k", "v9", 2, 11, 10)],
        "revision 11 is the compaction revision"
    );
    assert_eq!(cur_rev(&mut c).await, 14);

    // Retention 0: never compacts.
    let mut c = off.client().await;
    for i in 0..10 {
        c.put("k", format!("v{i}"), None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = c
        .get("k", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    assert_eq!(
        kvs(&r),
        vec![kv("k", "v0", 2, 2, 1)],
        "retention 0 disables auto-compaction"
    );
    c.compact(2, None).await.unwrap();
}
