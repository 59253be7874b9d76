//! The part of a PostgresCluster's status the backup controller owns: `status.backup` and
//! the `ContinuousArchiving` condition, written with server-side apply under its own field
//! manager and only when they changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use pgpilot_api::PostgresCluster;
use pgpilot_api::cluster::{ClusterBackupStatus, LastBackup, PostgresClusterStatus};
use pgpilot_postgres::archiver::Archiver;
use pgpilot_toolkit::conditions::{self, Update};
use pgpilot_toolkit::status::{StatusPart, apply_status};

use super::Context;
use super::plan::{Archiving, CONTINUOUS_ARCHIVING};
use crate::error::Error;
use crate::restores::Step;
use pgpilot_api::cluster::condition::RESTORE_SOURCE_READY;

pub const PART: StatusPart<'static> = StatusPart {
    fields: &["backup", "lastBackup", "restore"],
    conditions: &[CONTINUOUS_ARCHIVING, RESTORE_SOURCE_READY],
};

/// The status for a cluster: the archive with `spec.backup`, the restore check with
/// `spec.bootstrap.restore` (`restore`: its step while it runs; once a backup is chosen the
/// live choice stays). Without either, an empty part: nothing of ours stays.
pub fn compute(
    cluster: &PostgresCluster,
    stanza: &str,
    restore: Option<&Step>,
    archiving: Option<&Archiving>,
    archiver: Option<&Archiver>,
    last_backup: Option<(LastBackup, Option<Time>)>,
    now: Time,
) -> PostgresClusterStatus {
    let mut status = PostgresClusterStatus {
        conditions: cluster
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
        restore: cluster.status.as_ref().and_then(|s| s.restore.clone()),
        ..Default::default()
    };
    let restoring = cluster
        .spec
        .bootstrap
        .as_ref()
        .is_some_and(|b| b.restore.is_some());
    if !restoring {
        status.restore = None;
        status
            .conditions
            .retain(|c| c.type_ != RESTORE_SOURCE_READY);
    }
    if let Some(step) = restore {
        conditions::set(
            &mut status.conditions,
            Update {
                type_: RESTORE_SOURCE_READY,
                status: step.status,
                reason: step.reason,
                message: step.message.clone(),
                observed_generation: cluster.metadata.generation,
            },
            now.clone(),
        );
        status.restore.clone_from(&step.chosen);
    }
    let previous = cluster.status.as_ref().and_then(|s| s.backup.clone());
    let Some(archiving) = archiving else {
        status
            .conditions
            .retain(|c| c.type_ != CONTINUOUS_ARCHIVING);
        // Where the backups are stays known without spec.backup: adding another repository
        // later must be accepted explicitly.
        status.backup = previous
            .filter(|b| b.repository.is_some())
            .map(|b| ClusterBackupStatus {
                repository: b.repository,
                previous_repository: b.previous_repository,
                ..Default::default()
            });
        return status;
    };
    let recoverable_from = last_backup.as_ref().and_then(|(_, from)| from.clone());
    status.last_backup = last_backup.map(|(last, _)| last);
    conditions::set(
        &mut status.conditions,
        Update {
            type_: CONTINUOUS_ARCHIVING,
            status: archiving.status,
            reason: archiving.reason,
            message: archiving.message.clone(),
            observed_generation: cluster.metadata.generation,
        },
        now,
    );
    let time = |micros: Option<i64>| {
        micros
            .and_then(|m| Timestamp::from_microsecond(m).ok())
            .map(Time)
    };
    status.backup = Some(match archiver {
        Some(a) => ClusterBackupStatus {
            stanza: Some(stanza.to_owned()),
            last_archived_wal: a.last_archived_wal.clone(),
            last_archived_time: time(a.last_archived_at),
            last_failed_wal: a.last_failed_wal.clone(),
            last_failed_time: time(a.last_failed_at),
            last_recoverability_point: time(a.last_archived_at),
            ..previous.unwrap_or_default()
        },
        // The primary could not be read: what was known stays.
        None => ClusterBackupStatus {
            stanza: Some(stanza.to_owned()),
            ..previous.unwrap_or_default()
        },
    });
    if let (Some(b), Some(from)) = (status.backup.as_mut(), recoverable_from) {
        b.first_recoverability_point = Some(from);
    }
    status
}

/// Records `location` as the repository holding the cluster's backups (its stanza is there);
/// an accepted change keeps the one it left.
pub fn record_repository(status: &mut PostgresClusterStatus, location: String) {
    let backup = status.backup.get_or_insert_with(Default::default);
    if let Some(old) = backup.repository.take().filter(|old| *old != location) {
        backup.previous_repository = Some(old);
    }
    backup.repository = Some(location);
}

/// Writes this controller's part when it differs from the live one; returns whether it wrote.
pub async fn write(
    ctx: &Context,
    cluster: &PostgresCluster,
    status: &PostgresClusterStatus,
) -> Result<bool, Error> {
    let api: Api<PostgresCluster> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let wrote = apply_status(&api, &ctx.field_manager, &PART, cluster, status).await?;
    if wrote {
        ctx.metrics.wrote("PostgresCluster/status");
    }
    Ok(wrote)
}

#[cfg(test)]
mod tests {
    use pgpilot_toolkit::conditions::Status;
    use serde_json::json;

    use super::*;

