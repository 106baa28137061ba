//! The tests.

use super::*;

pub(super) const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
pub(super) const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";
pub(super) const NO_KEY: &str = "etcdserver: key is not provided";

#[test]
fn put_get_del_match_reference() {
    // After the puts (revision 9):
    //   k/a = "5"  create 3, mod 6, version 3
    //   k/b = "0"  create 2, mod 7, version 2
    //   k/c = "1"  create 5, mod 5, version 1
    //   x/iv = "v" create 8, mod 9, version 2
    // so every sort target gives a different order.
    let steps = vec![
        run(&["put", "k/b", "2"]).out("OK\n"),
        run(&["put", "k/a", "3"]).out("OK\n"),
        run(&["put", "k/a", "4", "--prev-kv"]).out("OK\nk/a\n3\n"),
        run(&["put", "k/c", "1", "--prev-kv"]).out("OK\n"),
        run(&["put", "k/a", "5", "--prev-kv", "-w", "json"]).check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 6)?;
            kv(j.get("prev_kv"), "k/a", Some("4"), 3, 4, 2)
        }),
        run(&["put", "k/b", "0"]).out("OK\n"),
        run(&["put", "x/iv", "v"]).out("OK\n"),
        run(&["put", "x/iv", "--ignore-value"]).out("OK\n"),
        run(&["put", "x/none", "--ignore-value"]).err("etcdserver: key not found"),
        run(&["put", "", "x"]).err(NO_KEY),
        run(&["get", ""]).err(NO_KEY),
        // Plain gets.
        run(&["get", "k/a"]).out("k/a\n5\n"),
        run(&["get", "k/a", "-w", "json"]).check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 9)?;
            same("count", j.get("count").u64(), Some(1))?;
            same("more", j.get("more").bool(), None)?;
            same("kvs", j.get("kvs").arr().len(), 1)?;
            kv(j.get("kvs").idx(0), "k/a", Some("5"), 3, 6, 3)
        }),
        run(&["get", "x/iv", "-w", "json"]).check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 9)?;
            kv(j.get("kvs").idx(0), "x/iv", Some("v"), 8, 9, 2)
        }),
        run(&["get", "k/a", "-w", "fields"]).norm(
            "\"ClusterID\" : <CLUSTER>\n\"MemberID\" : <MEMBER>\n\"Revision\" : 9\n\"RaftTerm\" : <TERM>\n\
             \"Key\" : \"k/a\"\n\"CreateRevision\" : 3\n\"ModRevision\" : 6\n\"Version\" : 3\n\"Value\" : \"5\"\n\
             \"Lease\" : 0\n\"More\" : false\n\"Count\" : 1\n",
        ),
        run(&["get", "k/a", "--consistency=s"]).out("k/a\n5\n"),
        run(&["get", "k/a", "--hex"]).out("\\x6b\\x2f\\x61\n\\x35\n"),
        run(&["get", "nosuch"]).out(""),
        run(&["get", "nosuch", "-w", "json"]).check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 9)?;
            same("kvs", j.get("kvs").is_null(), true)?;
            same("count", j.get("count").u64(), None)
        }),
        // Ranges.
        run(&["get", "k/", "--prefix"]).out("k/a\n5\nk/b\n0\nk/c\n1\n"),
        run(&["get", "k/a", "k/c"]).out("k/a\n5\nk/b\n0\n"),
        run(&["get", "k/b", "--from-key"]).out("k/b\n0\nk/c\n1\nx/iv\nv\n"),
        run(&["get", "k/", "--prefix", "--keys-only"]).out("k/a\n\nk/b\n\nk/c\n\n"),
        run(&["get", "k/", "--prefix", "--keys-only", "-w", "json"]).check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 9)?;
            same("count", j.get("count").u64(), Some(3))?;
            let kvs = j.get("kvs").arr();
            same("kvs", kvs.len(), 3)?;
            kv(&kvs[0], "k/a", None, 3, 6, 3)?;
            kv(&kvs[1], "k/b", None, 2, 7, 2)?;
            kv(&kvs[2], "k/c", None, 5, 5, 1)
        }),
        run(&["get", "k/", "--prefix", "--print-value-only"]).out("5\n0\n1\n"),
        run(&["get", "k/", "--prefix", "--limit", "1"]).out("k/a\n5\n"),
        run(&["get", "k/", "--prefix", "--limit", "2", "-w", "json"]).check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 9)?;
            same("count (ignores limit)", j.get("count").u64(), Some(3))?;
            same("more", j.get("more").bool(), Some(true))?;
            let kvs = j.get("kvs").arr();
            same("kvs", kvs.len(), 2)?;
            kv(&kvs[0], "k/a", Some("5"), 3, 6, 3)?;
            kv(&kvs[1], "k/b", Some("0"), 2, 7, 2)
        }),
        run(&["get", "k/", "--prefix", "--limit", "3", "-w", "json"]).check(|_, o| {
            let j = json(o)?;
            same("more", j.get("more").bool(), None)?;
            same("kvs", j.get("kvs").arr().len(), 3)
        }),
        // Historical reads: the header still carries the current revision.
        run(&["get", "k/a", "--rev", "3"]).out("k/a\n3\n"),
        run(&["get", "k/a", "--rev", "4"]).out("k/a\n4\n"),
        run(&["get", "k/", "--prefix", "--rev", "4"]).out("k/a\n4\nk/b\n2\n"),
        run(&["get", "k/c", "--rev", "4"]).out(""),
        run(&["get", "k/", "--prefix", "--rev", "5", "-w", "json"]).check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 9)?;
            let kvs = j.get("kvs").arr();
            same("kvs", kvs.len(), 3)?;
            kv(&kvs[0], "k/a", Some("4"), 3, 4, 2)?;
            kv(&kvs[1], "k/b", Some("2"), 2, 2, 1)?;
            kv(&kvs[2], "k/c", Some("1"), 5, 5, 1)
        }),
        run(&["get", "k/a", "--rev", "9"]).out("k/a\n5\n"),
        run(&["get", "k/a", "--rev", "10"]).err(FUTURE),
        run(&["get", "k/a", "--rev", "1000"]).err(FUTURE),
        // Sorting.
        run(&["get", "k/", "--prefix", "--sort-by=KEY", "--order=ASCEND"]).out("k/a\n5\nk/b\n0\nk/c\n1\n"),
        run(&["get", "k/", "--prefix", "--sort-by=KEY", "--order=DESCEND"]).out("k/c\n1\nk/b\n0\nk/a\n5\n"),
        run(&["get", "k/", "--prefix", "--order=DESCEND"]).out("k/c\n1\nk/b\n0\nk/a\n5\n"),
        run(&["get", "k/", "--prefix", "--sort-by=CREATE", "--order=ASCEND"]).out("k/b\n0\nk/a\n5\nk/c\n1\n"),
        run(&["get", "k/", "--prefix", "--sort-by=CREATE", "--order=DESCEND"]).out("k/c\n1\nk/a\n5\nk/b\n0\n"),
        run(&["get", "k/", "--prefix", "--sort-by=MODIFY", "--order=ASCEND"]).out("k/c\n1\nk/a\n5\nk/b\n0\n"),
        run(&["get", "k/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"]).out("k/b\n0\nk/a\n5\nk/c\n1\n"),
        run(&["get", "k/", "--prefix", "--sort-by=VERSION", "--order=ASCEND"]).out("k/c\n1\nk/b\n0\nk/a\n5\n"),
        run(&["get", "k/", "--prefix", "--sort-by=VERSION", "--order=DESCEND"]).out("k/a\n5\nk/b\n0\nk/c\n1\n"),
        run(&["get", "k/", "--prefix", "--sort-by=VALUE", "--order=ASCEND"]).out("k/b\n0\nk/c\n1\nk/a\n5\n"),
        run(&["get", "k/", "--prefix", "--sort-by=VALUE", "--order=DESCEND"]).out("k/a\n5\nk/c\n1\nk/b\n0\n"),
        run(&["get", "k/", "--prefix", "--sort-by=VALUE"]).out("k/b\n0\nk/c\n1\nk/a\n5\n"),
        run(&["get", "k/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND", "--limit", "2"])
            .out("k/b\n0\nk/a\n5\n"),
        run(&["get", "k/", "--prefix", "--sort-by=MODIFY", "--order=DESCEND", "--limit", "2", "-w", "json"])
            .check(|ctx, o| {
                let j = json(o)?;
                header(ctx, &j, 9)?;
                same("count", j.get("count").u64(), Some(3))?;
                same("more", j.get("more").bool(), Some(true))?;
                let kvs = j.get("kvs").arr();
                same("kvs", kvs.len(), 2)?;
                kv(&kvs[0], "k/b", Some("0"), 2, 7, 2)?;
                kv(&kvs[1], "k/a", Some("5"), 3, 6, 3)
            }),
        run(&["get", "k/", "--prefix", "--sort-by=CREATE", "--order=DESCEND", "--keys-only", "--rev", "4"])
            .out("k/a\n\nk/b\n\n"),
        // Deletes.
        run(&["put", "d/1", "a"]).out("OK\n"),
        run(&["put", "d/2", "b"]).out("OK\n"),
        run(&["put", "d/3", "c"]).out("OK\n"),
        run(&["put", "d/31", "x"]).out("OK\n"),
        run(&["del", "d/1", "--prev-kv"]).out("1\nd/1\na\n"),
        run(&["del", "d/3", "--prefix", "--prev-kv"]).out("2\nd/3\nc\nd/31\nx\n"),
        run(&["del", "d/2", "--prev-kv", "-w", "json"]).check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 16)?;
            same("deleted", j.get("deleted").u64(), Some(1))?;
            same("prev_kvs", j.get("prev_kvs").arr().len(), 1)?;
            kv(j.get("prev_kvs").idx(0), "d/2", Some("b"), 11, 11, 1)
        }),
        run(&["del", "d/", "--prefix"]).out("0\n"),
        run(&["del", "nosuch"]).out("0\n"),
        run(&["del", "nosuch", "--prev-kv", "-w", "json"]).check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 16)?;
            same("deleted", j.get("deleted").u64(), None)?;
            same("prev_kvs", j.get("prev_kvs").is_null(), true)
        }),
        run(&["del", ""]).err(NO_KEY),
        run(&["get", "d/", "--prefix"]).out(""),
        // A delete that matched nothing did not bump the revision.
        run(&["get", "d/1", "--rev", "13"]).out("d/1\na\n"),
        run(&["get", "d/1", "--rev", "16"]).out(""),
        run(&["get", "d/1", "--rev", "17"]).err(FUTURE),
        run(&["del", "k/a", "k/c"]).out("2\n"),
        run(&["get", "k/", "--prefix"]).out("k/c\n1\n"),
        run(&["put", "k/a", "again"]).out("OK\n"),
        run(&["get", "k/a", "-w", "json"]).check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 18)?;
            kv(j.get("kvs").idx(0), "k/a", Some("again"), 18, 18, 1)
        }),
        run(&["get", "k/a", "--rev", "16"]).out("k/a\n5\n"),
        run(&["get", "k/a", "--rev", "17"]).out(""),
        run(&["get", "", "--from-key", "--keys-only"]).out("k/a\n\nk/c\n\nx/iv\n\n"),
    ];
    check_against_reference(&steps);
}

