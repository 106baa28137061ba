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

mod background;
mod etcdctl_endpoint;
mod etcdctl_lease;
mod etcdctl_lock_elect;
mod etcdctl_watch;
mod http;
mod quota;
mod side_by_side;
mod snapshots;

// Sections share their helpers.
#[allow(unused_imports)]
use background::*;
#[allow(unused_imports)]
use etcdctl_endpoint::*;
#[allow(unused_imports)]
use etcdctl_lease::*;
#[allow(unused_imports)]
use etcdctl_lock_elect::*;
#[allow(unused_imports)]
use etcdctl_watch::*;
#[allow(unused_imports)]
use http::*;
#[allow(unused_imports)]
use quota::*;
#[allow(unused_imports)]
use side_by_side::*;
#[allow(unused_imports)]
use snapshots::*;

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
