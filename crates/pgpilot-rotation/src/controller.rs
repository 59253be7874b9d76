//! The secret-rotation controller as the manager runs it: its watches and the RBAC it needs.
//! The toolkit's runner does the rest (namespaces, caches, spans, metrics, backoff).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use pgpilot_api::{SecretRotation, labels};
use pgpilot_postgres::triggers;
use pgpilot_toolkit::runner::{self, Scope};
use pgpilot_toolkit::runtime::{Controller, RunContext, RunError, policy_rule as rule};

use crate::consumers::{Workload, rotations_of};
use crate::metrics::RotationMetrics;
use crate::reconcile::{Caches, Context};

/// Name in `--controllers`.
pub const NAME: &str = "secret-rotation";

/// The secret-rotation controller.
#[derive(Default)]
pub struct RotationController {
    pub metrics: RotationMetrics,
}

#[async_trait::async_trait]
impl Controller for RotationController {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Reads SecretRotations and writes their status; reads and writes Secrets (the rotated
    /// ones, by merge patch or create); reads instance pods (where the primary is); patches
    /// the pod templates of consumers. No pods/exec, no deletes.
    fn rbac_rules(&self) -> Vec<PolicyRule> {
        vec![
            rule(
                &["pgpilot.io"],
                &["secretrotations"],
                &["get", "list", "watch"],
            ),
            rule(
                &["pgpilot.io"],
                &["secretrotations/status"],
                &["get", "patch"],
            ),
            rule(
                &[""],
                &["secrets"],
                &["get", "list", "watch", "create", "patch"],
            ),
            rule(&[""], &["pods"], &["get", "list", "watch"]),
            rule(
                &["apps"],
                &["deployments", "statefulsets", "daemonsets"],
                &["get", "list", "watch", "patch"],
            ),
        ]
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    async fn run(&self, ctx: RunContext) -> Result<(), RunError> {
        runner::run(ctx, NAME, |scope: &mut Scope<SecretRotation>| {
            let caches = Caches {
                secrets: scope.watches(
                    watcher::Config::default(),
                    runner::every_change,
                    rotation_of_secret,
                ),
                pods: scope.watches(
                    watcher::Config::default().labels(labels::CLUSTER),
                    triggers::pod,
                    |_: Pod| None,
                ),
                deployments: scope.watches(
                    watcher::Config::default(),
                    runner::every_change,
                    rotations_of_consumer::<Deployment>,
                ),
                statefulsets: scope.watches(
                    watcher::Config::default(),
                    runner::every_change,
                    rotations_of_consumer::<StatefulSet>,
                ),
                daemonsets: scope.watches(
                    watcher::Config::default(),
                    runner::every_change,
                    rotations_of_consumer::<DaemonSet>,
                ),
            };
            self.metrics.watch(scope.objects.clone());
            Ok(Context {
                client: scope.ctx.client.clone(),
                field_manager: labels::field_manager(NAME),
                events: scope.ctx.events.clone(),
                metrics: scope.ctx.metrics.clone(),
                caches,
                rotations: scope.objects.clone(),
                rotation_metrics: self.metrics.clone(),
            })
        })
        .await
    }
}

/// A Secret a rotation wrote names it.
fn rotation_of_secret(secret: Secret) -> Option<ObjectRef<SecretRotation>> {
    let by = secret.annotations().get(labels::ROTATED_BY)?;
    Some(ObjectRef::new(by).within(&secret.namespace()?))
}

/// A consumer's pod template names every rotation that asked it to roll.
fn rotations_of_consumer<W: Workload>(w: W) -> Vec<ObjectRef<SecretRotation>> {
    let Some(ns) = w.namespace() else {
        return vec![];
    };
    rotations_of(w.template_annotations())
        .into_iter()
        .map(|name| ObjectRef::new(&name).within(&ns))
        .collect()
}
