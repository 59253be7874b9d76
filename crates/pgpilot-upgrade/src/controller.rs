//! The upgrade controller as the manager runs it: its watches and the RBAC it needs. The
//! toolkit's runner does the rest (namespaces, caches, spans, metrics, backoff).

use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use pgpilot_api::{PostgresBackup, PostgresCluster, PostgresUpgrade, labels};
use pgpilot_postgres::triggers;
use pgpilot_postgres::version::DefaultImages;
use pgpilot_toolkit::runner::{self, Scope};
use pgpilot_toolkit::runtime::{Controller, RunContext, RunError, policy_rule as rule};

use crate::major;
use crate::metrics::UpgradeMetrics;
use crate::reconcile::{Caches, Context};

/// Name in `--controllers`.
pub const NAME: &str = "upgrade";

/// The upgrade controller.
pub struct UpgradeController {
    pub default_images: DefaultImages,
    pub metrics: UpgradeMetrics,
}

#[async_trait::async_trait]
impl Controller for UpgradeController {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Reads what the cluster controller manages; writes its upgrades, their pre-upgrade
    /// backups, its annotations on the clusters and, for a major upgrade, its Jobs, Patroni's
    /// `initialize` key and the replicas' volumes (deleted to be cloned again). No pods/exec.
    fn rbac_rules(&self) -> Vec<PolicyRule> {
        vec![
            // `patch`: the annotations that let the cluster controller move the instances.
            rule(
                &["pgpilot.io"],
                &["postgresclusters"],
                &["get", "list", "watch", "patch"],
            ),
            rule(
                &["pgpilot.io"],
                &["postgresclusters/status"],
                &["get", "patch"],
            ),
            rule(
                &["pgpilot.io"],
                &["postgresupgrades"],
                &["get", "list", "watch", "create"],
            ),
            rule(
                &["pgpilot.io"],
                &["postgresupgrades/status"],
                &["get", "patch"],
            ),
            rule(
                &["pgpilot.io"],
                &["postgresbackups"],
                &["get", "list", "watch", "create"],
            ),
            rule(&["apps"], &["statefulsets"], &["get", "list", "watch"]),
            rule(&[""], &["pods"], &["get", "list", "watch"]),
            rule(&["batch"], &["jobs"], &["get", "list", "watch", "create"]),
            rule(
                &[""],
                &["persistentvolumeclaims"],
                &["get", "list", "watch", "delete"],
            ),
            // Patroni's `<cluster>-config`: the old system identifier goes.
            rule(&[""], &["configmaps"], &["get", "patch"]),
        ]
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    /// One loop, by cluster: an upgrade, its backup, the pin and the pods all wake the
    /// cluster they belong to.
    async fn run(&self, ctx: RunContext) -> Result<(), RunError> {
        runner::run(ctx, NAME, |scope: &mut Scope<PostgresCluster>| {
            let caches = Caches {
                upgrades: scope.watches(
                    watcher::Config::default(),
                    runner::every_change,
                    cluster_of_upgrade,
                ),
                statefulsets: scope.watches(
                    watcher::Config::default().labels(labels::CLUSTER),
                    runner::every_change,
                    cluster_of,
                ),
                pods: scope.watches(
                    watcher::Config::default().labels(labels::CLUSTER),
                    triggers::pod,
                    cluster_of,
                ),
                backups: scope.watches(
                    watcher::Config::default(),
                    runner::every_change,
                    cluster_of_backup,
                ),
                jobs: scope.watches(
                    watcher::Config::default().labels(&format!(
                        "{}={}",
                        labels::COMPONENT,
                        major::COMPONENT
                    )),
                    runner::every_change,
                    cluster_of,
                ),
                volumes: scope.watches(
                    watcher::Config::default().labels(labels::CLUSTER),
                    runner::every_change,
                    cluster_of,
                ),
            };
            Ok(Context {
                client: scope.ctx.client.clone(),
                field_manager: labels::field_manager(NAME),
                events: scope.ctx.events.clone(),
                metrics: scope.ctx.metrics.clone(),
                caches,
                default_images: self.default_images.clone(),
                upgrade_metrics: self.metrics.clone(),
            })
        })
        .await
    }
}

fn cluster_of<K: ResourceExt>(object: K) -> Option<ObjectRef<PostgresCluster>> {
    let cluster = object.labels().get(labels::CLUSTER)?;
    Some(ObjectRef::new(cluster).within(&object.namespace()?))
}

fn cluster_of_upgrade(u: PostgresUpgrade) -> Option<ObjectRef<PostgresCluster>> {
    Some(ObjectRef::new(&u.spec.cluster.name).within(&u.namespace()?))
}

fn cluster_of_backup(b: PostgresBackup) -> Option<ObjectRef<PostgresCluster>> {
    Some(ObjectRef::new(&b.spec.cluster.name).within(&b.namespace()?))
}
