//! One look at a cluster: observe (its version pin, pods, PostgresUpgrades and backups, from
//! the caches) → the upgrade that is active (created when the spec asks for another version or
//! image than runs) → [`plan`] (pure) → act (the pre-upgrade backup; the cluster's
//! annotations) → the upgrade's status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use pgpilot_api::backup::{BackupPhase, PostgresBackupSpec};
use pgpilot_api::cluster::UpgradeApproval;
use pgpilot_api::common::BackupType;
use pgpilot_api::upgrade::{MajorUpgradeMethod, PostgresUpgradeSpec, PostgresUpgradeStatus};
use pgpilot_api::{PostgresBackup, PostgresCluster, PostgresUpgrade, labels};
use pgpilot_postgres::version::{self, DefaultImages, Running};
use pgpilot_toolkit::apply::create_once;
use pgpilot_toolkit::calendar::Calendar;
use pgpilot_toolkit::conditions::{self, Status, Update};
use pgpilot_toolkit::events::Events;
use pgpilot_toolkit::jobs;
use pgpilot_toolkit::metrics::ControllerMetrics;
use pgpilot_toolkit::runner::{Cache, Reconciler};
use pgpilot_toolkit::status::{StatusPart, apply_status};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::error::Error;
use crate::major::{self, Kind, Method};
use crate::metrics::UpgradeMetrics;
use crate::plan::{self, Act, Facts, JobState, MajorSeen, PreBackup, Window};

/// The whole status of a PostgresUpgrade is this controller's.
pub const PART: StatusPart<'static> = StatusPart {
    fields: &[
        "phase",
        "kind",
        "observedGeneration",
        "fromVersion",
        "fromImage",
        "backup",
        "steps",
        "startTime",
        "completionTime",
        "instances",
    ],
    conditions: &[
        plan::PROGRESSING,
        plan::PAUSED,
        plan::READY,
        conditions::STALLED,
    ],
};

/// The annotations of a PostgresCluster this controller sets.
const OURS: [&str; 4] = [
    labels::UPGRADE,
    labels::UPGRADE_TARGET,
    labels::ROLL_HOLD,
    labels::INSTANCE_LIMIT,
];

pub struct Caches {
    pub upgrades: Cache<PostgresUpgrade>,
    pub statefulsets: Cache<StatefulSet>,
    pub pods: Cache<Pod>,
    pub backups: Cache<PostgresBackup>,
    /// The Jobs of major upgrades.
    pub jobs: Cache<Job>,
    /// The instances' volumes.
    pub volumes: Cache<PersistentVolumeClaim>,
}

pub struct Context {
    pub client: Client,
    pub field_manager: String,
    pub events: Events,
    pub metrics: ControllerMetrics,
    pub caches: Caches,
    pub default_images: DefaultImages,
    pub upgrade_metrics: UpgradeMetrics,
}

#[async_trait::async_trait]
impl Reconciler for Context {
    type Object = PostgresCluster;
    type Error = Error;

    async fn reconcile(&self, cluster: Arc<PostgresCluster>) -> Result<Action, Error> {
        reconcile(cluster, self).await
    }
}

/// The name of the PostgresUpgrade this controller creates for a target asked for by the
/// cluster's spec generation `generation`: one per spec change, so a crash between creating
/// it and seeing it never makes a second, and going back to an earlier image later is a new
/// upgrade.
pub fn upgrade_name(cluster: &str, generation: i64, version: i32, image: &str) -> String {
    let target = labels::upgrade_target(version, image);
    let digest = Sha256::digest(format!("{generation}/{target}").as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{cluster}-upgrade-{hex}")
}

/// The cluster's upgrades in the order they take turns: those already started first (by
/// when), then by creation (a second's resolution), then by name.
fn upgrades_of(caches: &Caches, ns: &str, cluster: &str) -> Vec<Arc<PostgresUpgrade>> {
    let mut found: Vec<Arc<PostgresUpgrade>> = caches
        .upgrades
        .list(ns, &[])
        .into_iter()
        .filter(|u| u.spec.cluster.name == cluster)
        .collect();
    found.sort_by_key(|u| turn(u));
    found
}

fn turn(u: &PostgresUpgrade) -> (bool, Option<Timestamp>, Option<Timestamp>, String) {
    let started = u
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0);
    (
        started.is_none(),
        started,
        u.creation_timestamp().map(|t| t.0),
        u.name_any(),
    )
}

