//! Operations tooling against our `etcd-server`, side by side with the reference etcd 3.4.23:
//! etcdctl `watch`, `lease`, `lock`, `elect`, `endpoint`, `alarm`, `defrag` and `snapshot save`;
//! the backend quota and its NOSPACE alarm; snapshot save → status → offline restore round trips;
//! and the plain HTTP endpoints (`/health`, `/version`, `/livez`, `/readyz`, `/metrics`).
//!
//! A side-by-side test runs one script against each server (in parallel threads), checks explicit
//! expectations on both (so they are known to hold for real etcd), and requires the normalized
//! transcripts to be identical. Normalization hides what legitimately differs between two fresh
//! clusters: lease, member and cluster IDs (numbered in order of appearance), ports, scratch paths,
//! DB sizes, hashes, raft term and index, the version string and timings.

use std::fmt::Debug;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, Compare, CompareOp,
    GetOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp,
};
use sha2::{Digest as _, Sha256};

use crate::harness::{Kind, Proc, etcdctl, etcdctl_run, reference_etcd, require};

const NOSPACE: &str = "etcdserver: mvcc: database space exceeded";
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Polls `f` every 25 ms until it holds or `timeout` passes; returns whether it held.
fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every number that follows `"key":` in `json`, in order (`"revision":` does not match
/// `"create_revision":`).
fn json_nums(json: &str, key: &str) -> Vec<i128> {
    let pat = format!("\"{key}\":");
    let mut out = Vec::new();
    let mut rest = json;
    while let Some(i) = rest.find(&pat) {
        rest = &rest[i + pat.len()..];
        let num: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        if let Ok(n) = num.parse() {
            out.push(n);
        }
    }
    out
}

fn json_num(json: &str, key: &str) -> Option<i128> {
    json_nums(json, key).first().copied()
}

/// The strings of the array that follows `"key":[`, sorted.
fn json_str_array(json: &str, key: &str) -> Option<Vec<String>> {
    let pat = format!("\"{key}\":[");
    let i = json.find(&pat)?;
    let rest = &json[i + pat.len()..];
    let body = &rest[..rest.find(']')?];
    let mut v: Vec<String> = body
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    v.sort();
    Some(v)
}

/// `Code: message` of a gRPC error from etcd-client.
fn grpc(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => format!("not a gRPC status: {other}"),
    }
}

fn outcome<T>(r: &Result<T, etcd_client::Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => grpc(e),
    }
}

/// Whether the last 32 bytes of a snapshot are the SHA-256 of the rest (etcd's format).
fn has_sha256_trailer(data: &[u8]) -> bool {
    data.len() > 32
        && Sha256::digest(&data[..data.len() - 32]).as_slice() == &data[data.len() - 32..]
}

