//! Running a script on one server, and against the reference.

use super::*;

/// What a check may know about the server it runs against.
pub(super) struct Ctx {
    pub(super) kind: Kind,
    pub(super) endpoint: String,
    pub(super) member_id: u64,
    pub(super) cluster_id: u64,
    /// (text, placeholder), longest text first.
    pub(super) subs: Vec<(String, &'static str)>,
}

impl Ctx {
    pub(super) fn new(p: &Proc) -> Self {
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

    pub(super) fn subst(&self, s: &str) -> String {
        let mut s = s.to_owned();
        for (from, to) in &self.subs {
            s = s.replace(from, to);
        }
        s
    }
}

/// The result of a script on one server.
pub(super) struct Transcript {
    /// Normalized, one entry per step.
    pub(super) entries: Vec<String>,
    /// Explicit expectations that did not hold.
    pub(super) failures: Vec<String>,
}

pub(super) fn run_script(kind: Kind, steps: &[Step]) -> Transcript {
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
pub(super) fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Runs `steps` on our server and on the reference etcd, checks every expectation on both, and
/// asserts that the normalized transcripts are identical. Panics with every problem found.
pub(super) fn check_against_reference(steps: &[Step]) {
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
