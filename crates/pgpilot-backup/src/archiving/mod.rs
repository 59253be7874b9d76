//! The WAL archive of every PostgresCluster with `spec.backup`: its stanza created and checked
//! by a Job ([`stanza`]), `ContinuousArchiving` and `status.backup` from the primary's own view.
//!
//! One reconcile of one PostgresCluster, top-down:
//!
//! 1. **observe** — the primary, the stanza Job and the superuser's password from the
//!    caches ([`observe::seen`]); the primary's archiver over SQL once the stanza is ready;
//! 2. **plan** — pure: the stanza Job's next step and what `ContinuousArchiving` says
//!    ([`plan`]);
//! 3. **act** — create or delete the stanza Job (at most one of the two);
//! 4. **status** — `status.backup` and the condition, written when they changed.

pub mod observe;
pub mod plan;
pub mod stanza;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_postgres::pgbackrest;
use pgpilot_toolkit::conditions::{self, Status};
use pgpilot_toolkit::events::Events;
use pgpilot_toolkit::metrics::ControllerMetrics;
use pgpilot_toolkit::runner::Reconciler;

use crate::error::Error;
use crate::metrics::BackupMetrics;
use crate::restores;
use observe::Caches;
use pgpilot_api::cluster::RepositoryChange;
use pgpilot_api::cluster::condition::RESTORE_SOURCE_READY;
use pgpilot_api::labels;
use pgpilot_postgres::pgbackrest::restore::Source;
use pgpilot_postgres::version::{self, DefaultImages};
use pgpilot_toolkit::apply::{create_once, delete_if_present};
use plan::{Archiving, CONTINUOUS_ARCHIVING, JobOutcome, StanzaStep};

/// How often a cluster with backups is looked at again: the archive moves without any
/// Kubernetes object changing.
const RESYNC: Duration = Duration::from_secs(30);

/// What every reconcile of one namespace (or all) shares.
pub struct Context {
    pub client: Client,
    pub field_manager: String,
    pub events: Events,
    pub metrics: ControllerMetrics,
    pub caches: Caches,
    /// Images by PostgreSQL version: a restore is checked with the pgBackRest its
    /// instances will run.
    pub default_images: DefaultImages,
    pub backup_metrics: BackupMetrics,
}

#[async_trait::async_trait]
impl Reconciler for Context {
    type Object = PostgresCluster;
    type Error = Error;

    async fn reconcile(&self, cluster: Arc<PostgresCluster>) -> Result<Action, Error> {
        reconcile(cluster, self).await
    }
}

async fn reconcile(cluster: Arc<PostgresCluster>, ctx: &Context) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cluster.namespace().ok_or_else(|| Error::Invalid {
        field: "metadata.namespace",
        message: "missing".into(),
    })?;
    let name = cluster.name_any();
    let stanza_name = pgbackrest::stanza(&ns, &name);
    let restore = check_restore(&cluster, ctx, &ns).await?;
    let Some(backup) = cluster.spec.backup.as_ref() else {
        ctx.backup_metrics.forget(&ns, &name);
        let status = status::compute(
            &cluster,
            &stanza_name,
            restore.as_ref(),
            None,
            None,
            None,
            now(),
        );
        status::write(ctx, &cluster, &status).await?;
        return Ok(match restore {
            Some(_) => Action::requeue(RESYNC),
            None => Action::await_change(),
        });
    };

    // Observe.
    let seen = observe::seen(&ctx.caches, &ns, &name);
    let conf = pgbackrest::config_file(backup, &ns, &name)?;
    let version = cluster
        .status
        .as_ref()
        .and_then(|s| s.version)
        .unwrap_or(cluster.spec.postgresql.version);
    let hash = stanza::config_hash(&conf, backup, version);
    let stanza_ready = seen
        .stanza_job
        .as_ref()
        .is_some_and(|j| j.hash == hash && j.outcome == JobOutcome::Succeeded);
    let archiver = match &seen.superuser {
        Some(target) if stanza_ready => {
            let read = observe::archiver(target, &stanza_name).await;
            if read.is_err() {
                ctx.metrics.call_failed("sql", "archiver");
            }
            Some(read)
        }
        _ => None,
    };

    // Plan. Another repository than the one holding the backups waits for its acceptance.
    let change = RepositoryChange::of(&cluster);
    let step = match change {
        Some(_) => StanzaStep::Wait,
        None => plan::stanza_step(seen.stanza_job.as_ref(), &hash, seen.primary.is_some()),
    };
    let live = cluster
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, CONTINUOUS_ARCHIVING));
    let previous = live.map(|c| (status_of(&c.status), c.reason.as_str(), c.message.as_str()));
    let archiving = match &change {
        Some(change) => Archiving {
            status: Status::False,
            reason: "RepositoryChangeNotAccepted",
            message: change.message(&ns, &name),
        },
        None => plan::archiving(
            backup,
            &stanza_name,
            seen.stanza_job.as_ref(),
            &hash,
            archiver.as_ref(),
            previous,
        ),
    };

    // Act.
    let jobs = ctx.caches.jobs.api(&ns);
    let job_name = stanza::job_name(&name);
    match step {
        StanzaStep::Wait => {}
        StanzaStep::Create => {
            let primary = seen.primary.as_deref();
            if let Some((pod, image)) =
                primary.and_then(|p| Some((p.name_any(), observe::image(p)?)))
            {
                let job: Job = stanza::job(&cluster, &pod, image, &hash)?;
                // Already there (the cache is behind): the Job runs, nothing to announce.
                if create_once(&jobs, &job).await? {
                    ctx.metrics.wrote("Job");
                    ctx.events
                        .normal(
                            cluster.as_ref(),
                            "StanzaJobCreated",
                            "CreateStanza",
                            format!(
                                "Job {job_name} creates and checks stanza {stanza_name} through {pod}"
                            ),
                        )
                        .await;
                }
            }
        }
        // The next reconcile creates the new Job once the cache no longer has this one.
        StanzaStep::Delete => delete_job(ctx, &jobs, &job_name).await?,
    }

    // Status, and an Event when the condition changes its status.
    let read = archiver.as_ref().and_then(|r| r.as_ref().ok());
    if let Some(a) = read {
        ctx.backup_metrics.archive(
            &ns,
            &name,
            a.last_archived_at.map(|micros| micros / 1_000_000),
            a.pending_segments(),
            Timestamp::now().as_second(),
        );
    }
    if let Some(stop) = seen
        .last_backup
        .as_ref()
        .and_then(|(last, _)| last.completion_time.as_ref())
    {
        ctx.backup_metrics
            .last_backup(&ns, &name, stop.0.as_second(), None);
    }
    let mut status = status::compute(
        &cluster,
        &stanza_name,
        restore.as_ref(),
        Some(&archiving),
        read,
        seen.last_backup.clone(),
        now(),
    );
    if stanza_ready && change.is_none() {
        status::record_repository(&mut status, backup.repository.s3.location());
    }
    status::write(ctx, &cluster, &status).await?;
    let before = live.map(|c| (status_of(&c.status), c.reason.as_str()));
    if before.map(|(s, _)| s) != Some(archiving.status)
        || (change.is_some() && before.map(|(_, r)| r) != Some(archiving.reason))
    {
        match archiving.status {
            Status::True => {
                ctx.events
                    .normal(
                        cluster.as_ref(),
                        "ArchivingWorks",
                        "Observe",
                        archiving.message.clone(),
                    )
                    .await
            }
            Status::False => {
                ctx.events
                    .warning(
                        cluster.as_ref(),
                        archiving.reason,
                        "Observe",
                        archiving.message.clone(),
                    )
                    .await
            }
            Status::Unknown => {}
        }
    }
    Ok(Action::requeue(RESYNC))
}

