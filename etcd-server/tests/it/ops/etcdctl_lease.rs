//! etcdctl lease.

use super::*;

/// The hex ID of `lease <ID> granted with TTL(...)`.
pub(super) fn granted_id(stdout: &str) -> Option<String> {
    let id = stdout.strip_prefix("lease ")?.split(' ').next()?;
    (id.len() == 16 && u64::from_str_radix(id, 16).is_ok()).then(|| id.to_owned())
}

pub(super) fn remaining(stdout: &str) -> Option<i64> {
    let i = stdout.find("remaining(")?;
    let rest = &stdout[i + "remaining(".len()..];
    rest[..rest.find('s')?].parse().ok()
}

pub(super) fn lease_script(s: &mut Script) {
    let o = s.ctl(&["lease", "grant", "60"]);
    let Some(l1) = granted_id(&o.stdout) else {
        return s.fail(format!("lease grant 60: {:?} {:?}", o.stdout, o.stderr));
    };
    s.eq(
        "lease grant 60",
        o.stdout.as_str(),
        &format!("lease {l1} granted with TTL(60s)\n"),
    );
    let o = s.ctl(&["lease", "grant", "600"]);
    let Some(l2) = granted_id(&o.stdout) else {
        return s.fail(format!("lease grant 600: {:?} {:?}", o.stdout, o.stderr));
    };
    s.eq(
        "lease grant 600",
        o.stdout.as_str(),
        &format!("lease {l2} granted with TTL(600s)\n"),
    );
    s.expect(l1 != l2, || "two grants returned the same ID".into());
    let l2_dec = u64::from_str_radix(&l2, 16).unwrap_or_default() as i128;
    let l1_dec = u64::from_str_radix(&l1, 16).unwrap_or_default() as i128;

    s.ctl_out(&["put", "k1", "v1", &format!("--lease={l2}")], "OK\n");
    s.ctl_out(&["put", "k2", "v2", &format!("--lease={l2}")], "OK\n");
    s.ctl_out(
        &["lease", "keep-alive", "--once", &l2],
        &format!("lease {l2} keepalived with TTL(600)\n"),
    );

    let o = s.ctl(&["lease", "timetolive", &l2]);
    let r = remaining(&o.stdout);
    s.expect(r.is_some_and(|r| (590..=600).contains(&r)), || {
        format!("timetolive remaining: {:?}", o.stdout)
    });
    s.eq(
        "lease timetolive",
        o.stdout.as_str(),
        &format!(
            "lease {l2} granted with TTL(600s), remaining({}s)\n",
            r.unwrap_or(-1)
        ),
    );
    let o = s.ctl(&["lease", "timetolive", &l2, "--keys"]);
    let r = remaining(&o.stdout).unwrap_or(-1);
    let sorted = o.stdout.replace("[k2 k1]", "[k1 k2]");
    s.eq(
        "lease timetolive --keys",
        sorted,
        format!("lease {l2} granted with TTL(600s), remaining({r}s), attached keys([k1 k2])\n"),
    );
    let o = s.ctl_json(&["lease", "timetolive", &l2, "--keys", "-w", "json"]);
    s.eq(
        "timetolive json id",
        json_num(&o.stdout, "id"),
        Some(l2_dec),
    );
    s.eq(
        "timetolive json granted-ttl",
        json_num(&o.stdout, "granted-ttl"),
        Some(600),
    );
    s.expect(
        json_num(&o.stdout, "ttl").is_some_and(|t| (590..=600).contains(&t)),
        || format!("timetolive json ttl: {}", o.stdout),
    );
    s.eq(
        "timetolive json keys (base64)",
        json_str_array(&o.stdout, "keys"),
        Some(vec!["azE=".to_owned(), "azI=".to_owned()]),
    );

    s.ctl_out(
        &["lease", "timetolive", "1234"],
        "lease 0000000000001234 already expired\n",
    );
    s.ctl_err(&["lease", "keep-alive", "--once", "1234"], LEASE_NOT_FOUND);
    s.ctl_out(&["lease", "list"], &format!("found 2 leases\n{l1}\n{l2}\n"));
    let o = s.ctl_json(&["lease", "list", "-w", "json"]);
    let mut ids = json_nums(&o.stdout, "id");
    ids.sort_unstable();
    s.eq(
        "lease list json ids",
        ids,
        vec![l1_dec.min(l2_dec), l1_dec.max(l2_dec)],
    );

    s.ctl_out(&["lease", "revoke", &l2], &format!("lease {l2} revoked\n"));
    s.ctl_out(&["get", "k", "--prefix"], "");
    s.ctl_err(
        &["lease", "revoke", &l2],
        &format!("failed to revoke lease ({LEASE_NOT_FOUND})"),
    );
    s.ctl_err(&["lease", "keep-alive", "--once", &l2], LEASE_NOT_FOUND);
    s.ctl_out(
        &["lease", "timetolive", &l2, "--keys"],
        &format!("lease {l2} already expired\n"),
    );
    s.ctl_out(&["lease", "list"], &format!("found 1 leases\n{l1}\n"));

    // A TTL below the minimum is raised to 2 s; the lease then expires with its key.
    let o = s.ctl(&["lease", "grant", "1"]);
    let Some(l3) = granted_id(&o.stdout) else {
        return s.fail(format!("lease grant 1: {:?} {:?}", o.stdout, o.stderr));
    };
    s.eq(
        "lease grant 1",
        o.stdout.as_str(),
        &format!("lease {l3} granted with TTL(2s)\n"),
    );
    s.ctl_out(&["put", "short", "v", &format!("--lease={l3}")], "OK\n");
    let expired = wait_until(Duration::from_secs(10), || {
        s.run_quiet(&["get", "short"], None).stdout.is_empty()
    });
    s.expect(expired, || {
        "a 2 s lease did not expire its key within 10 s".into()
    });
    s.note(format!("key of the 2 s lease expired: {expired}"));
    s.ctl_out(
        &["lease", "timetolive", &l3],
        &format!("lease {l3} already expired\n"),
    );
    s.ctl_out(&["lease", "revoke", &l1], &format!("lease {l1} revoked\n"));
    s.ctl_out(&["lease", "list"], "found 0 leases\n");
}

