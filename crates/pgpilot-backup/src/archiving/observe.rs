//! What a reconcile reads: the primary, the stanza Job and its pod, and the superuser
//! password from the watch caches; the primary's archiver over SQL.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use pgpilot_api::PostgresBackup;
use pgpilot_api::backup::BackupPhase;
use pgpilot_api::cluster::LastBackup;
use pgpilot_api::labels;
use pgpilot_postgres::archiver::{self, Archiver};
use pgpilot_postgres::names::{COMPONENT_INSTANCE, Names};
use pgpilot_postgres::sql;
use pgpilot_toolkit::runner::Cache;

use super::plan::{JobOutcome, StanzaJob};
use super::stanza;
use crate::job;

/// The controller's watch caches.
pub struct Caches {
    /// Pods of clusters: the instances (their role) and the Jobs' pods (their outcome).
    pub pods: Cache<Pod>,
    pub jobs: Cache<Job>,
    /// The clusters' own Secrets (the superuser's password).
    pub secrets: Cache<Secret>,
    pub backups: Cache<PostgresBackup>,
}

/// A cluster as the caches show it.
pub struct Seen {
    /// The instance labelled primary, with an address.
    pub primary: Option<Arc<Pod>>,
    pub stanza_job: Option<StanzaJob>,
    /// pgpilot's connection to the primary, from the superuser Secret.
    pub superuser: Option<sql::Target>,
    /// The cluster's newest completed PostgresBackup, and the earliest point the repository
    /// could restore to when it finished.
    pub last_backup: Option<(LastBackup, Option<Time>)>,
}

pub fn seen(caches: &Caches, ns: &str, cluster: &str) -> Seen {
    let names = Names::new(cluster);
    let primary = caches
        .pods
        .list(
            ns,
            &[
                (labels::CLUSTER, cluster),
                (labels::COMPONENT, COMPONENT_INSTANCE),
                (labels::ROLE, labels::ROLE_PRIMARY),
            ],
        )
        .into_iter()
        .find(|p| pod_ip(p).is_some() && p.metadata.deletion_timestamp.is_none());
    let stanza_job = caches
        .jobs
        .get(ns, &stanza::job_name(cluster))
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .map(|job| {
            stanza_job(
                &job,
                &caches.pods.list(
                    ns,
                    &[
                        (labels::CLUSTER, cluster),
                        (labels::COMPONENT, stanza::COMPONENT),
                    ],
                ),
            )
        });
    let superuser = primary.as_ref().and_then(|p| {
        let secret = caches.secrets.get(ns, &names.superuser_secret())?;
        sql::Target::superuser(&names, ns, &p.name_any(), pod_ip(p)?, &secret)
    });
    let last_backup = caches
        .backups
        .list(ns, &[])
        .into_iter()
        .filter(|b| b.spec.cluster.name == cluster)
        .filter_map(|b| {
            let st = b.status.as_ref()?;
            (st.phase == Some(BackupPhase::Completed)).then(|| {
                let last = LastBackup {
                    name: b.name_any(),
                    backup_id: st.backup_id.clone(),
                    completion_time: st.stop_time.clone(),
                };
                (last, st.recoverable_from.clone())
            })
        })
        .max_by_key(|(l, _)| l.completion_time.as_ref().map(|t| t.0));
    Seen {
        primary,
        stanza_job,
        superuser,
        last_backup,
    }
}

pub fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.pod_ip.as_deref()
}

/// The image the instances run: the stanza Job's pgBackRest must be theirs.
pub fn image(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .find(|c| c.name == "postgres")?
        .image
        .as_deref()
}

fn stanza_job(job: &Job, pods: &[Arc<Pod>]) -> StanzaJob {
    let outcome = if job::condition(job, "Complete").is_some() {
        JobOutcome::Succeeded
    } else if let Some(failed) = job::condition(job, "Failed") {
        let secs_ago = failed
            .last_transition_time
            .as_ref()
            .map(|t| Timestamp::now().as_second() - t.0.as_second())
            .unwrap_or_default();
        JobOutcome::Failed {
            message: job::last_message(job, pods, true),
            secs_ago,
        }
    } else {
        JobOutcome::Running {
            last_failure: job::last_message(job, pods, true),
        }
    };
    StanzaJob {
        hash: job
            .annotations()
            .get(stanza::CONFIG_HASH)
            .cloned()
            .unwrap_or_default(),
        outcome,
    }
}

/// The primary's archiver, or why it could not be read.
pub async fn archiver(target: &sql::Target, stanza: &str) -> Result<Archiver, String> {
    let client = target
        .connect("postgres")
        .await
        .map_err(|e| e.to_string())?;
    archiver::observe(&client, stanza)
        .await
        .map_err(|e| sql::SqlError::Observe(e).to_string())
}
