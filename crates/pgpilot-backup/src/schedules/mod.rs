//! BackupSchedule: PostgresBackups of one cluster on a cron schedule in a time zone. A run is
//! created once under a name derived from its time (a restarted manager finds it), a run
//! missed while the manager was down is taken once if still within the starting deadline,
//! and finished backups beyond the history limits are deleted as objects (their data stays
//! until the repository's retention expires it).
//!
//! A reconcile: observe (the schedule's backups from the cache) → [`plan`] (pure, with
//! [`calendar`]) → act (create, replace or prune backups) → status.

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use pgpilot_api::backup::{BackupPhase, PostgresBackupSpec};
use pgpilot_api::common::VerificationResult;
use pgpilot_api::labels;
use pgpilot_api::schedule::BackupScheduleStatus;
use pgpilot_api::{BackupSchedule, PostgresBackup};
use pgpilot_toolkit::calendar::Calendar;
use pgpilot_toolkit::conditions::{self, Status, Update};
use pgpilot_toolkit::events::Events;
use pgpilot_toolkit::metrics::ControllerMetrics;
use pgpilot_toolkit::runner::{Cache, Reconciler};
use pgpilot_toolkit::status::{StatusPart, apply_status};
use tracing::Instrument;

use crate::error::Error;
use plan::{Decision, Run};

/// The schedule's condition: whether it can run, and when it runs next.
pub const SCHEDULED: &str = "Scheduled";
/// On each PostgresBackup a schedule creates: the time of its run (RFC 3339).
pub const SCHEDULED_AT: &str = "pgpilot.io/scheduled-at";

pub const PART: StatusPart<'static> = StatusPart {
    fields: &[
        "observedGeneration",
        "lastScheduleTime",
        "lastSuccessfulTime",
        "lastBackup",
        "nextScheduleTime",
        "active",
        "lastVerification",
    ],
    conditions: &[SCHEDULED, conditions::STALLED],
};

pub struct Context {
    pub client: Client,
    pub field_manager: String,
    pub events: Events,
    pub metrics: ControllerMetrics,
    pub backups: Cache<PostgresBackup>,
}

#[async_trait::async_trait]
impl Reconciler for Context {
    type Object = BackupSchedule;
    type Error = Error;

    async fn reconcile(&self, schedule: Arc<BackupSchedule>) -> Result<Action, Error> {
        reconcile(schedule, self).await
    }
}

fn secs(t: &Time) -> i64 {
    t.0.as_second()
}

fn time(secs: i64) -> Option<Time> {
    Timestamp::from_second(secs).ok().map(Time)
}