#[test]
fn etcdctl_lease_matches_reference() {
    side_by_side("etcdctl lease", &[], lease_script);
}

/// Lease calls that only the leader's lessor answers (TimeToLive, KeepAlive) must work as soon
/// as the member serves, and a fresh lease never reports more than its granted TTL. Probes for
/// 700 ms right after start-up; returns the failures.
pub(super) fn lease_startup_probe(kind: Kind) -> Vec<String> {
    let rt = rt();
    let p = Proc::start(kind, &[]);
    let mut c = rt.block_on(p.client());
    let id = match rt.block_on(c.lease_grant(600, None)) {
        Ok(r) => r.id(),
        Err(e) => return vec![format!("{kind:?} LeaseGrant: {}", grpc(&e))],
    };
    let mut fails = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(700);
    while fails.is_empty() && Instant::now() < deadline {
        match rt.block_on(c.lease_time_to_live(id, None)) {
            Ok(t) if t.ttl() > 600 => fails.push(format!(
                "{kind:?} LeaseTimeToLive of a fresh 600 s lease: ttl {}",
                t.ttl()
            )),
            Ok(_) => {}
            Err(e) => fails.push(format!("{kind:?} LeaseTimeToLive: {}", grpc(&e))),
        }
        let ka = rt.block_on(async {
            let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            stream.message().await
        });
        match ka {
            Ok(Some(r)) if r.ttl() == 600 => {}
            Ok(other) => fails.push(format!(
                "{kind:?} LeaseKeepAlive: ttl {:?}",
                other.map(|r| r.ttl())
            )),
            Err(e) => fails.push(format!("{kind:?} LeaseKeepAlive: {}", grpc(&e))),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    fails
}

#[test]
fn lease_calls_work_right_after_startup() {
    if require(reference_etcd(), "reference etcd 3.4").is_some() {
        let theirs = lease_startup_probe(Kind::Reference);
        assert!(
            theirs.is_empty(),
            "the reference fails the probe (the expectation is wrong): {theirs:?}"
        );
    }
    // The window, if any, depends on start-up timing: try a few fresh members.
    for attempt in 1..=3 {
        let fails = lease_startup_probe(Kind::Ours);
        assert!(
            fails.is_empty(),
            "fresh member #{attempt}, right after it became ready:\n{}",
            fails.join("\n")
        );
    }
}
