//! The cluster controller as the manager runs it: its watches and the RBAC it needs. The
//! toolkit's runner does the rest (namespaces, caches, spans, metrics, backoff).

use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use pgpilot_api::PostgresCluster;
use pgpilot_api::labels;
use pgpilot_postgres::patroni::Patroni;
use pgpilot_toolkit::runner::{self, Scope};
use pgpilot_toolkit::runtime::{Controller, RunContext, RunError, policy_rule as rule};

use crate::context::Context;
use crate::observe::Caches;
use crate::validate::DefaultImages;
use pgpilot_postgres::triggers;

/// Name in `--controllers`.
pub const NAME: &str = "cluster";

/// The cluster controller.
pub struct ClusterController {
    pub default_images: DefaultImages,
    /// Image of the metrics exporter sidecar.
    pub exporter_image: String,
    /// The manager's own pods (when it runs in one), let in by every cluster's NetworkPolicy.
    pub operator: Option<crate::OperatorPods>,
    /// Each cluster's health, from the cache at scrape time.
    pub metrics: crate::metrics::ClusterMetrics,
}

const MANAGE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

#[async_trait::async_trait]
impl Controller for ClusterController {
    fn name(&self) -> &'static str {
        NAME
    }

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
                &["get", "patch", "update"],
            ),
            rule(&["apps"], &["statefulsets"], MANAGE),
            rule(&["policy"], &["poddisruptionbudgets"], MANAGE),
            rule(&["networking.k8s.io"], &["networkpolicies"], MANAGE),
            rule(&[""], &["services", "serviceaccounts"], MANAGE),
            // Secrets are applied and never updated whole or deleted: a credential outlives
            // the spec that asked for it (owner references delete them with the cluster).
            rule(
                &[""],
                &["secrets"],
                &["get", "list", "watch", "create", "patch"],
            ),
            // ConfigMaps, Pods and Endpoints also with what Patroni's Role grants: RBAC only
            // lets the operator grant rights it holds itself.
            rule(
                &[""],
                &["configmaps"],
                &[
                    "get",
                    "list",
                    "watch",
                    "create",
                    "update",
                    "patch",
                    "delete",
                    "deletecollection",
                ],
            ),
            // Pods are deleted (clusters of one or two) or evicted by the pod roll.
            rule(
                &[""],
                &["pods"],
                &["get", "list", "watch", "patch", "update", "delete"],
            ),
            rule(&[""], &["pods/eviction"], &["create"]),
            // The previous log of an instance that crash-loops without saying why on exit.
            rule(&[""], &["pods/log"], &["get"]),
            rule(
                &[""],
                &["endpoints"],
                &[
                    "get", "list", "watch", "create", "update", "patch", "delete",
                ],
            ),
            rule(
                &["rbac.authorization.k8s.io"],
                &["roles", "rolebindings"],
                MANAGE,
            ),
            // Volumes grow through their claims, when their class allows it; claims follow
            // the spec's retention policy (owned by the cluster, or deleted on scale-down).
            rule(
                &[""],
                &["persistentvolumeclaims"],
                &["get", "list", "watch", "patch", "delete"],
            ),
            rule(&["storage.k8s.io"], &["storageclasses"], &["get"]),
        ]
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    async fn run(&self, ctx: RunContext) -> Result<(), RunError> {
        let patroni = Patroni::new()?;
        let default_images = self.default_images.clone();
        let exporter_image = self.exporter_image.clone();
        let operator = self.operator.clone();
        runner::run(ctx, NAME, move |scope: &mut Scope<PostgresCluster>| {
            let of_a_cluster = || watcher::Config::default().labels(labels::CLUSTER);
            let caches = Caches {
                statefulsets: scope.owns(),
                services: scope.owns(),
                secrets: scope.owns(),
                service_accounts: scope.owns(),
                roles: scope.owns(),
                role_bindings: scope.owns(),
                pdbs: scope.owns(),
                network_policies: scope.owns(),
                // Instance pods (not the backup controller's Job pods) carry the role Patroni
                // gives them (a failover shows here first), and Patroni's DCS ConfigMaps its
                // leader and synchronous standby; its per-loop writes that decide nothing are
                // filtered out (pgpilot_postgres::triggers).
                pods: scope.watches(
                    watcher::Config::default().labels(&format!(
                        "{},{}={}",
                        labels::CLUSTER,
                        labels::COMPONENT,
                        pgpilot_postgres::names::COMPONENT_INSTANCE
                    )),
                    triggers::pod,
                    cluster_of,
                ),
                config_maps: scope.watches(of_a_cluster(), triggers::config_map, cluster_of),
                claims: scope.watches(of_a_cluster(), runner::every_change, cluster_of),
            };
            self.metrics.watch(scope.objects.clone());
            Ok(Context {
                client: scope.ctx.client.clone(),
                field_manager: labels::field_manager(NAME),
                default_images: default_images.clone(),
                exporter_image: exporter_image.clone(),
                events: scope.ctx.events.clone(),
                metrics: scope.ctx.metrics.clone(),
                patroni: patroni.clone(),
                caches,
                operator: operator.clone(),
                crash_logs: Default::default(),
                health: self.metrics.clone(),
            })
        })
        .await
    }
}

/// The cluster an instance pod, a Patroni ConfigMap or a claim belongs to, by its label
/// (Patroni's ConfigMaps have no owner until the controller adopts them).
fn cluster_of<K: ResourceExt>(obj: K) -> Option<ObjectRef<PostgresCluster>> {
    let cluster = obj.labels().get(labels::CLUSTER)?;
    Some(ObjectRef::new(cluster).within(&obj.namespace()?))
}
