//! The backup controller as the manager runs it: its watches and the RBAC it needs. The
//! toolkit's runner does the rest (namespaces, caches, spans, metrics, backoff).

use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use pgpilot_api::PostgresCluster;
use pgpilot_api::labels;
use pgpilot_postgres::triggers;
use pgpilot_toolkit::runner::{self, Scope};
use pgpilot_toolkit::runtime::{Controller, RunContext, RunError, policy_rule as rule};

use crate::context::Context;
use crate::observe::Caches;

/// Name in `--controllers`.
pub const NAME: &str = "backup";

/// The backup controller.
pub struct BackupController;

#[async_trait::async_trait]
impl Controller for BackupController {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Read-only but for its Jobs and its part of the clusters' status: no pods/exec, no
    /// writes to what the cluster controller manages.
    fn rbac_rules(&self) -> Vec<PolicyRule> {
        vec![
            rule(
                &["pgpilot.io"],
                &["postgresclusters"],
                &["get", "list", "watch"],
            ),
            rule(
                &["pgpilot.io"],
                &["postgresclusters/status"],
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

    async fn run(&self, ctx: RunContext) -> Result<(), RunError> {
        runner::run(ctx, NAME, move |scope: &mut Scope<PostgresCluster>| {
            let of_a_cluster = || watcher::Config::default().labels(labels::CLUSTER);
            let caches = Caches {
                // Instance pods (the primary's role label) and the Jobs' pods (their
                // outcome); Patroni's per-loop writes to the pods are filtered out.
                pods: scope.watches(of_a_cluster(), triggers::pod, cluster_of),
                jobs: scope.owns(),
                secrets: scope.owns(),
            };
            Ok(Context {
                client: scope.ctx.client.clone(),
                field_manager: labels::field_manager(NAME),
                events: scope.ctx.events.clone(),
                metrics: scope.ctx.metrics.clone(),
                caches,
            })
        })
        .await
    }
}

/// The cluster a pod belongs to, by its label.
fn cluster_of<K: ResourceExt>(obj: K) -> Option<ObjectRef<PostgresCluster>> {
    let cluster = obj.labels().get(labels::CLUSTER)?;
    Some(ObjectRef::new(cluster).within(&obj.namespace()?))
}