/// The prompts `txn -i` prints on stdout.
pub(super) const PROMPTS: &str =
    "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n";

#[test]
fn txn_from_stdin_matches_reference() {
    let ok_prompts = |rest: &str| format!("{PROMPTS}{rest}");
    let steps = vec![
        run(&["put", "t/a", "1"]).out("OK\n"),
        run(&["put", "t/b", "2"]).out("OK\n"),
        // Interactive form, compares hold: rev 4.
        run(&["txn", "-i"])
            .stdin("value(\"t/a\") = \"1\"\nmod(\"t/b\") > \"0\"\n\nput t/a 10\nget t/b\ndel t/b\n\nput t/fail x\n\n")
            .out(&ok_prompts("SUCCESS\n\nOK\n\nt/b\n2\n\n1\n")),
        // Plain stdin form, a compare fails: rev 5.
        run(&["txn"])
            .stdin("version(\"t/a\") = \"1\"\n\nput t/never x\n\nput t/f x\nget t/a\ndel t/nosuch\n\n")
            .out("FAILURE\n\nOK\n\nt/a\n10\n\n0\n"),
        // Interactive form, a compare fails (t/a exists).
        run(&["txn", "-i"])
            .stdin("create(\"t/a\") = \"0\"\n\nput t/never x\n\nget t/ --prefix\nput t/g y\ndel t/f\n\n")
            .out(&ok_prompts("FAILURE\n\nt/a\n10\nt/f\nx\n\nOK\n\n1\n")),
        // Compares on a missing key: version/create/mod are 0, a value compare is false.
        run(&["txn"])
            .stdin("version(\"t/missing\") = \"0\"\ncreate(\"t/missing\") = \"0\"\nmod(\"t/missing\") = \"0\"\n\nput t/m1 1\n\nput t/m2 2\n\n")
            .out("SUCCESS\n\nOK\n"),
        run(&["txn"]).stdin("value(\"t/missing\") = \"\"\n\nput t/never x\n\nput t/m3 3\n\n").out("FAILURE\n\nOK\n"),
        // Exact revision compares, `<` and `!=`; no failure ops.
        run(&["txn"])
            .stdin("mod(\"t/a\") = \"4\"\ncreate(\"t/b\") < \"100\"\nvalue(\"t/g\") != \"z\"\n\nput t/h 1\n\n\n")
            .out("SUCCESS\n\nOK\n"),
        // No compares: always the success branch; a get with flags inside the txn.
        run(&["txn"])
            .stdin("\nput t/z 1\nget t/ --prefix --keys-only --limit 2\n\n\n")
            .out("SUCCESS\n\nOK\n\nt/a\n\nt/g\n\n"),
        // Empty failure branch of a failed txn.
        run(&["txn"]).stdin("value(\"t/a\") = \"nope\"\n\nput t/never x\n\n\n").out("FAILURE\n"),
        // JSON: succeeded, per-op responses, all ops sharing one revision.
        run(&["txn", "-w", "json"])
            .stdin("value(\"t/a\") = \"10\"\n\nput t/a 11\nget t/a\ndel t/z\n\n\n")
            .check(|ctx, o| {
                let j = json(o)?;
                header(ctx, &j, 11)?;
                same("succeeded", j.get("succeeded").bool(), Some(true))?;
                let r = j.get("responses").arr();
                same("responses", r.len(), 3)?;
                same("put revision", r[0].get("Response").get("ResponsePut").get("header").get("revision").u64(), Some(11))?;
                let range = r[1].get("Response").get("ResponseRange");
                same("range count", range.get("count").u64(), Some(1))?;
                // Reads later in a txn see its earlier writes.
                kv(range.get("kvs").idx(0), "t/a", Some("11"), 2, 11, 3)?;
                same("deleted", r[2].get("Response").get("ResponseDeleteRange").get("deleted").u64(), Some(1))
            }),
        run(&["txn", "-w", "json"]).stdin("value(\"t/a\") = \"10\"\n\nput t/never x\n\nget t/a\n\n").check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 11)?;
            same("succeeded", j.get("succeeded").bool(), None)?;
            let r = j.get("responses").arr();
            same("responses", r.len(), 1)?;
            kv(r[0].get("Response").get("ResponseRange").get("kvs").idx(0), "t/a", Some("11"), 2, 11, 3)
        }),
        // A read-only txn does not bump the revision.
        run(&["txn", "-w", "json"]).stdin("\nget t/a\n\n\n").check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 11)?;
            same("succeeded", j.get("succeeded").bool(), Some(true))?;
            kv(j.get("responses").idx(0).get("Response").get("ResponseRange").get("kvs").idx(0), "t/a", Some("11"), 2, 11, 3)
        }),
        // Duplicate keys are rejected; overlapping deletes are allowed.
        run(&["txn"]).stdin("\nput t/d 1\nput t/d 2\n\n\n").err("etcdserver: duplicate key given in txn request"),
        run(&["txn"]).stdin("\nput t/d 1\ndel t/ --prefix\n\n\n").err("etcdserver: duplicate key given in txn request"),
        run(&["txn"]).stdin("\ndel t/m1\ndel t/ --prefix\n\n\n").out("SUCCESS\n\n1\n\n4\n"),
        run(&["get", "t/", "--prefix"]).out(""),
        run(&["get", "t/a", "--rev", "11"]).out("t/a\n11\n"),
        run(&["get", "t/", "--prefix", "--rev", "11", "-w", "json"]).check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 12)?;
            let keys: Vec<String> =
                j.get("kvs").arr().iter().map(|k| k.get("key").str().unwrap_or("?").to_owned()).collect();
            let want: Vec<String> = ["t/a", "t/g", "t/h", "t/m1", "t/m3"].iter().map(|k| b64(k)).collect();
            same("keys at revision 11", keys, want)
        }),
    ];
    check_against_reference(&steps);
}

