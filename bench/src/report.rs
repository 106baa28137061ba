//! Measurements and their report: per-client latency histograms (HDR, microseconds) and error
//! counts by kind, merged into a [`Report`] that renders as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track (longer ones are clamped): one hour, in microseconds.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A new latency histogram (microseconds, 3 significant digits).
pub(crate) fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::unwrap_used)] // constant, valid bounds
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap()
}

/// What one client (task) measured.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub(crate) latency: Histogram<u64>,
    pub(crate) errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            latency: new_histogram(),
            errors: BTreeMap::new(),
        }
    }

    pub(crate) fn ok(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency.saturating_record(us);
    }

    pub(crate) fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: Recorder) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
    }
}

/// A short, stable label for a failed request: the gRPC code and etcd's message (etcd's error
/// strings are fixed, so they group well), or the client-side failure class.
pub fn error_kind(e: &etcd_client::Error) -> String {
    fn clip(s: &str) -> String {
        let s = s.trim();
        match s.char_indices().nth(100) {
            Some((i, _)) => format!("{}…", &s[..i]),
            None => s.to_owned(),
        }
    }
    match e {
        etcd_client::Error::GRpcStatus(s) if s.message().is_empty() => format!("{:?}", s.code()),
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), clip(s.message())),
        etcd_client::Error::TransportError(_) => "transport error".into(),
        etcd_client::Error::WatchError(m) => format!("watch error: {}", clip(m)),
        etcd_client::Error::LeaseKeepAliveError(m) => {
            format!("lease keep-alive error: {}", clip(m))
        }
        other => clip(&other.to_string()),
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Fastest request.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest request.
    pub max: f64,
}

impl Latency {
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The result of one workload run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Workload name (`put`, `range`, …).
    pub workload: String,
    /// Its parameters in words.
    pub description: String,
    /// Requests (for `watch`: events delivered) that succeeded.
    pub ops: u64,
    /// Requests that failed, all kinds together.
    pub errors_total: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<String, u64>,
    /// Wall-clock time of the measured phase, in seconds.
    pub elapsed_secs: f64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Latency of successful requests (for `watch`: from put sent to event delivered).
    pub latency_ms: Latency,
    /// Workload-specific counts (for `watch`: puts, watchers, missing events).
    pub counters: BTreeMap<String, u64>,
}

impl Report {
    pub(crate) fn build(
        workload: &str,
        description: String,
        rec: &Recorder,
        elapsed: Duration,
    ) -> Self {
        let ops = rec.latency.len();
        let secs = elapsed.as_secs_f64();
        Self {
            workload: workload.into(),
            description,
            ops,
            errors_total: rec.errors.values().sum(),
            errors: rec.errors.clone(),
            elapsed_secs: secs,
            throughput: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            latency_ms: Latency::from_histogram(&rec.latency),
            counters: BTreeMap::new(),
        }
    }

    /// Human-readable text, in the spirit of etcd's benchmark summary.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_ms;
        let _ = writeln!(s, "Workload:   {} ({})", self.workload, self.description);
        let _ = writeln!(
            s,
            "Requests:   {} ok, {} failed",
            self.ops, self.errors_total
        );
        let _ = writeln!(s, "Elapsed:    {:.3} s", self.elapsed_secs);
        let _ = writeln!(s, "Throughput: {:.1} ops/s", self.throughput);
        let _ = writeln!(s, "Latency (ms):");
        for (name, v) in [
            ("min", l.min),
            ("mean", l.mean),
            ("p50", l.p50),
            ("p90", l.p90),
            ("p99", l.p99),
            ("p99.9", l.p999),
            ("max", l.max),
        ] {
            let _ = writeln!(s, "  {name:<6} {v:>10.3}");
        }
        if !self.counters.is_empty() {
            let _ = writeln!(s, "Counters:");
            for (k, v) in &self.counters {
                let _ = writeln!(s, "  {k}: {v}");
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "Errors by kind:");
            for (k, v) in &self.errors {
                let _ = writeln!(s, "  {v:>8}  {k}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_from_recorders() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for ms in 1..=100u64 {
            a.ok(Duration::from_millis(ms));
        }
        b.ok(Duration::from_millis(500));
        b.error("Unavailable: etcdserver: leader changed".into());
        b.error("Unavailable: etcdserver: leader changed".into());
        a.merge(b);
        let r = Report::build("put", "test".into(), &a, Duration::from_secs(2));
        assert_eq!(r.ops, 101);
        assert_eq!(r.errors_total, 2);
        assert!((r.throughput - 50.5).abs() < 1e-9);
        assert!((r.latency_ms.p50 - 51.0).abs() < 0.1, "{:?}", r.latency_ms);
        assert!((r.latency_ms.max - 500.0).abs() < 1.0);
        assert!(r.latency_ms.p50 <= r.latency_ms.p99 && r.latency_ms.p99 <= r.latency_ms.max);
        let text = r.to_text();
        assert!(
            text.contains("2  Unavailable: etcdserver: leader changed"),
            "{text}"
        );
    }

    #[test]
    fn error_kinds_group_by_code_and_message() {
        let e = etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
            "etcdserver: request timed out",
        ));
        assert_eq!(error_kind(&e), "Unavailable: etcdserver: request timed out");
        let e = etcd_client::Error::GRpcStatus(tonic::Status::cancelled(""));
        assert_eq!(error_kind(&e), "Cancelled");
        let e = etcd_client::Error::WatchError("x".repeat(300));
        assert!(error_kind(&e).chars().count() < 120);
    }
}
