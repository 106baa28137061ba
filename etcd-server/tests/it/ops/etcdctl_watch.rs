//! etcdctl watch.

use super::*;

/// Events of the ops in `watch_script`, as `watch w/ --prefix` prints them.
pub(super) const WATCH_ALL: &str = "PUT\nw/a\n1\nPUT\nw/b\n2\nPUT\nw/a\n3\nPUT\nw/c\n4\nPUT\nw/d\n5\nDELETE\nw/a\n\n\
DELETE\nw/b\n\nDELETE\nw/c\n\nDELETE\nw/d\n\nPUT\nw/a\n6\n";
/// The same with `--prev-kv` (prev kv printed before the kv).
pub(super) const WATCH_ALL_PREV: &str = "PUT\nw/a\n1\nPUT\nw/b\n2\nPUT\nw/a\n1\nw/a\n3\nPUT\nw/c\n4\nPUT\nw/d\n5\n\
DELETE\nw/a\n3\nw/a\n\nDELETE\nw/b\n2\nw/b\n\nDELETE\nw/c\n4\nw/c\n\nDELETE\nw/d\n5\nw/d\n\nPUT\nw/a\n6\n";
/// `watch w/a --prev-kv` from the first op.
pub(super) const WATCH_A_PREV: &str =
    "PUT\nw/a\n1\nPUT\nw/a\n1\nw/a\n3\nDELETE\nw/a\n3\nw/a\n\nPUT\nw/a\n6\n";
/// `watch w/ --prefix` from the third op (the compaction revision).
pub(super) const WATCH_FROM_3: &str = "PUT\nw/a\n3\nPUT\nw/c\n4\nPUT\nw/d\n5\nDELETE\nw/a\n\nDELETE\nw/b\n\nDELETE\nw/c\n\n\
DELETE\nw/d\n\nPUT\nw/a\n6\n";

/// The part of `out` after the last occurrence of `needle`.
pub(super) fn after<'t>(out: &'t str, needle: &str) -> &'t str {
    out.rfind(needle).map_or("", |i| &out[i + needle.len()..])
}

/// Runs `watch ARGS` from a known revision until it printed as much as `want` (then a little
/// longer, to catch extra events), kills it, and checks and records its stdout.
pub(super) fn watch_from(s: &mut Script, label: &str, args: &[&str], want: &str) {
    let w = s.bg(args);
    let complete = w.wait_stdout(Duration::from_secs(10), |o| o.len() >= want.len());
    std::thread::sleep(Duration::from_millis(300));
    let got = w.stdout();
    drop(w);
    s.expect(complete, || format!("{label}: incomplete output {got:?}"));
    s.eq(label, got.as_str(), want);
    s.note(format!("{label}:\n{got}"));
}

