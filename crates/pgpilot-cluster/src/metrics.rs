//! Each PostgresCluster's health as Prometheus series, computed at scrape time from the
//! controller's own cache of the clusters' status (what Patroni reported at the last
//! reconcile) and from what the last reconcile noted (the server certificate's expiry): a
//! deleted cluster leaves no series behind, and a scrape costs no API call.
//! Labels: namespace and cluster, bounded by the clusters there are.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use pgpilot_api::PostgresCluster;
use pgpilot_toolkit::conditions;
use pgpilot_toolkit::runner::Cache;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::status::READY;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    namespace: String,
    cluster: String,
}

/// The clusters the controller watches (one cache per watched namespace), and the expiry
/// of each one's server certificate (Unix time) by namespace and name.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    caches: Arc<Mutex<Vec<Cache<PostgresCluster>>>>,
    certificates: Arc<Mutex<BTreeMap<(String, String), i64>>>,
}

impl std::fmt::Debug for ClusterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresClusters")
    }
}

impl ClusterMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry
            .sub_registry_with_prefix("pgpilot")
            .register_collector(Box::new(self.clone()));
    }

    /// The cache of one watched namespace, read at scrape time.
    pub fn watch(&self, cache: Cache<PostgresCluster>) {
        if let Ok(mut caches) = self.caches.lock() {
            caches.push(cache);
        }
    }

    /// When the server certificate the cluster's instances serve expires (Unix time).
    pub fn certificate_expires(&self, namespace: &str, cluster: &str, not_after: i64) {
        if let Ok(mut certificates) = self.certificates.lock() {
            certificates.insert((namespace.to_owned(), cluster.to_owned()), not_after);
        }
    }
}

/// The certificate expiries of the clusters that still exist; the others are forgotten.
fn certificate_expiries(
    clusters: &[Arc<PostgresCluster>],
    certificates: &mut BTreeMap<(String, String), i64>,
) -> Vec<(ClusterLabels, i64)> {
    let live: std::collections::BTreeSet<(String, String)> = clusters
        .iter()
        .map(|c| (c.namespace().unwrap_or_default(), c.name_any()))
        .collect();
    certificates.retain(|key, _| live.contains(key));
    certificates
        .iter()
        .map(|((namespace, cluster), not_after)| {
            (
                ClusterLabels {
                    namespace: namespace.clone(),
                    cluster: cluster.clone(),
                },
                *not_after,
            )
        })
        .collect()
}

/// One gauge family: name, help, unit, and a value per cluster (absent: no sample).
struct Family {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    value: fn(&PostgresCluster) -> Option<f64>,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "cluster_ready",
        help: "1 if the cluster's Ready condition is True, else 0",
        unit: None,
        value: |c| {
            let status = c.status.as_ref()?;
            Some(f64::from(u8::from(conditions::is_true(
                &status.conditions,
                READY,
            ))))
        },
    },
    Family {
        name: "cluster_instances",
        help: "Instances the cluster's spec asks for",
        unit: None,
        value: |c| Some(f64::from(c.spec.instances)),
    },
    Family {
        name: "cluster_instances_ready",
        help: "Instances running and ready (primary, or replica streaming without too much lag)",
        unit: None,
        value: |c| Some(f64::from(c.status.as_ref()?.ready_instances)),
    },
    Family {
        name: "cluster_primary",
        help: "1 if a ready primary serves the cluster's read-write Service, else 0",
        unit: None,
        value: |c| {
            let status = c.status.as_ref()?;
            let primary = status.current_primary.as_deref();
            let serving = status
                .instances
                .iter()
                .any(|i| Some(i.name.as_str()) == primary && i.ready);
            Some(f64::from(u8::from(serving)))
        },
    },
    Family {
        name: "cluster_replication_lag",
        help: "The largest replay lag of the cluster's replicas behind the primary",
        unit: Some(Unit::Bytes),
        value: |c| {
            let status = c.status.as_ref()?;
            let primary = status.current_primary.as_deref();
            status
                .instances
                .iter()
                .filter(|i| Some(i.name.as_str()) != primary)
                .filter_map(|i| i.lag_bytes)
                .max()
                .map(|lag| lag as f64)
        },
    },
    Family {
        name: "cluster_timeline",
        help: "The cluster's PostgreSQL timeline (each failover or switchover raises it)",
        unit: None,
        value: |c| {
            c.status
                .as_ref()?
                .instances
                .iter()
                .filter_map(|i| i.timeline)
                .max()
                .map(|t| t as f64)
        },
    },
];

