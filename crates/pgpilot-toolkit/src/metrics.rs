//! Reconcile metrics, one set of families shared by every controller and labelled by it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::queue::QueueDepth;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub controller: String,
    /// `success` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub controller: String,
    /// Kind of the object written, e.g. `StatefulSet`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub controller: String,
    /// kube's name for the call: `get`, `list`, `watch`, `patch`, `create`, `delete`, …
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub controller: String,
    /// What was called: `patroni`, `sql`.
    pub target: String,
    /// Which call, from a fixed set (`switchover`, `restart`, `converge`, …).
    pub call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    /// The error's [`crate::ReconcileError::metric_label`].
    pub reason: String,
}

/// The metric families. Create once per process and hand out [`ControllerMetrics`].
#[derive(Clone)]
pub struct Metrics {
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    in_flight: Family<ControllerLabel, Gauge>,
    running: Family<ControllerLabel, Gauge>,
    writes: Family<WriteLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    call_errors: Family<CallLabels, Counter>,
    queue_wait: Family<ControllerLabel, Histogram>,
    queues: Queues,
}

/// Each controller's queues (one per watched namespace), read at scrape time.
#[derive(Clone, Debug, Default)]
struct Queues(Arc<Mutex<QueuesByController>>);
type QueuesByController = BTreeMap<String, Vec<Weak<dyn QueueDepth>>>;

impl Collector for Queues {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let depths: Vec<(String, usize)> = match self.0.lock() {
            Ok(mut queues) => queues
                .iter_mut()
                .map(|(controller, queues)| {
                    // A controller that stopped (leadership lost) dropped its queues.
                    queues.retain(|q| q.strong_count() > 0);
                    let depth = queues.iter().filter_map(Weak::upgrade).map(|q| q.depth());
                    (controller.clone(), depth.sum())
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut family = encoder.encode_descriptor(
            "reconcile_queue_depth",
            "Objects a change woke whose reconcile has not started yet",
            None,
            MetricType::Gauge,
        )?;
        for (controller, depth) in depths {
            let gauge = ConstGauge::new(i64::try_from(depth).unwrap_or(i64::MAX));
            gauge.encode(family.encode_family(&ControllerLabel { controller })?)?;
        }
        Ok(())
    }
}

/// Reconcile durations from 5 ms to ~80 s.
fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 15,
    ))
}

/// Waits in the queue from 1 ms to ~9 minutes (a manager starting with 10,000 objects).
fn wait_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 20,
    ))
}

impl Metrics {
    /// Registers the families under `pgpilot_` in `registry`.
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let m = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            in_flight: Family::default(),
            running: Family::default(),
            writes: Family::default(),
            requests: Family::default(),
            call_errors: Family::default(),
            queue_wait: Family::new_with_constructor(wait_histogram),
            queues: Queues::default(),
        };
        let r = registry.sub_registry_with_prefix("pgpilot");
        r.register(
            "reconcile",
            "Reconciles by controller and result",
            m.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles by controller and error category",
            m.errors.clone(),
        );
        r.register_with_unit(
            "reconcile_duration",
            "Time spent in one reconcile",
            prometheus_client::registry::Unit::Seconds,
            m.duration.clone(),
        );
        r.register(
            "reconcile_in_flight",
            "Reconciles running now",
            m.in_flight.clone(),
        );
        r.register(
            "api_requests",
            "Requests sent to the Kubernetes API, by controller and verb (watches count when they start)",
            m.requests.clone(),
        );
        r.register(
            "call_errors",
            "Failed calls to the databases' own APIs (Patroni's REST API, SQL), by controller, target and call",
            m.call_errors.clone(),
        );
        r.register(
            "api_writes",
            "Write requests sent to the Kubernetes API, by controller and kind (a converged object costs none)",
            m.writes.clone(),
        );
        r.register_with_unit(
            "reconcile_queue_wait",
            "Time from the change that woke an object to the start of its reconcile",
            prometheus_client::registry::Unit::Seconds,
            m.queue_wait.clone(),
        );
        r.register_collector(Box::new(m.queues.clone()));
        r.register(
            "controller_running",
            "1 while the controller runs (this replica leads)",
            m.running.clone(),
        );
        Arc::new(m)
    }

    /// The handle one controller records through. Its series start at zero, so dashboards
    /// and alerts see the controller before its first reconcile.
    pub fn controller(self: &Arc<Self>, name: &str) -> ControllerMetrics {
        let handle = ControllerMetrics {
            metrics: self.clone(),
            name: name.to_owned(),
        };
        for result in ["success", "error"] {
            let _ = self.reconciles.get_or_create(&ResultLabels {
                controller: name.to_owned(),
                result: result.to_owned(),
            });
        }
        let _ = self.in_flight.get_or_create(&handle.label());
        let _ = self.running.get_or_create(&handle.label());
        if let Ok(mut queues) = self.queues.0.lock() {
            queues.entry(name.to_owned()).or_default();
        }
        handle
    }
}

/// Metrics of one controller.
#[derive(Clone)]
pub struct ControllerMetrics {
    metrics: Arc<Metrics>,
    name: String,
}

impl ControllerMetrics {
    fn label(&self) -> ControllerLabel {
        ControllerLabel {
            controller: self.name.clone(),
        }
    }

    /// Marks the controller as running (or stopped).
    pub fn set_running(&self, running: bool) {
        self.metrics
            .running
            .get_or_create(&self.label())
            .set(i64::from(running));
    }

