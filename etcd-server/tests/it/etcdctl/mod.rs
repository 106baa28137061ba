//! etcdctl 3.4.23 (API v3) against our `etcd-server`: each test runs one command script against
//! our server and, side by side, against the reference etcd 3.4.23. Every step has explicit
//! expectations (checked on both servers, so they are known to hold for real etcd), and the
//! normalized transcripts of the two servers must be identical.
//!
//! Normalization replaces what legitimately differs between two fresh single-member clusters:
//! member and cluster IDs, client and peer ports, DB size, raft term, the version string, timings,
//! and the absolute raft index (reported as an offset from the first raft index a script sees, so
//! the number of raft entries each command adds is still compared).

mod checks;
mod json;
mod normalization;
mod script;
mod tests;

// Sections share their helpers.
#[allow(unused_imports)]
use checks::*;
#[allow(unused_imports)]
use json::*;
#[allow(unused_imports)]
use normalization::*;
#[allow(unused_imports)]
use script::*;
#[allow(unused_imports)]
use tests::*;

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
