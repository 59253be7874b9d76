//! PostgresBackup: one pgBackRest backup of one cluster, run by a Job named after the object
//! (a reconcile after a crash finds the Job instead of starting a second run), from a standby
//! when one streams and the spec prefers it. Its status comes from the Job and pgBackRest's
//! own report of the backup (`info --output=json`, found by the object's uid annotated on the
//! backup). Deleting the object deletes the Job, never the backup.
//!
//! A reconcile: observe (the backup, its cluster, the cluster's pods and the Job, from the
//! caches) → [`plan`] (pure) → act (create the Job) → status.

pub mod expire;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_api::backup::{BackupPhase, PostgresBackup};
use pgpilot_api::labels;
use pgpilot_postgres::members::pod_ready;
use pgpilot_postgres::names::COMPONENT_INSTANCE;
use pgpilot_toolkit::conditions;
use pgpilot_toolkit::events::Events;
use pgpilot_toolkit::metrics::ControllerMetrics;
use pgpilot_toolkit::runner::{Cache, Reconciler};
use pgpilot_toolkit::status::{StatusPart, apply_status};
use tracing::Instrument;

use crate::archiving::observe::{image, pod_ip};
use crate::archiving::plan::CONTINUOUS_ARCHIVING;
use crate::error::Error;
use crate::job;
use crate::metrics::BackupMetrics;
use crate::verification;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use pgpilot_api::backup::PostgresBackupStatus;
use pgpilot_api::common::VerificationResult;
use pgpilot_toolkit::apply::{create_once, delete_if_present};
use plan::{ClusterFacts, JobFacts, Next};

/// `pgpilot.io/component` of backup Jobs and their pods.
pub const COMPONENT: &str = "backup";

/// Every status field of a PostgresBackup is this controller's.
pub const PART: StatusPart<'static> = StatusPart {
    fields: &[
        "phase",
        "observedGeneration",
        "backupId",
        "startTime",
        "stopTime",
        "sizeBytes",
        "repositorySizeBytes",
        "size",
        "walStart",
        "walStop",
        "lsnStart",
        "lsnStop",
        "recoverableFrom",
        "job",
        "error",
        "verification",
    ],
    conditions: &[plan::READY, pgpilot_toolkit::conditions::STALLED],
};

/// Keeps only the oldest backup of each stanza and the one annotated with this backup's uid,
/// in pgBackRest's own JSON shape: the report fits a termination message (4 KiB).
const REPORT_FILTER: &str = r#"import json, os, sys
uid = os.environ["PGPILOT_BACKUP_UID"]
info = json.load(sys.stdin)
for stanza in info:
    backups = stanza.get("backup", [])
    mine = [b for b in backups if (b.get("annotation") or {}).get("pgpilot.io/backup") == uid]
    keep = backups[:1] + mine[-1:]
    stanza["backup"] = [b for i, b in enumerate(keep) if b not in keep[:i]]
    stanza.pop("db", None)
    stanza.pop("repo", None)
json.dump(info, sys.stdout, separators=(",", ":"))
"#;

