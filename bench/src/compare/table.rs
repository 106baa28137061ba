//! The comparison's summary: one row per metric with the median of each server, the ratio
//! ours ÷ etcd, the target from issue #7 where there is one, and whether it is met.

use std::fmt::Write as _;

use serde::Serialize;

/// A goal for the ratio ours ÷ etcd.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The ratio must be at least this (throughput).
    AtLeast(f64),
    /// The ratio must be at most this (latency, memory, time).
    AtMost(f64),
}

impl Target {
    fn met(self, ratio: f64) -> bool {
        match self {
            Target::AtLeast(t) => ratio >= t,
            Target::AtMost(t) => ratio <= t,
        }
    }

    fn label(self) -> String {
        match self {
            Target::AtLeast(t) => format!("≥ {t}×"),
            Target::AtMost(t) => format!("≤ {t}×"),
        }
    }
}

/// One line of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is measured, e.g. "put, 3 members: throughput".
    pub metric: String,
    /// Unit of `ours` and `etcd`.
    pub unit: &'static str,
    /// Our median.
    pub ours: f64,
    /// etcd's median.
    pub etcd: f64,
    /// ours ÷ etcd (NaN when etcd's value is 0).
    pub ratio: f64,
    /// The goal, if the issue sets one.
    pub target: Option<Target>,
    /// Whether the goal is met.
    pub met: Option<bool>,
}

impl Row {
    pub(crate) fn new(
        metric: String,
        unit: &'static str,
        ours: f64,
        etcd: f64,
        target: Option<Target>,
    ) -> Self {
        let ratio = if etcd != 0.0 { ours / etcd } else { f64::NAN };
        let met = target.map(|t| ratio.is_finite() && t.met(ratio));
        Self {
            metric,
            unit,
            ours,
            etcd,
            ratio,
            target,
            met,
        }
    }
}

fn num(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn cells(r: &Row) -> [String; 6] {
    [
        format!("{} ({})", r.metric, r.unit),
        num(r.ours),
        num(r.etcd),
        if r.ratio.is_finite() {
            format!("{:.2}", r.ratio)
        } else {
            "n/a".into()
        },
        r.target.map(Target::label).unwrap_or_default(),
        match r.met {
            Some(true) => "met".into(),
            Some(false) => "NOT met".into(),
            None => String::new(),
        },
    ]
}

const HEADER: [&str; 6] = [
    "metric",
    "etcd-server",
    "etcd 3.4.23",
    "ours ÷ etcd",
    "target",
    "status",
];

/// The rows as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| {} |", HEADER.join(" | "));
    let _ = writeln!(s, "|---|--:|--:|--:|---|---|");
    for r in rows {
        let _ = writeln!(s, "| {} |", cells(r).join(" | "));
    }
    s
}

/// The rows as an aligned plain-text table.
pub fn text(rows: &[Row]) -> String {
    let all: Vec<[String; 6]> = std::iter::once(HEADER.map(String::from))
        .chain(rows.iter().map(cells))
        .collect();
    let mut width = [0usize; 6];
    for row in &all {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    for row in &all {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(width).enumerate() {
            let pad = w - c.chars().count();
            if i == 0 || i >= 4 {
                let _ = write!(line, "{c}{}  ", " ".repeat(pad));
            } else {
                let _ = write!(line, "{}{c}  ", " ".repeat(pad));
            }
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_targets() {
        let r = Row::new(
            "put: throughput".into(),
            "ops/s",
            3000.0,
            1000.0,
            Some(Target::AtLeast(1.5)),
        );
        assert_eq!(r.ratio, 3.0);
        assert_eq!(r.met, Some(true));
        let r = Row::new(
            "put: p99".into(),
            "ms",
            12.0,
            10.0,
            Some(Target::AtMost(1.0)),
        );
        assert_eq!(r.met, Some(false));
        let r = Row::new("x".into(), "ms", 1.0, 0.0, Some(Target::AtMost(1.0)));
        assert_eq!(r.met, Some(false));
        let md = markdown(&[r]);
        assert!(
            md.contains("| x (ms) | 1.000 | 0.000 | n/a | ≤ 1× | NOT met |"),
            "{md}"
        );
    }
}