async fn reconcile(cluster: Arc<PostgresCluster>, ctx: &Context) -> Result<Action, Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    if cluster.meta().deletion_timestamp.is_some() || cluster.spec.paused {
        return Ok(Action::await_change());
    }
    let running = ctx
        .caches
        .statefulsets
        .get(&ns, &name)
        .and_then(|s| version::running(&s));
    let desired_image = version::image_of(&cluster, &ctx.default_images);
    let upgrades = upgrades_of(&ctx.caches, &ns, &name);
    let mut active = upgrades.iter().filter(|u| u.is_active());
    let Some(first) = active.next().cloned() else {
        // Nothing active: start one when the spec asks for another version or image, else
        // keep what the last one leaves on the cluster (an aborted roll's hold).
        if let (Some(run), Some(image)) = (&running, &desired_image)
            && (run.version != cluster.spec.postgresql.version || &run.image != image)
            && !upgrades.iter().any(|u| gave_up_on(u, &cluster, image))
        {
            create_upgrade(ctx, &cluster, &ns, image).await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        let annotations = match upgrades.last() {
            Some(last) => {
                let pods = pods(ctx, &ns, &name);
                let facts = facts(
                    ctx,
                    &cluster,
                    last,
                    desired_image.as_deref(),
                    running.as_ref(),
                    &pods,
                    &ns,
                );
                plan::plan(&facts).annotations
            }
            None => BTreeMap::new(),
        };
        annotate(ctx, &cluster, &ns, annotations).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    };

    // The one-upgrade rule: every other active upgrade waits, and says for which.
    for other in active {
        one_at_a_time(ctx, other, &first).await?;
    }

    let pods = pods(ctx, &ns, &name);
    let facts = facts(
        ctx,
        &cluster,
        &first,
        desired_image.as_deref(),
        running.as_ref(),
        &pods,
        &ns,
    );
    let window = facts.window;
    let plan = plan::plan(&facts);
    let step = plan::current_step(&plan.status)
        .unwrap_or("none")
        .to_owned();
    async {
        match &plan.act {
            Act::Nothing => {}
            Act::CreateBackup(backup) => create_backup(ctx, &first, &cluster, backup).await?,
            Act::CreateJob(kind) => create_job(ctx, &first, &cluster, &plan.status, *kind).await?,
            Act::ResetDcs => reset_dcs(ctx, &ns, &name).await?,
            Act::DeleteReplicaVolumes => delete_replica_volumes(ctx, &first, &ns).await?,
        }
        annotate(ctx, &cluster, &ns, plan.annotations.clone()).await
    }
    .instrument(tracing::info_span!("upgrade.step", step = %step, upgrade = %first.name_any()))
    .await?;
    let api = ctx.caches.upgrades.api(&ns);
    if apply_status(
        &api,
        &ctx.field_manager,
        &PART,
        first.as_ref(),
        &plan.status,
    )
    .await?
    {
        ctx.metrics.wrote("PostgresUpgrade/status");
        ctx.upgrade_metrics
            .observe(&first.status.clone().unwrap_or_default(), &plan.status);
    }
    if let Some((reason, message, warning)) = plan.event {
        if warning {
            ctx.events
                .warning(first.as_ref(), reason, "Upgrade", message.clone())
                .await;
            ctx.events
                .warning(cluster.as_ref(), reason, "Upgrade", message)
                .await;
        } else {
            ctx.events
                .normal(first.as_ref(), reason, "Upgrade", message.clone())
                .await;
            ctx.events
                .normal(cluster.as_ref(), reason, "Upgrade", message)
                .await;
        }
    }
    // What the next step waits for (the cluster's status, Patroni) wakes nobody: look again
    // soon while moving; a person's answer (approval, resume) comes as a change of the spec.
    use pgpilot_api::upgrade::UpgradePhase;
    let wait = match (window, plan.status.phase) {
        (Window::Closed(Some(opens)), Some(UpgradePhase::Pending)) => {
            (opens - Timestamp::now().as_second()).clamp(5, 300) as u64
        }
        (_, Some(UpgradePhase::AwaitingApproval | UpgradePhase::Paused)) => 30,
        _ => 2,
    };
    Ok(Action::requeue(Duration::from_secs(wait)))
}