/// `--backup-standby=prefer` (fall back to the primary when no standby answers) is newer than
/// bookworm's pgBackRest 2.45 (in the PostgreSQL 15 images), which gets `y`.
const SCRIPT: &str = "set -e
if [ \"$PGPILOT_BACKUP_STANDBY\" = prefer ] && ! pgbackrest help backup backup-standby | grep -q prefer; then
  PGPILOT_BACKUP_STANDBY=y
fi
pgbackrest backup --type=\"$PGPILOT_BACKUP_TYPE\" --backup-standby=\"$PGPILOT_BACKUP_STANDBY\" --annotation=pgpilot.io/backup=\"$PGPILOT_BACKUP_UID\"
pgbackrest info --output=json | python3 -c \"$PGPILOT_REPORT_FILTER\" >/dev/termination-log";

pub struct Caches {
    pub clusters: Cache<PostgresCluster>,
    pub pods: Cache<Pod>,
    pub jobs: Cache<Job>,
}

pub struct Context {
    pub client: Client,
    pub field_manager: String,
    pub events: Events,
    pub metrics: ControllerMetrics,
    pub caches: Caches,
    pub backup_metrics: BackupMetrics,
}

#[async_trait::async_trait]
impl Reconciler for Context {
    type Object = PostgresBackup;
    type Error = Error;

    async fn reconcile(&self, backup: Arc<PostgresBackup>) -> Result<Action, Error> {
        reconcile(backup, self).await
    }
}

/// The Job of a backup: its name, cut to leave room for the suffix (Job names become label
/// values, at most 63 characters), with the uid's start when cut.
pub fn job_name(backup: &PostgresBackup) -> String {
    derived_name(backup, "backup", 63)
}

/// `<backup>-<suffix>` in at most `max` characters: the backup's name cut, with the start of
/// its uid to keep it unique, when it is too long.
pub fn derived_name(backup: &PostgresBackup, suffix: &str, max: usize) -> String {
    let name = backup.name_any();
    if name.len() + 1 + suffix.len() <= max {
        format!("{name}-{suffix}")
    } else {
        let uid = backup.uid().unwrap_or_default();
        let cut = max.saturating_sub(suffix.len() + 10).min(name.len());
        format!("{}-{}-{suffix}", &name[..cut], &uid[..uid.len().min(8)])
    }
}

async fn reconcile(backup: Arc<PostgresBackup>, ctx: &Context) -> Result<Action, Error> {
    // A scheduled backup's reconciles lead back to the schedule's reconcile that created it.
    if let Some(parent) = backup.annotations().get(labels::TRACEPARENT) {
        pgpilot_toolkit::telemetry::link_to(parent);
    }
    if backup.metadata.deletion_timestamp.is_some() {
        if expire::has_finalizer(&backup) {
            return deleting(ctx, &backup).await;
        }
        return Ok(Action::await_change());
    }
    let ns = backup.namespace().unwrap_or_default();
    let uid = backup.uid().unwrap_or_default();
    let job_name = job_name(&backup);
    let cluster = ctx.caches.clusters.get(&ns, &backup.spec.cluster.name);

    // Observe.
    let facts = cluster_facts(ctx, &ns, cluster.as_deref());
    let job = ctx
        .caches
        .jobs
        .get(&ns, &job_name)
        .map(|j| job_facts(&j, ctx, &ns));
    let previous = backup.status.clone().unwrap_or_default();

    // Plan, act.
    let next = plan::next(backup.spec.target, previous.phase, &facts, job.as_ref());
    if let (
        Next::Start {
            hosts,
            prefer_standby,
        },
        Some(cluster),
    ) = (&next, cluster.as_deref())
    {
        let primary_pod = ctx.caches.pods.get(&ns, &hosts[0]);
        let image = primary_pod
            .as_deref()
            .and_then(image)
            .unwrap_or_default()
            .to_owned();
        let owner = backup
            .controller_owner_ref(&())
            .ok_or_else(|| Error::Invalid {
                field: "metadata.uid",
                message: "the backup has no uid yet".into(),
            })?;
        let env = |name: &str, value: String| EnvVar {
            name: name.into(),
            value: Some(value),
            ..Default::default()
        };
        let job = job::job(
            cluster,
            job::Spec {
                name: job_name.clone(),
                component: COMPONENT,
                command: job::shell(SCRIPT),
                repository: job::Repository::Own { hosts },
                extra_env: vec![
                    env(
                        "PGPILOT_BACKUP_TYPE",
                        backup.spec.backup_type.pgbackrest_name().into(),
                    ),
                    env(
                        "PGPILOT_BACKUP_STANDBY",
                        if *prefer_standby { "prefer" } else { "n" }.into(),
                    ),
                    env("PGPILOT_BACKUP_UID", uid.clone()),
                    env("PGPILOT_REPORT_FILTER", REPORT_FILTER.into()),
                ],
                annotations: BTreeMap::new(),
                owner,
                image: &image,
                // A failed backup is reported, not retried: a schedule takes the next one.
                retries: 0,
            },
        )?;
        // The Job's name is the backup's: one pgBackRest run per object, whatever a crash
        // or a stale cache makes this reconcile believe.
        if create_once(&ctx.caches.jobs.api(&ns), &job).await? {
            ctx.metrics.wrote("Job");
            ctx.events
                .normal(
                    backup.as_ref(),
                    "BackupStarted",
                    "Backup",
                    format!(
                        "{} backup of {} started by Job {job_name}{}",
                        backup.spec.backup_type.pgbackrest_name(),
                        backup.spec.cluster.name,
                        if *prefer_standby {
                            ", from a standby"
                        } else {
                            ", from the primary"
                        }
                    ),
                )
                .await;
        }
    }

    // Status, and an Event when the backup ends.
    let mut status = plan::status(&previous, &uid, &job_name, &facts, job.as_ref());
    status.observed_generation = backup.metadata.generation;
    let verifying = verify(ctx, &backup, cluster.as_deref(), &mut status).await?;
    plan::set_conditions(
        &mut status,
        &previous.conditions,
        backup.metadata.generation,
        Time(Timestamp::now()),
    );
    let api: Api<PostgresBackup> = Api::namespaced(ctx.client.clone(), &ns);
    if apply_status(&api, &ctx.field_manager, &PART, backup.as_ref(), &status).await? {
        ctx.metrics.wrote("PostgresBackup/status");
    }
    let hold = expire::wants_finalizer(&backup, &status);
    if hold != expire::has_finalizer(&backup) {
        set_finalizer(ctx, &api, &backup, hold).await?;
    }
    if previous.phase != status.phase {
        let cluster_name = &backup.spec.cluster.name;
        match status.phase {
            Some(BackupPhase::Completed) => {
                let secs = |t: &Option<Time>| t.as_ref().map(|t| t.0.as_second());
                if let (Some(start), Some(stop)) =
                    (secs(&status.start_time), secs(&status.stop_time))
                {
                    ctx.backup_metrics
                        .completed(&ns, cluster_name, (stop - start) as f64);
                    ctx.backup_metrics
                        .last_backup(&ns, cluster_name, stop, status.size_bytes);
                }
                ctx.events
                    .normal(
                        backup.as_ref(),
                        "BackupCompleted",
                        "Backup",
                        format!(
                            "backup {} of {} completed: {}",
                            status.backup_id.as_deref().unwrap_or("?"),
                            backup.spec.cluster.name,
                            status.size.as_deref().unwrap_or("?")
                        ),
                    )
                    .await
            }
            Some(BackupPhase::Failed) => {
                let error = status.error.clone().unwrap_or_default();
                let reason = cluster
                    .as_deref()
                    .and_then(|c| c.spec.backup.as_ref())
                    .map(|b| {
                        pgpilot_postgres::pgbackrest::archive_failure(&error, &b.repository).reason
                    })
                    .filter(|r| *r != "ArchiveFailed")
                    .unwrap_or("Other");
                ctx.backup_metrics.failed(&ns, cluster_name, reason);
                ctx.events
                    .warning(
                        backup.as_ref(),
                        "BackupFailed",
                        "Backup",
                        status.error.clone().unwrap_or_default(),
                    )
                    .await
            }
            _ => {}
        }
    }
    Ok(match status.phase {
        // A verification's cluster and Job wake this object; the timeout needs a clock.
        Some(BackupPhase::Completed) if verifying => Action::requeue(Duration::from_secs(30)),
        Some(BackupPhase::Completed | BackupPhase::Failed) => Action::await_change(),
        // Waiting on the cluster: its status changes do not wake this object.
        _ => Action::requeue(Duration::from_secs(15)),
    })
}

/// The verification of a completed backup with `spec.verification` ([`verification`]): the
/// next step taken, `status.verification` set. Returns whether it still runs.
async fn verify(
    ctx: &Context,
    backup: &PostgresBackup,
    source: Option<&PostgresCluster>,
    status: &mut PostgresBackupStatus,
) -> Result<bool, Error> {
    let (Some(spec), Some(BackupPhase::Completed), Some(backup_id)) = (
        backup.spec.verification.as_ref(),
        status.phase,
        status.backup_id.clone(),
    ) else {
        return Ok(false);
    };
    let ns = backup.namespace().unwrap_or_default();
    let name = verification::cluster_name(backup);
    let throwaway = ctx.caches.clusters.get(&ns, &name);
    let pods = ctx
        .caches
        .pods
        .list(&ns, &[(labels::CLUSTER, name.as_str())]);
    let seen = throwaway
        .as_deref()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| verification::observe(c, &pods));
    let check_name = verification::check_job_name(backup);
    let check = ctx
        .caches
        .jobs
        .get(&ns, &check_name)
        .map(|j| verification::check(&j, &pods));
    let previous = status.verification.clone();
    let step = verification::plan::step(&verification::plan::Facts {
        spec,
        backup: &backup.name_any(),
        backup_id: &backup_id,
        previous: previous.as_ref(),
        throwaway: seen.as_ref(),
        check: check.as_ref(),
        now: Timestamp::now(),
    });
    let clusters: Api<PostgresCluster> = Api::namespaced(ctx.client.clone(), &ns);
    if step.create_cluster {
        let Some(source) = source else {
            return Err(Error::Invalid {
                field: "spec.cluster",
                message: format!(
                    "cluster {} is gone: nothing to verify from",
                    backup.spec.cluster.name
                ),
            });
        };
        let c = verification::throwaway(backup, source, &backup_id)?;
        if create_once(&clusters, &c).await? {
            ctx.metrics.wrote("PostgresCluster");
            ctx.events
                .normal(
                    backup,
                    "VerificationStarted",
                    "Verify",
                    format!("restoring backup {backup_id} into throwaway cluster {name}"),
                )
                .await;
        }
    }
    if let (true, Some(t)) = (step.create_check, throwaway.as_deref()) {
        let image = ctx
            .caches
            .pods
            .list(
                &ns,
                &[
                    (labels::CLUSTER, name.as_str()),
                    (labels::COMPONENT, COMPONENT_INSTANCE),
                ],
            )
            .iter()
            .find_map(|p| image(p).map(str::to_owned))
            .unwrap_or_default();
        let job = verification::check_job(backup, t, spec, &image)?;
        if create_once(&ctx.caches.jobs.api(&ns), &job).await? {
            ctx.metrics.wrote("Job");
        }
    }
    if step.delete_cluster && delete_if_present(&clusters, &name).await? {
        ctx.metrics.wrote("PostgresCluster");
    }
    let finished = step.status.result != VerificationResult::Running;
    let was_finished = previous
        .as_ref()
        .is_some_and(|p| p.result != VerificationResult::Running);
    if finished && !was_finished {
        ctx.backup_metrics.verified(
            &ns,
            &backup.spec.cluster.name,
            step.status.result == VerificationResult::Passed,
            Timestamp::now().as_second(),
        );
        let message = step.status.message.clone().unwrap_or_default();
        match step.status.result {
            VerificationResult::Passed => {
                ctx.events
                    .normal(backup, "VerificationPassed", "Verify", message)
                    .await
            }
            _ => {
                ctx.events
                    .warning(backup, "VerificationFailed", "Verify", message)
                    .await
            }
        }
    }
    status.verification = Some(step.status);
    // Finished with the cluster still there: the next look deletes it.
    Ok(!finished || seen.is_some())
}

