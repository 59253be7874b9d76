//! `deletionPolicy: Delete`: a finalizer holds a completed backup's object while a Job runs
//! `pgbackrest expire --set=<label>` on the cluster's repository; the object goes when the
//! Job ends. Without the policy no finalizer is set, and deleting the object leaves the
//! backup to the repository's retention.

use pgpilot_api::backup::{
    BackupDeletionPolicy, BackupPhase, PostgresBackup, PostgresBackupStatus,
};

/// The finalizer on PostgresBackups whose backup is to be expired with them.
pub const FINALIZER: &str = "pgpilot.io/expire-backup";

/// `pgpilot.io/component` of expire Jobs and their pods.
pub const COMPONENT: &str = "expire";

/// Expires exactly the backup (and, as pgBackRest does, the backups that depend on it).
pub const SCRIPT: &str = "pgbackrest expire --set=\"$PGPILOT_BACKUP_LABEL\"";

/// Whether the object should carry the finalizer, given its (new) status.
pub fn wants_finalizer(backup: &PostgresBackup, status: &PostgresBackupStatus) -> bool {
    backup.spec.deletion_policy == BackupDeletionPolicy::Delete
        && status.phase == Some(BackupPhase::Completed)
        && status.backup_id.is_some()
}

pub fn has_finalizer(backup: &PostgresBackup) -> bool {
    backup
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

/// The expire Job's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Missing,
    Running,
    Succeeded,
    Failed(String),
}

/// What to do with an object being deleted that carries the finalizer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Start the expire Job (on the cluster's repository).
    Expire {
        label: String,
    },
    Wait,
    /// Let the object go, saying what became of the backup (`Ok`: expired; `Err`: left in
    /// the repository, and why).
    Release(Result<String, String>),
}

pub fn deletion(backup: &PostgresBackup, cluster_has_repository: bool, job: &JobState) -> Deletion {
    let Some(label) = backup.status.as_ref().and_then(|s| s.backup_id.clone()) else {
        return Deletion::Release(Err("it never completed: there is nothing to expire".into()));
    };
    match job {
        JobState::Missing if cluster_has_repository => Deletion::Expire { label },
        JobState::Missing => Deletion::Release(Err(format!(
            "cluster {} (or its spec.backup) is gone, so backup {label} stays in the repository until its retention or a manual `pgbackrest expire --set={label}`",
            backup.spec.cluster.name
        ))),
        JobState::Running => Deletion::Wait,
        JobState::Succeeded => {
            Deletion::Release(Ok(format!("backup {label} expired from the repository")))
        }
        JobState::Failed(output) => Deletion::Release(Err(format!(
            "pgBackRest could not expire backup {label}, which stays in the repository: {}",
            output.trim()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(policy: &str, phase: Option<&str>) -> PostgresBackup {
        let mut status = serde_json::json!({});
        if let Some(p) = phase {
            status = serde_json::json!({"phase": p, "backupId": "20261206-030000F"});
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pgpilot.io/v1alpha1", "kind": "PostgresBackup",
            "metadata": {"name": "b", "namespace": "prod"},
            "spec": {"cluster": {"name": "db"}, "deletionPolicy": policy},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn only_a_completed_backup_with_policy_delete_is_held() {
        let wants = |b: PostgresBackup| wants_finalizer(&b, &b.status.clone().unwrap_or_default());
        assert!(wants(backup("Delete", Some("Completed"))));
        assert!(!wants(backup("Retain", Some("Completed"))));
        assert!(!wants(backup("Delete", Some("Failed"))));
        assert!(!wants(backup("Delete", None)));
    }

    #[test]
    fn the_backup_is_expired_then_the_object_released() {
        let b = backup("Delete", Some("Completed"));
        assert_eq!(
            deletion(&b, true, &JobState::Missing),
            Deletion::Expire {
                label: "20261206-030000F".into()
            }
        );
        assert_eq!(deletion(&b, true, &JobState::Running), Deletion::Wait);
        assert!(matches!(
            deletion(&b, true, &JobState::Succeeded),
            Deletion::Release(Ok(_))
        ));
        // A failure or a missing repository never blocks the deletion; the backup stays.
        match deletion(&b, true, &JobState::Failed("ERROR: [032]: …".into())) {
            Deletion::Release(Err(m)) => assert!(m.contains("stays in the repository")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            deletion(&b, false, &JobState::Missing),
            Deletion::Release(Err(_))
        ));
    }
}
