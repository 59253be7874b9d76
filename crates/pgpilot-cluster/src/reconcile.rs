//! One reconcile of one PostgresCluster: read → validate → desired → apply → status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_api::cluster::Ensure;
use pgpilot_api::labels;
use pgpilot_toolkit::apply::{Outcome, apply};
use pgpilot_toolkit::conditions::Status;
use pgpilot_toolkit::events::Events;
use pgpilot_toolkit::metrics::ControllerMetrics;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::actions::{self, Instance, Members};
use crate::desired::{self, Csprng, Desired, Inputs, existing_password};
use crate::error::Error;
use crate::names::{Names, POSTGRES_PORT, SUPERUSER};
use crate::patroni::Patroni;
use crate::sql;
use crate::status::{self, Observed, pod_ready};
use crate::storage;
use crate::validate::{self, DefaultImages};

/// What every reconcile of this controller shares.
pub struct Context {
    pub client: Client,
    pub field_manager: String,
    pub default_images: DefaultImages,
    pub events: Events,
    pub metrics: ControllerMetrics,
    pub patroni: Patroni,
}

/// A replica stuck in a failed state this long is cloned again from the primary.
const REINITIALIZE_AFTER_SECS: i64 = 60;
/// The condition for declared roles and databases.
pub const ROLES_AND_DATABASES: &str = "RolesAndDatabasesReady";
/// The condition saying whether the instances run the version and image of the spec.
pub const VERSION_CURRENT: &str = "VersionCurrent";

/// Major version and image the StatefulSet's pods run, from its annotation and template.
fn running_version(sts: &StatefulSet) -> Option<(i32, String)> {
    let version = sts
        .annotations()
        .get(labels::POSTGRES_VERSION)?
        .parse()
        .ok()?;
    let image = sts
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "postgres")?
        .image
        .clone()?;
    Some((version, image))
}

fn api_error(verb: &'static str, kind: &str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let (kind, name) = (kind.to_owned(), name.to_owned());
    move |source| {
        Error::Toolkit(pgpilot_toolkit::Error::Api {
            verb,
            kind,
            name,
            source: Box::new(source),
        })
    }
}

/// Reads an object, `None` when it does not exist.
async fn get<K>(api: &Api<K>, name: &str) -> Result<Option<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    api.get_opt(name)
        .instrument(tracing::debug_span!("kube.get", kind = %kind, name))
        .await
        .map_err(api_error("get", &kind, name))
}

/// Applies one child unless the live object already matches. Returns whether it wrote.
async fn ensure<K>(client: &Client, ns: &str, fm: &str, desired: &K) -> Result<Outcome, Error>
where
    K: Resource<Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let live = get(&api, &desired.name_any()).await?;
    Ok(apply(&api, fm, desired, live.as_ref()).await?)
}

/// `ensure`, keeping the child's kind and name for the report.
async fn ensure_named<K>(
    client: &Client,
    ns: &str,
    fm: &str,
    desired: &K,
) -> Result<(String, Outcome), Error>
where
    K: Resource<Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let outcome = ensure(client, ns, fm, desired).await?;
    Ok((format!("{kind}/{}", desired.name_any()), outcome))
}

type Applying<'a> = futures::future::BoxFuture<'a, Result<(String, Outcome), Error>>;

/// Applies the children in two concurrent waves: everything a pod needs first (identity,
/// Role, Secrets, configuration, Services, PDB), then what refers to those (the RoleBinding,
/// whose Role must exist for RBAC's escalation check, and the StatefulSet, whose pods need
/// the ServiceAccount, Secrets and ConfigMap).
async fn apply_all(
    client: &Client,
    ns: &str,
    fm: &str,
    d: &Desired,
) -> Result<Vec<(String, Outcome)>, Error> {
    let mut first: Vec<Applying<'_>> = vec![
        Box::pin(ensure_named(client, ns, fm, &d.service_account)),
        Box::pin(ensure_named(client, ns, fm, &d.role)),
        Box::pin(ensure_named(client, ns, fm, &d.patroni_config)),
    ];
    first.extend(
        d.secrets
            .iter()
            .map(|s| Box::pin(ensure_named(client, ns, fm, s)) as Applying<'_>),
    );
    first.extend(
        d.services
            .iter()
            .map(|s| Box::pin(ensure_named(client, ns, fm, s)) as Applying<'_>),
    );
    if let Some(pdb) = &d.pdb {
        first.push(Box::pin(ensure_named(client, ns, fm, pdb)));
    }
    let mut done = futures::future::try_join_all(first).await?;
    let second: Vec<Applying<'_>> = vec![
        Box::pin(ensure_named(client, ns, fm, &d.role_binding)),
        Box::pin(ensure_named(client, ns, fm, &d.statefulset)),
    ];
    done.extend(futures::future::try_join_all(second).await?);
    Ok(done)
}