pub(super) fn watch_script(s: &mut Script) {
    let all = s.bg(&["watch", "w/", "--prefix"]);
    let prev = s.bg(&["watch", "w/", "--prefix", "--prev-kv"]);
    // Wait until both watchers are established: put a sentinel (w/0, never touched again) until
    // both have printed it; everything before its last occurrence is ignored.
    let mut sentinel = None;
    for i in 1..=30 {
        let v = format!("sync{i}");
        let o = s.run_quiet(&["put", "w/0", &v], None);
        s.expect(o.ok, || format!("sentinel put failed: {}", o.stderr));
        let needle = format!("w/0\n{v}\n");
        if wait_until(Duration::from_millis(400), || {
            all.stdout().contains(&needle) && prev.stdout().contains(&needle)
        }) {
            sentinel = Some(needle);
            break;
        }
    }
    let Some(sentinel) = sentinel else {
        s.fail(format!(
            "the watchers never printed the sentinel: {:?} / {:?}",
            all.stdout(),
            prev.stdout()
        ));
        return;
    };
    let r0 = s.revision();

    s.ctl_out(&["put", "w/a", "1"], "OK\n");
    s.ctl_out(&["put", "w/b", "2"], "OK\n");
    s.ctl_out(&["put", "w/a", "3"], "OK\n");
    let o = s.ctl_in(&["txn"], Some("\nput w/c 4\nput w/d 5\n\n\n"));
    s.expect(o.ok, || format!("txn failed: {}", o.stderr));
    s.eq("txn stdout", o.stdout.as_str(), "SUCCESS\n\nOK\n\nOK\n");
    s.ctl_out(&["del", "w/a"], "1\n");
    s.ctl_out(&["del", "w/b", "w/e"], "3\n");
    s.ctl_out(&["put", "w/a", "6"], "OK\n");
    s.ctl_out(&["put", "other/x", "1"], "OK\n");
    let r_end = s.revision();
    s.eq("revisions used by the ops", r_end - r0, 8);

    let done = "PUT\nw/a\n6\n";
    let ok = wait_until(Duration::from_secs(10), || {
        after(&all.stdout(), &sentinel).ends_with(done)
            && after(&prev.stdout(), &sentinel).ends_with(done)
    });
    s.expect(ok, || {
        "background watchers did not print the last event in 10 s".into()
    });
    std::thread::sleep(Duration::from_millis(300));
    let (got_all, got_prev) = (
        after(&all.stdout(), &sentinel).to_owned(),
        after(&prev.stdout(), &sentinel).to_owned(),
    );
    let (err_all, err_prev) = (all.stderr(), prev.stderr());
    drop((all, prev));
    s.eq(
        "background `watch w/ --prefix`",
        got_all.as_str(),
        WATCH_ALL,
    );
    s.eq(
        "background `watch w/ --prefix --prev-kv`",
        got_prev.as_str(),
        WATCH_ALL_PREV,
    );
    s.eq(
        "background watchers' stderr",
        (err_all.as_str(), err_prev.as_str()),
        ("", ""),
    );
    s.note(format!("background watch w/ --prefix:\n{got_all}"));
    s.note(format!(
        "background watch w/ --prefix --prev-kv:\n{got_prev}"
    ));

    // Historical watches.
    let rev1 = format!("--rev={}", r0 + 1);
    watch_from(
        s,
        "watch w/ --prefix --rev=R0+1",
        &["watch", "w/", "--prefix", &rev1],
        WATCH_ALL,
    );
    watch_from(
        s,
        "watch w/a --prev-kv --rev=R0+1",
        &["watch", "w/a", "--prev-kv", &rev1],
        WATCH_A_PREV,
    );
    watch_from(
        s,
        "watch w/ --prefix --prev-kv --rev=R0+1",
        &["watch", "w/", "--prefix", "--prev-kv", &rev1],
        WATCH_ALL_PREV,
    );

    // After a compaction: from the compaction revision itself works, below it is canceled.
    let rev3 = r0 + 3;
    let o = s.run_quiet(&["compact", &rev3.to_string()], None);
    s.eq(
        "compact stdout",
        o.stdout,
        format!("compacted revision {rev3}\n"),
    );
    s.note("compact R0+3");
    watch_from(
        s,
        "watch w/ --prefix --rev=R0+3 (compaction revision)",
        &["watch", "w/", "--prefix", &format!("--rev={rev3}")],
        WATCH_FROM_3,
    );
    let mut w = s.bg(&["watch", "w/", "--prefix", &rev1]);
    let status = w.wait_exit(Duration::from_secs(10));
    let (out, err) = (w.stdout(), w.stderr());
    drop(w);
    s.expect(status.is_some_and(|st| !st.success()), || {
        format!("watch below the compaction should exit with an error, got {status:?}")
    });
    s.eq("watch below the compaction: stdout", out.as_str(), "");
    s.expect(
        err.contains(&format!("watch was canceled ({COMPACTED})")),
        || format!("watch below the compaction: stderr {err:?}"),
    );
    s.eq(
        "watch below the compaction: last line",
        err.lines().last().unwrap_or(""),
        "Error: watch is canceled by the server",
    );
    s.note(format!(
        "watch w/ --prefix --rev=R0+1 after compacting R0+3:\nstdout {out:?}\nstderr {err:?}"
    ));
}

#[test]
fn etcdctl_watch_matches_reference() {
    side_by_side("etcdctl watch", &[], watch_script);
}