/// Whether upgrade `u` failed or was aborted on the way to what the cluster's spec asks for
/// now: it is not tried again by itself (delete it, or change the spec, to try again).
fn gave_up_on(u: &PostgresUpgrade, cluster: &PostgresCluster, image: &str) -> bool {
    u.spec.target_version == cluster.spec.postgresql.version
        && u.spec.target_image == image
        && matches!(
            u.status.as_ref().and_then(|s| s.phase),
            Some(
                pgpilot_api::upgrade::UpgradePhase::Failed
                    | pgpilot_api::upgrade::UpgradePhase::Aborted
            )
        )
}

fn pods(ctx: &Context, ns: &str, cluster: &str) -> Vec<plan::Pod> {
    let now = Timestamp::now();
    ctx.caches
        .pods
        .list(
            ns,
            &[(labels::CLUSTER, cluster), (labels::COMPONENT, "instance")],
        )
        .iter()
        .map(|p| plan::Pod {
            name: p.name_any(),
            image: version::pod_image(p).map(str::to_owned),
            ready: p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            age: p
                .creation_timestamp()
                .map_or(0, |t| now.as_second() - t.0.as_second()),
        })
        .collect()
}

fn facts<'a>(
    ctx: &Context,
    cluster: &'a PostgresCluster,
    upgrade: &'a PostgresUpgrade,
    desired_image: Option<&'a str>,
    running: Option<&'a Running>,
    pods: &'a [plan::Pod],
    ns: &str,
) -> Facts<'a> {
    let now = Timestamp::now();
    let pre = plan::backup_name(&upgrade.name_any());
    let backups: Vec<Arc<PostgresBackup>> = ctx
        .caches
        .backups
        .list(ns, &[])
        .into_iter()
        .filter(|b| b.spec.cluster.name == cluster.name_any())
        .collect();
    let backup = backups
        .iter()
        .find(|b| b.name_any() == pre)
        .map(|b| PreBackup {
            phase: b.status.as_ref().and_then(|s| s.phase),
            error: b.status.as_ref().and_then(|s| s.error.clone()),
        });
    let other_backup_running = backups.iter().any(|b| {
        b.name_any() != pre
            && matches!(
                b.status.as_ref().and_then(|s| s.phase),
                None | Some(BackupPhase::Pending | BackupPhase::Running)
            )
    });
    Facts {
        now,
        cluster,
        upgrade,
        desired_image,
        running,
        pods,
        window: window(cluster, now.as_second()),
        backup,
        other_backup_running,
        major: major_seen(ctx, upgrade, ns),
    }
}