/// Removes a PDB the spec no longer wants (only ours: it carries the cluster label).
async fn prune_pdb(
    client: &Client,
    metrics: &ControllerMetrics,
    ns: &str,
    cluster: &PostgresCluster,
    d: &Desired,
) -> Result<(), Error> {
    if d.pdb.is_some() {
        return Ok(());
    }
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let name = cluster.name_any();
    if let Some(pdb) = get(&api, &name).await?
        && pdb.labels().get(labels::CLUSTER) == Some(&name)
    {
        metrics.wrote("PodDisruptionBudget");
        api.delete(&name, &DeleteParams::default())
            .await
            .map_err(api_error("delete", "PodDisruptionBudget", &name))?;
    }
    Ok(())
}

fn selector(cluster: &str) -> ListParams {
    ListParams::default().labels(&format!("{}={cluster}", labels::CLUSTER))
}

/// Writes the status when it differs from the stored one.
async fn write_status(
    ctx: &Context,
    api: &Api<PostgresCluster>,
    cluster: &PostgresCluster,
    status: pgpilot_api::PostgresClusterStatus,
) -> Result<bool, Error> {
    if cluster.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    ctx.metrics.wrote("PostgresCluster/status");
    let name = cluster.name_any();
    let patch = serde_json::json!({"status": status});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .instrument(tracing::debug_span!("kube.patch_status", name = %name))
        .await
        .map_err(api_error("patch-status", "PostgresCluster", &name))?;
    Ok(true)
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// The reconcile. Deletion needs no finalizer: children carry owner references and the
/// StatefulSet's PVC retention policy decides what happens to the data.
pub async fn reconcile(cluster: Arc<PostgresCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cluster.namespace().ok_or_else(|| Error::Invalid {
        field: "metadata.namespace",
        message: "missing".into(),
    })?;
    let name = cluster.name_any();
    let client = &ctx.client;
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);

    let pods = pods_api
        .list(&selector(&name))
        .await
        .map_err(api_error("list", "Pod", &name))?
        .items;

    if cluster.spec.paused {
        let sts = get(&sts_api, &name).await?;
        let observed = Observed {
            statefulset: sts.as_ref(),
            pods: &pods,
            ..Default::default()
        };
        write_status(
            &ctx,
            &clusters,
            &cluster,
            status::compute(&cluster, &observed, now()),
        )
        .await?;
        return Ok(Action::await_change());
    }

    let validated =
        validate::validate(&cluster).and_then(|()| validate::image(&cluster, &ctx.default_images));
    let image = match validated {
        Ok(image) => image,
        Err(e) => {
            let sts = get(&sts_api, &name).await?;
            let observed = Observed {
                statefulset: sts.as_ref(),
                pods: &pods,
                invalid: Some(e.to_string()),
                ..Default::default()
            };
            if write_status(
                &ctx,
                &clusters,
                &cluster,
                status::compute(&cluster, &observed, now()),
            )
            .await?
            {
                ctx.events
                    .warning(cluster.as_ref(), "InvalidSpec", "Validate", e.to_string())
                    .await;
            }
            return Err(e);
        }
    };

    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let existing_secrets: BTreeMap<String, Secret> = secrets_api
        .list(&selector(&name))
        .await
        .map_err(api_error("list", "Secret", &name))?
        .items
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect();
    let live_sts = get(&sts_api, &name).await?;
    // Instances keep the major version and image they run until an upgrade moves them: the
    // StatefulSet is rendered for what runs, and a differing spec waits in a condition.
    let running = live_sts.as_ref().and_then(running_version);
    let (effective, image, version_condition) = match running {
        Some((version, live_image))
            if version != cluster.spec.postgresql.version || live_image != image =>
        {
            let message = format!(
                "the spec asks for PostgreSQL {} ({image}); the instances run {version} ({live_image}) until the upgrade controller moves them (docs/upgrade.md)",
                cluster.spec.postgresql.version
            );
            let mut effective = cluster.as_ref().clone();
            effective.spec.postgresql.version = version;
            effective.spec.postgresql.image = Some(live_image.clone());
            (
                Arc::new(effective),
                live_image,
                (Status::False, "UpgradePending", message),
            )
        }
        _ => (
            cluster.clone(),
            image,
            (
                Status::True,
                "AsSpecified",
                format!("PostgreSQL {}", cluster.spec.postgresql.version),
            ),
        ),
    };
    let inputs = Inputs {
        cluster: &effective,
        image: image.clone(),
        existing_secrets: &existing_secrets,
    };
    let mut desired = desired::build(&inputs, &mut Csprng)?;

    let members = observe_members(&ctx.patroni, &pods).await;
    let current = live_sts
        .as_ref()
        .and_then(|s| s.spec.as_ref()?.replicas)
        .unwrap_or(cluster.spec.instances);
    let synchronous = cluster
        .spec
        .replication
        .as_ref()
        .is_some_and(|r| r.synchronous.is_some());
    let scale = actions::scale(cluster.spec.instances, current, &members, synchronous);
    if let Some(spec) = desired.statefulset.spec.as_mut() {
        spec.replicas = Some(scale.replicas);
        // Claim templates are immutable: when the size changed, keep the live ones; the
        // volumes grow through their claims.
        if let Some(live) = live_sts.as_ref().and_then(|s| s.spec.as_ref())
            && claim_size(&live.volume_claim_templates) != claim_size(&spec.volume_claim_templates)
        {
            spec.volume_claim_templates = live.volume_claim_templates.clone();
        }
    }

    let applied = apply_all(client, &ns, &ctx.field_manager, &desired).await?;
    prune_pdb(client, &ctx.metrics, &ns, &cluster, &desired).await?;
    let changed: Vec<&String> = applied
        .iter()
        .filter(|(_, o)| *o != Outcome::Unchanged)
        .map(|(n, _)| n)
        .collect();
    for child in &changed {
        ctx.metrics
            .wrote(child.split('/').next().unwrap_or_default());
    }
    if !changed.is_empty() {
        tracing::info!(children = ?changed, "applied");
        let note = format!(
            "applied {}",
            changed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        ctx.events
            .normal(cluster.as_ref(), "ChildrenApplied", "Apply", note)
            .await;
    }

    adopt_patroni_state(&ctx, &cluster, &ns).await?;
    let mut busy = scale.replicas != cluster.spec.instances;
    if let Some(candidate) = &scale.switchover_to {
        let why = format!(
            "before scaling down to {} instance(s)",
            cluster.spec.instances
        );
        switchover(&ctx, &cluster, &members, candidate, "ScaleDown", &why).await;
    }
    configure_patroni(&ctx, &cluster, &members, &desired.patroni_dcs).await;
    // Maintenance mode means hands off the instances: no restarts, no re-clones.
    if !cluster.spec.maintenance {
        busy |= rolling_restart(&ctx, &cluster, &members, synchronous).await;
        busy |= reinitialize(&ctx, &cluster, &members).await;
    }
    let mut conditions = vec![(
        VERSION_CURRENT,
        version_condition.0,
        version_condition.1,
        version_condition.2,
    )];
    let mut sql_pending = false;
    let keep = scale.replicas.max(current);
    let (s, reason, message) = volumes(&ctx, &cluster, &ns, &pods, keep).await?;
    busy |= reason == "Resizing";
    conditions.push((storage::CONDITION, s, reason, message));
    if let Some(c) = roles_and_databases(&ctx, &cluster, &members, &desired).await {
        sql_pending = c.0 != Status::True;
        conditions.push((ROLES_AND_DATABASES, c.0, c.1, c.2));
    }

    let sts = get(&sts_api, &name).await?;
    let observed = Observed {
        statefulset: sts.as_ref(),
        pods: &pods,
        invalid: None,
        image: Some(image),
        version: Some(effective.spec.postgresql.version),
        members: Some(&members),
        conditions,
    };
    let status = status::compute(&cluster, &observed, now());
    let ready = status.phase == Some(pgpilot_api::cluster::ClusterPhase::Ready);
    // Patroni's member record says when a replica starts streaming (triggers.rs); look again
    // soon as well, in case its Patroni does not report the replication state.
    busy |= pgpilot_toolkit::conditions::find(&status.conditions, status::READY)
        .is_some_and(|c| c.reason == "ReplicasNotStreaming");
    write_status(&ctx, &clusters, &cluster, status).await?;
    // Pods, Patroni's decisions in its ConfigMaps and the children trigger reconciles; the
    // periodic one refreshes what Patroni reports without a Kubernetes event (lag, state).
    Ok(Action::requeue(Duration::from_secs(
        match (busy, sql_pending, ready) {
            (true, _, _) => 2,
            // Failed SQL is retried, without an Event every few seconds.
            (false, true, _) => 30,
            (false, false, true) => 60,
            (false, false, false) => 10,
        },
    )))
}

fn claim_size(templates: &Option<Vec<PersistentVolumeClaim>>) -> Option<String> {
    let claim = templates.as_ref()?.first()?;
    let requests = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    Some(requests.get("storage")?.0.clone())
}

fn ordinal(pod: &str) -> i32 {
    pod.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

fn unready_for_secs(pod: &Pod) -> i64 {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status != "True"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| (Timestamp::now() - t.0).get_seconds().max(0))
        .unwrap_or(0)
}

/// Asks every instance's Patroni about itself, and the primary (or any member that
/// answers) about the cluster. Members that do not answer stay unknown.
async fn observe_members(patroni: &Patroni, pods: &[Pod]) -> Members {
    let mut instances: Vec<Instance> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| Instance {
            pod: p.name_any(),
            ordinal: ordinal(&p.name_any()),
            ip: p.status.as_ref().and_then(|s| s.pod_ip.clone()),
            ready: pod_ready(p),
            unready_for_secs: unready_for_secs(p),
            member: None,
        })
        .collect();
    let answers = futures::future::join_all(instances.iter().map(|i| async move {
        let ip = i.ip.as_deref()?;
        match patroni.member(&i.pod, ip).await {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::debug!(error = %e, "no answer");
                None
            }
        }
    }))
    .await;
    for (i, a) in instances.iter_mut().zip(answers) {
        i.member = a;
    }
    let asked = instances
        .iter()
        .filter(|i| i.member.is_some())
        .max_by_key(|i| {
            i.member
                .as_ref()
                .and_then(|m| m.role.as_deref())
                .map(crate::patroni::normalize_role)
                == Some("primary".to_owned())
        });
    let cluster = match asked.and_then(|i| Some((i.pod.as_str(), i.ip.as_deref()?))) {
        Some((pod, ip)) => patroni.cluster(pod, ip).await.ok(),
        None => None,
    };
    Members { instances, cluster }
}