#[test]
fn compaction_matches_reference() {
    let steps = vec![
        run(&["put", "c/k", "v1"]).out("OK\n"),
        run(&["put", "c/k", "v2"]).out("OK\n"),
        run(&["put", "c/k", "v3"]).out("OK\n"),
        run(&["put", "c/k", "v4"]).out("OK\n"),
        run(&["put", "c/other", "x"]).out("OK\n"),
        run(&["compaction", "3"]).out("compacted revision 3\n"),
        run(&["get", "c/k", "--rev", "2"]).err(COMPACTED),
        run(&["get", "c/", "--prefix", "--rev", "1"]).err(COMPACTED),
        // Reading at exactly the compaction revision is allowed.
        run(&["get", "c/k", "--rev", "3"]).out("c/k\nv2\n"),
        run(&["get", "c/k", "--rev", "5"]).out("c/k\nv4\n"),
        run(&["compaction", "3"]).err(COMPACTED),
        run(&["compaction", "2"]).err(COMPACTED),
        run(&["compaction", "7"]).err(FUTURE),
        run(&["compaction", "6", "--physical"]).out("compacted revision 6\n"),
        run(&["get", "c/k", "--rev", "5"]).err(COMPACTED),
        run(&["get", "c/k", "--rev", "6"]).out("c/k\nv4\n"),
        run(&["get", "c/", "--prefix", "--rev", "6", "-w", "json"]).check(|ctx, o| {
            let j = json(o)?;
            // Compaction does not bump the revision.
            header(ctx, &j, 6)?;
            same("count", j.get("count").u64(), Some(2))?;
            kv(j.get("kvs").idx(0), "c/k", Some("v4"), 2, 5, 4)?;
            kv(j.get("kvs").idx(1), "c/other", Some("x"), 6, 6, 1)
        }),
        run(&["del", "c/k"]).out("1\n"),
        run(&["put", "c/k", "v5"]).out("OK\n"),
        run(&["compaction", "7"]).out("compacted revision 7\n"),
        run(&["get", "c/k", "--rev", "6"]).err(COMPACTED),
        run(&["get", "c/k", "--rev", "7"]).out(""),
        run(&["get", "c/k"]).out("c/k\nv5\n"),
        run(&["get", "c/k", "-w", "json"]).check(|ctx, o| {
            let j = json(o)?;
            header(ctx, &j, 8)?;
            kv(j.get("kvs").idx(0), "c/k", Some("v5"), 8, 8, 1)
        }),
        run(&["del", "c/", "--prefix", "--prev-kv"]).out("2\nc/k\nv5\nc/other\nx\n"),
        run(&["compaction", "9"]).out("compacted revision 9\n"),
        run(&["get", "c/", "--prefix", "--rev", "9"]).out(""),
        run(&["get", "c/", "--prefix", "--rev", "8"]).err(COMPACTED),
        run(&["compaction", "9"]).err(COMPACTED),
        run(&["compaction", "10"]).err(FUTURE),
        run(&["endpoint", "status", "-w", "json"])
            .check(|ctx, o| status_json(ctx, o, &ctx.endpoint, 9)),
    ];
    check_against_reference(&steps);
}

