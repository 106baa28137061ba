//! Snapshot save / status / restore.

use super::*;

/// One key-value as compared across servers: key, value, create, mod, version, lease.
pub(super) type Kv = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

/// Every key at `rev` (0 = now) and the header revision, or the error.
pub(super) async fn dump(c: &mut Client, rev: i64) -> Result<(i64, Vec<Kv>), String> {
    let r = c
        .get(
            "\0",
            Some(GetOptions::new().with_all_keys().with_revision(rev)),
        )
        .await
        .map_err(|e| grpc(&e))?;
    let kvs = r
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease(),
            )
        })
        .collect();
    Ok((r.header().map(|h| h.revision()).unwrap_or_default(), kvs))
}

pub(super) async fn snapshot_bytes(c: &mut Client) -> Vec<u8> {
    let mut stream = c.snapshot().await.expect("snapshot");
    let mut data = Vec::new();
    while let Some(m) = stream.message().await.expect("snapshot message") {
        data.extend_from_slice(m.blob());
    }
    data
}

/// History with overwrites, deletes, a multi-key txn, a compaction and leases. Returns (the
/// lease with keys, the lease without keys, the compaction revision).
pub(super) async fn load_history(c: &mut Client) -> (i64, i64, i64) {
    c.put("a", "1", None).await.unwrap(); // 2
    c.put("b", "1", None).await.unwrap(); // 3
    c.put("a", "2", None).await.unwrap(); // 4
    c.put("c", "1", None).await.unwrap(); // 5
    c.delete("b", None).await.unwrap(); // 6
    c.txn(Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("e", "1", None)]))
        .await
        .unwrap(); // 7
    c.compact(5, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    c.put("a", "3", None).await.unwrap(); // 8
    c.put("b", "2", None).await.unwrap(); // 9: b's second life
    let l1 = c.lease_grant(600, None).await.unwrap().id();
    let l2 = c.lease_grant(900, None).await.unwrap().id();
    c.put("l/1", "x", Some(PutOptions::new().with_lease(l1)))
        .await
        .unwrap(); // 10
    c.put("l/2", "y", Some(PutOptions::new().with_lease(l1)))
        .await
        .unwrap(); // 11
    c.delete("c", None).await.unwrap(); // 12
    c.put("f", "1", Some(PutOptions::new().with_lease(l1)))
        .await
        .unwrap(); // 13
    c.put("f", "2", None).await.unwrap(); // 14: detached from l1
    c.delete("nosuch", None).await.unwrap(); // no revision
    (l1, l2, 5)
}

pub(super) struct LeaseView {
    pub(super) ids: Vec<i64>,
    pub(super) granted: i64,
    pub(super) ttl: i64,
    pub(super) keys: Vec<Vec<u8>>,
}

pub(super) async fn leases(c: &mut Client, id: i64) -> Result<LeaseView, String> {
    let mut ids: Vec<i64> = c
        .leases()
        .await
        .map_err(|e| format!("LeaseLeases: {}", grpc(&e)))?
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    ids.sort_unstable();
    let t = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .map_err(|e| format!("LeaseTimeToLive: {}", grpc(&e)))?;
    let mut keys = t.keys().to_vec();
    keys.sort();
    Ok(LeaseView {
        ids,
        granted: t.granted_ttl(),
        ttl: t.ttl(),
        keys,
    })
}

pub(super) fn status_json(file: &Path) -> (bool, String, String) {
    our_tool(&[
        "snapshot",
        "status",
        &file.display().to_string(),
        "-w",
        "json",
    ])
}