/// Patroni creates its DCS ConfigMaps (`<scope>-config`, `-leader`, `-sync`, `-failover`)
/// with the instance labels but no owner. Owning them lets garbage collection remove them
/// with the cluster, so a new cluster of the same name never meets the old one's system id.
async fn adopt_patroni_state(
    ctx: &Context,
    cluster: &PostgresCluster,
    ns: &str,
) -> Result<(), Error> {
    let Some(owner) = cluster.controller_owner_ref(&()) else {
        return Ok(());
    };
    let name = cluster.name_any();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let selector = ListParams::default().labels(&format!(
        "{}={name},{}={}",
        labels::CLUSTER,
        labels::COMPONENT,
        crate::names::COMPONENT_INSTANCE
    ));
    let found =
        api.list_metadata(&selector)
            .await
            .map_err(api_error("list", "ConfigMap", &name))?;
    for cm in found.items {
        if cm.owner_references().iter().any(|o| o.uid == owner.uid) {
            continue;
        }
        let cm_name = cm.name_any();
        ctx.metrics.wrote("ConfigMap");
        let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
        api.patch_metadata(&cm_name, &PatchParams::default(), &Patch::Merge(&patch))
            .instrument(tracing::debug_span!("kube.patch", kind = "ConfigMap", name = %cm_name))
            .await
            .map_err(api_error("patch", "ConfigMap", &cm_name))?;
    }
    Ok(())
}