/// The check of `spec.bootstrap.restore` until a backup is chosen ([`restores`]): its Job
/// created or deleted, an Event when the verdict changes. `None` once chosen (or without a
/// restore).
async fn check_restore(
    cluster: &PostgresCluster,
    ctx: &Context,
    ns: &str,
) -> Result<Option<restores::Step>, Error> {
    let Some(spec) = cluster
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.restore.as_ref())
    else {
        return Ok(None);
    };
    let name = cluster.name_any();
    let job_name = restores::job_name(&name);
    let jobs = ctx.caches.jobs.api(ns);
    if cluster.status.as_ref().is_some_and(|s| s.restore.is_some()) {
        // Chosen and read back: the check Job has done its work.
        if ctx.caches.jobs.get(ns, &job_name).is_some() {
            delete_job(ctx, &jobs, &job_name).await?;
        }
        return Ok(None);
    }
    let source = Source::new(spec, ns);
    let pods = ctx.caches.pods.list(
        ns,
        &[
            (labels::CLUSTER, name.as_str()),
            (labels::COMPONENT, restores::COMPONENT),
        ],
    );
    let seen = restores::seen(ctx.caches.jobs.get(ns, &job_name).as_deref(), &pods);
    let stanza = source.stanza();
    let request = restores::plan::Request {
        stanza: &stanza,
        backup_id: spec.backup_id.as_deref(),
        target: cluster
            .spec
            .bootstrap
            .as_ref()
            .and_then(|b| b.recovery_target.as_ref()),
        now: Timestamp::now().as_second(),
    };
    let mut step = restores::step(&source, &request, &seen);
    match step.job {
        restores::JobStep::Nothing => {}
        restores::JobStep::Create => {
            let Some(image) = version::image_of(cluster, &ctx.default_images) else {
                step.status = Status::False;
                step.reason = "NoImage";
                step.message = format!(
                    "no image to read the repository with: set spec.postgresql.image (this pgpilot has no default image for PostgreSQL {})",
                    cluster.spec.postgresql.version
                );
                return Ok(Some(step));
            };
            let job = restores::job(cluster, &source, &image)?;
            if create_once(&jobs, &job).await? {
                ctx.metrics.wrote("Job");
                ctx.events
                    .normal(
                        cluster,
                        "RestoreCheckStarted",
                        "CheckRestoreSource",
                        format!(
                            "Job {job_name} reads stanza {stanza} to choose the backup to restore"
                        ),
                    )
                    .await;
            }
        }
        restores::JobStep::Delete => delete_job(ctx, &jobs, &job_name).await?,
    }
    let live = cluster
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, RESTORE_SOURCE_READY))
        .map(|c| (status_of(&c.status), c.reason.clone()));
    if step.status != Status::Unknown && live != Some((step.status, step.reason.to_owned())) {
        if step.status == Status::True {
            ctx.events
                .normal(
                    cluster,
                    "RestoreSourceReady",
                    "CheckRestoreSource",
                    step.message.clone(),
                )
                .await;
        } else {
            ctx.events
                .warning(
                    cluster,
                    step.reason,
                    "CheckRestoreSource",
                    step.message.clone(),
                )
                .await;
        }
    }
    Ok(Some(step))
}

async fn delete_job(ctx: &Context, jobs: &kube::Api<Job>, name: &str) -> Result<(), Error> {
    if delete_if_present(jobs, name).await? {
        ctx.metrics.wrote("Job");
    }
    Ok(())
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn status_of(s: &str) -> Status {
    match s {
        "True" => Status::True,
        "False" => Status::False,
        _ => Status::Unknown,
    }
}
