//! Scripts run side by side.

use super::*;

/// One etcdctl run.
pub(super) struct Out {
    pub(super) ok: bool,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

impl Out {
    /// The last `Error: ...` line of stderr, or "".
    pub(super) fn error(&self) -> String {
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
pub(super) struct Script<'a> {
    pub(super) p: &'a Proc,
    pub(super) ep: String,
    pub(super) dir: tempfile::TempDir,
    pub(super) ids: Vec<u64>,
    pub(super) subst: Vec<(String, String)>,
    pub(super) transcript: Vec<String>,
    pub(super) failures: Vec<String>,
}

impl<'a> Script<'a> {
    pub(super) fn new(p: &'a Proc) -> Self {
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

    pub(super) fn ours(&self) -> bool {
        self.p.kind == Kind::Ours
    }

    pub(super) fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub(super) fn fail(&mut self, msg: impl Into<String>) {
        self.failures.push(msg.into());
    }

    pub(super) fn expect(&mut self, cond: bool, msg: impl FnOnce() -> String) {
        if !cond {
            let m = msg();
            self.fail(m);
        }
    }

    pub(super) fn eq<T: PartialEq + Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.fail(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    pub(super) fn note(&mut self, line: impl Into<String>) {
        self.transcript.push(line.into());
    }

    pub(super) fn bg(&self, args: &[&str]) -> Bg {
        Bg::etcdctl(&self.ep, args)
    }

    /// A lease / member / cluster ID seen in output: the same ID always gets the same number.
    pub(super) fn id_label(&mut self, v: u64) -> String {
        let i = self.ids.iter().position(|x| *x == v).unwrap_or_else(|| {
            self.ids.push(v);
            self.ids.len() - 1
        });
        format!("<ID{}>", i + 1)
    }

    /// Replaces hex tokens of 12..=16 digits (lease IDs as `%016x` or `%x`, member IDs).
    pub(super) fn norm_hex(&mut self, text: &str) -> String {
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

    pub(super) fn norm_line(&self, line: &str) -> String {
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

    pub(super) fn norm(&mut self, text: &str) -> String {
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
    pub(super) fn run_quiet(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let (ok, stdout, stderr) = etcdctl_run(&self.ep, args, stdin);
        Out { ok, stdout, stderr }
    }

    pub(super) fn record(
        &mut self,
        args: &[&str],
        stdin: Option<&str>,
        o: &Out,
        with_stdout: bool,
    ) {
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
    pub(super) fn ctl(&mut self, args: &[&str]) -> Out {
        self.ctl_in(args, None)
    }

    pub(super) fn ctl_in(&mut self, args: &[&str], stdin: Option<&str>) -> Out {
        let o = self.run_quiet(args, stdin);
        self.record(args, stdin, &o, true);
        o
    }

    /// Like `ctl`, for output that is checked explicitly (JSON): records only the outcome.
    pub(super) fn ctl_json(&mut self, args: &[&str]) -> Out {
        let o = self.run_quiet(args, None);
        self.record(args, None, &o, false);
        o
    }

    /// `ctl`, expecting success and exactly `want` on stdout.
    pub(super) fn ctl_out(&mut self, args: &[&str], want: &str) -> Out {
        let o = self.ctl(args);
        let cmd = args.join(" ");
        self.expect(o.ok, || {
            format!("etcdctl {cmd} failed: {}", o.stderr.trim())
        });
        self.eq(&format!("etcdctl {cmd} stdout"), o.stdout.as_str(), want);
        o
    }

    /// `ctl`, expecting failure with exactly `Error: <msg>` as the last error line.
    pub(super) fn ctl_err(&mut self, args: &[&str], msg: &str) -> Out {
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
    pub(super) fn revision(&mut self) -> i64 {
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
pub(super) struct Run {
    pub(super) transcript: Vec<String>,
    pub(super) failures: Vec<String>,
    pub(super) log: String,
}

pub(super) fn run_script(kind: Kind, extra: &[&str], script: fn(&mut Script)) -> Run {
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

pub(super) fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Runs `script` against our server and the reference etcd at the same time; fails with every
/// failed expectation and every transcript step that differs.
pub(super) fn side_by_side(name: &str, extra: &[&str], script: fn(&mut Script)) {
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
