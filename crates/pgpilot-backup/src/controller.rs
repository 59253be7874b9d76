//! The backup controller as the manager runs it: its watches and the RBAC it needs. The
//! toolkit's runner does the rest (namespaces, caches, spans, metrics, backoff).

use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use pgpilot_api::labels;
use pgpilot_api::{BackupSchedule, PostgresBackup, PostgresCluster};
use pgpilot_postgres::triggers;
use pgpilot_postgres::version::DefaultImages;
use pgpilot_toolkit::runner::{self, Scope};
use pgpilot_toolkit::runtime::{Controller, RunContext, RunError, policy_rule as rule};

use crate::archiving::{self, observe::Caches};
use crate::metrics::BackupMetrics;
use crate::{backups, schedules};

/// Name in `--controllers`.
pub const NAME: &str = "backup";

/// The backup controller.
pub struct BackupController {
    pub default_images: DefaultImages,
    pub metrics: BackupMetrics,
}

#[async_trait::async_trait]
impl Controller for BackupController {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Read-only but for its Jobs and its part of the clusters' status: no pods/exec, no
    /// writes to what the cluster controller manages.
    fn rbac_rules(&self) -> Vec<PolicyRule> {
        vec![
            // Verification restores a backup into a throwaway cluster, then deletes it.
            rule(
                &["pgpilot.io"],
                &["postgresclusters"],
                &["get", "list", "watch", "create", "delete"],
            ),
            rule(
                &["pgpilot.io"],
                &["postgresclusters/status"],
                &["get", "patch"],
            ),
            // Schedules create their backups and delete those beyond their history limits;
            // `patch` sets the finalizer of backups to expire with their object.
            rule(
                &["pgpilot.io"],
                &["postgresbackups"],
                &["get", "list", "watch", "create", "delete", "patch"],
            ),
            rule(
                &["pgpilot.io"],
                &["postgresbackups/status"],
                &["get", "patch"],
            ),
            rule(
                &["pgpilot.io"],
                &["backupschedules"],
                &["get", "list", "watch"],
            ),
            rule(
                &["pgpilot.io"],
                &["backupschedules/status"],
                &["get", "patch"],
            ),
            rule(
                &["batch"],
                &["jobs"],
                &["get", "list", "watch", "create", "delete"],
            ),
            rule(&[""], &["pods", "secrets"], &["get", "list", "watch"]),
        ]
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    /// Three loops: clusters (the archive), PostgresBackups (one backup each) and
    /// BackupSchedules (backups on a schedule).
    async fn run(&self, ctx: RunContext) -> Result<(), RunError> {
        let clusters = runner::run(ctx.clone(), NAME, |scope: &mut Scope<PostgresCluster>| {
            let caches = Caches {
                // Instance pods (the primary's role label) and the Jobs' pods (their
                // outcome); Patroni's per-loop writes to the pods are filtered out.
                pods: scope.watches(of_a_cluster(), triggers::pod, cluster_of),
                jobs: scope.owns(),
                secrets: scope.owns(),
                // A backup that completes is the cluster's new last backup.
                backups: scope.watches(watcher::Config::default(), phase_of, cluster_of_backup),
            };
            Ok(archiving::Context {
                client: scope.ctx.client.clone(),
                field_manager: labels::field_manager(NAME),
                events: scope.ctx.events.clone(),
                metrics: scope.ctx.metrics.clone(),
                caches,
                default_images: self.default_images.clone(),
                backup_metrics: self.metrics.clone(),
            })
        });
        let ctx_schedules = ctx.clone();
        let backup_metrics = self.metrics.clone();
        let backups = runner::run(ctx, NAME, |scope: &mut Scope<PostgresBackup>| {
            let caches = backups::Caches {
                // Read when a backup starts (the backup's own requeue notices a change); a
                // verification's throwaway cluster wakes the backup it verifies.
                clusters: scope.watches(
                    watcher::Config::default(),
                    runner::every_change,
                    verified_backup,
                ),
                pods: scope.watches(of_a_cluster(), triggers::pod, |_| None),
                jobs: scope.owns(),
            };
            Ok(backups::Context {
                client: scope.ctx.client.clone(),
                field_manager: labels::field_manager(NAME),
                events: scope.ctx.events.clone(),
                metrics: scope.ctx.metrics.clone(),
                caches,
                backup_metrics: backup_metrics.clone(),
            })
        });
        let schedules = runner::run(ctx_schedules, NAME, |scope: &mut Scope<BackupSchedule>| {
            Ok(schedules::Context {
                client: scope.ctx.client.clone(),
                field_manager: labels::field_manager(NAME),
                events: scope.ctx.events.clone(),
                metrics: scope.ctx.metrics.clone(),
                // The schedule's backups (owned): a finished one may free the next run.
                backups: scope.owns(),
            })
        });
        futures::try_join!(clusters, backups, schedules).map(drop)
    }
}

/// The backup a throwaway verification cluster verifies, by its label.
fn verified_backup(cluster: PostgresCluster) -> Option<ObjectRef<PostgresBackup>> {
    let backup = cluster.labels().get(crate::verification::VERIFIES)?;
    Some(ObjectRef::new(backup).within(&cluster.namespace()?))
}

fn of_a_cluster() -> watcher::Config {
    watcher::Config::default().labels(labels::CLUSTER)
}

/// What of a PostgresBackup matters to its cluster: its phase.
fn phase_of(backup: &PostgresBackup) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    format!("{:?}", backup.status.as_ref().and_then(|s| s.phase)).hash(&mut h);
    Some(h.finish())
}

fn cluster_of_backup(backup: PostgresBackup) -> Option<ObjectRef<PostgresCluster>> {
    Some(ObjectRef::new(&backup.spec.cluster.name).within(&backup.namespace()?))
}

/// The cluster a pod belongs to, by its label.
fn cluster_of<K: ResourceExt>(obj: K) -> Option<ObjectRef<PostgresCluster>> {
    let cluster = obj.labels().get(labels::CLUSTER)?;
    Some(ObjectRef::new(cluster).within(&obj.namespace()?))
}