/// The Jobs of a major upgrade and the replicas' volumes, from the caches.
fn major_seen(ctx: &Context, upgrade: &PostgresUpgrade, ns: &str) -> MajorSeen {
    let cluster = &upgrade.spec.cluster.name;
    let pods = ctx.caches.pods.list(
        ns,
        &[
            (labels::CLUSTER, cluster),
            (labels::COMPONENT, major::COMPONENT),
        ],
    );
    let job = |kind: Kind| {
        let job = ctx
            .caches
            .jobs
            .get(ns, &major::job_name(&upgrade.name_any(), kind))?;
        // Only a Job of this upgrade (a name can come back with a new upgrade).
        if !job
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == upgrade.uid().as_ref())
        {
            return None;
        }
        // Its pod's success is seen before the Job controller records it.
        let pod_succeeded = pods.iter().any(|p| {
            p.labels().get("batch.kubernetes.io/controller-uid") == job.uid().as_ref()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
        });
        Some(
            if pod_succeeded || jobs::condition(&job, "Complete").is_some() {
                JobState::Succeeded(jobs::last_message(&job, &pods, false).unwrap_or_default())
            } else if jobs::condition(&job, "Failed").is_some() {
                JobState::Failed(
                    jobs::last_message(&job, &pods, true)
                        .unwrap_or_else(|| "the Job failed without a message".to_owned()),
                )
            } else {
                JobState::Running
            },
        )
    };
    let replica_volumes = old_replica_volumes(ctx, upgrade, ns).len();
    let stopped = ctx
        .caches
        .statefulsets
        .get(ns, cluster)
        .is_some_and(|s| s.spec.as_ref().and_then(|s| s.replicas) == Some(0));
    MajorSeen {
        stopped,
        prepare: job(Kind::Prepare),
        pg_upgrade: job(Kind::PgUpgrade),
        revert: job(Kind::Revert),
        finish: job(Kind::Finish),
        replica_volumes,
    }
}

/// Creates a Job of a major upgrade (once: a look with a stale cache finds it there).
async fn create_job(
    ctx: &Context,
    upgrade: &PostgresUpgrade,
    cluster: &PostgresCluster,
    status: &PostgresUpgradeStatus,
    kind: Kind,
) -> Result<(), Error> {
    let backed_up = status
        .steps
        .iter()
        .any(|s| s.name == plan::BACKUP && s.state == pgpilot_api::upgrade::StepState::Done);
    let method = match upgrade.spec.major_upgrade_method {
        MajorUpgradeMethod::Link => Method::Link,
        MajorUpgradeMethod::Copy => Method::Copy,
        // Link only when a backup made just before is the way back.
        MajorUpgradeMethod::Auto if backed_up => Method::Link,
        MajorUpgradeMethod::Auto => Method::Copy,
    };
    let (Some(from_version), Some(from_image)) = (status.from_version, &status.from_image) else {
        return Ok(());
    };
    let Some(job) = major::job(
        &major::Inputs {
            upgrade,
            from_version,
            from_image,
            to_version: upgrade.spec.target_version,
            to_image: &upgrade.spec.target_image,
            method,
            scheduling: cluster.spec.scheduling.as_ref(),
        },
        kind,
    ) else {
        return Ok(());
    };
    let ns = upgrade.namespace().unwrap_or_default();
    if create_once(&ctx.caches.jobs.api(&ns), &job).await? {
        ctx.metrics.wrote("Job");
    }
    Ok(())
}

/// Patroni's state of the old cluster in its DCS, removed while no instance runs so that
/// the upgraded primary starts a cluster of its own: the system identifier it initialized
/// (`initialize`) and its timeline history on `<cluster>-config`, and the synchronous
/// standbys on `<cluster>-sync` (a stale set keeps the new primary from taking the lead:
/// it is "not the healthiest node" unless it is in the set).
async fn reset_dcs(ctx: &Context, ns: &str, cluster: &str) -> Result<(), Error> {
    let api = kube::Api::<ConfigMap>::namespaced(ctx.client.clone(), ns);
    for (name, keys) in [
        (format!("{cluster}-config"), &["initialize", "history"][..]),
        (
            format!("{cluster}-sync"),
            &["leader", "sync_standby", "quorum"][..],
        ),
    ] {
        let nulls: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|k| ((*k).to_owned(), serde_json::Value::Null))
            .collect();
        let patch = serde_json::json!({"metadata": {"annotations": nulls}});
        let result = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .instrument(tracing::info_span!("kube.patch", kind = "ConfigMap", name = %name))
            .await;
        match result {
            Ok(_) => ctx.metrics.wrote("ConfigMap"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                return Err(pgpilot_toolkit::Error::api::<Error>(
                    "patch",
                    "ConfigMap",
                    &name,
                )(e));
            }
        }
    }
    Ok(())
}

