//! Normalization.

use super::*;

pub(super) struct Normalizer<'a> {
    pub(super) ctx: &'a Ctx,
    /// The first raft index seen; later ones are shown relative to it.
    pub(super) raft_base: Option<i64>,
}

/// The value of `-w`/`--write-out`, or "simple".
pub(super) fn write_format(args: &[String]) -> &str {
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
    pub(super) fn raft_index(&mut self, v: &str) -> String {
        let Ok(v) = v.trim().parse::<i64>() else {
            return format!("<BAD RAFT INDEX {v:?}>");
        };
        let base = *self.raft_base.get_or_insert(v);
        format!("<IDX0+{}>", v - base)
    }

    pub(super) fn stdout(&mut self, args: &[String], text: &str) -> String {
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

    pub(super) fn json(&mut self, j: J) -> J {
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
    pub(super) fn stderr(&self, text: &str) -> String {
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