/// The expire Job's name: the backup Job's, with another suffix.
fn expire_job_name(backup: &PostgresBackup) -> String {
    let name = job_name(backup);
    format!("{}-expire", name.trim_end_matches("-backup"))
}

/// Adds or removes this controller's finalizer (server-side apply: the object's other
/// finalizers are not ours to touch).
async fn set_finalizer(
    ctx: &Context,
    api: &Api<PostgresBackup>,
    backup: &PostgresBackup,
    hold: bool,
) -> Result<(), Error> {
    let name = backup.name_any();
    let finalizers: Vec<&str> = if hold {
        vec![expire::FINALIZER]
    } else {
        vec![]
    };
    let patch = serde_json::json!({
        "apiVersion": "pgpilot.io/v1alpha1",
        "kind": "PostgresBackup",
        "metadata": {"name": name, "finalizers": finalizers},
    });
    api.patch(
        &name,
        &kube::api::PatchParams::apply(&ctx.field_manager).force(),
        &kube::api::Patch::Apply(patch),
    )
    .instrument(tracing::debug_span!("kube.apply", kind = "PostgresBackup", name = %name))
    .await
    .map_err(Error::api("patch", "PostgresBackup", &name))?;
    ctx.metrics.wrote("PostgresBackup");
    Ok(())
}

