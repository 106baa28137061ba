//! etcdctl lock and elect.

use super::*;

/// How long a second contender must keep waiting while the first holds the lock / leadership.
pub(super) const CONTENDED: Duration = Duration::from_millis(1500);

pub(super) fn lock_script(s: &mut Script) {
    let mut a = s.bg(&["lock", "mylock"]);
    let a_locked = a.wait_stdout(Duration::from_secs(10), |o| o.ends_with("\n\n"));
    let a_out = a.stdout();
    s.expect(a_locked, || {
        format!("first `lock mylock` printed nothing: {:?}", a.stderr())
    });
    s.expect(
        a_out.starts_with("mylock/") && a_out.ends_with("\n\n") && a_out.lines().count() == 2,
        || format!("first lock output {a_out:?}"),
    );
    let a_key = a_out.trim_end().to_owned();

    let mut b = s.bg(&["lock", "mylock"]);
    std::thread::sleep(CONTENDED);
    let b_early = b.stdout();
    s.eq(
        "second `lock mylock` while the first holds it",
        b_early.as_str(),
        "",
    );
    s.expect(b.running(), || {
        format!("second lock exited early: {:?}", b.stderr())
    });
    let o = s.ctl(&["get", "mylock", "--prefix", "--keys-only"]);
    let keys: Vec<&str> = o.stdout.lines().filter(|l| !l.is_empty()).collect();
    s.expect(keys.len() == 2 && keys[0] == a_key, || {
        format!("both contenders' keys, the holder's first: {keys:?}")
    });

    a.interrupt();
    let a_status = a.wait_exit(Duration::from_secs(10));
    s.expect(a_status.is_some_and(|st| st.success()), || {
        format!("first lock after SIGINT: {a_status:?} {:?}", a.stderr())
    });
    let b_locked = b.wait_stdout(Duration::from_secs(10), |o| o.ends_with("\n\n"));
    let b_out = b.stdout();
    s.expect(b_locked, || {
        format!(
            "second lock never acquired it after the first exited: {:?}",
            b.stderr()
        )
    });
    s.expect(
        b_out.starts_with("mylock/") && b_out.ends_with("\n\n") && b_out.trim_end() != a_key,
        || format!("second lock output {b_out:?}"),
    );
    let (na, nb) = (s.norm(&a_out), s.norm(&b_out));
    s.note(format!("first lock printed:\n{na}"));
    s.note(format!(
        "second lock printed only after the first exited:\n{nb}"
    ));
    s.ctl_out(
        &["get", "mylock", "--prefix", "--keys-only"],
        &format!("{}\n\n", b_out.trim_end()),
    );
    b.interrupt();
    let b_status = b.wait_exit(Duration::from_secs(10));
    s.expect(b_status.is_some_and(|st| st.success()), || {
        format!("second lock after SIGINT: {b_status:?}")
    });
    drop((a, b));

    s.ctl_out(&["get", "mylock", "--prefix"], "");
    // With a command: runs it while holding the lock, then unlocks.
    s.ctl_out(&["lock", "mylock", "echo", "hello"], "hello\n");
    s.ctl_out(&["get", "mylock", "--prefix"], "");
}

pub(super) fn elect_script(s: &mut Script) {
    let observer = s.bg(&["elect", "-l", "myelect"]);
    let mut a = s.bg(&["elect", "myelect", "p1"]);
    let a_won = a.wait_stdout(Duration::from_secs(10), |o| o.ends_with("\np1\n"));
    let a_out = a.stdout();
    s.expect(a_won, || {
        format!("first candidate never elected: {a_out:?} {:?}", a.stderr())
    });
    s.expect(
        a_out.starts_with("myelect/") && a_out.lines().count() == 2,
        || format!("first candidate output {a_out:?}"),
    );

    let mut b = s.bg(&["elect", "myelect", "p2"]);
    std::thread::sleep(CONTENDED);
    s.eq(
        "second candidate while the first leads",
        b.stdout().as_str(),
        "",
    );
    s.expect(b.running(), || {
        format!("second candidate exited early: {:?}", b.stderr())
    });
    let saw_p1 = observer.wait_stdout(Duration::from_secs(5), |o| o.contains("\np1\n"));
    s.expect(saw_p1, || {
        format!("observer did not report p1: {:?}", observer.stdout())
    });

    a.interrupt();
    let a_status = a.wait_exit(Duration::from_secs(10));
    s.expect(a_status.is_some_and(|st| st.success()), || {
        format!(
            "first candidate after SIGINT: {a_status:?} {:?}",
            a.stderr()
        )
    });
    let b_won = b.wait_stdout(Duration::from_secs(10), |o| o.ends_with("\np2\n"));
    let b_out = b.stdout();
    s.expect(b_won, || {
        format!(
            "second candidate never elected after the first resigned: {b_out:?} {:?}",
            b.stderr()
        )
    });
    let saw_p2 = observer.wait_stdout(Duration::from_secs(5), |o| o.contains("\np2\n"));
    s.expect(saw_p2, || {
        format!("observer did not report p2: {:?}", observer.stdout())
    });
    std::thread::sleep(Duration::from_millis(200));
    let obs = observer.stdout();
    drop(observer);
    s.eq("observer output", obs.as_str(), &format!("{a_out}{b_out}"));
    let (na, nb, no) = (s.norm(&a_out), s.norm(&b_out), s.norm(&obs));
    s.note(format!("first candidate:\n{na}"));
    s.note(format!(
        "second candidate (after the first resigned):\n{nb}"
    ));
    s.note(format!("observer:\n{no}"));
    b.interrupt();
    let b_status = b.wait_exit(Duration::from_secs(10));
    s.expect(b_status.is_some_and(|st| st.success()), || {
        format!("second candidate after SIGINT: {b_status:?}")
    });
    drop((a, b));
    s.ctl_out(&["get", "myelect", "--prefix"], "");
}

pub(super) fn lock_and_elect_script(s: &mut Script) {
    lock_script(s);
    elect_script(s);
}

#[test]
fn etcdctl_lock_and_elect_match_reference() {
    side_by_side("etcdctl lock / elect", &[], lock_and_elect_script);
}