    /// Counts `queue` in the controller's queue depth for as long as it lives.
    pub fn watch_queue(&self, queue: &Arc<dyn QueueDepth>) {
        if let Ok(mut queues) = self.metrics.queues.0.lock() {
            queues
                .entry(self.name.clone())
                .or_default()
                .push(Arc::downgrade(queue));
        }
    }

    /// An object waited this long between the change that woke it and its reconcile.
    pub fn waited(&self, wait: Duration) {
        self.metrics
            .queue_wait
            .get_or_create(&self.label())
            .observe(wait.as_secs_f64());
    }

    /// Counts one write request (create, patch, delete) for an object of `kind`.
    pub fn wrote(&self, kind: &str) {
        self.metrics
            .writes
            .get_or_create(&WriteLabels {
                controller: self.name.clone(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts one failed call to Patroni or PostgreSQL.
    pub fn call_failed(&self, target: &str, call: &str) {
        self.metrics
            .call_errors
            .get_or_create(&CallLabels {
                controller: self.name.clone(),
                target: target.to_owned(),
                call: call.to_owned(),
            })
            .inc();
    }

    /// Counts one request to the Kubernetes API.
    pub fn requested(&self, verb: &str) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                controller: self.name.clone(),
                verb: verb.to_owned(),
            })
            .inc();
    }

    /// Starts timing a reconcile; finish it with [`ReconcileTimer::success`] or
    /// [`ReconcileTimer::error`]. Dropping it unfinished counts as an error.
    pub fn start(&self) -> ReconcileTimer {
        self.metrics.in_flight.get_or_create(&self.label()).inc();
        ReconcileTimer {
            metrics: self.clone(),
            started: Instant::now(),
            done: false,
        }
    }

    fn finish(&self, elapsed: Duration, error: Option<&str>) {
        let label = self.label();
        self.metrics.in_flight.get_or_create(&label).dec();
        self.metrics
            .duration
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        let result = if error.is_some() { "error" } else { "success" };
        self.metrics
            .reconciles
            .get_or_create(&ResultLabels {
                controller: self.name.clone(),
                result: result.to_owned(),
            })
            .inc();
        if let Some(reason) = error {
            self.metrics
                .errors
                .get_or_create(&ErrorLabels {
                    controller: self.name.clone(),
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }
}

/// One reconcile being timed.
pub struct ReconcileTimer {
    metrics: ControllerMetrics,
    started: Instant,
    done: bool,
}

impl ReconcileTimer {
    pub fn success(mut self) {
        self.done = true;
        self.metrics.finish(self.started.elapsed(), None);
    }

    pub fn error(mut self, reason: &str) {
        self.done = true;
        self.metrics.finish(self.started.elapsed(), Some(reason));
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        if !self.done {
            self.metrics
                .finish(self.started.elapsed(), Some("cancelled"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn render(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).unwrap_or_default();
        out
    }

    #[test]
    fn reconciles_are_counted_by_result_and_errors_by_reason() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let cluster = metrics.controller("cluster");
        cluster.start().success();
        cluster.start().success();
        cluster.start().error("api_conflict");
        let text = render(&registry);
        assert!(
            text.contains(r#"pgpilot_reconcile_total{controller="cluster",result="success"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"pgpilot_reconcile_total{controller="cluster",result="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"pgpilot_reconcile_errors_total{controller="cluster",reason="api_conflict"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"pgpilot_reconcile_duration_seconds_count{controller="cluster"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"pgpilot_reconcile_in_flight{controller="cluster"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn queue_depth_sums_a_controllers_live_queues_and_waits_are_observed() {
        struct Fixed(usize);
        impl QueueDepth for Fixed {
            fn depth(&self) -> usize {
                self.0
            }
        }
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let cluster = metrics.controller("cluster");
        let _backup = metrics.controller("backup");
        let depth = |text: &str, controller: &str| {
            let line = format!(r#"pgpilot_reconcile_queue_depth{{controller="{controller}"}} "#);
            text.lines()
                .find_map(|l| l.strip_prefix(line.as_str()).map(str::to_owned))
        };
        let text = render(&registry);
        assert_eq!(depth(&text, "cluster").as_deref(), Some("0"), "{text}");
        assert_eq!(depth(&text, "backup").as_deref(), Some("0"), "{text}");
        let one: Arc<dyn QueueDepth> = Arc::new(Fixed(2));
        let other: Arc<dyn QueueDepth> = Arc::new(Fixed(3));
        cluster.watch_queue(&one);
        cluster.watch_queue(&other);
        assert_eq!(depth(&render(&registry), "cluster").as_deref(), Some("5"));
        drop(other);
        assert_eq!(depth(&render(&registry), "cluster").as_deref(), Some("2"));
        cluster.waited(Duration::from_millis(3));
        let text = render(&registry);
        assert!(
            text.contains(r#"pgpilot_reconcile_queue_wait_seconds_count{controller="cluster"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn in_flight_counts_open_reconciles_and_a_dropped_one_is_an_error() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let backup = metrics.controller("backup");
        let open = backup.start();
        assert!(
            render(&registry).contains(r#"pgpilot_reconcile_in_flight{controller="backup"} 1"#)
        );
        drop(open);
        let text = render(&registry);
        assert!(
            text.contains(r#"pgpilot_reconcile_in_flight{controller="backup"} 0"#),
            "{text}"
        );
        assert!(text.contains(r#"reason="cancelled"} 1"#), "{text}");
    }
}
