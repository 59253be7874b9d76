//! The cluster controller as the manager runs it: watches, concurrency, backoff, metrics,
//! spans, and the RBAC it needs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config, Controller as KubeController};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_api::labels;
use pgpilot_toolkit::ReconcileError;
use pgpilot_toolkit::backoff::{Backoff, Policy};
use pgpilot_toolkit::metrics::ControllerMetrics;
use pgpilot_toolkit::runtime::{Controller, Namespaces, RunContext, RunError, policy_rule as rule};
use pgpilot_toolkit::telemetry::reconcile_span;
use tracing::Instrument;

use crate::error::Error;
use crate::patroni::Patroni;
use crate::reconcile::{Context, reconcile};
use crate::triggers;
use crate::validate::DefaultImages;

/// Name in `--controllers`.
pub const NAME: &str = "cluster";

/// The cluster controller.
pub struct ClusterController {
    pub default_images: DefaultImages,
}

const MANAGE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

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
            rule(&[""], &["services", "secrets", "serviceaccounts"], MANAGE),
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
            rule(
                &[""],
                &["pods"],
                &["get", "list", "watch", "patch", "update"],
            ),
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

    fn run(&self, ctx: RunContext) -> Pin<Box<dyn Future<Output = Result<(), RunError>> + Send>> {
        let default_images = self.default_images.clone();
        Box::pin(async move {
            let namespaces: Vec<Option<String>> = match &ctx.namespaces {
                Namespaces::All => vec![None],
                Namespaces::Only(list) => list.iter().cloned().map(Some).collect(),
            };
            let runs = namespaces
                .into_iter()
                .map(|ns| run_in(ctx.clone(), ns, default_images.clone()));
            futures::future::join_all(runs).await;
            Ok(())
        })
    }
}

fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

struct Shared {
    inner: Arc<Context>,
    metrics: ControllerMetrics,
    backoff: Backoff<ObjectRef<PostgresCluster>>,
}

async fn run_in(ctx: RunContext, ns: Option<String>, default_images: DefaultImages) {
    let client = ctx.client.clone();
    let patroni = match Patroni::new() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the Patroni client");
            return;
        }
    };
    let shared = Arc::new(Shared {
        inner: Arc::new(Context {
            client: client.clone(),
            field_manager: labels::field_manager(NAME),
            default_images,
            events: ctx.events.clone(),
            metrics: ctx.metrics.clone(),
            patroni,
        }),
        metrics: ctx.metrics.clone(),
        backoff: Backoff::new(Policy::default()),
    });
    // Caches hold only what we watch, stripped of managedFields (the bulk of each object).
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE
    ));
    let (reader, writer) = reflector::store();
    let clusters = watcher(
        api::<PostgresCluster>(&client, &ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|c| c.managed_fields_mut().clear())
    .reflect(writer)
    .touched_objects();
    let statefulsets = watcher(api::<StatefulSet>(&client, &ns), owned.clone())
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .touched_objects();
    let services = watcher(api::<Service>(&client, &ns), owned.clone())
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .touched_objects();
    let secrets = watcher(api::<PartialObjectMeta<Secret>>(&client, &ns), owned)
        .default_backoff()
        .touched_objects();
    // Pods carry the role Patroni gives them: a failover shows up here first. Patroni's own
    // writes that decide nothing are filtered out (triggers.rs).
    let pods = watcher(
        api::<Pod>(&client, &ns),
        watcher::Config::default().labels(labels::CLUSTER),
    )
    .default_backoff()
    .modify(|o| o.managed_fields_mut().clear())
    .touched_objects()
    .predicate_filter(triggers::pod, PredicateConfig::default());
    // Patroni's DCS ConfigMaps name the leader and the synchronous standby (Ready waits for
    // one); they also hold the ConfigMap the controller applies.
    let config_maps = watcher(
        api::<ConfigMap>(&client, &ns),
        watcher::Config::default().labels(labels::CLUSTER),
    )
    .default_backoff()
    .modify(|o| o.managed_fields_mut().clear())
    .touched_objects()
    .predicate_filter(triggers::config_map, PredicateConfig::default());
    let shutdown = ctx.shutdown.clone();
    KubeController::for_stream(clusters, reader)
        .owns_stream(statefulsets)
        .owns_stream(services)
        .owns_stream(secrets)
        .watches_stream(pods, |pod: Pod| cluster_of(&pod))
        .watches_stream(config_maps, |cm: ConfigMap| cluster_of(&cm))
        .with_config(Config::default().concurrency(ctx.concurrency))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile_measured, error_policy, shared)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "cluster controller event");
            }
        })
        .await;
}

/// The cluster an instance pod or a Patroni ConfigMap belongs to, by its label (Patroni's
/// ConfigMaps have no owner until the controller adopts them).
fn cluster_of<K: ResourceExt>(obj: &K) -> Option<ObjectRef<PostgresCluster>> {
    let cluster = obj.labels().get(labels::CLUSTER)?;
    Some(ObjectRef::new(cluster).within(&obj.namespace()?))
}

async fn reconcile_measured(
    cluster: Arc<PostgresCluster>,
    shared: Arc<Shared>,
) -> Result<Action, Error> {
    let span = reconcile_span(
        NAME,
        cluster.namespace().as_deref(),
        &cluster.name_any(),
        cluster.metadata.generation,
    );
    let timer = shared.metrics.start();
    let result = reconcile(cluster.clone(), shared.inner.clone())
        .instrument(span.clone())
        .await;
    match &result {
        Ok(_) => {
            shared
                .backoff
                .succeeded(&ObjectRef::from_obj(cluster.as_ref()));
            timer.success();
        }
        Err(e) => {
            span.in_scope(
                || tracing::warn!(error = %e, reason = e.metric_label(), "reconcile failed"),
            );
            timer.error(e.metric_label());
        }
    }
    result
}

fn error_policy(cluster: Arc<PostgresCluster>, error: &Error, shared: Arc<Shared>) -> Action {
    if error.is_retryable() {
        Action::requeue(
            shared
                .backoff
                .failed(&ObjectRef::from_obj(cluster.as_ref())),
        )
    } else {
        // A bad spec waits for the spec to change (the watch brings it back).
        Action::await_change()
    }
}
