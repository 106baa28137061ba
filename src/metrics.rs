//! Prometheus metrics of the controller (`etcd_operator_*`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
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
        for m in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
        ] {
            registry.register(m).expect("metric names are unique");
        }
        Self {
            reconciles,
            errors,
            duration,
            registry,
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