async fn reconcile(schedule: Arc<BackupSchedule>, ctx: &Context) -> Result<Action, Error> {
    if schedule.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = schedule.namespace().unwrap_or_default();
    let name = schedule.name_any();
    let now = Timestamp::now().as_second();
    let previous = schedule.status.clone().unwrap_or_default();
    let mut status = BackupScheduleStatus {
        conditions: previous.conditions.clone(),
        observed_generation: schedule.metadata.generation,
        last_schedule_time: previous.last_schedule_time.clone(),
        ..Default::default()
    };
    let api: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), &ns);
    let set = |status: &mut BackupScheduleStatus, s: Status, reason: &str, message: String| {
        // A schedule that cannot fire waits for its spec to change: kstatus' Failed.
        let stalled = matches!(reason, "InvalidSchedule" | "NoNextRun");
        conditions::set_stalled(
            &mut status.conditions,
            stalled.then(|| (reason, message.clone())),
            schedule.metadata.generation,
            Time(Timestamp::now()),
        );
        conditions::set(
            &mut status.conditions,
            Update {
                type_: SCHEDULED,
                status: s,
                reason,
                message,
                observed_generation: schedule.metadata.generation,
            },
            Time(Timestamp::now()),
        );
    };

    let calendar =
        match Calendar::parse(&schedule.spec.schedule, schedule.spec.time_zone.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                let e = format!("spec.{e}");
                set(&mut status, Status::False, "InvalidSchedule", e.clone());
                if apply_status(&api, &ctx.field_manager, &PART, schedule.as_ref(), &status).await?
                {
                    ctx.events
                        .warning(schedule.as_ref(), "InvalidSchedule", "Schedule", e)
                        .await;
                }
                return Ok(Action::await_change());
            }
        };

    // Observe. The last run taken is the latest of the status's and of the backups' own
    // record of their run: the schedule read here may predate the status write of the
    // reconcile that created the newest backup.
    let mine = ctx.backups.list(&ns, &[(labels::SCHEDULE, name.as_str())]);
    let runs: Vec<Run> = mine
        .iter()
        .map(|b| Run {
            name: b.name_any(),
            phase: b.status.as_ref().and_then(|s| s.phase),
            created: b.metadata.creation_timestamp.as_ref().map_or(now, secs),
        })
        .collect();
    let newest_run = mine
        .iter()
        .filter_map(|b| b.annotations().get(SCHEDULED_AT)?.parse::<Timestamp>().ok())
        .map(|t| t.as_second())
        .max();
    let last_taken = previous
        .last_schedule_time
        .as_ref()
        .map(secs)
        .max(newest_run);
    status.last_schedule_time = last_taken.and_then(time);
    let since = last_taken
        .or(schedule.metadata.creation_timestamp.as_ref().map(secs))
        .unwrap_or(now);

    // Plan and act.
    let backups: Api<PostgresBackup> = ctx.backups.api(&ns);
    let mut runs = runs;
    let created = |runs: &mut Vec<Run>, status: &mut BackupScheduleStatus, at: i64| {
        runs.push(Run {
            name: plan::backup_name(&name, at),
            phase: None,
            created: now,
        });
        status.last_schedule_time = time(at);
    };
    match plan::decide(&schedule.spec, &calendar, since, now, &runs) {
        Decision::Wait => {}
        Decision::Skip { at, why } => {
            ctx.events
                .normal(
                    schedule.as_ref(),
                    "RunSkipped",
                    "Schedule",
                    format!("run of {}: {why}", fmt(at)),
                )
                .await;
            // A run past its deadline is not due again; one waiting on another backup is.
            if why.contains("deadline") {
                status.last_schedule_time = time(at);
            }
        }
        Decision::Replace { delete, at } => {
            for victim in &delete {
                delete_backup(&backups, victim).await?;
                ctx.metrics.wrote("PostgresBackup");
            }
            ctx.events
                .normal(
                    schedule.as_ref(),
                    "BackupReplaced",
                    "Schedule",
                    format!("deleted {} for the run of {}", delete.join(", "), fmt(at)),
                )
                .await;
            create(ctx, &backups, &schedule, at).await?;
            runs.retain(|r| !delete.contains(&r.name));
            created(&mut runs, &mut status, at);
        }
        Decision::Create { at } => {
            create(ctx, &backups, &schedule, at).await?;
            created(&mut runs, &mut status, at);
        }
    }
    for old in plan::beyond_history(&schedule.spec, &runs) {
        delete_backup(&backups, &old).await?;
        ctx.metrics.wrote("PostgresBackup");
    }

    // Status.
    let completed = mine
        .iter()
        .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(BackupPhase::Completed))
        .max_by_key(|b| {
            b.status
                .as_ref()
                .and_then(|s| s.stop_time.as_ref().map(secs))
        });
    status.last_successful_time = completed.and_then(|b| b.status.as_ref()?.stop_time.clone());
    status.last_backup = runs
        .iter()
        .max_by_key(|r| (r.created, r.name.clone()))
        .map(|r| r.name.clone());
    status.active = runs
        .iter()
        .filter(|r| r.active())
        .map(|r| r.name.clone())
        .collect();
    status.active.sort();
    // The newest finished verification, kept when its backup leaves the history.
    status.last_verification = mine
        .iter()
        .filter_map(|b| b.status.as_ref()?.verification.clone())
        .chain(
            schedule
                .status
                .as_ref()
                .and_then(|s| s.last_verification.clone()),
        )
        .filter(|v| v.result != VerificationResult::Running)
        .max_by_key(|v| v.completion_time.as_ref().map(secs));
    let next = calendar.next_after(now.max(status.last_schedule_time.as_ref().map_or(now, secs)));
    status.next_schedule_time = if schedule.spec.suspend {
        None
    } else {
        next.and_then(time)
    };
    match (schedule.spec.suspend, next) {
        (true, _) => set(
            &mut status,
            Status::False,
            "Suspended",
            "spec.suspend is true: no new backups".into(),
        ),
        (false, Some(n)) => set(
            &mut status,
            Status::True,
            "Scheduled",
            format!("next run at {}", fmt(n)),
        ),
        (false, None) => set(
            &mut status,
            Status::False,
            "NoNextRun",
            "the schedule never fires again".into(),
        ),
    }
    if apply_status(&api, &ctx.field_manager, &PART, schedule.as_ref(), &status).await? {
        ctx.metrics.wrote("BackupSchedule/status");
    }
    // Wake at the next run (and now and then regardless: the clock may jump).
    let wait = next.map_or(300, |n| (n - now).clamp(1, 300));
    Ok(Action::requeue(Duration::from_secs(wait.unsigned_abs())))
}