/// The volumes of every ordinal but 0 that hold the old version's data: those created
/// before the upgrade's `reclone-replicas` step began (the StatefulSet makes new ones after).
fn old_replica_volumes(
    ctx: &Context,
    upgrade: &PostgresUpgrade,
    ns: &str,
) -> Vec<Arc<PersistentVolumeClaim>> {
    let cluster = &upgrade.spec.cluster.name;
    let prefix = format!("data-{cluster}-");
    let since = upgrade
        .status
        .as_ref()
        .and_then(|s| s.steps.iter().find(|s| s.name == plan::RECLONE))
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0);
    ctx.caches
        .volumes
        .list(ns, &[(labels::CLUSTER, cluster)])
        .into_iter()
        .filter(|v| {
            let replica = v
                .name_any()
                .strip_prefix(&prefix)
                .is_some_and(|n| n != "0" && n.parse::<u32>().is_ok());
            let created = v.creation_timestamp().map(|t| t.0);
            replica && since.is_none_or(|since| created.is_some_and(|c| c < since))
        })
        .collect()
}

/// Deletes the old version's replica volumes; their pods are stopped.
async fn delete_replica_volumes(
    ctx: &Context,
    upgrade: &PostgresUpgrade,
    ns: &str,
) -> Result<(), Error> {
    let api = ctx.caches.volumes.api(ns);
    for v in old_replica_volumes(ctx, upgrade, ns) {
        if v.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = v.name_any();
        match api
            .delete(&name, &Default::default())
            .instrument(
                tracing::info_span!("kube.delete", kind = "PersistentVolumeClaim", name = %name),
            )
            .await
        {
            Ok(_) => ctx.metrics.wrote("PersistentVolumeClaim"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                return Err(pgpilot_toolkit::Error::api::<Error>(
                    "delete",
                    "PersistentVolumeClaim",
                    &name,
                )(e));
            }
        }
    }
    Ok(())
}

/// The cluster's maintenance window at `now`.
pub fn window(cluster: &PostgresCluster, now: i64) -> Window {
    let Some(w) = cluster
        .spec
        .upgrade
        .as_ref()
        .and_then(|u| u.maintenance_window.as_ref())
    else {
        return Window::Always;
    };
    let Ok(calendar) = Calendar::parse(&w.schedule, w.time_zone.as_deref()) else {
        return Window::Invalid;
    };
    let length = i64::from(w.duration_minutes) * 60;
    // Open when a window started less than its length ago.
    if calendar.due(now - length, now).is_some() {
        Window::Open
    } else {
        Window::Closed(calendar.next_after(now))
    }
}

async fn create_upgrade(
    ctx: &Context,
    cluster: &PostgresCluster,
    ns: &str,
    image: &str,
) -> Result<(), Error> {
    let version = cluster.spec.postgresql.version;
    let name = upgrade_name(
        &cluster.name_any(),
        cluster.metadata.generation.unwrap_or(0),
        version,
        image,
    );
    let policy = cluster.spec.upgrade.clone();
    let upgrade = PostgresUpgrade {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.to_owned()),
            labels: Some(BTreeMap::from([
                (labels::CLUSTER.to_owned(), cluster.name_any()),
                (
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGED_BY_VALUE.to_owned(),
                ),
            ])),
            owner_references: cluster.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: PostgresUpgradeSpec {
            cluster: pgpilot_api::common::ClusterReference {
                name: cluster.name_any(),
            },
            target_version: version,
            target_image: image.to_owned(),
            require_approval: policy
                .as_ref()
                .is_some_and(|p| p.approval == UpgradeApproval::Manual),
            approved: None,
            backup_before_upgrade: policy.as_ref().is_none_or(|p| p.backup_before_upgrade),
            major_upgrade_method: Default::default(),
            paused: false,
            abort: false,
            instance_timeout_seconds: policy.as_ref().map_or(600, |p| p.instance_timeout_seconds),
        },
        status: None,
    };
    if create_once(&ctx.caches.upgrades.api(ns), &upgrade).await? {
        ctx.metrics.wrote("PostgresUpgrade");
        ctx.events
            .normal(
                cluster,
                "UpgradeCreated",
                "Upgrade",
                format!(
                    "PostgresUpgrade {name} moves the instances to PostgreSQL {version} ({image})"
                ),
            )
            .await;
    }
    Ok(())
}

