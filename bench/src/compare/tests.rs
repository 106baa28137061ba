//! Unit tests of `etcd-bench compare`.

#![allow(clippy::unwrap_used)]
use super::summary::{median, target};
use super::*;

#[test]
fn medians() {
    assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    assert!(median(vec![]).is_nan());
}

fn workload_run(w: SuiteWorkload, ops_per_sec: u64, latency_ms: u64) -> WorkloadRun {
    let mut rec = crate::report::Recorder::new();
    for _ in 0..ops_per_sec {
        rec.ok(Duration::from_millis(latency_ms));
    }
    let report = Report::build(w.name(), String::new(), &rec, Duration::from_secs(1));
    WorkloadRun {
        workload: w,
        report,
        server_cpu_secs: 0.5,
    }
}

#[test]
fn summary_takes_medians_and_ratios() {
    let run = |server, round, ops, ms| SuiteRun {
        server,
        members: 1,
        round,
        workloads: vec![workload_run(SuiteWorkload::Put, ops, ms)],
        peak_rss_bytes: 100 << 20,
    };
    let suite = vec![
        run(ServerKind::Ours, 1, 3000, 2),
        run(ServerKind::Etcd, 1, 1000, 4),
        run(ServerKind::Ours, 2, 2000, 2),
        run(ServerKind::Etcd, 2, 1000, 4),
        run(ServerKind::Ours, 3, 9000, 2),
        run(ServerKind::Etcd, 3, 3000, 4),
    ];
    let rows = summarize(&suite, &[], 1_000_000, false);
    let tput = &rows[0];
    assert_eq!(tput.metric, "put, 1 member: throughput");
    assert_eq!((tput.ours, tput.etcd, tput.ratio), (3000.0, 1000.0, 3.0));
    assert_eq!(tput.met, Some(true));
    let p99 = rows
        .iter()
        .find(|r| r.metric == "put, 1 member: p99 latency")
        .unwrap();
    assert!(
        (p99.ratio - 0.5).abs() < 0.01 && p99.met == Some(true),
        "{p99:?}"
    );
    let cpu = rows
        .iter()
        .find(|r| r.metric.ends_with("server CPU per 1000 ops"))
        .unwrap();
    assert!((cpu.ours - 500.0 / 3.0).abs() < 0.01, "{cpu:?}");
    assert!(
        rows.iter()
            .any(|r| r.metric == "suite, 1 member: peak RSS of a member")
    );
    assert!(!rows.iter().any(|r| r.metric.starts_with("range")));
}

#[test]
fn targets_follow_the_issue() {
    assert_eq!(
        target(SuiteWorkload::Put, "throughput"),
        Some(Target::AtLeast(1.5))
    );
    assert_eq!(target(SuiteWorkload::Put, "p99"), Some(Target::AtMost(1.0)));
    assert_eq!(
        target(SuiteWorkload::Put1Client, "p50"),
        Some(Target::AtMost(1.0))
    );
    assert_eq!(
        target(SuiteWorkload::RangeSerializable, "throughput"),
        Some(Target::AtLeast(1.5))
    );
    assert_eq!(target(SuiteWorkload::Watch, "throughput"), None);
}