/// A plain HTTP/1.1 GET; returns (status, lower-cased headers, body).
pub(crate) fn http_get(base_url: &str, path: &str) -> (u16, String, String) {
    let addr = base_url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read GET {base_url}{path}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = head.to_ascii_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, headers, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Runs our binary's offline tools (`etcd-server snapshot ...`); returns (success, stdout, stderr).
fn our_tool(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_etcd-server"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run etcd-server");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether etcdctl is installed (fails the test unless `ALLOW_MISSING_REFERENCE=1`).
fn have_etcdctl() -> bool {
    require(etcdctl(), "etcdctl 3.4").is_some()
}

// ---------------------------------------------------------------------------------------------
// Background etcdctl processes
// ---------------------------------------------------------------------------------------------

/// An etcdctl process running in the background (watch, lock, elect), with stdout and stderr in
/// files so they can be read while it runs. Killed when dropped.
struct Bg {
    child: Child,
    dir: tempfile::TempDir,
    status: Option<ExitStatus>,
}

impl Bg {
    fn etcdctl(endpoint: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::fs::File::create(dir.path().join("stdout")).expect("stdout file");
        let err = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let child = Command::new(etcdctl().expect("etcdctl installed"))
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn etcdctl");
        Self {
            child,
            dir,
            status: None,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.status = Some(s);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// SIGINT: etcdctl unlocks / resigns and closes its session before exiting.
    fn interrupt(&self) {
        signal(self.child.id(), "INT");
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if still running.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || !self.running());
        self.status
    }

    /// Waits until stdout satisfies `f`; returns whether it did.
    fn wait_stdout(&self, timeout: Duration, f: impl Fn(&str) -> bool) -> bool {
        wait_until(timeout, || f(&self.stdout()))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        if let Ok(s) = self.child.wait() {
            self.status.get_or_insert(s);
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Scripts run side by side
// ---------------------------------------------------------------------------------------------

/// One etcdctl run.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Out {
    /// The last `Error: ...` line of stderr, or "".
    fn error(&self) -> String {
        self.stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("Error:"))
            .unwrap_or("")
            .to_owned()
    }
}

/// A script's view of one server: runs etcdctl, records a normalized transcript, and collects
/// failed expectations (instead of panicking at the first one).
struct Script<'a> {
    p: &'a Proc,
    ep: String,
    dir: tempfile::TempDir,
    ids: Vec<u64>,
    subst: Vec<(String, String)>,
    transcript: Vec<String>,
    failures: Vec<String>,
}

impl<'a> Script<'a> {
    fn new(p: &'a Proc) -> Self {
        Self {
            p,
            ep: p.endpoint(),
            dir: tempfile::tempdir().expect("tempdir"),
            ids: Vec::new(),
            subst: Vec::new(),
            transcript: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn ours(&self) -> bool {
        self.p.kind == Kind::Ours
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn fail(&mut self, msg: impl Into<String>) {
        self.failures.push(msg.into());
    }

    fn expect(&mut self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            let m = msg();
            self.fail(m);
        }
    }

    fn eq<T: PartialEq + Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.fail(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    fn note(&mut self, line: impl Into<String>) {
        self.transcript.push(line.into());
    }

    fn bg(&self, args: &[&str]) -> Bg {
        Bg::etcdctl(&self.ep, args)
    }

    /// A lease / member / cluster ID seen in output: the same ID always gets the same number.
    fn id_label(&mut self, v: u64) -> String {
        let i = self.ids.iter().position(|x| *x == v).unwrap_or_else(|| {
            self.ids.push(v);
            self.ids.len() - 1
        });
        format!("<ID{}>", i + 1)
    }

    /// Replaces hex tokens of 12..=16 digits (lease IDs as `%016x` or `%x`, member IDs).
    fn norm_hex(&mut self, text: &str) -> String {
        let mut out = String::new();
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut String, this: &mut Self| {
            if (12..=16).contains(&word.len())
                && word
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
                && let Ok(v) = u64::from_str_radix(word, 16)
            {
                out.push_str(&this.id_label(v));
                word.clear();
                return;
            }
            out.push_str(word);
            word.clear();
        };
        for c in text.chars() {
            if c.is_ascii_alphanumeric() {
                word.push(c);
            } else {
                flush(&mut word, &mut out, self);
                out.push(c);
            }
        }
        flush(&mut word, &mut out, self);
        out
    }

    fn norm_line(&self, line: &str) -> String {
        let mut line = line.to_owned();
        if let Some(i) = line.find("took = ") {
            line.truncate(i + "took = ".len());
            line.push_str("<T>");
        }
        if let (Some(i), Some(j)) = (
            line.find("remaining("),
            line.find("s), attached").or_else(|| line.rfind("s)")),
        ) && i < j
        {
            line.replace_range(i + "remaining(".len()..j, "<R>");
        }
        if let Some(i) = line.find("attached keys([")
            && let Some(j) = line[i..].find("])")
        {
            let start = i + "attached keys([".len();
            let mut keys: Vec<&str> = line[start..i + j].split(' ').collect();
            keys.sort_unstable();
            let sorted = keys.join(" ");
            line.replace_range(start..i + j, &sorted);
        }
        let fields: Vec<&str> = line.split(", ").collect();
        if fields.first() == Some(&"<EP>") {
            if fields.len() == 2 && fields[1].chars().all(|c| c.is_ascii_digit()) {
                return "<EP>, <HASH>".into();
            }
            if fields.len() == 10 {
                // endpoint status: EP, ID, VERSION, DB SIZE, IS LEADER, IS LEARNER, TERM, INDEX,
                // APPLIED INDEX, ERRORS
                let same = if fields[7] == fields[8] {
                    "<INDEX>, <INDEX>"
                } else {
                    "<INDEX>, <OTHER INDEX>"
                };
                return format!(
                    "<EP>, {}, <VERSION>, <SIZE>, {}, {}, <TERM>, {same}, {}",
                    fields[1], fields[4], fields[5], fields[9]
                );
            }
        }
        line
    }

    fn norm(&mut self, text: &str) -> String {
        let mut t = text
            .replace(&self.dir.path().display().to_string(), "<DIR>")
            .replace(&self.ep, "<EP>");
        for (from, to) in &self.subst {
            t = t.replace(from.as_str(), to);
        }
        let t: String = t
            .split_inclusive('\n')
            .map(|l| {
                let (body, nl) = l.strip_suffix('\n').map_or((l, ""), |b| (b, "\n"));
                format!("{}{nl}", self.norm_line(body))
            })
            .collect();
        self.norm_hex(&t)
    }

    /// Runs etcdctl without recording anything.
    fn run_quiet(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let (ok, stdout, stderr) = etcdctl_run(&self.ep, args, stdin);
        Out { ok, stdout, stderr }
    }

    fn record(&mut self, args: &[&str], stdin: Option<&str>, o: &Out, with_stdout: bool) {
        let cmd = self.norm(&args.join(" "));
        let input = stdin.map(|s| format!(" <<< {s:?}")).unwrap_or_default();
        let stdout = if with_stdout {
            self.norm(&o.stdout)
        } else {
            "(stdout checked explicitly)\n".into()
        };
        let err = self.norm(&o.error());
        self.note(format!(
            "$ etcdctl {cmd}{input}\n-> {}\n{stdout}{err}",
            if o.ok { "ok" } else { "FAILED" }
        ));
    }

    /// Runs etcdctl and records the normalized command, outcome, stdout and error line.
    fn ctl(&mut self, args: &[&str]) -> Out {
        self.ctl_in(args, None)
    }

    fn ctl_in(&mut self, args: &[&str], stdin: Option<&str>) -> Out {
        let o = self.run_quiet(args, stdin);
        self.record(args, stdin, &o, true);
        o
    }

    /// Like `ctl`, for output that is checked explicitly (JSON): records only the outcome.
    fn ctl_json(&mut self, args: &[&str]) -> Out {
        let o = self.run_quiet(args, None);
        self.record(args, None, &o, false);
        o
    }

    /// `ctl`, expecting success and exactly `want` on stdout.
    fn ctl_out(&mut self, args: &[&str], want: &str) -> Out {
        let o = self.ctl(args);
        let cmd = args.join(" ");
        self.expect(o.ok, || {
            format!("etcdctl {cmd} failed: {}", o.stderr.trim())
        });
        self.eq(&format!("etcdctl {cmd} stdout"), o.stdout.as_str(), want);
        o
    }

    /// `ctl`, expecting failure with exactly `Error: <msg>` as the last error line.
    fn ctl_err(&mut self, args: &[&str], msg: &str) -> Out {
        let o = self.ctl(args);
        let cmd = args.join(" ");
        self.expect(!o.ok, || {
            format!("etcdctl {cmd} should fail; stdout {:?}", o.stdout)
        });
        self.eq(
            &format!("etcdctl {cmd} error"),
            o.error(),
            format!("Error: {msg}"),
        );
        o
    }

    /// The current store revision (from a `get -w json` header), not recorded.
    fn revision(&mut self) -> i64 {
        let o = self.run_quiet(&["get", "ops-revision-probe", "-w", "json"], None);
        json_num(&o.stdout, "revision").map_or_else(
            || {
                self.fail(format!("no revision in {:?} / {:?}", o.stdout, o.stderr));
                0
            },
            |r| r as i64,
        )
    }
}

/// What one server's script produced.
struct Run {
    transcript: Vec<String>,
    failures: Vec<String>,
    log: String,
}

fn run_script(kind: Kind, extra: &[&str], script: fn(&mut Script)) -> Run {
    let p = Proc::start(kind, extra);
    let mut s = Script::new(&p);
    script(&mut s);
    let (transcript, failures) = (
        std::mem::take(&mut s.transcript),
        std::mem::take(&mut s.failures),
    );
    drop(s);
    Run {
        transcript,
        failures,
        log: tail(&p.log(), 30),
    }
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Runs `script` against our server and the reference etcd at the same time; fails with every
/// failed expectation and every transcript step that differs.
fn side_by_side(name: &str, extra: &[&str], script: fn(&mut Script)) {
    if !have_etcdctl() {
        return;
    }
    let with_reference = require(reference_etcd(), "reference etcd 3.4").is_some();
    let (ours, theirs) = std::thread::scope(|sc| {
        let a = sc.spawn(|| run_script(Kind::Ours, extra, script));
        let b = with_reference.then(|| sc.spawn(|| run_script(Kind::Reference, extra, script)));
        (a.join(), b.map(|b| b.join()))
    });
    let ours = ours.unwrap_or_else(|e| {
        panic!(
            "{name}: the script panicked on our server: {}",
            panic_text(&*e)
        )
    });
    let theirs = theirs.map(|r| {
        r.unwrap_or_else(|e| {
            panic!(
                "{name}: the script panicked on the reference: {}",
                panic_text(&*e)
            )
        })
    });
    let mut report = String::new();
    for f in &ours.failures {
        report.push_str(&format!("ours: {f}\n"));
    }
    if let Some(theirs) = &theirs {
        for f in &theirs.failures {
            report.push_str(&format!("REFERENCE (the expectation is wrong): {f}\n"));
        }
        let n = ours.transcript.len().max(theirs.transcript.len());
        for i in 0..n {
            let (a, b) = (ours.transcript.get(i), theirs.transcript.get(i));
            if a != b {
                report.push_str(&format!(
                    "--- step {i} differs\n[ours]\n{}\n[reference]\n{}\n",
                    a.map_or("(missing)", String::as_str),
                    b.map_or("(missing)", String::as_str)
                ));
            }
        }
    }
    assert!(
        report.is_empty(),
        "{name}:\n{report}\n--- our server's log (tail):\n{}",
        ours.log
    );
}

// ---------------------------------------------------------------------------------------------
// etcdctl watch
// ---------------------------------------------------------------------------------------------

/// Events of the ops in `watch_script`, as `watch w/ --prefix` prints them.
const WATCH_ALL: &str = "PUT\nw/a\n1\nPUT\nw/b\n2\nPUT\nw/a\n3\nPUT\nw/c\n4\nPUT\nw/d\n5\nDELETE\nw/a\n\n\
DELETE\nw/b\n\nDELETE\nw/c\n\nDELETE\nw/d\n\nPUT\nw/a\n6\n";
/// The same with `--prev-kv` (prev kv printed before the kv).
const WATCH_ALL_PREV: &str = "PUT\nw/a\n1\nPUT\nw/b\n2\nPUT\nw/a\n1\nw/a\n3\nPUT\nw/c\n4\nPUT\nw/d\n5\n\
DELETE\nw/a\n3\nw/a\n\nDELETE\nw/b\n2\nw/b\n\nDELETE\nw/c\n4\nw/c\n\nDELETE\nw/d\n5\nw/d\n\nPUT\nw/a\n6\n";
/// `watch w/a --prev-kv` from the first op.
const WATCH_A_PREV: &str = "PUT\nw/a\n1\nPUT\nw/a\n1\nw/a\n3\nDELETE\nw/a\n3\nw/a\n\nPUT\nw/a\n6\n";
/// `watch w/ --prefix` from the third op (the compaction revision).
const WATCH_FROM_3: &str = "PUT\nw/a\n3\nPUT\nw/c\n4\nPUT\nw/d\n5\nDELETE\nw/a\n\nDELETE\nw/b\n\nDELETE\nw/c\n\n\
DELETE\nw/d\n\nPUT\nw/a\n6\n";

/// The part of `out` after the last occurrence of `needle`.
fn after<'t>(out: &'t str, needle: &str) -> &'t str {
    out.rfind(needle).map_or("", |i| &out[i + needle.len()..])
}

/// Runs `watch ARGS` from a known revision until it printed as much as `want` (then a little
/// longer, to catch extra events), kills it, and checks and records its stdout.
fn watch_from(s: &mut Script, label: &str, args: &[&str], want: &str) {
    let w = s.bg(args);
    let complete = w.wait_stdout(Duration::from_secs(10), |o| o.len() >= want.len());
    std::thread::sleep(Duration::from_millis(300));
    let got = w.stdout();
    drop(w);
    s.expect(complete, || format!("{label}: incomplete output {got:?}"));
    s.eq(label, got.as_str(), want);
    s.note(format!("{label}:\n{got}"));
}

fn watch_script(s: &mut Script) {
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

// ---------------------------------------------------------------------------------------------
// etcdctl lease
// ---------------------------------------------------------------------------------------------

/// The hex ID of `lease <ID> granted with TTL(...)`.
fn granted_id(stdout: &str) -> Option<String> {
    let id = stdout.strip_prefix("lease ")?.split(' ').next()?;
    (id.len() == 16 && u64::from_str_radix(id, 16).is_ok()).then(|| id.to_owned())
}

fn remaining(stdout: &str) -> Option<i64> {
    let i = stdout.find("remaining(")?;
    let rest = &stdout[i + "remaining(".len()..];
    rest[..rest.find('s')?].parse().ok()
}

fn lease_script(s: &mut Script) {
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
fn lease_startup_probe(kind: Kind) -> Vec<String> {
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

// ---------------------------------------------------------------------------------------------
// etcdctl lock and elect
// ---------------------------------------------------------------------------------------------

/// How long a second contender must keep waiting while the first holds the lock / leadership.
const CONTENDED: Duration = Duration::from_millis(1500);

fn lock_script(s: &mut Script) {
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

fn elect_script(s: &mut Script) {
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

fn lock_and_elect_script(s: &mut Script) {
    lock_script(s);
    elect_script(s);
}

#[test]
fn etcdctl_lock_and_elect_match_reference() {
    side_by_side("etcdctl lock / elect", &[], lock_and_elect_script);
}

// ---------------------------------------------------------------------------------------------
// etcdctl endpoint, alarm, defrag, snapshot save
// ---------------------------------------------------------------------------------------------

fn hashkv_value(stdout: &str) -> Option<u32> {
    stdout.trim_end().rsplit(", ").next()?.parse().ok()
}

fn endpoint_script(s: &mut Script) {
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

// ---------------------------------------------------------------------------------------------
// Backend quota and the NOSPACE alarm
// ---------------------------------------------------------------------------------------------

const QUOTA: i64 = 3_000_000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn health(s: &Script) -> String {
    let (code, _, body) = http_get(&s.p.client_url, "/health");
    let healthy = if body.contains("\"health\":\"true\"") {
        "true"
    } else if body.contains("\"health\":\"false\"") {
        "false"
    } else {
        "?"
    };
    format!("{code} health={healthy}")
}

fn quota_script(s: &mut Script) {
    let rt = rt();
    let mut c = rt.block_on(s.p.client());
    let me = rt
        .block_on(c.status())
        .ok()
        .and_then(|st| st.header().map(|h| h.member_id()))
        .unwrap_or_default();
    s.subst.push((me.to_string(), "<MEMBER>".into()));
    let alarm_line = format!("memberID:{me} alarm:NOSPACE ");

    // Fill with distinct 100 KiB values until a write is refused.
    let val = vec![b'q'; 100 * 1024];
    let mut n = 0;
    let err = loop {
        n += 1;
        if n > 300 {
            return s.fail("300 puts of 100 KiB never exceeded a 3 MB quota");
        }
        if let Err(e) = rt.block_on(c.put(format!("fill/{n:04}"), val.clone(), None)) {
            break e;
        }
    };
    s.eq(
        "the put that exceeds the quota",
        grpc(&err),
        format!("ResourceExhausted: {NOSPACE}"),
    );
    s.note(format!("fill: first refused put: {}", grpc(&err)));

    let alarms = rt
        .block_on(c.alarm(AlarmAction::Get, AlarmType::None, None))
        .map(|a| {
            a.alarms()
                .iter()
                .map(|m| (m.member_id(), m.alarm()))
                .collect::<Vec<_>>()
        });
    s.eq(
        "alarm list (API)",
        alarms.as_ref().ok(),
        Some(&vec![(me, AlarmType::Nospace)]),
    );
    s.ctl_out(&["alarm", "list"], &format!("{alarm_line}\n"));
    let st = rt.block_on(c.status());
    s.eq(
        "status errors",
        st.as_ref().ok().map(|st| st.errors().to_vec()),
        Some(vec![alarm_line.clone()]),
    );
    s.ctl(&["endpoint", "status"]);
    s.ctl_err(&["put", "x", "y"], NOSPACE);
    s.ctl_err(
        &["lease", "grant", "10"],
        &format!("failed to grant lease ({NOSPACE})"),
    );

    // Reads and deletes still work; writes (Put, Txn with a Put, LeaseGrant) do not.
    let got = rt.block_on(c.get("fill/0001", None));
    s.eq(
        "get while NOSPACE",
        got.as_ref()
            .ok()
            .map(|r| r.kvs().first().map(|kv| kv.value().len())),
        Some(Some(100 * 1024)),
    );
    let count = rt.block_on(c.get(
        "fill/",
        Some(GetOptions::new().with_prefix().with_count_only()),
    ));
    // Every accepted put is stored. etcd 3.4 sometimes also stores the put it refused (its quota
    // check races with the backend's periodic commit), so allow that one extra key.
    let stored = count.as_ref().ok().map(|r| r.count()).unwrap_or(-1);
    if stored != n - 1 && stored != n {
        s.eq("count while NOSPACE", Some(stored), Some(n - 1));
    }
    s.ctl_out(&["get", "fill/0002", "--keys-only"], "fill/0002\n\n");
    let del = rt.block_on(c.delete("fill/0001", None));
    s.eq(
        "delete while NOSPACE",
        del.as_ref().ok().map(|r| r.deleted()),
        Some(1),
    );
    s.ctl_out(&["del", "fill/0002"], "1\n");
    let txn_del = rt.block_on(c.txn(Txn::new().and_then([TxnOp::delete("fill/0003", None)])));
    s.eq(
        "delete-only txn while NOSPACE",
        outcome(&txn_del),
        "ok".into(),
    );
    let results = [
        ("put", outcome(&rt.block_on(c.put("x", "y", None)))),
        (
            "txn with a put",
            outcome(
                &rt.block_on(
                    c.txn(
                        Txn::new()
                            .when([Compare::version("x", CompareOp::Equal, 0)])
                            .and_then([TxnOp::put("x", "y", None)]),
                    ),
                ),
            ),
        ),
        (
            "lease grant",
            outcome(&rt.block_on(c.lease_grant(60, None))),
        ),
    ];
    for (what, got) in results {
        s.eq(
            &format!("{what} while NOSPACE"),
            got.clone(),
            format!("ResourceExhausted: {NOSPACE}"),
        );
        s.note(format!("{what} while NOSPACE: {got}"));
    }
    let read_txn = rt.block_on(c.txn(Txn::new().and_then([TxnOp::get("fill/0004", None)])));
    s.eq(
        "read-only txn while NOSPACE",
        outcome(&read_txn),
        "ok".into(),
    );
    let h = health(s);
    s.eq("/health while NOSPACE", h.as_str(), "503 health=false");
    s.note(format!("/health while NOSPACE: {h}"));

    // Deleting the data, compacting and defragmenting frees space, but the alarm stays until
    // disarmed.
    let del = rt.block_on(c.delete(
        "fill/",
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    ));
    s.eq(
        "delete every fill key while NOSPACE",
        del.as_ref().ok().map(|r| r.deleted()),
        Some(stored - 3),
    );
    let rev = rt
        .block_on(c.get("x", None))
        .ok()
        .and_then(|r| r.header().map(|h| h.revision()))
        .unwrap_or_default();
    let compacted = rt.block_on(c.compact(rev, Some(CompactionOptions::new().with_physical())));
    s.eq(
        "compact to the current revision",
        outcome(&compacted),
        "ok".into(),
    );
    s.ctl_out(
        &["defrag"],
        &format!("Finished defragmenting etcd member[{}]\n", s.ep),
    );
    let size = rt.block_on(c.status()).map(|st| st.db_size()).unwrap_or(-1);
    s.expect((0..QUOTA).contains(&size), || {
        format!("db size after compact + defrag: {size}, quota {QUOTA}")
    });
    s.note(format!(
        "db size below the quota after compact + defrag: {}",
        (0..QUOTA).contains(&size)
    ));
    s.eq(
        "put after defrag, before disarm",
        outcome(&rt.block_on(c.put("x", "y", None))),
        format!("ResourceExhausted: {NOSPACE}"),
    );
    s.ctl_out(&["alarm", "list"], &format!("{alarm_line}\n"));

    s.ctl_out(&["alarm", "disarm"], &format!("{alarm_line}\n"));
    let alarms = rt
        .block_on(c.alarm(AlarmAction::Get, AlarmType::None, None))
        .map(|a| a.alarms().len());
    s.eq("alarms after disarm (API)", alarms.ok(), Some(0));
    s.ctl_out(&["alarm", "list"], "");
    s.eq(
        "put after disarm",
        outcome(&rt.block_on(c.put("x", "y", None))),
        "ok".into(),
    );
    s.eq(
        "lease grant after disarm",
        outcome(&rt.block_on(c.lease_grant(60, None))),
        "ok".into(),
    );
    s.ctl_out(&["put", "x", "z"], "OK\n");
    let st = rt.block_on(c.status());
    s.eq(
        "status errors after disarm",
        st.as_ref().ok().map(|st| st.errors().len()),
        Some(0),
    );
    let h = health(s);
    s.eq("/health after disarm", h.as_str(), "200 health=true");
    s.note(format!("/health after disarm: {h}"));

    // Disarming by member through the API works too: raise nothing, deactivate is a no-op.
    let mut opts = AlarmOptions::new();
    opts.with_member(me);
    let r = rt.block_on(c.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(opts)));
    s.eq("disarming an absent alarm", outcome(&r).as_str(), "ok");
}

#[test]
fn quota_nospace_alarm_matches_reference() {
    let quota = format!("--quota-backend-bytes={QUOTA}");
    side_by_side("quota / NOSPACE", &[quota.as_str()], quota_script);
}

// ---------------------------------------------------------------------------------------------
// Snapshot save / status / restore
// ---------------------------------------------------------------------------------------------

/// One key-value as compared across servers: key, value, create, mod, version, lease.
type Kv = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

/// Every key at `rev` (0 = now) and the header revision, or the error.
async fn dump(c: &mut Client, rev: i64) -> Result<(i64, Vec<Kv>), String> {
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

async fn snapshot_bytes(c: &mut Client) -> Vec<u8> {
    let mut stream = c.snapshot().await.expect("snapshot");
    let mut data = Vec::new();
    while let Some(m) = stream.message().await.expect("snapshot message") {
        data.extend_from_slice(m.blob());
    }
    data
}

/// History with overwrites, deletes, a multi-key txn, a compaction and leases. Returns (the
/// lease with keys, the lease without keys, the compaction revision).
async fn load_history(c: &mut Client) -> (i64, i64, i64) {
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

struct LeaseView {
    ids: Vec<i64>,
    granted: i64,
    ttl: i64,
    keys: Vec<Vec<u8>>,
}

async fn leases(c: &mut Client, id: i64) -> Result<LeaseView, String> {
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

fn status_json(file: &Path) -> (bool, String, String) {
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

// ---------------------------------------------------------------------------------------------
// HTTP endpoints
// ---------------------------------------------------------------------------------------------

const METRICS: [&str; 7] = [
    "etcd_server_has_leader 1",
    "etcd_server_proposals_failed_total ",
    "etcd_mvcc_db_total_size_in_bytes ",
    "etcd_debugging_mvcc_keys_total ",
    "etcd_disk_wal_fsync_duration_seconds_count ",
    "etcd_disk_backend_commit_duration_seconds_count ",
    "grpc_server_handled_total{",
];

/// The value of the metric line that starts with `prefix` (`name ` or `name{labels} `).
fn metric(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn check_metrics(fails: &mut Vec<String>, what: &str, body: &str, keys: f64) {
    for m in METRICS {
        if !body.lines().any(|l| l.starts_with(m)) {
            fails.push(format!("{what}: no line starting with `{m}`"));
        }
    }
    let checks = [
        (
            "etcd_debugging_mvcc_keys_total ",
            metric(body, "etcd_debugging_mvcc_keys_total ").is_some_and(|v| v == keys),
        ),
        (
            "etcd_mvcc_db_total_size_in_bytes > 0",
            metric(body, "etcd_mvcc_db_total_size_in_bytes ").is_some_and(|v| v > 0.0),
        ),
        (
            "wal fsync count >= 1",
            metric(body, "etcd_disk_wal_fsync_duration_seconds_count ").is_some_and(|v| v >= 1.0),
        ),
        (
            "backend commit count >= 1",
            metric(body, "etcd_disk_backend_commit_duration_seconds_count ")
                .is_some_and(|v| v >= 1.0),
        ),
        (
            "handled Put OK >= 3",
            metric(body, PUT_OK).is_some_and(|v| v >= 3.0),
        ),
    ];
    for (name, ok) in checks {
        if !ok {
            fails.push(format!("{what}: {name} does not hold"));
        }
    }
}

const PUT_OK: &str = r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} "#;

/// Every HTTP check on one server, as failure messages.
fn http_checks(kind: Kind, rt: &tokio::runtime::Runtime) -> Vec<String> {
    let mut fails = Vec::new();
    let metrics_url = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let p = Proc::start(kind, &["--listen-metrics-urls", &metrics_url]);
    let mut c = rt.block_on(p.client());
    for k in ["m1", "m2", "m3"] {
        rt.block_on(c.put(k, "v", None)).unwrap();
    }
    rt.block_on(c.get("m1", None)).unwrap();
    for url in [p.client_url.as_str(), metrics_url.as_str()] {
        let at = |path: &str| format!("{kind:?} GET {url}{path}");
        let (code, _, body) = http_get(url, "/health");
        // 3.5 added the reason field.
        let want = if kind == Kind::Ours {
            r#"{"health":"true","reason":""}"#
        } else {
            r#"{"health":"true"}"#
        };
        if (code, body.trim_end()) != (200, want) {
            fails.push(format!(
                "{}: {code} {body:?}, want 200 {want:?}",
                at("/health")
            ));
        }

        let (code, _, body) = http_get(url, "/metrics");
        if code != 200 {
            fails.push(format!("{}: status {code}", at("/metrics")));
        }
        check_metrics(&mut fails, &at("/metrics"), &body, 3.0);

        // etcd 3.4 serves /version only on client URLs and has no /livez or /readyz.
        if kind == Kind::Ours || url == p.client_url {
            let (code, headers, body) = http_get(url, "/version");
            let (server, cluster) = if kind == Kind::Ours {
                ("3.5.", "3.5.0")
            } else {
                ("3.4.", "3.4.0")
            };
            let ok = code == 200
                && headers.contains("content-type: application/json")
                && body.starts_with(&format!(r#"{{"etcdserver":"{server}"#))
                && body
                    .trim_end()
                    .ends_with(&format!(r#","etcdcluster":"{cluster}"}}"#));
            if !ok {
                fails.push(format!("{}: {code} {body:?}\n{headers}", at("/version")));
            }
        }
        if kind == Kind::Ours {
            for path in ["/livez", "/readyz"] {
                let (code, _, body) = http_get(url, path);
                if (code, body.as_str()) != (200, "ok") {
                    fails.push(format!("{}: {code} {body:?}, want 200 \"ok\"", at(path)));
                }
            }
        }
        // An unknown path is a plain 404 on both URLs, as on etcd.
        let (code, headers, _) = http_get(url, "/no-such-path");
        if code != 404 {
            fails.push(format!(
                "{}: status {code}, want 404\n{headers}",
                at("/no-such-path")
            ));
        }
    }
    fails
}

#[test]
fn http_endpoints_on_client_and_metrics_urls() {
    let rt = rt();
    let mut fails = http_checks(Kind::Ours, &rt);
    if require(reference_etcd(), "reference etcd 3.4").is_some() {
        fails.extend(
            http_checks(Kind::Reference, &rt)
                .into_iter()
                .map(|f| format!("REFERENCE (the expectation is wrong): {f}")),
        );
    }
    assert!(fails.is_empty(), "HTTP endpoints:\n{}", fails.join("\n"));
}