#[test]
fn snapshot_save_status_restore_round_trip() {
    let rt = rt();
    let orig = Proc::start(Kind::Ours, &[]);
    let mut c = rt.block_on(orig.client());
    let (l1, l2, compact_rev) = rt.block_on(load_history(&mut c));
    let (current, before) = rt.block_on(dump(&mut c, 0)).unwrap();
    assert_eq!(current, 14, "revision after loading the history");
    let hash_before = rt.block_on(c.hash_kv(0)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let api_file = dir.path().join("api.db");
    let data = rt.block_on(snapshot_bytes(&mut c));
    assert!(
        has_sha256_trailer(&data),
        "the Snapshot stream must end with the SHA-256 of the backend ({} bytes)",
        data.len()
    );
    std::fs::write(&api_file, &data).unwrap();

    // etcd-server snapshot status: table and json, revision = the server's.
    let (ok, out, err) = status_json(&api_file);
    assert!(ok, "snapshot status failed: {err}");
    assert_eq!(
        json_num(&out, "revision"),
        Some(14),
        "snapshot status revision: {out}"
    );
    assert!(
        json_num(&out, "totalKey").is_some_and(|n| n > 0),
        "snapshot status: {out}"
    );
    assert_eq!(
        json_num(&out, "totalSize"),
        Some(data.len() as i128 - 32),
        "totalSize is the backend without the checksum: {out}"
    );
    let (ok, table, err) = our_tool(&["snapshot", "status", &api_file.display().to_string()]);
    assert!(
        ok && table.contains("REVISION") && table.contains(" 14 "),
        "snapshot status table: {table} {err}"
    );

    // etcdctl snapshot save against our server gives the same content.
    if have_etcdctl() {
        let ctl_file = dir.path().join("ctl.db");
        let (ok, stdout, stderr) = etcdctl_run(
            &orig.endpoint(),
            &["snapshot", "save", &ctl_file.display().to_string()],
            None,
        );
        assert!(ok, "etcdctl snapshot save: {stderr}");
        assert_eq!(
            stdout,
            format!("Snapshot saved at {}\n", ctl_file.display())
        );
        let (ok, ctl_out, err) = status_json(&ctl_file);
        assert!(ok, "snapshot status of the etcdctl snapshot: {err}");
        assert_eq!(json_num(&ctl_out, "revision"), Some(14), "{ctl_out}");
        assert_eq!(
            json_num(&ctl_out, "hash"),
            json_num(&out, "hash"),
            "same data, same hash: {ctl_out} vs {out}"
        );
    }

    // Restore into a fresh data dir and start a member on it (same flags the harness uses).
    let mut restored = Proc::start(Kind::Ours, &[]);
    restored.kill();
    let data_dir = dir.path().join("restored");
    let peer = restored.peer_url.clone();
    let (ok, out, err) = our_tool(&[
        "snapshot",
        "restore",
        &api_file.display().to_string(),
        "--data-dir",
        &data_dir.display().to_string(),
        "--name",
        &restored.name,
        "--initial-cluster",
        &format!("{}={peer}", restored.name),
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster-token",
        "etcd-cluster",
    ]);
    assert!(ok, "snapshot restore failed: {out} {err}");
    restored.data_dir = data_dir;
    restored.spawn();
    let mut rc = rt.block_on(restored.client());
    // Lease calls must work as soon as the member serves (etcd answers them on the Raft leader;
    // it does not wait for the lessor's next tick). Checked at the end, so the rest still runs.
    let early_ttl = rt
        .block_on(rc.lease_time_to_live(l1, None))
        .map(|t| t.ttl());

    // Every key with its revisions, now and at every revision from the compaction on.
    let (rev_after, after_kvs) = rt.block_on(dump(&mut rc, 0)).unwrap();
    assert_eq!(rev_after, current, "current revision after restore");
    assert_eq!(
        after_kvs, before,
        "keys, values, create/mod revisions, versions and leases after restore"
    );
    for rev in compact_rev..=current {
        let a = rt.block_on(dump(&mut c, rev));
        let b = rt.block_on(dump(&mut rc, rev));
        assert_eq!(b, a, "range at revision {rev}: restored vs original");
    }
    let below = rt.block_on(dump(&mut rc, compact_rev - 1));
    assert_eq!(
        below,
        Err(format!("OutOfRange: {COMPACTED}")),
        "below the compaction after restore"
    );
    assert_eq!(
        rt.block_on(dump(&mut c, compact_rev - 1)),
        below,
        "original agrees"
    );
    let hash_after = rt.block_on(rc.hash_kv(0)).unwrap();
    assert_eq!(
        (hash_after.hash(), hash_after.compact_version()),
        (hash_before.hash(), hash_before.compact_version()),
        "HashKV (hash, compact revision) restored vs original"
    );

    // Leases survive with their keys.
    let logs = || {
        format!(
            "\n--- original's log:\n{}\n--- restored member's log:\n{}",
            tail(&orig.log(), 20),
            tail(&restored.log(), 20)
        )
    };
    // (Retried for up to 2 s, so a slow lessor start-up, asserted separately below, does not
    // hide the round-trip checks.)
    let with_retry = |c: &mut Client| {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match rt.block_on(leases(c, l1)) {
                Err(e) if e.contains("no leader") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                r => return r,
            }
        }
    };
    let lo = with_retry(&mut c).unwrap_or_else(|e| panic!("leases on the original: {e}{}", logs()));
    let lr = with_retry(&mut rc)
        .unwrap_or_else(|e| panic!("leases on the restored member: {e}{}", logs()));
    let mut want_ids = vec![l1, l2];
    want_ids.sort_unstable();
    assert_eq!(lr.ids, want_ids, "leases after restore");
    assert_eq!(lo.ids, want_ids, "leases on the original");
    assert_eq!(lr.granted, 600, "granted TTL after restore");
    // etcd refreshes leases on promotion, extending them by the election timeout (1 s here).
    assert!(
        lr.ttl > 590 && lr.ttl <= 602,
        "remaining TTL after restore: {}",
        lr.ttl
    );
    assert_eq!(
        lr.keys,
        vec![b"l/1".to_vec(), b"l/2".to_vec()],
        "keys attached to the lease after restore"
    );
    assert_eq!(lo.keys, lr.keys, "original agrees");

    // The restored member keeps going from the same revision, and its leases still own keys.
    let put = rt.block_on(rc.put("new", "1", None)).unwrap();
    assert_eq!(
        put.header().unwrap().revision(),
        current + 1,
        "first write after restore"
    );
    rt.block_on(rc.lease_revoke(l1)).unwrap();
    let (_, left) = rt.block_on(dump(&mut rc, 0)).unwrap();
    let keys: Vec<&[u8]> = left.iter().map(|kv| kv.0.as_slice()).collect();
    assert_eq!(
        keys,
        vec![&b"a"[..], b"b", b"d", b"e", b"f", b"new"],
        "revoking the restored lease deletes its keys only"
    );
    drop(rc);
    drop(restored);
    drop(orig);
    assert!(
        early_ttl.as_ref().is_ok_and(|t| *t > 0),
        "LeaseTimeToLive right after the restored member became ready: {:?}",
        early_ttl.as_ref().map_err(grpc)
    );
}