/// A backup with `deletionPolicy: Delete` being deleted: expire it, then let the object go.
async fn deleting(ctx: &Context, backup: &PostgresBackup) -> Result<Action, Error> {
    let ns = backup.namespace().unwrap_or_default();
    let cluster = ctx.caches.clusters.get(&ns, &backup.spec.cluster.name);
    let repository = cluster.as_deref().filter(|c| c.spec.backup.is_some());
    let job_name = expire_job_name(backup);
    let state = match ctx.caches.jobs.get(&ns, &job_name) {
        None => expire::JobState::Missing,
        Some(j) => {
            let pods = ctx
                .caches
                .pods
                .list(&ns, &[(labels::COMPONENT, expire::COMPONENT)]);
            if job::condition(&j, "Complete").is_some() {
                expire::JobState::Succeeded
            } else if job::condition(&j, "Failed").is_some() {
                expire::JobState::Failed(job::last_message(&j, &pods, true).unwrap_or_default())
            } else {
                expire::JobState::Running
            }
        }
    };
    let api: Api<PostgresBackup> = Api::namespaced(ctx.client.clone(), &ns);
    match expire::deletion(backup, repository.is_some(), &state) {
        expire::Deletion::Wait => {}
        expire::Deletion::Expire { label } => {
            let Some(cluster) = repository else {
                return Ok(Action::await_change());
            };
            let image = ctx
                .caches
                .pods
                .list(
                    &ns,
                    &[
                        (labels::CLUSTER, cluster.name_any().as_str()),
                        (labels::COMPONENT, COMPONENT_INSTANCE),
                    ],
                )
                .iter()
                .find_map(|p| image(p).map(str::to_owned))
                .or_else(|| cluster.spec.postgresql.image.clone())
                .unwrap_or_default();
            let owner = backup
                .controller_owner_ref(&())
                .ok_or_else(|| Error::Invalid {
                    field: "metadata.uid",
                    message: "the backup has no uid yet".into(),
                })?;
            let job = job::job(
                cluster,
                job::Spec {
                    name: job_name.clone(),
                    component: expire::COMPONENT,
                    command: job::shell(expire::SCRIPT),
                    repository: job::Repository::Own { hosts: &[] },
                    extra_env: vec![EnvVar {
                        name: "PGPILOT_BACKUP_LABEL".into(),
                        value: Some(label.clone()),
                        ..Default::default()
                    }],
                    annotations: BTreeMap::new(),
                    owner,
                    image: &image,
                    retries: 1,
                },
            )?;
            if create_once(&ctx.caches.jobs.api(&ns), &job).await? {
                ctx.metrics.wrote("Job");
                ctx.events
                    .normal(
                        backup,
                        "ExpiringBackup",
                        "Expire",
                        format!("Job {job_name} expires backup {label} (deletionPolicy: Delete)"),
                    )
                    .await;
            }
        }
        expire::Deletion::Release(outcome) => {
            match outcome {
                Ok(m) => {
                    ctx.events
                        .normal(backup, "BackupExpired", "Expire", m)
                        .await
                }
                Err(m) => {
                    ctx.events
                        .warning(backup, "BackupNotExpired", "Expire", m)
                        .await
                }
            }
            set_finalizer(ctx, &api, backup, false).await?;
            return Ok(Action::await_change());
        }
    }
    Ok(Action::requeue(Duration::from_secs(15)))
}

