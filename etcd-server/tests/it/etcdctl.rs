//! etcdctl 3.4.23 (API v3) against our `etcd-server`: each test runs one command script against
//! our server and, side by side, against the reference etcd 3.4.23. Every step has explicit
//! expectations (checked on both servers, so they are known to hold for real etcd), and the
//! normalized transcripts of the two servers must be identical.
//!
//! Normalization replaces what legitimately differs between two fresh single-member clusters:
//! member and cluster IDs, client and peer ports, DB size, raft term, the version string, timings,
//! and the absolute raft index (reported as an offset from the first raft index a script sees, so
//! the number of raft entries each command adds is still compared).

use std::fmt::{self, Debug, Write as _};

use crate::harness::{Kind, Proc, etcdctl, etcdctl_run, reference_etcd, require};

// ---------------------------------------------------------------------------------------------
// Script steps
// ---------------------------------------------------------------------------------------------

/// The outcome of one etcdctl run.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// An explicit check written as a function of the server's identity and raw output.
type CheckFn = fn(&Ctx, &Out) -> Result<(), String>;

/// One expectation about a step's outcome.
enum Want {
    /// Succeeds and prints exactly this.
    Stdout(String),
    /// Succeeds and prints exactly this after normalization (placeholders such as `<MEMBER>`).
    Norm(String),
    /// Succeeds and prints exactly this on stderr after normalization.
    NormStderr(String),
    /// Fails and the last stderr line is `Error: <this>`.
    Error(String),
    /// A hand-written check.
    Check(CheckFn),
}

/// One etcdctl invocation of a script.
struct Step {
    args: Vec<String>,
    stdin: Option<String>,
    wants: Vec<Want>,
}

/// `etcdctl ARGS...` (the endpoint is added by the runner).
fn run(args: &[&str]) -> Step {
    Step {
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        stdin: None,
        wants: vec![],
    }
}