#[test]
fn snapshot_restore_refuses_corrupt_file_and_non_empty_dir() {
    let rt = rt();
    let p = Proc::start(Kind::Ours, &[]);
    let mut c = rt.block_on(p.client());
    for i in 0..20 {
        rt.block_on(c.put(format!("k{i}"), format!("v{i}"), None))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.db");
    let data = rt.block_on(snapshot_bytes(&mut c));
    std::fs::write(&good, &data).unwrap();
    drop(c);
    drop(p);
    let restore = |file: &Path, data_dir: &Path| {
        our_tool(&[
            "snapshot",
            "restore",
            &file.display().to_string(),
            "--data-dir",
            &data_dir.display().to_string(),
            "--name",
            "r",
            "--initial-cluster",
            "r=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
        ])
    };

    // One flipped byte in the middle.
    let mut bad = data.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    let bad_file = dir.path().join("bad.db");
    std::fs::write(&bad_file, &bad).unwrap();
    let (ok, out, err) = status_json(&bad_file);
    assert!(!ok, "snapshot status of a corrupted file must fail: {out}");
    assert!(
        err.contains("integrity") || err.contains("sha256"),
        "clear error for a corrupted file: {err:?}"
    );
    assert!(!err.contains("panicked"), "no panic: {err}");
    let target = dir.path().join("from-bad");
    let (ok, out, err) = restore(&bad_file, &target);
    assert!(!ok, "restore of a corrupted file must fail: {out}");
    assert!(
        err.contains("integrity") || err.contains("sha256"),
        "clear error for a corrupted file: {err:?}"
    );
    assert!(
        std::fs::read_dir(&target).map_or(true, |mut d| d.next().is_none()),
        "a refused restore leaves no data dir behind"
    );

    // Truncated file, and a file that is not a snapshot at all.
    let short = dir.path().join("short.db");
    std::fs::write(&short, &data[..data.len() / 3]).unwrap();
    let (ok, _, err) = status_json(&short);
    assert!(
        !ok && !err.is_empty() && !err.contains("panicked"),
        "truncated snapshot: {err}"
    );
    let (ok, _, err) = restore(&short, &dir.path().join("from-short"));
    assert!(
        !ok && !err.contains("panicked"),
        "restore of a truncated snapshot: {err}"
    );
    let missing = dir.path().join("missing.db");
    let (ok, _, err) = status_json(&missing);
    assert!(!ok && !err.is_empty(), "missing snapshot file: {err}");

    // Non-empty data dir: refused, and left as it was.
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("keep"), "x").unwrap();
    let (ok, out, err) = restore(&good, &busy);
    assert!(!ok, "restore into a non-empty data dir must fail: {out}");
    assert!(
        err.contains("not empty"),
        "clear error for a non-empty data dir: {err:?}"
    );
    let entries: Vec<PathBuf> = std::fs::read_dir(&busy)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        entries,
        vec![busy.join("keep")],
        "the non-empty data dir is untouched"
    );

    // The good file still restores.
    let (ok, out, err) = restore(&good, &dir.path().join("fresh"));
    assert!(ok, "restore of the good snapshot: {out} {err}");
    assert!(
        dir.path().join("fresh/member").is_dir(),
        "restore creates member/"
    );
}