/// Moves the primary to `candidate` (`action` and `why` go into the Event). The old primary
/// rejoins as a replica; Patroni picks nothing else.
async fn switchover(
    ctx: &Context,
    cluster: &PostgresCluster,
    members: &Members,
    candidate: &str,
    action: &str,
    why: &str,
) {
    let Some((primary, ip)) = members.primary_address() else {
        return;
    };
    let note = format!("moving the primary from {primary} to {candidate} {why}");
    match ctx.patroni.switchover(&primary, &ip, candidate).await {
        Ok(()) => {
            tracing::info!(%primary, %candidate, "switchover");
            ctx.events.normal(cluster, "Switchover", action, note).await;
        }
        Err(e) => {
            ctx.events
                .warning(cluster, "SwitchoverFailed", action, format!("{note}: {e}"))
                .await;
        }
    }
}

/// Patroni keeps the cluster-wide settings in its DCS after bootstrap: spec changes reach
/// it through PATCH /config, only when they differ.
async fn configure_patroni(
    ctx: &Context,
    cluster: &PostgresCluster,
    members: &Members,
    desired: &serde_json::Value,
) {
    let Some((pod, ip)) = members.primary_address() else {
        return;
    };
    let live = match ctx.patroni.config(&pod, &ip).await {
        Ok(live) => live,
        Err(e) => {
            tracing::debug!(error = %e, "dynamic configuration unknown");
            return;
        }
    };
    let Some(patch) = actions::config_patch(desired, &live) else {
        return;
    };
    let keys = patch
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    match ctx.patroni.patch_config(&pod, &ip, &patch).await {
        Ok(()) => {
            ctx.events
                .normal(
                    cluster,
                    "PatroniConfigured",
                    "Configure",
                    format!("dynamic configuration updated: {keys}"),
                )
                .await;
        }
        Err(e) => {
            ctx.events
                .warning(cluster, "PatroniConfigFailed", "Configure", e.to_string())
                .await;
        }
    }
}

