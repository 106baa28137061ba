//! The comparison table: medians over rounds, ours ÷ etcd ratios and the performance targets they are held to.

use super::*;

/// The median of `v` (the mean of the middle two for an even count); NaN when empty.
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The target for a workload metric, if it sets one.
pub(super) fn target(w: SuiteWorkload, metric: &str) -> Option<Target> {
    match (w, metric) {
        (SuiteWorkload::Connect, "throughput") => Some(Target::AtLeast(1.0)),
        (SuiteWorkload::Put, "throughput") => Some(Target::AtLeast(1.5)),
        (SuiteWorkload::Put, "p99") => Some(Target::AtMost(1.0)),
        (SuiteWorkload::Put1Client, "p50") => Some(Target::AtMost(1.0)),
        (SuiteWorkload::RangeLinearizable | SuiteWorkload::RangeSerializable, "throughput") => {
            Some(Target::AtLeast(1.5))
        }
        _ => None,
    }
}

/// Medians per server and the rows of the summary.
pub(super) fn summarize(
    suite: &[SuiteRun],
    resources: &[ResourceRun],
    keys: u64,
    tls: bool,
) -> Vec<Row> {
    let tls = if tls { " (TLS)" } else { "" };
    let mut rows = Vec::new();
    let mut sizes: Vec<usize> = suite.iter().map(|r| r.members).collect();
    sizes.dedup();
    sizes.sort_unstable();
    sizes.dedup();
    for m in sizes {
        let runs = |k: ServerKind| {
            suite
                .iter()
                .filter(move |r| r.members == m && r.server == k)
        };
        for w in SuiteWorkload::ALL {
            let med = |k: ServerKind, f: &dyn Fn(&WorkloadRun) -> f64| {
                median(
                    runs(k)
                        .flat_map(|r| r.workloads.iter().filter(|x| x.workload == w))
                        .map(f)
                        .collect(),
                )
            };
            if runs(ServerKind::Ours).all(|r| r.workloads.iter().all(|x| x.workload != w)) {
                continue;
            }
            let size = if m == 1 {
                "1 member".to_owned()
            } else {
                format!("{m} members")
            };
            let metrics: [(&str, &str, &'static str, WorkloadMetric); 4] = [
                ("throughput", "throughput", "ops/s", &|x| {
                    x.report.throughput
                }),
                ("p50", "p50 latency", "ms", &|x| x.report.latency_ms.p50),
                ("p99", "p99 latency", "ms", &|x| x.report.latency_ms.p99),
                ("cpu", "server CPU per 1000 ops", "ms", &|x| {
                    if x.report.ops == 0 {
                        f64::NAN
                    } else {
                        x.server_cpu_secs * 1e6 / x.report.ops as f64
                    }
                }),
            ];
            for (key, label, unit, f) in metrics {
                rows.push(Row::new(
                    format!("{}{tls}, {size}: {label}", w.name()),
                    unit,
                    med(ServerKind::Ours, f),
                    med(ServerKind::Etcd, f),
                    target(w, key),
                ));
            }
        }
        let rss = |k: ServerKind| median(runs(k).map(|r| r.peak_rss_bytes as f64 / MIB).collect());
        rows.push(Row::new(
            format!(
                "suite, {}: peak RSS of a member",
                if m == 1 {
                    "1 member".into()
                } else {
                    format!("{m} members")
                }
            ),
            "MiB",
            rss(ServerKind::Ours),
            rss(ServerKind::Etcd),
            None,
        ));
    }
    if !resources.is_empty() {
        let med = |k: ServerKind, f: &dyn Fn(&ResourceRun) -> f64| {
            median(resources.iter().filter(|r| r.server == k).map(f).collect())
        };
        let n = if keys.is_multiple_of(1_000_000) {
            format!("{}M", keys / 1_000_000)
        } else {
            keys.to_string()
        };
        let metrics: [(String, &'static str, Option<Target>, ResourceMetric); 10] = [
            (
                format!("load {n} keys of 256 B: throughput"),
                "ops/s",
                None,
                &|r| r.load.throughput,
            ),
            (
                format!("after {n} keys: peak RSS"),
                "MiB",
                Some(Target::AtMost(0.5)),
                &|r| r.after_load.rss_peak_bytes as f64 / MIB,
            ),
            (format!("after {n} keys: RSS"), "MiB", None, &|r| {
                r.after_load.rss_bytes as f64 / MIB
            }),
            (
                format!("after {n} keys: server CPU since start"),
                "s",
                None,
                &|r| r.after_load.cpu_secs,
            ),
            (format!("after {n} keys: on disk"), "MiB", None, &|r| {
                r.disk_after_load as f64 / MIB
            }),
            (
                format!("after {n} keys, compact + defrag: on disk"),
                "MiB",
                None,
                &|r| r.disk_after_defrag as f64 / MIB,
            ),
            (format!("after {n} keys: backend file"), "MiB", None, &|r| {
                r.backend_after_load as f64 / MIB
            }),
            (
                format!("after {n} keys, compact + defrag: backend file"),
                "MiB",
                None,
                &|r| r.backend_after_defrag as f64 / MIB,
            ),
            (
                format!("restart to ready with {n} keys"),
                "s",
                Some(Target::AtMost(1.0)),
                &|r| r.restart_ready_secs,
            ),
            (
                format!("after restart with {n} keys: RSS"),
                "MiB",
                None,
                &|r| r.after_restart.rss_bytes as f64 / MIB,
            ),
        ];
        for (label, unit, t, f) in metrics {
            rows.push(Row::new(
                label,
                unit,
                med(ServerKind::Ours, f),
                med(ServerKind::Etcd, f),
                t,
            ));
        }
    }
    rows
}

pub(super) const MIB: f64 = 1024.0 * 1024.0;

/// Extracts one number from a suite workload run.
pub(super) type WorkloadMetric<'a> = &'a dyn Fn(&WorkloadRun) -> f64;
/// Extracts one number from a resources run.
pub(super) type ResourceMetric<'a> = &'a dyn Fn(&ResourceRun) -> f64;
