//! Check helpers.

use super::*;

pub(super) fn expect_ok(o: &Out) -> Result<(), String> {
    if o.ok {
        Ok(())
    } else {
        Err("failed, but should have succeeded".to_owned())
    }
}

pub(super) fn same<T: PartialEq + Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// The single JSON document a successful `-w json` command printed.
pub(super) fn json(o: &Out) -> Result<J, String> {
    expect_ok(o)?;
    J::parse(o.stdout.trim()).map_err(|e| format!("stdout is not JSON: {e}"))
}

/// Standard base64, as etcdctl's JSON prints bytes.
pub(super) fn b64(s: &str) -> String {
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
pub(super) fn kv(
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
pub(super) fn header(ctx: &Ctx, j: &J, revision: u64) -> Result<(), String> {
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
pub(super) fn status_json(ctx: &Ctx, o: &Out, endpoint: &str, revision: u64) -> Result<(), String> {
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
pub(super) fn version_ok(ctx: &Ctx, v: &str) -> Result<(), String> {
    match ctx.kind {
        Kind::Ours if v.starts_with("3.5.") => Ok(()),
        Kind::Reference if v == "3.4.23" => Ok(()),
        _ => Err(format!(
            "version {v:?}: want 3.5.x from ours, 3.4.23 from the reference"
        )),
    }
}