/// One step of a rolling restart for parameters that need one. Returns whether one is under way.
async fn rolling_restart(
    ctx: &Context,
    cluster: &PostgresCluster,
    members: &Members,
    synchronous: bool,
) -> bool {
    match actions::restart(members, synchronous) {
        actions::Restart::Done => false,
        actions::Restart::Wait => true,
        actions::Restart::Instance(pod) => {
            let Some(ip) = members.ip(&pod) else {
                return true;
            };
            match ctx.patroni.restart(&pod, &ip).await {
                Ok(()) => {
                    ctx.events
                        .normal(
                            cluster,
                            "RestartingInstance",
                            "Restart",
                            format!("{pod}: parameters that take effect on restart changed"),
                        )
                        .await
                }
                Err(e) => {
                    ctx.events
                        .warning(cluster, "RestartFailed", "Restart", format!("{pod}: {e}"))
                        .await
                }
            }
            true
        }
        actions::Restart::SwitchoverTo(to) => {
            let why = match members.primary_address() {
                Some((primary, _)) => format!("to restart {primary} as a replica"),
                None => return true,
            };
            switchover(ctx, cluster, members, &to, "Restart", &why).await;
            true
        }
    }
}

/// Re-initializes replicas stuck in a failed state. Returns whether it asked for any.
async fn reinitialize(ctx: &Context, cluster: &PostgresCluster, members: &Members) -> bool {
    let stuck = actions::reinitialize(members, REINITIALIZE_AFTER_SECS);
    for pod in &stuck {
        let Some(ip) = members.ip(pod) else {
            continue;
        };
        match ctx.patroni.reinitialize(pod, &ip).await {
            Ok(()) => {
                ctx.events
                    .warning(
                        cluster,
                        "ReinitializingReplica",
                        "Reinitialize",
                        format!("{pod} could not follow the primary for {REINITIALIZE_AFTER_SECS}s or more: cloning it again"),
                    )
                    .await;
            }
            Err(e) => {
                ctx.events
                    .warning(
                        cluster,
                        "ReinitializeFailed",
                        "Reinitialize",
                        format!("{pod}: {e}"),
                    )
                    .await
            }
        }
    }
    !stuck.is_empty()
}