impl Collector for ClusterMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let caches = self.caches.lock().map(|c| c.clone()).unwrap_or_default();
        let clusters: Vec<_> = caches.iter().flat_map(|c| c.all()).collect();
        for f in FAMILIES {
            let mut family =
                encoder.encode_descriptor(f.name, f.help, f.unit.as_ref(), MetricType::Gauge)?;
            for c in &clusters {
                if let Some(value) = (f.value)(c) {
                    let labels = ClusterLabels {
                        namespace: c.namespace().unwrap_or_default(),
                        cluster: c.name_any(),
                    };
                    ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let expiries = match self.certificates.lock() {
            Ok(mut certificates) => certificate_expiries(&clusters, &mut certificates),
            Err(_) => Vec::new(),
        };
        let mut family = encoder.encode_descriptor(
            "cluster_certificate_expiry_timestamp",
            "When the server certificate the cluster's instances serve expires (Unix time)",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (labels, not_after) in expiries {
            ConstGauge::new(not_after).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::fixtures::{THREE, cluster};
    use pgpilot_api::cluster::InstanceStatus;

    fn instance(name: &str, ready: bool, timeline: i64, lag: Option<i64>) -> InstanceStatus {
        serde_json::from_value(serde_json::json!({
            "name": name, "ready": ready, "timeline": timeline, "lagBytes": lag,
        }))
        .unwrap()
    }

    fn values(c: &PostgresCluster) -> Vec<(&'static str, Option<f64>)> {
        FAMILIES.iter().map(|f| (f.name, (f.value)(c))).collect()
    }

    #[test]
    fn certificate_expiries_are_kept_for_existing_clusters_only() {
        let live = cluster(THREE);
        let mut certificates = BTreeMap::from([
            (("prod".to_owned(), "db".to_owned()), 1_900_000_000),
            (("prod".to_owned(), "gone".to_owned()), 1_800_000_000),
        ]);
        let samples = certificate_expiries(&[Arc::new(live)], &mut certificates);
        assert_eq!(
            samples,
            [(
                ClusterLabels {
                    namespace: "prod".into(),
                    cluster: "db".into()
                },
                1_900_000_000
            )]
        );
        assert_eq!(
            certificates.len(),
            1,
            "the deleted cluster's entry is dropped"
        );
    }

    #[test]
    fn a_cluster_without_status_has_only_its_desired_size() {
        let c = cluster(THREE);
        assert_eq!(
            values(&c),
            [
                ("cluster_ready", None),
                ("cluster_instances", Some(3.0)),
                ("cluster_instances_ready", None),
                ("cluster_primary", None),
                ("cluster_replication_lag", None),
                ("cluster_timeline", None),
            ]
        );
    }

    #[test]
    fn health_comes_from_the_status_patroni_reported() {
        let mut c = cluster(THREE);
        c.status = Some(
            serde_json::from_value(serde_json::json!({
                "conditions": [{"type": "Ready", "status": "True", "reason": "AllInstancesReady",
                    "message": "", "lastTransitionTime": "2026-12-07T00:00:00Z"}],
                "currentPrimary": "db-1",
                "readyInstances": 2,
            }))
            .unwrap(),
        );
        let status = c.status.as_mut().unwrap();
        status.instances = vec![
            instance("db-0", true, 3, Some(4096)),
            instance("db-1", true, 3, None),
            instance("db-2", false, 2, Some(1 << 20)),
        ];
        assert_eq!(
            values(&c),
            [
                ("cluster_ready", Some(1.0)),
                ("cluster_instances", Some(3.0)),
                ("cluster_instances_ready", Some(2.0)),
                ("cluster_primary", Some(1.0)),
                ("cluster_replication_lag", Some(1048576.0)),
                ("cluster_timeline", Some(3.0)),
            ]
        );
        // The primary stopped answering: no ready primary.
        c.status.as_mut().unwrap().instances[1].ready = false;
        assert_eq!(values(&c)[3], ("cluster_primary", Some(0.0)));
        c.status.as_mut().unwrap().current_primary = None;
        assert_eq!(values(&c)[3], ("cluster_primary", Some(0.0)));
    }
}