impl Step {
    fn stdin(mut self, input: &str) -> Self {
        self.stdin = Some(input.to_owned());
        self
    }
    fn out(mut self, stdout: &str) -> Self {
        self.wants.push(Want::Stdout(stdout.to_owned()));
        self
    }
    fn norm(mut self, stdout: &str) -> Self {
        self.wants.push(Want::Norm(stdout.to_owned()));
        self
    }
    fn norm_stderr(mut self, stderr: &str) -> Self {
        self.wants.push(Want::NormStderr(stderr.to_owned()));
        self
    }
    fn err(mut self, msg: &str) -> Self {
        self.wants.push(Want::Error(msg.to_owned()));
        self
    }
    fn check(mut self, f: CheckFn) -> Self {
        self.wants.push(Want::Check(f));
        self
    }
    fn describe(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                if a.is_empty() || a.contains(' ') {
                    format!("{a:?}")
                } else {
                    a.clone()
                }
            })
            .collect();
        let mut s = format!("etcdctl {}", args.join(" "));
        if let Some(input) = &self.stdin {
            let _ = write!(s, " <<< {input:?}");
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Running a script on one server, and against the reference
// ---------------------------------------------------------------------------------------------

/// What a check may know about the server it runs against.
struct Ctx {
    kind: Kind,
    endpoint: String,
    member_id: u64,
    cluster_id: u64,
    /// (text, placeholder), longest text first.
    subs: Vec<(String, &'static str)>,
}

impl Ctx {
    fn new(p: &Proc) -> Self {
        let endpoint = p.endpoint();
        let (ok, out, err) = etcdctl_run(&endpoint, &["member", "list", "-w", "json"], None);
        assert!(
            ok,
            "{:?}: `etcdctl member list -w json` failed: {err}",
            p.kind
        );
        let j = J::parse(out.trim())
            .unwrap_or_else(|e| panic!("{:?}: member list JSON: {e}: {out}", p.kind));
        let member_id = j
            .get("header")
            .get("member_id")
            .u64()
            .expect("header.member_id");
        let cluster_id = j
            .get("header")
            .get("cluster_id")
            .u64()
            .expect("header.cluster_id");
        let peer = p.peer_url.trim_start_matches("http://").to_owned();
        let mut subs = vec![
            (member_id.to_string(), "<MEMBER>"),
            (cluster_id.to_string(), "<CLUSTER>"),
            (format!("{member_id:x}"), "<MEMBER>"),
            (format!("{cluster_id:x}"), "<CLUSTER>"),
            (endpoint.clone(), "<EP>"),
            (peer, "<PEER>"),
        ];
        subs.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Self {
            kind: p.kind,
            endpoint,
            member_id,
            cluster_id,
            subs,
        }
    }

    fn subst(&self, s: &str) -> String {
        let mut s = s.to_owned();
        for (from, to) in &self.subs {
            s = s.replace(from, to);
        }
        s
    }
}

/// The result of a script on one server.
struct Transcript {
    /// Normalized, one entry per step.
    entries: Vec<String>,
    /// Explicit expectations that did not hold.
    failures: Vec<String>,
}

fn run_script(kind: Kind, steps: &[Step]) -> Transcript {
    let proc = Proc::start(kind, &[]);
    let ctx = Ctx::new(&proc);
    let mut norm = Normalizer {
        ctx: &ctx,
        raft_base: None,
    };
    let mut t = Transcript {
        entries: vec![],
        failures: vec![],
    };
    for (i, step) in steps.iter().enumerate() {
        assert!(
            !step.wants.is_empty(),
            "step {i} `{}` has no explicit expectation",
            step.describe()
        );
        let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
        let (ok, stdout, stderr) = etcdctl_run(&ctx.endpoint, &args, step.stdin.as_deref());
        let out = Out { ok, stdout, stderr };
        let n_out = norm.stdout(&step.args, &out.stdout);
        let n_err = norm.stderr(&out.stderr);
        for want in &step.wants {
            let res = match want {
                Want::Stdout(s) => {
                    expect_ok(&out).and_then(|()| same("stdout", out.stdout.as_str(), s.as_str()))
                }
                Want::Norm(s) => expect_ok(&out)
                    .and_then(|()| same("normalized stdout", n_out.as_str(), s.as_str())),
                Want::NormStderr(s) => expect_ok(&out)
                    .and_then(|()| same("normalized stderr", n_err.as_str(), s.as_str())),
                Want::Error(msg) => {
                    let last = out
                        .stderr
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("");
                    if out.ok {
                        Err("succeeded, but should have failed".to_owned())
                    } else {
                        same("last stderr line", last, format!("Error: {msg}").as_str())
                    }
                }
                Want::Check(f) => f(&ctx, &out),
            };
            if let Err(e) = res {
                t.failures.push(format!(
                    "[{kind:?}] step {i} `{}`: {e}\n    stdout: {:?}\n    stderr: {:?}",
                    step.describe(),
                    out.stdout,
                    out.stderr
                ));
            }
        }
        t.entries.push(format!(
            "$ {}\nsuccess: {}\n{}\n[stderr]\n{}",
            step.describe(),
            out.ok,
            n_out,
            n_err
        ));
    }
    t
}

/// Joins a script thread, re-raising its panic.
fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Runs `steps` on our server and on the reference etcd, checks every expectation on both, and
/// asserts that the normalized transcripts are identical. Panics with every problem found.
fn check_against_reference(steps: &[Step]) {
    if require(etcdctl(), "etcdctl").is_none() {
        return;
    }
    let with_reference = require(reference_etcd(), "reference etcd").is_some();
    let (ours, theirs) = std::thread::scope(|s| {
        let ours = s.spawn(|| run_script(Kind::Ours, steps));
        let theirs = with_reference.then(|| s.spawn(|| run_script(Kind::Reference, steps)));
        (join(ours), theirs.map(join))
    });
    let mut problems = ours.failures.clone();
    if let Some(theirs) = &theirs {
        problems.extend(theirs.failures.iter().cloned());
        for (i, (o, r)) in ours.entries.iter().zip(&theirs.entries).enumerate() {
            if o != r {
                problems.push(format!(
                    "step {i} differs from the reference etcd:\n--- ours\n{o}\n--- reference\n{r}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n\n{}\n",
        problems.len(),
        problems.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Normalization
// ---------------------------------------------------------------------------------------------

struct Normalizer<'a> {
    ctx: &'a Ctx,
    /// The first raft index seen; later ones are shown relative to it.
    raft_base: Option<i64>,
}

/// The value of `-w`/`--write-out`, or "simple".
fn write_format(args: &[String]) -> &str {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-w" || a == "--write-out" {
            return it.next().map_or("simple", String::as_str);
        }
        if let Some(f) = a
            .strip_prefix("--write-out=")
            .or_else(|| a.strip_prefix("-w="))
        {
            return f;
        }
    }
    "simple"
}

impl Normalizer<'_> {
    fn raft_index(&mut self, v: &str) -> String {
        let Ok(v) = v.trim().parse::<i64>() else {
            return format!("<BAD RAFT INDEX {v:?}>");
        };
        let base = *self.raft_base.get_or_insert(v);
        format!("<IDX0+{}>", v - base)
    }

    fn stdout(&mut self, args: &[String], text: &str) -> String {
        let cmd: Vec<&str> = args.iter().map(String::as_str).take(2).collect();
        let mut lines = vec![];
        match write_format(args) {
            "json" => {
                for l in text.split('\n') {
                    lines.push(match J::parse(l) {
                        Ok(j) => self.json(j).to_string(),
                        Err(_) => l.to_owned(),
                    });
                }
            }
            "table" => {
                let mut header: Vec<String> = vec![];
                for l in text.split('\n') {
                    if l.starts_with('+') {
                        lines.push("+".to_owned());
                        continue;
                    }
                    if !l.starts_with('|') {
                        lines.push(l.to_owned());
                        continue;
                    }
                    let cells: Vec<String> = l
                        .trim_matches('|')
                        .split('|')
                        .map(|c| c.trim().to_owned())
                        .collect();
                    if header.is_empty() {
                        header = cells.clone();
                        lines.push(format!("| {} |", cells.join(" | ")));
                        continue;
                    }
                    let mut out = vec![];
                    for (c, h) in cells.into_iter().zip(&header) {
                        out.push(match h.as_str() {
                            "DB SIZE" => "<DBSIZE>".to_owned(),
                            "RAFT TERM" => "<TERM>".to_owned(),
                            "VERSION" => "<VERSION>".to_owned(),
                            "TOOK" => "<TOOK>".to_owned(),
                            "RAFT INDEX" | "RAFT APPLIED INDEX" => self.raft_index(&c),
                            _ => c,
                        });
                    }
                    lines.push(format!("| {} |", out.join(" | ")));
                }
            }
            "fields" => {
                for l in text.split('\n') {
                    let Some((name, val)) = l.split_once(" : ") else {
                        lines.push(l.to_owned());
                        continue;
                    };
                    let val = match name.trim_matches('"') {
                        "RaftTerm" => "<TERM>".to_owned(),
                        "DBSize" | "DBSizeInUse" => "<DBSIZE>".to_owned(),
                        "Version" if val.starts_with('"') => "\"<VERSION>\"".to_owned(),
                        "RaftIndex" | "RaftAppliedIndex" => self.raft_index(val),
                        _ => val.to_owned(),
                    };
                    lines.push(format!("{name} : {val}"));
                }
            }
            _ if cmd == ["endpoint", "status"] => {
                // ENDPOINT, ID, VERSION, DB SIZE, IS LEADER, IS LEARNER, RAFT TERM, RAFT INDEX,
                // RAFT APPLIED INDEX, ERRORS
                for l in text.split('\n') {
                    let mut f: Vec<String> = l.split(", ").map(str::to_owned).collect();
                    if f.len() >= 10 {
                        f[2] = "<VERSION>".into();
                        f[3] = "<DBSIZE>".into();
                        f[6] = "<TERM>".into();
                        f[7] = self.raft_index(&f[7]);
                        f[8] = self.raft_index(&f[8]);
                    }
                    lines.push(f.join(", "));
                }
            }
            _ => {
                for l in text.split('\n') {
                    lines.push(match l.find("took = ") {
                        Some(i) => format!("{}<TOOK>", &l[..i + "took = ".len()]),
                        None => l.to_owned(),
                    });
                }
            }
        }
        self.ctx.subst(&lines.join("\n"))
    }

    fn json(&mut self, j: J) -> J {
        match j {
            J::Obj(m) => {
                let mut out = Vec::with_capacity(m.len());
                for (k, v) in m {
                    let v = match (k.as_str(), v) {
                        ("raft_term" | "raftTerm", _) => J::Str("<TERM>".into()),
                        ("dbSize" | "dbSizeInUse", _) => J::Str("<DBSIZE>".into()),
                        ("version", J::Str(_)) => J::Str("<VERSION>".into()),
                        ("took", _) => J::Str("<TOOK>".into()),
                        ("raftIndex" | "raftAppliedIndex", J::Num(n)) => {
                            J::Str(self.raft_index(&n))
                        }
                        (_, v) => self.json(v),
                    };
                    out.push((k, v));
                }
                J::Obj(out)
            }
            J::Arr(a) => J::Arr(a.into_iter().map(|v| self.json(v)).collect()),
            other => other,
        }
    }

    /// Keeps what the client said, dropping timestamps and client UUIDs of zap warnings.
    fn stderr(&self, text: &str) -> String {
        let lines: Vec<String> = text
            .split('\n')
            .map(|l| match J::parse(l) {
                Ok(j) if j.get("level").str().is_some() => format!(
                    "[{}] {}",
                    j.get("level").str().unwrap_or(""),
                    j.get("error")
                        .str()
                        .or_else(|| j.get("msg").str())
                        .unwrap_or("")
                ),
                _ => match l.find("took = ") {
                    Some(i) => format!("{}<TOOK>", &l[..i + "took = ".len()]),
                    None => l.to_owned(),
                },
            })
            .collect();
        self.ctx.subst(&lines.join("\n"))
    }
}

// ---------------------------------------------------------------------------------------------
// Check helpers
// ---------------------------------------------------------------------------------------------

fn expect_ok(o: &Out) -> Result<(), String> {
    if o.ok {
        Ok(())
    } else {
        Err("failed, but should have succeeded".to_owned())
    }
}

fn same<T: PartialEq + Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// The single JSON document a successful `-w json` command printed.
fn json(o: &Out) -> Result<J, String> {
    expect_ok(o)?;
    J::parse(o.stdout.trim()).map_err(|e| format!("stdout is not JSON: {e}"))
}

/// Standard base64, as etcdctl's JSON prints bytes.
fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for ch in s.as_bytes().chunks(3) {
        let n = (u32::from(ch[0]) << 16)
            | (u32::from(*ch.get(1).unwrap_or(&0)) << 8)
            | u32::from(*ch.get(2).unwrap_or(&0));
        for k in 0..4 {
            out.push(if k <= ch.len() {
                char::from(T[((n >> (18 - 6 * k)) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

/// Checks one JSON kv: key, value (None: no value field), create/mod revision and version.
fn kv(
    j: &J,
    key: &str,
    value: Option<&str>,
    create: u64,
    modr: u64,
    version: u64,
) -> Result<(), String> {
    same("key", j.get("key").str(), Some(b64(key).as_str()))?;
    same(
        &format!("{key} value"),
        j.get("value").str(),
        value.map(b64).as_deref(),
    )?;
    same(
        &format!("{key} create_revision"),
        j.get("create_revision").u64(),
        Some(create),
    )?;
    same(
        &format!("{key} mod_revision"),
        j.get("mod_revision").u64(),
        Some(modr),
    )?;
    same(
        &format!("{key} version"),
        j.get("version").u64(),
        Some(version),
    )?;
    same(&format!("{key} lease"), j.get("lease").u64(), None)
}

/// Checks the header of a KV response: this server's IDs and the current revision.
fn header(ctx: &Ctx, j: &J, revision: u64) -> Result<(), String> {
    let h = j.get("header");
    same(
        "header.cluster_id",
        h.get("cluster_id").u64(),
        Some(ctx.cluster_id),
    )?;
    same(
        "header.member_id",
        h.get("member_id").u64(),
        Some(ctx.member_id),
    )?;
    same("header.revision", h.get("revision").u64(), Some(revision))?;
    match h.get("raft_term").u64() {
        Some(t) if t >= 1 => Ok(()),
        t => Err(format!("header.raft_term: got {t:?}, want >= 1")),
    }
}

/// Checks `endpoint status -w json` at `revision`: one entry, this member is the leader, raft
/// index == applied index, terms agree, the DB size is sane and the version etcd-compatible.
fn status_json(ctx: &Ctx, o: &Out, endpoint: &str, revision: u64) -> Result<(), String> {
    let j = json(o)?;
    same("number of endpoints", j.arr().len(), 1)?;
    let e = j.idx(0);
    same("Endpoint", e.get("Endpoint").str(), Some(endpoint))?;
    let s = e.get("Status");
    header(ctx, s, revision)?;
    same(
        "leader (IS LEADER)",
        s.get("leader").u64(),
        Some(ctx.member_id),
    )?;
    same(
        "raftTerm",
        s.get("raftTerm").u64(),
        s.get("header").get("raft_term").u64(),
    )?;
    let idx = s.get("raftIndex").u64().ok_or("no raftIndex")?;
    same(
        "raftAppliedIndex",
        s.get("raftAppliedIndex").u64(),
        Some(idx),
    )?;
    if idx < revision {
        return Err(format!(
            "raftIndex {idx} < revision {revision}: every write is a raft entry"
        ));
    }
    let db = s.get("dbSize").u64().ok_or("no dbSize")?;
    let in_use = s.get("dbSizeInUse").u64().ok_or("no dbSizeInUse")?;
    if db == 0 || in_use == 0 || in_use > db {
        return Err(format!("dbSize {db}, dbSizeInUse {in_use}"));
    }
    same("isLearner", s.get("isLearner").bool(), None)?;
    same("errors", s.get("errors").is_null(), true)?;
    version_ok(ctx, s.get("version").str().unwrap_or(""))
}

/// Ours must report an etcd 3.5 version; the reference is 3.4.23.
fn version_ok(ctx: &Ctx, v: &str) -> Result<(), String> {
    match ctx.kind {
        Kind::Ours if v.starts_with("3.5.") => Ok(()),
        Kind::Reference if v == "3.4.23" => Ok(()),
        _ => Err(format!(
            "version {v:?}: want 3.5.x from ours, 3.4.23 from the reference"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";
const NO_KEY: &str = "etcdserver: key is not provided";

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
const PROMPTS: &str =
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

// ---------------------------------------------------------------------------------------------
// A minimal JSON reader (etcdctl's `-w json` output), keeping numbers as text so that 64-bit IDs
// survive.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

static NULL: J = J::Null;

impl J {
    fn parse(s: &str) -> Result<J, String> {
        let mut p = JParser {
            b: s.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.b.len() {
            return Err(format!("trailing data at byte {}", p.i));
        }
        Ok(v)
    }
    /// Field `k` of an object; `Null` when absent (as Go's `omitempty` drops zero values).
    fn get(&self, k: &str) -> &J {
        match self {
            J::Obj(m) => m.iter().find(|(n, _)| n == k).map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }
    fn idx(&self, i: usize) -> &J {
        self.arr().get(i).unwrap_or(&NULL)
    }
    fn arr(&self) -> &[J] {
        match self {
            J::Arr(a) => a,
            _ => &[],
        }
    }
    fn u64(&self) -> Option<u64> {
        match self {
            J::Num(n) => n.parse().ok(),
            _ => None,
        }
    }
    fn str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            _ => None,
        }
    }
    fn bool(&self) -> Option<bool> {
        match self {
            J::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        *self == J::Null
    }
}

impl fmt::Display for J {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
            f.write_char('"')?;
            for c in s.chars() {
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
                    c => f.write_char(c)?,
                }
            }
            f.write_char('"')
        }
        match self {
            J::Null => f.write_str("null"),
            J::Bool(b) => write!(f, "{b}"),
            J::Num(n) => f.write_str(n),
            J::Str(s) => string(f, s),
            J::Arr(a) => {
                f.write_char('[')?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_char(']')
            }
            J::Obj(m) => {
                f.write_char('{')?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    string(f, k)?;
                    write!(f, ":{v}")?;
                }
                f.write_char('}')
            }
        }
    }
}

struct JParser<'a> {
    b: &'a [u8],
    i: usize,
}

impl JParser<'_> {
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", char::from(c), self.i))
        }
    }
    fn literal(&mut self, word: &str, v: J) -> Result<J, String> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(format!("bad literal at byte {}", self.i))
        }
    }
    fn value(&mut self) -> Result<J, String> {
        self.ws();
        match self.b.get(self.i).copied() {
            Some(b'{') => {
                self.i += 1;
                let mut m = vec![];
                if self.eat(b'}') {
                    return Ok(J::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.expect(b':')?;
                    m.push((k, self.value()?));
                    if !self.eat(b',') {
                        self.expect(b'}')?;
                        return Ok(J::Obj(m));
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut a = vec![];
                if self.eat(b']') {
                    return Ok(J::Arr(a));
                }
                loop {
                    a.push(self.value()?);
                    if !self.eat(b',') {
                        self.expect(b']')?;
                        return Ok(J::Arr(a));
                    }
                }
            }
            Some(b'"') => Ok(J::Str(self.string()?)),
            Some(b't') => self.literal("true", J::Bool(true)),
            Some(b'f') => self.literal("false", J::Bool(false)),
            Some(b'n') => self.literal("null", J::Null),
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    self.i += 1;
                }
                Ok(J::Num(
                    String::from_utf8_lossy(&self.b[start..self.i]).into_owned(),
                ))
            }
            _ => Err(format!("unexpected input at byte {}", self.i)),
        }
    }
    fn hex4(&mut self) -> Result<u32, String> {
        let h = self.b.get(self.i..self.i + 4).ok_or("short \\u escape")?;
        self.i += 4;
        u32::from_str_radix(&String::from_utf8_lossy(h), 16).map_err(|e| e.to_string())
    }
    fn string(&mut self) -> Result<String, String> {
        if self.b.get(self.i) != Some(&b'"') {
            return Err(format!("expected a string at byte {}", self.i));
        }
        self.i += 1;
        let mut out: Vec<u8> = vec![];
        loop {
            let c = *self.b.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.b.get(self.i).ok_or("unterminated escape")?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp)
                                && self.b[self.i..].starts_with(b"\\u")
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                cp = 0x10000
                                    + ((cp - 0xD800) << 10)
                                    + (lo.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            char::from_u32(cp).unwrap_or('\u{fffd}')
                        }
                        _ => return Err(format!("bad escape at byte {}", self.i)),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c => out.push(c),
            }
        }
    }
}

/// `endpoint status --cluster` dials each member's client URL with its scheme, and etcdctl
/// 3.4 then sends `:authority: http://127.0.0.1:PORT`, which Go's gRPC server accepts (the
/// server's `authority` adapter makes ours accept it too).
#[test]
fn endpoint_status_cluster_matches_reference() {
    check_against_reference(&[
        run(&["put", "e/a", "1"]).out("OK\n"),
        run(&["endpoint", "status", "-w", "json"]).check(|ctx, o| status_json(ctx, o, &ctx.endpoint, 2)),
        // --cluster takes the endpoints from the member list: "http://127.0.0.1:PORT".
        run(&["endpoint", "status", "--cluster", "-w", "json"])
            .check(|ctx, o| status_json(ctx, o, &format!("http://{}", ctx.endpoint), 2)),
        run(&["endpoint", "status", "--cluster"])
            .norm("http://<EP>, <MEMBER>, <VERSION>, <DBSIZE>, true, false, <TERM>, <IDX0+0>, <IDX0+0>, \n"),
    ]);
}

#[test]
fn json_reader_and_base64_work() {
    let j =
        J::parse(r#"{"a":[1,{"b":"x\"\u00e9\n"}],"id":18446744073709551615,"t":true,"n":null}"#)
            .unwrap();
    assert_eq!(j.get("a").idx(0).u64(), Some(1));
    assert_eq!(j.get("a").idx(1).get("b").str(), Some("x\"é\n"));
    assert_eq!(j.get("id").u64(), Some(u64::MAX));
    assert_eq!(j.get("t").bool(), Some(true));
    assert!(j.get("n").is_null() && j.get("missing").is_null());
    assert_eq!(J::parse(&j.to_string()).unwrap(), j);
    assert!(J::parse("{\"a\":1,}").is_err());
    assert_eq!(
        [b64("foo"), b64("k/a"), b64("v1"), b64("bar2")],
        ["Zm9v", "ay9h", "djE=", "YmFyMg=="]
    );
}
