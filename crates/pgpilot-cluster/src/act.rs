//! What a reconcile does: the children applied as a set, the housekeeping that disturbs no
//! instance (Patroni's state adopted, its dynamic configuration, volumes, roles and
//! databases), and the one disruptive step the plan chose.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams, Preconditions};
use kube::{Resource, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_api::cluster::Ensure;
use pgpilot_api::labels;
use pgpilot_postgres::credentials::{password_of, user_of};
use pgpilot_postgres::members::{Members, ordinal};
use pgpilot_postgres::names::{MONITOR_USER, Names};
use pgpilot_postgres::patroni::PatroniApi;
use pgpilot_postgres::sql;
use pgpilot_toolkit::Sensitive;
use pgpilot_toolkit::children::{Change, ChildSet};
use pgpilot_toolkit::conditions::Status;
use serde_json::Value;
use tracing::Instrument;

use crate::context::Context;
use crate::desired::{self, Desired};
use crate::error::Error;
use crate::observe::Seen;
use crate::plan::{self, Step, Why};
use crate::storage;
use crate::validate::ParameterCheck;

/// Applies the children in two waves: everything a pod needs first (identity, Role,
/// Secrets, configuration, Services, PDB, NetworkPolicy), then what refers to those (the RoleBinding, whose
/// Role must exist for RBAC's escalation check, and the StatefulSet, whose pods need the
/// ServiceAccount, Secrets and ConfigMap). Leftovers carrying the cluster's labels are pruned,
/// except Secrets (a credential outlives the spec that asked for it: the rotation controller
/// and retained volumes need it) and ConfigMaps (Patroni's DCS state carries the same labels).
/// Without `workload`, the StatefulSet is neither applied nor pruned.
pub async fn children(
    ctx: &Context,
    cluster: &PostgresCluster,
    ns: &str,
    desired: &Desired,
    workload: bool,
) -> Result<Vec<Change>, Error> {
    let c = &ctx.caches;
    let name = cluster.name_any();
    let owner_labels = [
        (labels::CLUSTER, name.as_str()),
        (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
    ];
    let uid = cluster.uid().unwrap_or_default();
    let mut set = ChildSet::new(&ctx.field_manager, ns, &uid, &owner_labels);
    set.apply_and_prune(0, &c.service_accounts, [&desired.service_account])
        .apply_and_prune(0, &c.roles, [&desired.role])
        .apply(
            0,
            &c.config_maps,
            [&desired.patroni_config, &desired.ca_config_map]
                .into_iter()
                .chain(&desired.pgbackrest_config),
        )
        .apply(0, &c.secrets, &desired.secrets)
        .apply_and_prune(0, &c.services, &desired.services)
        .apply_and_prune(0, &c.pdbs, &desired.pdb)
        .apply_and_prune(0, &c.network_policies, &desired.network_policy)
        .apply_and_prune(1, &c.role_bindings, [&desired.role_binding]);
    if workload {
        set.apply_and_prune(1, &c.statefulsets, [&desired.statefulset]);
    }
    let changes = set.run().await?;
    for change in &changes {
        ctx.metrics.wrote(&change.kind);
    }
    if !changes.is_empty() {
        let note = changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        tracing::info!(children = %note, "applied");
        ctx.events
            .normal(cluster, "ChildrenApplied", "Apply", note)
            .await;
    }
    Ok(changes)
}

/// Patroni creates its DCS ConfigMaps (`<scope>-config`, `-leader`, `-sync`, `-failover`)
/// with the instance labels but no owner. Owning them lets garbage collection remove them
/// with the cluster, so a new cluster of the same name never meets the old one's system id.
pub async fn adopt_patroni_state(
    ctx: &Context,
    cluster: &PostgresCluster,
    ns: &str,
    seen: &Seen,
) -> Result<(), Error> {
    let Some(owner) = cluster.controller_owner_ref(&()) else {
        return Ok(());
    };
    let api = ctx.caches.config_maps.api(ns);
    for cm in &seen.patroni_state {
        if cm.owner_references().iter().any(|o| o.uid == owner.uid) {
            continue;
        }
        let cm_name = cm.name_any();
        ctx.metrics.wrote("ConfigMap");
        let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
        api.patch_metadata(&cm_name, &PatchParams::default(), &Patch::Merge(&patch))
            .instrument(tracing::debug_span!("kube.patch", kind = "ConfigMap", name = %cm_name))
            .await
            .map_err(Error::api("patch", "ConfigMap", &cm_name))?;
    }
    Ok(())
}

/// Members whose credentials file is not the current one yet are asked to reload it: the
/// kubelet updates the mounted file within a minute or so, and the reload is a no-op until
/// then. Returns how many members still hold older credentials.
pub async fn reload_credentials(
    ctx: &Context,
    api: &PatroniApi,
    members: &Members,
    token: &str,
) -> usize {
    let stale: Vec<(&str, &str)> = members
        .instances
        .iter()
        .filter_map(|i| {
            let member = i.member.as_ref()?;
            (member.auth_token() != Some(token)).then_some((i.pod.as_str(), i.ip.as_deref()?))
        })
        .collect();
    for (pod, ip) in &stale {
        if let Err(e) = api.reload(pod, ip).await {
            ctx.metrics.call_failed("patroni", e.call);
            tracing::debug!(error = %e, "reload of the credentials failed");
        }
    }
    stale.len()
}

/// Patroni keeps the cluster-wide settings in its DCS after bootstrap: spec changes reach
/// it through PATCH /config, only when they differ.
pub async fn configure_patroni(
    ctx: &Context,
    api: &PatroniApi,
    cluster: &PostgresCluster,
    members: &Members,
    desired: &Value,
    parameters: &ParameterCheck,
) {
    let Some((pod, ip)) = members.config_address() else {
        return;
    };
    let live = match api.config(&pod, &ip).await {
        Ok(live) => live,
        Err(e) => {
            tracing::debug!(error = %e, "dynamic configuration unknown");
            return;
        }
    };
    let held: Vec<&str> = parameters.refused.keys().map(String::as_str).collect();
    let Some(patch) = plan::config_patch(desired, &live, &held) else {
        return;
    };
    let mut keys = patch
        .as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let changed = patch
        .pointer("/postgresql/parameters")
        .and_then(Value::as_object);
    let restart: Vec<&str> = parameters
        .on_restart
        .iter()
        .filter(|p| changed.is_some_and(|c| c.contains_key(p.as_str())))
        .map(String::as_str)
        .collect();
    if !restart.is_empty() {
        keys.push_str(&format!(
            " ({} take effect on a restart: one instance at a time, replicas first)",
            restart.join(", ")
        ));
    }
    match api.patch_config(&pod, &ip, &patch).await {
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
            ctx.metrics.call_failed("patroni", e.call);
            ctx.events
                .warning(cluster, "PatroniConfigFailed", "Configure", e.to_string())
                .await;
        }
    }
}

/// Carries out the plan's one disruptive step. Failures are Warning Events and the step is
/// tried again on a later reconcile, from a fresh observation.
pub async fn step(
    ctx: &Context,
    api: &PatroniApi,
    cluster: &PostgresCluster,
    ns: &str,
    members: &Members,
    step: &Step,
) -> Result<(), Error> {
    match step {
        Step::Nothing => {}
        Step::Switchover { to, why } => {
            // Always to a named candidate, though a race among equal replicas would be faster
            // (the others sleep 2 s before following a named one): in that race Patroni 4.0
            // and 4.1 on the Kubernetes DCS can hand the leader lock to two replicas in turn
            // (patroni#3718; seen here: both promoted, one left diverged on the same timeline).
            let (action, why) = match why {
                Why::ScaleDown => (
                    "ScaleDown",
                    format!(
                        "before scaling down to {} instance(s)",
                        cluster.spec.instances
                    ),
                ),
                Why::RollingUpdate => (
                    "RollingUpdate",
                    "to replace the old primary's pod as a replica".to_owned(),
                ),
                Why::Restart => (
                    "Restart",
                    "to restart the old primary as a replica".to_owned(),
                ),
            };
            switchover(ctx, api, cluster, members, to, action, &why).await;
        }
        Step::Replace { pod, role } => replace(ctx, cluster, ns, pod, role).await?,
        Step::Restart { pod } => {
            let Some(ip) = members.ip(pod) else {
                return Ok(());
            };
            let (warning, reason, note) = match api.restart(pod, &ip).await {
                Ok(()) => (
                    false,
                    "RestartingInstance",
                    format!("{pod}: parameters that take effect on restart changed"),
                ),
                Err(e) => {
                    ctx.metrics.call_failed("patroni", e.call);
                    (true, "RestartFailed", format!("{pod}: {e}"))
                }
            };
            ctx.events
                .about_pod(cluster, pod, warning, reason, "Restart", note)
                .await;
        }
        Step::Reinitialize { pod } => {
            let Some(ip) = members.ip(pod) else {
                return Ok(());
            };
            let (reason, note) = match api.reinitialize(pod, &ip).await {
                Ok(()) => (
                    "ReinitializingReplica",
                    format!(
                        "{pod} could not follow the primary for {}s or more: cloning it again",
                        plan::REINITIALIZE_AFTER_SECS
                    ),
                ),
                Err(e) => {
                    ctx.metrics.call_failed("patroni", e.call);
                    ("ReinitializeFailed", format!("{pod}: {e}"))
                }
            };
            ctx.events
                .about_pod(cluster, pod, true, reason, "Reinitialize", note)
                .await;
        }
    }
    Ok(())
}

/// Moves the primary to `candidate` (`action` and `why` go into the Event). The old primary
/// rejoins as a replica; Patroni picks nothing else.
async fn switchover(
    ctx: &Context,
    api: &PatroniApi,
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
    let (warning, reason, note) = match api.switchover(&primary, &ip, Some(candidate)).await {
        Ok(()) => {
            tracing::info!(%primary, %candidate, "switchover");
            (false, "Switchover", note)
        }
        Err(e) => {
            ctx.metrics.call_failed("patroni", e.call);
            (true, "SwitchoverFailed", format!("{note}: {e}"))
        }
    };
    ctx.events
        .about_pod(cluster, &primary, warning, reason, action, note)
        .await;
}

/// Replaces a pod that runs an old revision: evicted, so the PodDisruptionBudget has its
/// say; the StatefulSet creates it again from the new template on the same volume. A
/// cluster of one or two instances has a PDB that allows no disruption at all (a majority
/// of them must stay); there the pod is deleted, behind the roll's own health gates.
async fn replace(
    ctx: &Context,
    cluster: &PostgresCluster,
    ns: &str,
    pod: &str,
    role: &str,
) -> Result<(), Error> {
    let pods: Api<Pod> = ctx.caches.pods.api(ns);
    // Only the pod that was observed: one created again meanwhile is not stale.
    let preconditions = Preconditions {
        uid: ctx.caches.pods.get(ns, pod).and_then(|p| p.uid()),
        resource_version: None,
    };
    let evict = EvictParams {
        delete_options: Some(DeleteParams {
            preconditions: Some(preconditions.clone()),
            ..DeleteParams::default()
        }),
        ..EvictParams::default()
    };
    ctx.metrics.wrote("Pod");
    let evicted = pods
        .evict(pod, &evict)
        .instrument(tracing::debug_span!("kube.evict", kind = "Pod", name = %pod))
        .await;
    match evicted {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 429 && cluster.spec.instances < 3 => {
            let params = DeleteParams {
                preconditions: Some(preconditions),
                ..DeleteParams::default()
            };
            pods.delete(pod, &params)
                .instrument(tracing::debug_span!("kube.delete", kind = "Pod", name = %pod))
                .await
                .map_err(Error::api("delete", "Pod", pod))?;
        }
        Err(kube::Error::Api(s)) if s.code == 429 => {
            tracing::info!(%pod, "the PodDisruptionBudget allows no eviction now");
            return Ok(());
        }
        Err(e) => return Err(Error::api("evict", "Pod", pod)(e)),
    }
    tracing::info!(%pod, role, "replacing an instance");
    ctx.events
        .about_pod(
            cluster,
            pod,
            false,
            "InstanceReplaced",
            "RollingUpdate",
            format!("{pod} ({role}): replaced to run the StatefulSet's new pod template"),
        )
        .await;
    Ok(())
}

/// The instances' claims: retention as the spec says (see `storage::retention`), then
/// growth when the spec asks for more and the StorageClass allows it.
pub async fn volumes(
    ctx: &Context,
    cluster: &PostgresCluster,
    ns: &str,
    seen: &Seen,
    keep: i32,
) -> Result<(Status, &'static str, String), Error> {
    let pvcs = ctx.caches.claims.api(ns);
    let deleted = retain_claims(ctx, cluster, &pvcs, seen, keep).await?;
    let claims: Vec<storage::Claim> = seen
        .claims
        .iter()
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
    seen: &Seen,
    keep: i32,
) -> Result<Vec<String>, Error> {
    let owner = cluster.owner_ref(&());
    let owned = |c: &PersistentVolumeClaim| {
        owner
            .as_ref()
            .is_some_and(|o| c.owner_references().iter().any(|r| r.uid == o.uid))
    };
    let retained: Vec<storage::Retained> = seen
        .claims
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
        |o| seen.pods.iter().any(|p| ordinal(&p.name_any()) == o),
    );
    for claim in &plan.delete {
        ctx.metrics.wrote("PersistentVolumeClaim");
        pvcs.delete(claim, &DeleteParams::default())
            .instrument(
                tracing::debug_span!("kube.delete", kind = "PersistentVolumeClaim", name = %claim),
            )
            .await
            .map_err(Error::api("delete", "PersistentVolumeClaim", claim))?;
        ctx.events
            .normal(
                cluster,
                "VolumeDeleted",
                "ScaleDown",
                format!("{claim}: its instance was scaled away (persistentVolumeClaimRetentionPolicy.whenScaled: Delete)"),
            )
            .await;
    }
    for c in seen
        .claims
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
        .map_err(Error::api("patch", "PersistentVolumeClaim", &c.name_any()))?;
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
            let sc = classes
                .get_opt(e.key())
                .instrument(
                    tracing::debug_span!("kube.get", kind = "StorageClass", name = %e.key()),
                )
                .await
                .map_err(Error::api("get", "StorageClass", e.key()))?;
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
            .map_err(Error::api("patch", "PersistentVolumeClaim", claim))?;
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
pub async fn roles_and_databases(
    ctx: &Context,
    cluster: &PostgresCluster,
    members: &Members,
    desired: &Desired,
) -> Option<(Status, &'static str, String)> {
    let spec = &cluster.spec;
    let mut roles = spec.roles.clone();
    if spec.exporter_enabled() {
        roles.push(desired::monitor_role());
    }
    if roles.is_empty() && spec.databases.is_empty() {
        return None;
    }
    let Some((pod, ip)) = members.primary_address() else {
        return Some((
            Status::Unknown,
            "WaitingForPrimary",
            "no primary answers yet".to_owned(),
        ));
    };
    let names = Names::new(&cluster.name_any());
    let secret = |name: &str| desired.secrets.iter().find(|s| s.name_any() == name);
    let ns = cluster.namespace().unwrap_or_default();
    let target =
        sql::Target::superuser(&names, &ns, &pod, &ip, secret(&names.superuser_secret())?)?;
    // A role whose Secret an AlternatingUsers rotation pointed at a login alternate keeps no
    // password of its own: the rotation controller manages the alternates.
    let passwords: BTreeMap<String, Sensitive> = roles
        .iter()
        .filter(|r| r.login && r.ensure == Ensure::Present)
        .filter_map(|r| {
            let s = secret(&names.role_secret(&r.name))?;
            (user_of(s, &r.name) == r.name).then_some((r.name.clone(), password_of(s)?))
        })
        .collect();
    match sql::converge(&target, &roles, &spec.databases, &passwords).await {
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
                    "{} role(s) and {} database(s) as declared{}",
                    spec.roles.len(),
                    spec.databases.len(),
                    if spec.exporter_enabled() {
                        format!(", and the exporter's role {MONITOR_USER}")
                    } else {
                        String::new()
                    }
                ),
            ))
        }
        Err(e) => {
            ctx.metrics.call_failed("sql", "converge");
            ctx.events
                .warning(cluster, "RolesAndDatabasesFailed", "Sql", e.to_string())
                .await;
            Some((Status::False, "Failed", e.to_string()))
        }
    }
}