#[test]
fn endpoint_and_member_commands_match_reference() {
    let steps = vec![
        run(&["put", "e/a", "1"]).out("OK\n"),
        run(&["endpoint", "status", "-w", "json"])
            .check(|ctx, o| status_json(ctx, o, &ctx.endpoint, 2))
            .norm(
                "[{\"Endpoint\":\"<EP>\",\"Status\":{\"header\":{\"cluster_id\":<CLUSTER>,\"member_id\":<MEMBER>,\
                 \"revision\":2,\"raft_term\":\"<TERM>\"},\"version\":\"<VERSION>\",\"dbSize\":\"<DBSIZE>\",\
                 \"leader\":<MEMBER>,\"raftIndex\":\"<IDX0+0>\",\"raftTerm\":\"<TERM>\",\
                 \"raftAppliedIndex\":\"<IDX0+0>\",\"dbSizeInUse\":\"<DBSIZE>\"}}]\n",
            ),
        run(&["endpoint", "status"])
            .norm("<EP>, <MEMBER>, <VERSION>, <DBSIZE>, true, false, <TERM>, <IDX0+0>, <IDX0+0>, \n")
            .check(|ctx, o| {
                expect_ok(o)?;
                let f: Vec<&str> = o.stdout.trim_end_matches('\n').split(", ").collect();
                same("fields", f.len(), 10)?;
                same("ENDPOINT", f[0], ctx.endpoint.as_str())?;
                same("ID", f[1], format!("{:x}", ctx.member_id).as_str())?;
                version_ok(ctx, f[2])?;
                same("IS LEADER", f[4], "true")?;
                same("IS LEARNER", f[5], "false")?;
                same("RAFT INDEX = RAFT APPLIED INDEX", f[7], f[8])
            }),
        run(&["endpoint", "status", "-w", "table"])
            .norm(
                "+\n| ENDPOINT | ID | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | \
                 RAFT APPLIED INDEX | ERRORS |\n+\n| <EP> | <MEMBER> | <VERSION> | <DBSIZE> | true | false | \
                 <TERM> | <IDX0+0> | <IDX0+0> |  |\n+\n",
            )
            .check(|ctx, o| {
                expect_ok(o)?;
                let row = o.stdout.lines().nth(3).unwrap_or("");
                let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
                same("cells", cells.len(), 10)?;
                version_ok(ctx, cells[2])?;
                same("IS LEADER", cells[4], "true")
            }),
        run(&["endpoint", "status", "-w", "fields"]).norm(
            "\"ClusterID\" : <CLUSTER>\n\"MemberID\" : <MEMBER>\n\"Revision\" : 2\n\"RaftTerm\" : <TERM>\n\
             \"Version\" : \"<VERSION>\"\n\"DBSize\" : <DBSIZE>\n\"Leader\" : <MEMBER>\n\"IsLearner\" : false\n\
             \"RaftIndex\" : <IDX0+0>\n\"RaftTerm\" : <TERM>\n\"RaftAppliedIndex\" : <IDX0+0>\n\"Errors\" : []\n\
             \"Endpoint\" : \"<EP>\"\n\n",
        ),
        // Two writes and a read: the raft index moves by exactly 2.
        run(&["put", "e/b", "2"]).out("OK\n"),
        run(&["put", "e/c", "3"]).out("OK\n"),
        run(&["get", "e/", "--prefix", "--keys-only"]).out("e/a\n\ne/b\n\ne/c\n\n"),
        run(&["endpoint", "status", "-w", "json"])
            .check(|ctx, o| status_json(ctx, o, &ctx.endpoint, 4))
            .norm(
                "[{\"Endpoint\":\"<EP>\",\"Status\":{\"header\":{\"cluster_id\":<CLUSTER>,\"member_id\":<MEMBER>,\
                 \"revision\":4,\"raft_term\":\"<TERM>\"},\"version\":\"<VERSION>\",\"dbSize\":\"<DBSIZE>\",\
                 \"leader\":<MEMBER>,\"raftIndex\":\"<IDX0+2>\",\"raftTerm\":\"<TERM>\",\
                 \"raftAppliedIndex\":\"<IDX0+2>\",\"dbSizeInUse\":\"<DBSIZE>\"}}]\n",
            ),
        // Member list.
        run(&["member", "list"]).norm("<MEMBER>, started, default, http://<PEER>, http://<EP>, false\n"),
        run(&["member", "list", "-w", "json"])
            .norm(
                "{\"header\":{\"cluster_id\":<CLUSTER>,\"member_id\":<MEMBER>,\"raft_term\":\"<TERM>\"},\
                 \"members\":[{\"ID\":<MEMBER>,\"name\":\"default\",\"peerURLs\":[\"http://<PEER>\"],\
                 \"clientURLs\":[\"http://<EP>\"]}]}\n",
            )
            .check(|ctx, o| {
                let j = json(o)?;
                let m = j.get("members").arr();
                same("members", m.len(), 1)?;
                same("ID", m[0].get("ID").u64(), Some(ctx.member_id))?;
                same("name", m[0].get("name").str(), Some("default"))?;
                same("clientURLs", m[0].get("clientURLs").idx(0).str(), Some(format!("http://{}", ctx.endpoint).as_str()))?;
                same("isLearner", m[0].get("isLearner").bool(), None)
            }),
        run(&["member", "list", "-w", "table"]).norm(
            "+\n| ID | STATUS | NAME | PEER ADDRS | CLIENT ADDRS | IS LEARNER |\n+\n\
             | <MEMBER> | started | default | http://<PEER> | http://<EP> | false |\n+\n",
        ),
        run(&["member", "list", "-w", "fields"]).norm(
            "\"ClusterID\" : <CLUSTER>\n\"MemberID\" : <MEMBER>\n\"Revision\" : 0\n\"RaftTerm\" : <TERM>\n\
             \"ID\" : <MEMBER>\n\"Name\" : \"default\"\n\"PeerURL\" : \"http://<PEER>\"\n\
             \"ClientURL\" : \"http://<EP>\"\n\"IsLearner\" : false\n\n",
        ),
        // Health.
        // etcdctl 3.4 prints the simple health report on stderr.
        run(&["endpoint", "health"])
            .out("")
            .norm_stderr("<EP> is healthy: successfully committed proposal: took = <TOOK>\n"),
        run(&["endpoint", "health", "-w", "json"])
            .norm("[{\"endpoint\":\"<EP>\",\"health\":true,\"took\":\"<TOOK>\"}]\n")
            .check(|ctx, o| {
                let j = json(o)?;
                same("endpoint", j.idx(0).get("endpoint").str(), Some(ctx.endpoint.as_str()))?;
                same("health", j.idx(0).get("health").bool(), Some(true))?;
                same("error", j.idx(0).get("error").is_null(), true)
            }),
        run(&["endpoint", "health", "-w", "table"]).norm(
            "+\n| ENDPOINT | HEALTH | TOOK | ERROR |\n+\n| <EP> | true | <TOOK> |  |\n+\n",
        ),
        run(&["endpoint", "health", "--cluster"])
            .out("")
            .norm_stderr("http://<EP> is healthy: successfully committed proposal: took = <TOOK>\n"),
        // Health checks are reads: the revision is unchanged.
        run(&["get", "e/a", "-w", "json"]).check(|ctx, o| header(ctx, &json(o)?, 4)),
    ];
    check_against_reference(&steps);
}