fn cluster_facts(ctx: &Context, ns: &str, cluster: Option<&PostgresCluster>) -> ClusterFacts {
    let Some(cluster) = cluster else {
        return ClusterFacts {
            exists: false,
            has_repository: false,
            archiving: Err("no cluster".into()),
            primary: None,
            replicas: Vec::new(),
        };
    };
    let name = cluster.name_any();
    let archiving = match cluster
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, CONTINUOUS_ARCHIVING))
    {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(format!(
            "ContinuousArchiving={} ({}): {}",
            c.status, c.reason, c.message
        )),
        None => Err("the cluster shows no ContinuousArchiving condition yet".into()),
    };
    let pods = ctx.caches.pods.list(
        ns,
        &[
            (labels::CLUSTER, name.as_str()),
            (labels::COMPONENT, COMPONENT_INSTANCE),
        ],
    );
    let ready = |role: &str| {
        let mut names: Vec<String> = pods
            .iter()
            .filter(|p| p.labels().get(labels::ROLE).map(String::as_str) == Some(role))
            .filter(|p| pod_ready(p) && pod_ip(p).is_some())
            .map(|p| p.name_any())
            .collect();
        names.sort();
        names
    };
    ClusterFacts {
        exists: true,
        has_repository: cluster.spec.backup.is_some(),
        archiving,
        primary: ready(labels::ROLE_PRIMARY).into_iter().next(),
        replicas: ready(labels::ROLE_REPLICA),
    }
}

