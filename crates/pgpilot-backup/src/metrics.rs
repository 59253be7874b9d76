//! What the backup controller knows about each cluster's backups, as Prometheus series
//! labelled by namespace and cluster (bounded by the clusters there are) and, for failures,
//! by a reason from a fixed set.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub namespace: String,
    pub cluster: String,
    /// A condition reason (`AccessDenied`, `EndpointUnreachable`, …, `Other`).
    pub reason: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone)]
pub struct BackupMetrics {
    last_success: Family<ClusterLabels, FloatGauge>,
    last_size: Family<ClusterLabels, Gauge>,
    duration: Family<ClusterLabels, Histogram>,
    failures: Family<FailureLabels, Counter>,
    last_archived: Family<ClusterLabels, FloatGauge>,
    archive_lag: Family<ClusterLabels, FloatGauge>,
    archive_pending: Family<ClusterLabels, Gauge>,
    verification: Family<ClusterLabels, Gauge>,
    verification_time: Family<ClusterLabels, FloatGauge>,
}

impl Default for BackupMetrics {
    fn default() -> Self {
        Self {
            last_success: Family::default(),
            last_size: Family::default(),
            // 1 s to ~9 h.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 16))
            }),
            failures: Family::default(),
            last_archived: Family::default(),
            archive_lag: Family::default(),
            archive_pending: Family::default(),
            verification: Family::default(),
            verification_time: Family::default(),
        }
    }
}

fn labels(namespace: &str, cluster: &str) -> ClusterLabels {
    ClusterLabels {
        namespace: namespace.to_owned(),
        cluster: cluster.to_owned(),
    }
}

impl BackupMetrics {
    /// Registers the families under `pgpilot_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("pgpilot");
        r.register_with_unit(
            "backup_last_success_timestamp",
            "When the cluster's newest completed backup finished (Unix time)",
            Unit::Seconds,
            self.last_success.clone(),
        );
        r.register_with_unit(
            "backup_last_size",
            "Database size covered by the cluster's newest completed backup",
            Unit::Bytes,
            self.last_size.clone(),
        );
        r.register_with_unit(
            "backup_duration",
            "Time from start to end of completed backups",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register(
            "backup_failures",
            "Failed backups by reason",
            self.failures.clone(),
        );
        r.register_with_unit(
            "wal_last_archived_timestamp",
            "When the primary last archived a WAL segment (Unix time, pg_stat_archiver)",
            Unit::Seconds,
            self.last_archived.clone(),
        );
        r.register_with_unit(
            "wal_archive_lag",
            "Age of the newest archived WAL segment when last looked at (every 30 s)",
            Unit::Seconds,
            self.archive_lag.clone(),
        );
        r.register(
            "wal_archive_pending_segments",
            "WAL segments written but not archived yet",
            self.archive_pending.clone(),
        );
        r.register(
            "backup_verification_passed",
            "1 if the cluster's newest backup verification passed, 0 if it failed",
            self.verification.clone(),
        );
        r.register_with_unit(
            "backup_verification_timestamp",
            "When the cluster's newest backup verification finished (Unix time)",
            Unit::Seconds,
            self.verification_time.clone(),
        );
    }

    /// The newest completed backup: when it finished and what it covered.
    pub fn last_backup(&self, namespace: &str, cluster: &str, stop: i64, size: Option<i64>) {
        let l = labels(namespace, cluster);
        self.last_success.get_or_create(&l).set(stop as f64);
        if let Some(size) = size {
            self.last_size.get_or_create(&l).set(size);
        }
    }

    /// A backup that just completed.
    pub fn completed(&self, namespace: &str, cluster: &str, seconds: f64) {
        self.duration
            .get_or_create(&labels(namespace, cluster))
            .observe(seconds);
    }

    /// A backup that just failed, for `reason`.
    pub fn failed(&self, namespace: &str, cluster: &str, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                namespace: namespace.to_owned(),
                cluster: cluster.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The archive as the primary reported it, at `now` (Unix seconds).
    pub fn archive(
        &self,
        namespace: &str,
        cluster: &str,
        last_archived: Option<i64>,
        pending: Option<u64>,
        now: i64,
    ) {
        let l = labels(namespace, cluster);
        if let Some(at) = last_archived {
            self.last_archived.get_or_create(&l).set(at as f64);
            self.archive_lag
                .get_or_create(&l)
                .set((now - at).max(0) as f64);
        }
        if let Some(p) = pending {
            self.archive_pending
                .get_or_create(&l)
                .set(i64::try_from(p).unwrap_or(i64::MAX));
        }
    }

    /// A verification of one of the cluster's backups that finished at `at`.
    pub fn verified(&self, namespace: &str, cluster: &str, passed: bool, at: i64) {
        let l = labels(namespace, cluster);
        self.verification.get_or_create(&l).set(i64::from(passed));
        self.verification_time.get_or_create(&l).set(at as f64);
    }

    /// Drops the series of a cluster without backups.
    pub fn forget(&self, namespace: &str, cluster: &str) {
        let l = labels(namespace, cluster);
        for f in [
            &self.last_success,
            &self.last_archived,
            &self.archive_lag,
            &self.verification_time,
        ] {
            f.remove(&l);
        }
        for f in [&self.last_size, &self.archive_pending, &self.verification] {
            f.remove(&l);
        }
        self.duration.remove(&l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn series_are_labelled_by_cluster_and_forgotten_with_it() {
        let m = BackupMetrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.last_backup("prod", "db", 1_800_000_000, Some(1 << 30));
        m.completed("prod", "db", 42.0);
        m.failed("prod", "db", "AccessDenied");
        m.archive("prod", "db", Some(1_800_000_000), Some(3), 1_800_000_004);
        m.verified("prod", "db", true, 1_800_000_100);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        for line in [
            "pgpilot_backup_last_success_timestamp_seconds{namespace=\"prod\",cluster=\"db\"} 1800000000.0",
            "pgpilot_backup_last_size_bytes{namespace=\"prod\",cluster=\"db\"} 1073741824",
            "pgpilot_backup_failures_total{namespace=\"prod\",cluster=\"db\",reason=\"AccessDenied\"} 1",
            "pgpilot_wal_archive_lag_seconds{namespace=\"prod\",cluster=\"db\"} 4.0",
            "pgpilot_wal_archive_pending_segments{namespace=\"prod\",cluster=\"db\"} 3",
            "pgpilot_backup_verification_passed{namespace=\"prod\",cluster=\"db\"} 1",
            "pgpilot_backup_duration_seconds_count{namespace=\"prod\",cluster=\"db\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
        m.forget("prod", "db");
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        assert!(!out.contains("pgpilot_wal_archive_lag_seconds{"), "{out}");
    }
}