    fn cluster(status: serde_json::Value) -> PostgresCluster {
        serde_json::from_value(json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresCluster",
            "metadata": {"name": "db", "namespace": "prod", "generation": 3},
            "spec": {"postgresql": {"version": 17}, "storage": {"size": "1Gi"}},
            "status": status,
        }))
        .unwrap()
    }

    fn now() -> Time {
        Time(Timestamp::from_second(1_800_000_000).unwrap())
    }

    #[test]
    fn only_the_backup_fields_and_condition_are_ours() {
        let live = cluster(json!({"phase": "Ready", "conditions": [
            {"type": "Ready", "status": "True", "reason": "AllReady", "message": "",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]}));
        let archiving = Archiving {
            status: Status::True,
            reason: "Archiving",
            message: "ok".into(),
        };
        let a = Archiver {
            last_archived_wal: Some("000000010000000000000003".into()),
            last_archived_at: Some(1_799_999_990_000_000),
            ..Default::default()
        };
        let last = LastBackup {
            name: "db-nightly-1".into(),
            backup_id: Some("20261205-220815F".into()),
            completion_time: None,
        };
        let from = Time(Timestamp::from_second(1_799_000_000).unwrap());
        let status = compute(
            &live,
            "prod-db",
            None,
            Some(&archiving),
            Some(&a),
            Some((last, Some(from))),
            now(),
        );
        let value = serde_json::to_value(&status).unwrap();
        let part = PART.project(&value);
        assert_eq!(part["lastBackup"]["backupId"], "20261205-220815F");
        assert_eq!(
            part["backup"]["firstRecoverabilityPoint"],
            "2027-01-03T18:13:20Z"
        );
        assert_eq!(part["backup"]["stanza"], "prod-db");
        assert_eq!(
            part["backup"]["lastArchivedWal"],
            "000000010000000000000003"
        );
        assert_eq!(
            part["backup"]["lastRecoverabilityPoint"],
            "2027-01-15T07:59:50Z"
        );
        let conditions = part["conditions"].as_array().unwrap();
        assert_eq!(
            conditions.len(),
            1,
            "the cluster controller's Ready is not ours"
        );
        assert_eq!(conditions[0]["type"], "ContinuousArchiving");
        assert_eq!(conditions[0]["observedGeneration"], 3);
        assert!(part.get("phase").is_none());
    }

    #[test]
    fn the_repository_is_recorded_and_outlives_spec_backup() {
        let mut status = PostgresClusterStatus::default();
        record_repository(&mut status, "s3://one/db".into());
        record_repository(&mut status, "s3://one/db".into());
        let b = status.backup.clone().unwrap();
        assert_eq!(b.repository.as_deref(), Some("s3://one/db"));
        assert_eq!(b.previous_repository, None);
        record_repository(&mut status, "s3://two/db".into());
        let b = status.backup.clone().unwrap();
        assert_eq!(
            (b.repository.as_deref(), b.previous_repository.as_deref()),
            (Some("s3://two/db"), Some("s3://one/db"))
        );

        let live = cluster(
            json!({"backup": {"stanza": "prod-db", "repository": "s3://two/db",
            "lastArchivedWal": "000000010000000000000003"}}),
        );
        let status = compute(&live, "prod-db", None, None, None, None, now());
        let part = PART.project(&serde_json::to_value(&status).unwrap());
        assert_eq!(part, json!({"backup": {"repository": "s3://two/db"}}));
    }

    #[test]
    fn without_spec_backup_nothing_of_ours_is_left() {
        let live = cluster(json!({"backup": {"stanza": "prod-db"}, "conditions": [
            {"type": "ContinuousArchiving", "status": "True", "reason": "Archiving", "message": "",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]}));
        let status = compute(&live, "prod-db", None, None, None, None, now());
        let part = PART.project(&serde_json::to_value(&status).unwrap());
        assert_eq!(part, json!({}));
        assert!(
            PART.patch(&serde_json::to_value(&status).unwrap(), None)
                .is_none()
        );
    }

    #[test]
    fn an_unreadable_primary_keeps_what_was_known() {
        let live = cluster(json!({"backup": {"stanza": "prod-db",
            "lastArchivedWal": "000000010000000000000003"}}));
        let archiving = Archiving {
            status: Status::Unknown,
            reason: "NoPrimary",
            message: "no primary".into(),
        };
        let status = compute(&live, "prod-db", None, Some(&archiving), None, None, now());
        assert_eq!(
            status.backup.unwrap().last_archived_wal.as_deref(),
            Some("000000010000000000000003")
        );
    }

    #[test]
    fn a_restores_choice_is_written_once_and_then_kept() {
        use crate::restores::{JobStep, Step};
        use pgpilot_api::cluster::RestoreStatus;
        let mut live: PostgresCluster = serde_json::from_value(json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresCluster",
            "metadata": {"name": "db", "namespace": "prod", "generation": 1},
            "spec": {"postgresql": {"version": 17}, "storage": {"size": "1Gi"},
                "bootstrap": {"restore": {"source": {"name": "old"}, "repository": {"s3": {
                    "endpoint": "minio:9000", "bucket": "b", "credentials": {"secretName": "s3"}}}}}},
        }))
        .unwrap();
        let chosen = RestoreStatus {
            stanza: "prod-old".into(),
            backup_id: "20261206-010000F".into(),
            backup_stop_time: None,
        };
        let step = Step {
            job: JobStep::Delete,
            status: Status::True,
            reason: "BackupChosen",
            message: "restoring …".into(),
            chosen: Some(chosen.clone()),
        };
        let status = compute(&live, "prod-db", Some(&step), None, None, None, now());
        assert_eq!(status.restore.as_ref(), Some(&chosen));
        let part = PART.project(&serde_json::to_value(&status).unwrap());
        assert_eq!(part["conditions"][0]["type"], "RestoreSourceReady");
        assert_eq!(part["restore"]["backupId"], "20261206-010000F");

        // Later reconciles no longer check (no step): the choice and its condition stay.
        live.status = Some(status);
        let again = compute(&live, "prod-db", None, None, None, None, now());
        assert_eq!(PART.project(&serde_json::to_value(&again).unwrap()), part);
    }
}