fn job_facts(job: &Job, ctx: &Context, ns: &str) -> JobFacts {
    let message = || {
        let pods = ctx.caches.pods.list(ns, &[(labels::COMPONENT, COMPONENT)]);
        job::last_message(job, &pods, false)
    };
    if job::condition(job, "Complete").is_some() {
        JobFacts::Succeeded { report: message() }
    } else if job::condition(job, "Failed").is_some() {
        JobFacts::Failed { output: message() }
    } else {
        JobFacts::Running {
            started: job.status.as_ref().and_then(|s| s.start_time.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_field_is_written() {
        let t = Some(Time(Timestamp::UNIX_EPOCH));
        let text = Some(String::from("x"));
        let full = PostgresBackupStatus {
            phase: Some(BackupPhase::Completed),
            conditions: Vec::new(),
            observed_generation: Some(1),
            backup_id: text.clone(),
            start_time: t.clone(),
            stop_time: t.clone(),
            size_bytes: Some(1),
            repository_size_bytes: Some(1),
            size: text.clone(),
            wal_start: text.clone(),
            wal_stop: text.clone(),
            lsn_start: text.clone(),
            lsn_stop: text.clone(),
            recoverable_from: t,
            job: text.clone(),
            error: text,
            verification: Some(Default::default()),
        };
        let value = serde_json::to_value(&full).unwrap();
        for key in value.as_object().unwrap().keys() {
            assert!(PART.fields.contains(&key.as_str()), "{key} is not in PART");
        }
    }

    #[test]
    fn job_names_fit_a_label_value() {
        let backup = |name: &str| -> PostgresBackup {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresBackup",
                "metadata": {"name": name, "namespace": "prod", "uid": "0123456789abcdef"},
                "spec": {"cluster": {"name": "db"}},
            }))
            .unwrap()
        };
        assert_eq!(job_name(&backup("db-nightly")), "db-nightly-backup");
        let long = job_name(&backup(&"n".repeat(120)));
        assert!(long.len() <= 63, "{long}");
        assert!(long.ends_with("-01234567-backup"), "{long}");
    }
}