/// A second active upgrade of a cluster waits for the first, and says so.
async fn one_at_a_time(
    ctx: &Context,
    upgrade: &PostgresUpgrade,
    first: &PostgresUpgrade,
) -> Result<(), Error> {
    let mut status: PostgresUpgradeStatus = upgrade.status.clone().unwrap_or_default();
    status.phase = Some(pgpilot_api::upgrade::UpgradePhase::Pending);
    status.observed_generation = upgrade.metadata.generation;
    conditions::set(
        &mut status.conditions,
        Update {
            type_: plan::PROGRESSING,
            status: Status::False,
            reason: "AnotherUpgradeActive",
            message: format!(
                "PostgresUpgrade {} is under way for cluster {}: one upgrade at a time; this one waits (or abort it)",
                first.name_any(),
                upgrade.spec.cluster.name
            ),
            observed_generation: upgrade.metadata.generation,
        },
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
    );
    plan::set_outcome(
        &mut status,
        upgrade.metadata.generation,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
    );
    let api = ctx
        .caches
        .upgrades
        .api(&upgrade.namespace().unwrap_or_default());
    if apply_status(&api, &ctx.field_manager, &PART, upgrade, &status).await? {
        ctx.metrics.wrote("PostgresUpgrade/status");
    }
    Ok(())
}

async fn create_backup(
    ctx: &Context,
    upgrade: &PostgresUpgrade,
    cluster: &PostgresCluster,
    name: &str,
) -> Result<(), Error> {
    let ns = upgrade.namespace().unwrap_or_default();
    let backup = PostgresBackup {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.clone()),
            labels: Some(BTreeMap::from([
                (labels::CLUSTER.to_owned(), cluster.name_any()),
                (
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGED_BY_VALUE.to_owned(),
                ),
            ])),
            owner_references: upgrade.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: PostgresBackupSpec {
            cluster: upgrade.spec.cluster.clone(),
            backup_type: BackupType::Full,
            target: Default::default(),
            deletion_policy: Default::default(),
            verification: None,
        },
        status: None,
    };
    if create_once(&ctx.caches.backups.api(&ns), &backup).await? {
        ctx.metrics.wrote("PostgresBackup");
    }
    Ok(())
}