fn fmt(t: i64) -> String {
    Timestamp::from_second(t).map_or_else(|_| t.to_string(), |t| t.to_string())
}

async fn create(
    ctx: &Context,
    api: &Api<PostgresBackup>,
    schedule: &BackupSchedule,
    at: i64,
) -> Result<(), Error> {
    let name = plan::backup_name(&schedule.name_any(), at);
    let owner = schedule
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Invalid {
            field: "metadata.uid",
            message: "the schedule has no uid yet".into(),
        })?;
    let backup = PostgresBackup {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: schedule.namespace(),
            labels: Some(BTreeMap::from([
                (labels::SCHEDULE.to_owned(), schedule.name_any()),
                (
                    labels::CLUSTER.to_owned(),
                    schedule.spec.cluster.name.clone(),
                ),
                (
                    labels::MANAGED_BY.to_owned(),
                    labels::MANAGED_BY_VALUE.to_owned(),
                ),
            ])),
            annotations: Some(
                [(SCHEDULED_AT.to_owned(), fmt(at))]
                    .into_iter()
                    .chain(
                        pgpilot_toolkit::telemetry::traceparent()
                            .map(|t| (labels::TRACEPARENT.to_owned(), t)),
                    )
                    .collect(),
            ),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: PostgresBackupSpec {
            cluster: schedule.spec.cluster.clone(),
            backup_type: schedule.spec.backup_type,
            target: Default::default(),
            deletion_policy: Default::default(),
            verification: schedule.spec.verification.clone(),
        },
        status: None,
    };
    match api
        .create(&PostParams::default(), &backup)
        .instrument(tracing::debug_span!("kube.create", kind = "PostgresBackup", name = %name))
        .await
    {
        Ok(_) => {}
        // Created by an earlier reconcile whose status write did not land: same run.
        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
        Err(e) => return Err(Error::api("create", "PostgresBackup", &name)(e)),
    }
    ctx.metrics.wrote("PostgresBackup");
    ctx.events
        .normal(
            schedule,
            "BackupCreated",
            "Schedule",
            format!("PostgresBackup {name} for the run of {}", fmt(at)),
        )
        .await;
    Ok(())
}

async fn delete_backup(api: &Api<PostgresBackup>, name: &str) -> Result<(), Error> {
    match api
        .delete(name, &DeleteParams::default())
        .instrument(tracing::debug_span!("kube.delete", kind = "PostgresBackup", name = %name))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::api("delete", "PostgresBackup", name)(e)),
    }
}
