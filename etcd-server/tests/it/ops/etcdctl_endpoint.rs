//! etcdctl endpoint, alarm, defrag, snapshot save.

use super::*;

pub(super) fn hashkv_value(stdout: &str) -> Option<u32> {
    stdout.trim_end().rsplit(", ").next()?.parse().ok()
}

pub(super) fn endpoint_script(s: &mut Script) {
    s.ctl_out(&["put", "a", "1"], "OK\n");
    s.ctl_out(&["put", "b", "2"], "OK\n");
    s.ctl_out(&["put", "a", "3"], "OK\n");
    let rev = s.revision();
    s.eq("revision after 3 puts", rev, 4);
    let ep = s.ep.clone();

    // etcdctl 3.4 prints the health lines on stderr.
    let o = s.ctl(&["endpoint", "health"]);
    s.expect(
        o.ok && o.stdout.is_empty()
            && o.stderr.starts_with(&format!(
                "{ep} is healthy: successfully committed proposal: took = "
            )),
        || format!("endpoint health: {:?} {:?}", o.stdout, o.stderr),
    );
    let o = s.ctl_json(&["endpoint", "health", "-w", "json"]);
    s.expect(
        o.stdout
            .contains(&format!("\"endpoint\":\"{ep}\",\"health\":true")),
        || format!("endpoint health json: {}", o.stdout),
    );

    let o = s.ctl(&["endpoint", "status"]);
    let f: Vec<String> = o
        .stdout
        .trim_end_matches('\n')
        .split(", ")
        .map(str::to_owned)
        .collect();
    s.expect(
        f.len() == 10
            && f[0] == ep
            && f[4] == "true"
            && f[5] == "false"
            && f[7] == f[8]
            && f[2].starts_with("3."),
        || format!("endpoint status: {:?}", o.stdout),
    );
    let o = s.ctl_json(&["endpoint", "status", "-w", "json"]);
    let j = &o.stdout;
    s.eq(
        "endpoint status json revision",
        json_num(j, "revision"),
        Some(4),
    );
    s.expect(
        json_num(j, "leader").is_some() && json_num(j, "leader") == json_num(j, "member_id"),
        || format!("leader is self: {j}"),
    );
    s.expect(
        json_num(j, "raftIndex").is_some()
            && json_num(j, "raftIndex") == json_num(j, "raftAppliedIndex"),
        || format!("raft index: {j}"),
    );
    s.expect(json_num(j, "dbSize").is_some_and(|n| n > 0), || {
        format!("dbSize: {j}")
    });
    s.expect(!j.contains("\"errors\""), || format!("no errors: {j}"));
    s.ctl_json(&["endpoint", "status", "-w", "table"]);

    // HashKV: stable at a revision, different across revisions, unchanged by later writes.
    let o = s.ctl(&["endpoint", "hashkv"]);
    let h4 = hashkv_value(&o.stdout);
    s.expect(
        o.ok && h4.is_some() && o.stdout.starts_with(&format!("{ep}, ")),
        || format!("endpoint hashkv: {:?} {:?}", o.stdout, o.stderr),
    );
    let o = s.ctl_json(&["endpoint", "hashkv", "-w", "json"]);
    s.eq(
        "hashkv json hash",
        json_num(&o.stdout, "hash"),
        h4.map(i128::from),
    );
    s.eq(
        "hashkv json header revision",
        json_num(&o.stdout, "revision"),
        Some(4),
    );
    // etcd reports compact_revision -1 when nothing was ever compacted.
    s.eq(
        "hashkv json compact_revision before any compaction",
        json_num(&o.stdout, "compact_revision"),
        Some(-1),
    );
    let o = s.ctl(&["endpoint", "hashkv", "--rev=2"]);
    let h2 = hashkv_value(&o.stdout);
    s.expect(h2.is_some() && h2 != h4, || {
        format!("hashkv at rev 2 ({h2:?}) must differ from rev 4 ({h4:?})")
    });
    s.ctl_out(&["put", "c", "4"], "OK\n");
    let o = s.ctl(&["endpoint", "hashkv", "--rev=4"]);
    s.eq(
        "hashkv --rev=4 after a later write",
        hashkv_value(&o.stdout),
        h4,
    );
    let o = s.ctl(&["endpoint", "hashkv", "--rev=2"]);
    s.eq("hashkv --rev=2 again", hashkv_value(&o.stdout), h2);
    s.ctl_err(&["endpoint", "hashkv", "--rev=100"], FUTURE);
    s.ctl_out(&["compact", "3"], "compacted revision 3\n");
    // HashKV at exactly the compaction revision is ErrCompacted (mvcc.HashByRev: rev <= compactRev).
    s.ctl_err(&["endpoint", "hashkv", "--rev=3"], COMPACTED);
    s.ctl_err(&["endpoint", "hashkv", "--rev=2"], COMPACTED);
    let o = s.ctl(&["endpoint", "hashkv", "--rev=4"]);
    s.expect(o.ok && hashkv_value(&o.stdout).is_some(), || {
        format!("hashkv --rev=4 after compacting 3: {:?}", o.stderr)
    });
    let o = s.ctl_json(&["endpoint", "hashkv", "-w", "json"]);
    s.eq(
        "hashkv json compact_revision after compacting 3",
        json_num(&o.stdout, "compact_revision"),
        Some(3),
    );

    // Alarms: none. (3.4 sends no header on AlarmResponse, so `-w json` prints `{}` there; 3.5
    // fills the header. Only the alarm list is compared.)
    s.ctl_out(&["alarm", "list"], "");
    let o = s.ctl_json(&["alarm", "list", "-w", "json"]);
    s.expect(o.ok && !o.stdout.contains("alarms"), || {
        format!("alarm list json: {}", o.stdout)
    });
    s.ctl_out(&["alarm", "disarm"], "");

    s.ctl_out(
        &["defrag"],
        &format!("Finished defragmenting etcd member[{ep}]\n"),
    );
    s.ctl_out(&["get", "a"], "a\n3\n");
    s.ctl_out(&["get", "", "--from-key", "--keys-only"], "a\n\nb\n\nc\n\n");

    let file = s.path("snap.db");
    let o = s.ctl(&["snapshot", "save", &file]);
    s.eq(
        "snapshot save stdout",
        o.stdout.as_str(),
        &format!("Snapshot saved at {file}\n"),
    );
    let data = std::fs::read(&file).unwrap_or_default();
    s.expect(has_sha256_trailer(&data), || {
        format!(
            "snapshot file ({} bytes) does not end with the SHA-256 of its content",
            data.len()
        )
    });
    let status = if s.ours() {
        our_tool(&["snapshot", "status", &file, "-w", "json"])
    } else {
        let (ok, out, err) = etcdctl_run(&ep, &["snapshot", "status", &file, "-w", "json"], None);
        (ok, out, err)
    };
    s.expect(status.0, || format!("snapshot status failed: {}", status.2));
    s.eq(
        "snapshot status revision",
        json_num(&status.1, "revision"),
        Some(5),
    );
    s.expect(
        json_num(&status.1, "totalKey").is_some_and(|n| n > 0),
        || format!("snapshot status: {}", status.1),
    );
    s.note(format!(
        "snapshot status: ok={} revision={:?}",
        status.0,
        json_num(&status.1, "revision")
    ));
}

#[test]
fn etcdctl_endpoint_alarm_defrag_snapshot_match_reference() {
    side_by_side(
        "etcdctl endpoint / alarm / defrag / snapshot save",
        &[],
        endpoint_script,
    );
}
