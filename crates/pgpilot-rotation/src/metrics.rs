//! Rotations as Prometheus series. Counters by a fixed set of labels (strategy, failure
//! reason, consumer kind); the age of each SecretRotation's last rotation and the time to its
//! next are computed at scrape time from the controller's own cache, so a deleted
//! SecretRotation leaves no series behind.

use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use pgpilot_api::SecretRotation;
use pgpilot_toolkit::runner::Cache;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StrategyLabels {
    /// `Secret`, `InPlace` or `AlternatingUsers`.
    pub strategy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Default)]
pub struct RotationMetrics {
    rotations: Family<StrategyLabels, Counter>,
    failures: Family<ReasonLabels, Counter>,
    rolled: Family<KindLabels, Counter>,
    revoked: Counter,
    objects: Objects,
}

/// The SecretRotations the controller watches (one cache per watched namespace).
#[derive(Clone, Default)]
struct Objects(Arc<Mutex<Vec<Cache<SecretRotation>>>>);

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretRotations")
    }
}

impl RotationMetrics {
    /// Registers the families under `pgpilot_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("pgpilot");
        r.register(
            "secret_rotations",
            "Rotations carried out (new values written), by strategy",
            self.rotations.clone(),
        );
        r.register(
            "secret_rotation_failures",
            "Rotation steps that failed, by reason",
            self.failures.clone(),
        );
        r.register(
            "secret_rotation_consumers_rolled",
            "Consumers asked to roll after a rotation, by kind",
            self.rolled.clone(),
        );
        r.register(
            "secret_rotation_logins_revoked",
            "Previous logins invalidated after an AlternatingUsers rotation",
            self.revoked.clone(),
        );
        r.register_collector(Box::new(self.objects.clone()));
    }

    /// The cache of one watched namespace, read at scrape time.
    pub fn watch(&self, cache: Cache<SecretRotation>) {
        if let Ok(mut caches) = self.objects.0.lock() {
            caches.push(cache);
        }
    }

    pub fn rotated(&self, strategy: &str) {
        self.rotations
            .get_or_create(&StrategyLabels {
                strategy: strategy.to_owned(),
            })
            .inc();
    }

    pub fn failed(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn rolled(&self, kind: &str) {
        self.rolled
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn revoked(&self) {
        self.revoked.inc();
    }
}

impl Collector for Objects {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Timestamp::now().as_millisecond() as f64 / 1000.0;
        let mut since = Vec::new();
        let mut until = Vec::new();
        let caches = self.0.lock().map(|c| c.clone()).unwrap_or_default();
        for cache in &caches {
            for r in cache.all() {
                let labels = ObjectLabels {
                    namespace: r.namespace().unwrap_or_default(),
                    name: r.name_any(),
                };
                let status = r.status.as_ref();
                let seconds = |t: &pgpilot_api::common::Time| t.0.as_millisecond() as f64 / 1000.0;
                if let Some(last) = status.and_then(|s| s.last_rotation_time.as_ref()) {
                    since.push((labels.clone(), now - seconds(last)));
                }
                if let Some(next) = status.and_then(|s| s.next_rotation_time.as_ref()) {
                    until.push((labels, seconds(next) - now));
                }
            }
        }
        for (name, help, values) in [
            (
                "secret_rotation_since_last",
                "Seconds since the last completed rotation of each SecretRotation",
                since,
            ),
            (
                "secret_rotation_until_next",
                "Seconds until each SecretRotation's next rotation is due (negative: overdue)",
                until,
            ),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (labels, value) in values {
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
