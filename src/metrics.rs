//! Prometheus metrics of the controller (`etcd_operator_*`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The controller's metrics, in their own registry.
#[derive(Clone)]
pub struct Metrics {
    /// `etcd_operator_reconcile_total`.
    pub reconciles: IntCounter,
    /// `etcd_operator_reconcile_errors_total{error}`.
    pub errors: IntCounterVec,
    /// `etcd_operator_reconcile_duration_seconds`.
    pub duration: Histogram,
    /// `etcd_operator_backups_total{namespace,cluster,result}` (`success` or `failure`).
    pub backups: IntCounterVec,
    /// `etcd_operator_backup_duration_seconds{namespace,cluster}`: snapshot, upload and
    /// verification of one backup.
    pub backup_duration: HistogramVec,
    /// `etcd_operator_backup_size_bytes{namespace,cluster}`: the last good backup's object.
    pub backup_size: IntGaugeVec,
    /// `etcd_operator_backup_last_success_timestamp_seconds{namespace,cluster}`.
    pub backup_last_success: IntGaugeVec,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounter::with_opts(Opts::new(
            "etcd_operator_reconcile_total",
            "Reconciliations run",
        ))
        .expect("static metric options are valid");
        let errors = IntCounterVec::new(
            Opts::new(
                "etcd_operator_reconcile_errors_total",
                "Reconciliations that failed, by error",
            ),
            &["error"],
        )
        .expect("static metric options are valid");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "etcd_operator_reconcile_duration_seconds",
                "Time one reconciliation takes",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("static metric options are valid");
        let labels = &["namespace", "cluster"];
        let backups = IntCounterVec::new(
            Opts::new(
                "etcd_operator_backups_total",
                "Backups attempted, by result (success or failure)",
            ),
            &["namespace", "cluster", "result"],
        )
        .expect("static metric options are valid");
        let backup_duration = HistogramVec::new(
            HistogramOpts::new(
                "etcd_operator_backup_duration_seconds",
                "Time one backup takes: snapshot, upload and verification",
            )
            .buckets(vec![
                0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
            labels,
        )
        .expect("static metric options are valid");
        let backup_size = IntGaugeVec::new(
            Opts::new(
                "etcd_operator_backup_size_bytes",
                "Size of the last good backup's object in the bucket",
            ),
            labels,
        )
        .expect("static metric options are valid");
        let backup_last_success = IntGaugeVec::new(
            Opts::new(
                "etcd_operator_backup_last_success_timestamp_seconds",
                "When the last good backup was taken, Unix seconds",
            ),
            labels,
        )
        .expect("static metric options are valid");
        for m in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(backups.clone()),
            Box::new(backup_duration.clone()),
            Box::new(backup_size.clone()),
            Box::new(backup_last_success.clone()),
        ] {
            registry.register(m).expect("metric names are unique");
        }
        Self {
            reconciles,
            errors,
            duration,
            backups,
            backup_duration,
            backup_size,
            backup_last_success,
            registry,
        }
    }

    /// Records one backup attempt of the cluster `name` in `namespace`.
    pub fn record_backup(&self, namespace: &str, name: &str, a: &crate::backup::Attempt) {
        let labels = [namespace, name];
        let result = if a.ok { "success" } else { "failure" };
        self.backups
            .with_label_values(&[namespace, name, result])
            .inc();
        self.backup_duration
            .with_label_values(&labels)
            .observe(a.seconds);
        if a.ok {
            self.backup_size
                .with_label_values(&labels)
                .set(i64::try_from(a.size).unwrap_or(i64::MAX));
            self.backup_last_success
                .with_label_values(&labels)
                .set(a.taken);
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_are_counted_timed_and_sized_per_cluster() {
        let m = Metrics::new();
        let attempt = |ok, size, taken| crate::backup::Attempt {
            ok,
            seconds: 3.0,
            size,
            taken,
        };
        m.record_backup("db", "prod", &attempt(true, 4096, 1_800_000_000));
        m.record_backup("db", "prod", &attempt(false, 0, 1_800_000_600));
        let text = m.encode();
        for line in [
            r#"etcd_operator_backups_total{cluster="prod",namespace="db",result="success"} 1"#,
            r#"etcd_operator_backups_total{cluster="prod",namespace="db",result="failure"} 1"#,
            r#"etcd_operator_backup_duration_seconds_count{cluster="prod",namespace="db"} 2"#,
            // A failure leaves the last good backup's size and time.
            r#"etcd_operator_backup_size_bytes{cluster="prod",namespace="db"} 4096"#,
            r#"etcd_operator_backup_last_success_timestamp_seconds{cluster="prod",namespace="db"} 1800000000"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
