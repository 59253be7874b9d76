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
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use pgpilot_api::PostgresCluster;
use pgpilot_postgres::pgbackrest;
use pgpilot_toolkit::conditions::{self, Status};
use pgpilot_toolkit::events::Events;
use pgpilot_toolkit::metrics::ControllerMetrics;
use pgpilot_toolkit::runner::Reconciler;
use tracing::Instrument;

use crate::error::Error;
use observe::Caches;
use plan::{CONTINUOUS_ARCHIVING, JobOutcome, StanzaStep};

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
    let Some(backup) = cluster.spec.backup.as_ref() else {
        let status = status::compute(&cluster, &stanza_name, None, None, None, now());
        status::write(ctx, &cluster, &status).await?;
        return Ok(Action::await_change());
    };

    // Observe.
    let seen = observe::seen(&ctx.caches, &ns, &name);
    let conf = pgbackrest::config_file(backup, &ns, &name)?;
    let hash = stanza::config_hash(&conf, backup);
    let stanza_ready = seen
        .stanza_job
        .as_ref()
        .is_some_and(|j| j.hash == hash && j.outcome == JobOutcome::Succeeded);
    let archiver = match (&seen.primary, &seen.superuser) {
        (Some(primary), Some(password)) if stanza_ready => {
            let read = observe::archiver(primary, password.clone(), &stanza_name).await;
            if read.is_err() {
                ctx.metrics.call_failed("sql", "archiver");
            }
            Some(read)
        }
        _ => None,
    };

    // Plan.
    let step = plan::stanza_step(seen.stanza_job.as_ref(), &hash, seen.primary.is_some());
    let live = cluster
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, CONTINUOUS_ARCHIVING));
    let previous = live.map(|c| (status_of(&c.status), c.reason.as_str(), c.message.as_str()));
    let archiving = plan::archiving(
        backup,
        &stanza_name,
        seen.stanza_job.as_ref(),
        &hash,
        archiver.as_ref(),
        previous,
    );

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
                jobs.create(&PostParams::default(), &job)
                    .instrument(tracing::debug_span!("kube.create", kind = "Job", name = %job_name))
                    .await
                    .map_err(Error::api("create", "Job", &job_name))?;
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
        StanzaStep::Delete => {
            // The next reconcile creates the new Job once the cache no longer has this one.
            jobs.delete(
                &job_name,
                &DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..Default::default()
                },
            )
            .instrument(tracing::debug_span!("kube.delete", kind = "Job", name = %job_name))
            .await
            .map_err(Error::api("delete", "Job", &job_name))?;
            ctx.metrics.wrote("Job");
        }
    }

    // Status, and an Event when the condition changes its status.
    let read = archiver.as_ref().and_then(|r| r.as_ref().ok());
    let status = status::compute(
        &cluster,
        &stanza_name,
        Some(&archiving),
        read,
        seen.last_backup.clone(),
        now(),
    );
    status::write(ctx, &cluster, &status).await?;
    let before = live.map(|c| status_of(&c.status));
    if before != Some(archiving.status) {
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