/// The instances' claims: retention as the spec says (see `storage::retention`), then
/// growth when the spec asks for more and the StorageClass allows it.
async fn volumes(
    ctx: &Context,
    cluster: &PostgresCluster,
    ns: &str,
    pods: &[Pod],
    keep: i32,
) -> Result<(Status, &'static str, String), Error> {
    let name = cluster.name_any();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let live = pvcs
        .list(&selector(&name))
        .await
        .map_err(api_error("list", "PersistentVolumeClaim", &name))?
        .items;
    let deleted = retain_claims(ctx, cluster, &pvcs, &live, pods, keep).await?;
    let claims: Vec<storage::Claim> = live
        .into_iter()
        .filter(|c| !deleted.contains(&c.name_any()))
        .filter_map(|c| {
            let spec = c.spec.as_ref()?;
            Some(storage::Claim {
                name: c.name_any(),
                requested: spec
                    .resources
                    .as_ref()?
                    .requests
                    .as_ref()?
                    .get("storage")?
                    .0
                    .clone(),
                capacity: c
                    .status
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref()?.get("storage"))
                    .map(|q| q.0.clone()),
                storage_class: spec.storage_class_name.clone(),
            })
        })
        .collect();
    grow_claims(ctx, cluster, &pvcs, &claims).await
}

/// Owns, disowns or deletes claims as the retention policy says; returns the deleted ones.
async fn retain_claims(
    ctx: &Context,
    cluster: &PostgresCluster,
    pvcs: &Api<PersistentVolumeClaim>,
    live: &[PersistentVolumeClaim],
    pods: &[Pod],
    keep: i32,
) -> Result<Vec<String>, Error> {
    let owner = cluster.owner_ref(&());
    let owned = |c: &PersistentVolumeClaim| {
        owner
            .as_ref()
            .is_some_and(|o| c.owner_references().iter().any(|r| r.uid == o.uid))
    };
    let retained: Vec<storage::Retained> = live
        .iter()
        .map(|c| storage::Retained {
            name: c.name_any(),
            ordinal: ordinal(&c.name_any()),
            bound: c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"),
            owned: owned(c),
        })
        .collect();
    let policy = cluster.spec.pvc_retention();
    let plan = storage::retention(
        policy.when_deleted,
        policy.when_scaled,
        keep,
        &retained,
        |o| pods.iter().any(|p| ordinal(&p.name_any()) == o),
    );
    for claim in &plan.delete {
        ctx.metrics.wrote("PersistentVolumeClaim");
        pvcs.delete(claim, &DeleteParams::default())
            .instrument(
                tracing::debug_span!("kube.delete", kind = "PersistentVolumeClaim", name = %claim),
            )
            .await
            .map_err(api_error("delete", "PersistentVolumeClaim", claim))?;
        ctx.events
            .normal(
                cluster,
                "VolumeDeleted",
                "ScaleDown",
                format!("{claim}: its instance was scaled away (persistentVolumeClaimRetentionPolicy.whenScaled: Delete)"),
            )
            .await;
    }
    for c in live
        .iter()
        .filter(|c| plan.own.contains(&c.name_any()) || plan.disown.contains(&c.name_any()))
    {
        let mut refs: Vec<_> = c
            .owner_references()
            .iter()
            .filter(|r| owner.as_ref().is_none_or(|o| r.uid != o.uid))
            .cloned()
            .collect();
        if plan.own.contains(&c.name_any()) {
            refs.extend(owner.clone());
        }
        ctx.metrics.wrote("PersistentVolumeClaim");
        let patch = serde_json::json!({"metadata": {"ownerReferences": refs}});
        pvcs.patch_metadata(
            &c.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(api_error("patch", "PersistentVolumeClaim", &c.name_any()))?;
    }
    Ok(plan.delete)
}

/// Grows claims smaller than the spec where their StorageClass allows expansion.
async fn grow_claims(
    ctx: &Context,
    cluster: &PostgresCluster,
    pvcs: &Api<PersistentVolumeClaim>,
    claims: &[storage::Claim],
) -> Result<(Status, &'static str, String), Error> {
    let size = &cluster.spec.storage.size;
    let mut expandable = BTreeMap::new();
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    // Classes are read only for claims that must grow: a converged cluster needs no
    // cluster-scoped read (and a namespace-confined installation may not have one).
    let want = storage::bytes(size);
    let growing = claims.iter().filter(|c| {
        storage::bytes(&c.requested)
            .zip(want)
            .is_some_and(|(have, want)| have < want)
    });
    for class in growing.filter_map(|c| c.storage_class.clone()) {
        if let std::collections::btree_map::Entry::Vacant(e) = expandable.entry(class) {
            let sc = get(&classes, e.key()).await?;
            e.insert(sc.and_then(|s| s.allow_volume_expansion));
        }
    }
    let plan = storage::plan(size, claims, |c| expandable.get(c).copied().flatten());
    for claim in &plan.grow {
        ctx.metrics.wrote("PersistentVolumeClaim");
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}});
        pvcs.patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .instrument(
                tracing::debug_span!("kube.patch", kind = "PersistentVolumeClaim", name = %claim),
            )
            .await
            .map_err(api_error("patch", "PersistentVolumeClaim", claim))?;
    }
    if !plan.grow.is_empty() {
        ctx.events
            .normal(
                cluster,
                "VolumesResizing",
                "Resize",
                plan.condition.2.clone(),
            )
            .await;
    }
    Ok(plan.condition)
}