/// Sets this controller's annotations on the cluster to `desired` (removing those it no
/// longer wants), by server-side apply; no request when the cluster carries them already.
async fn annotate(
    ctx: &Context,
    cluster: &PostgresCluster,
    ns: &str,
    desired: BTreeMap<String, String>,
) -> Result<(), Error> {
    let live = cluster.annotations();
    let same = OURS.iter().all(|k| live.get(*k) == desired.get(*k));
    if same {
        return Ok(());
    }
    let name = cluster.name_any();
    let patch = serde_json::json!({
        "apiVersion": "pgpilot.io/v1alpha1",
        "kind": "PostgresCluster",
        "metadata": {"name": name, "annotations": desired},
    });
    kube::Api::<PostgresCluster>::namespaced(ctx.client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply(&ctx.field_manager).force(),
            &Patch::Apply(&patch),
        )
        .instrument(tracing::debug_span!("kube.apply", kind = "PostgresCluster", name = %name))
        .await
        .map_err(pgpilot_toolkit::Error::api::<Error>(
            "apply",
            "PostgresCluster",
            &name,
        ))?;
    ctx.metrics.wrote("PostgresCluster");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(window: Option<serde_json::Value>) -> PostgresCluster {
        let mut spec =
            serde_json::json!({"postgresql": {"version": 17}, "storage": {"size": "1Gi"}});
        if let Some(w) = window {
            spec["upgrade"] = serde_json::json!({"maintenanceWindow": w});
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresCluster",
            "metadata": {"name": "db", "namespace": "prod"}, "spec": spec,
        }))
        .unwrap()
    }

    /// Unix seconds of a UTC time.
    fn at(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }

    #[test]
    fn an_upgrade_under_way_keeps_its_turn_over_a_newer_one_of_the_same_second() {
        let upgrade = |name: &str, started: Option<&str>| -> PostgresUpgrade {
            let mut u: PostgresUpgrade = serde_json::from_value(serde_json::json!({
                "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresUpgrade",
                "metadata": {"name": name, "creationTimestamp": "2026-12-06T04:00:00Z"},
                "spec": {"cluster": {"name": "db"}, "targetVersion": 17, "targetImage": "x"},
            }))
            .unwrap();
            if let Some(t) = started {
                u.status = Some(PostgresUpgradeStatus {
                    start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        t.parse().unwrap(),
                    )),
                    ..Default::default()
                });
            }
            u
        };
        let under_way = upgrade("db-upgrade-1", Some("2026-12-06T04:00:00Z"));
        let by_hand = upgrade("by-hand", None);
        assert!(turn(&under_way) < turn(&by_hand));
        assert!(turn(&upgrade("a", None)) < turn(&upgrade("b", None)));
    }

    #[test]
    fn every_annotation_the_plan_sets_is_one_this_controller_owns_and_removes() {
        let mut set: Vec<String> = crate::major::limit(0).into_keys().collect();
        set.extend([labels::UPGRADE, labels::UPGRADE_TARGET, labels::ROLL_HOLD].map(String::from));
        for key in set {
            assert!(OURS.contains(&key.as_str()), "{key}");
        }
    }

    #[test]
    fn one_name_per_target_and_spec_generation() {
        let a = upgrade_name("db", 3, 17, "pg:17.6");
        assert_eq!(a, upgrade_name("db", 3, 17, "pg:17.6"));
        assert_ne!(a, upgrade_name("db", 3, 17, "pg:17.7"));
        // Back to an image upgraded to before: a new upgrade.
        assert_ne!(a, upgrade_name("db", 5, 17, "pg:17.6"));
        assert!(a.starts_with("db-upgrade-") && a.len() == "db-upgrade-".len() + 8);
    }

    #[test]
    fn the_window_is_open_from_its_start_for_its_length_in_its_time_zone() {
        assert_eq!(window(&cluster(None), 0), Window::Always);
        // Saturdays 02:00 Paris time (01:00 UTC in winter), two hours.
        let c = cluster(Some(serde_json::json!(
            {"schedule": "0 2 * * 6", "durationMinutes": 120, "timeZone": "Europe/Paris"}
        )));
        assert_eq!(window(&c, at("2026-12-12T01:30:00Z")), Window::Open);
        assert_eq!(
            window(&c, at("2026-12-12T03:30:00Z")),
            Window::Closed(Some(at("2026-12-19T01:00:00Z")))
        );
        assert_eq!(
            window(&c, at("2026-12-11T23:00:00Z")),
            Window::Closed(Some(at("2026-12-12T01:00:00Z")))
        );
        let bad = cluster(Some(
            serde_json::json!({"schedule": "0 2 * * 6", "durationMinutes": 60, "timeZone": "Mars/Olympus"}),
        ));
        assert_eq!(window(&bad, 0), Window::Invalid);
    }
}
