//! The worker's metrics: jobs in flight and how each delivery was settled.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use offload_shared::{JobKind, http_server::ConnMetrics};

use crate::consumer::Settled;

/// Labels of `offload_worker_jobs_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SettledLabels {
    kind: String,
    outcome: &'static str,
}

/// Counters and gauges of one worker process.
pub struct WorkerMetrics {
    registry: Registry,
    in_flight: Gauge,
    settled: Family<SettledLabels, Counter>,
    /// Connections of the metrics listener (open, refused over the limit).
    pub connections: ConnMetrics,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("offload_worker");
        let in_flight = Gauge::default();
        registry.register(
            "jobs_in_flight",
            "Jobs this worker is running now",
            in_flight.clone(),
        );
        let settled = Family::<SettledLabels, Counter>::default();
        registry.register(
            "jobs",
            "Deliveries settled, by kind and outcome (succeeded, retried, dead, requeued, returned)",
            settled.clone(),
        );
        let connections = ConnMetrics::default();
        connections.register(&mut registry);
        WorkerMetrics {
            connections,
            registry,
            in_flight,
            settled,
        }
    }
}

/// Holds one job in the in-flight gauge until dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl WorkerMetrics {
    /// Counts a job as in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Jobs running now.
    pub fn in_flight_now(&self) -> i64 {
        self.in_flight.get()
    }

    /// Counts how a delivery was settled.
    pub fn settled(&self, kind: Option<&JobKind>, settled: Settled) {
        self.settled
            .get_or_create(&SettledLabels {
                kind: kind.map_or_else(|| "unknown".to_owned(), JobKind::to_string),
                outcome: settled.as_str(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