/// Declared roles and databases on the primary. `None` when none are declared.
async fn roles_and_databases(
    ctx: &Context,
    cluster: &PostgresCluster,
    members: &Members,
    desired: &Desired,
) -> Option<(Status, &'static str, String)> {
    let spec = &cluster.spec;
    if spec.roles.is_empty() && spec.databases.is_empty() {
        return None;
    }
    let Some(ip) = members.primary().and_then(|p| p.ip.clone()) else {
        return Some((
            Status::Unknown,
            "WaitingForPrimary",
            "no primary answers yet".to_owned(),
        ));
    };
    let names = Names::new(&cluster.name_any());
    let secrets: BTreeMap<String, Secret> = desired
        .secrets
        .iter()
        .map(|s| (s.name_any(), s.clone()))
        .collect();
    let superuser = existing_password(&secrets, &names.superuser_secret())?;
    let passwords: BTreeMap<String, String> = spec
        .roles
        .iter()
        .filter(|r| r.login && r.ensure == Ensure::Present)
        .filter_map(|r| {
            Some((
                r.name.clone(),
                existing_password(&secrets, &names.role_secret(&r.name))?,
            ))
        })
        .collect();
    let target = sql::Target {
        host: ip,
        port: POSTGRES_PORT as u16,
        user: SUPERUSER.to_owned(),
        password: superuser,
    };
    match sql::converge(&target, &spec.roles, &spec.databases, &passwords).await {
        Ok(n) => {
            if n > 0 {
                ctx.events
                    .normal(
                        cluster,
                        "RolesAndDatabasesApplied",
                        "Sql",
                        format!("{n} statement(s) brought roles and databases to the spec"),
                    )
                    .await;
            }
            Some((
                Status::True,
                "Applied",
                format!(
                    "{} role(s) and {} database(s) as declared",
                    spec.roles.len(),
                    spec.databases.len()
                ),
            ))
        }
        Err(e) => {
            ctx.events
                .warning(cluster, "RolesAndDatabasesFailed", "Sql", e.to_string())
                .await;
            Some((Status::False, "Failed", e.to_string()))
        }
    }
}
