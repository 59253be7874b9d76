//! `PostgresBackup`: one pgBackRest backup of one cluster.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    BackupType, ClusterReference, Condition, Time, VerificationSpec, VerificationStatus,
};

/// One backup of one PostgresCluster into its pgBackRest repository. Create one to take a
/// backup now; BackupSchedules create them on a schedule.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "pgpilot.io",
    version = "v1alpha1",
    kind = "PostgresBackup",
    doc = "One pgBackRest backup of one PostgresCluster. Create one to back up now; BackupSchedules create them on a schedule.",
    namespaced,
    status = "PostgresBackupStatus",
    shortname = "pgb",
    shortname = "pgbackup",
    category = "pgpilot",
    derive = "PartialEq",
    cel,
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Size",
        type_ = "string",
        json_path = ".status.size",
        description = "Backup size (before compression)"
    ),
    printcolumn(
        name = "Backup ID",
        type_ = "string",
        json_path = ".status.backupId",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.cluster == oldSelf.cluster && self.type == oldSelf.type && self.target == oldSelf.target").message("spec.cluster, spec.type and spec.target of a PostgresBackup are immutable: create a new PostgresBackup instead"))]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupSpec {
    /// The cluster to back up.
    pub cluster: ClusterReference,
    /// Full (default), Differential or Incremental.
    #[serde(default, rename = "type")]
    pub backup_type: BackupType,
    /// Where the backup reads from: `PreferStandby` (default) a streaming replica when there
    /// is one, sparing the primary the reads; `Primary` always the primary.
    #[serde(default)]
    pub target: BackupTarget,
    /// What deleting this object does to the backup in the repository. `Retain` (default)
    /// leaves it to the repository's retention; `Delete` expires it right away.
    #[serde(default)]
    pub deletion_policy: BackupDeletionPolicy,
    /// Once the backup completes, restore it into a throwaway cluster and check the data.
    /// May be added to a completed backup to verify it then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationSpec>,
}

/// See [`PostgresBackupSpec::target`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupTarget {
    #[default]
    PreferStandby,
    Primary,
}

/// See [`PostgresBackupSpec::deletion_policy`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackupDeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// Observed state of a backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupStatus {
    /// Pending, Running, Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// metav1.Condition list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// pgBackRest backup label, e.g. `20261121-101500F`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// When the backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the backup finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_time: Option<Time>,
    /// Database size covered by the backup, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Bytes stored in the repository (after compression and deduplication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_size_bytes: Option<i64>,
    /// `sizeBytes` for people, e.g. `1.2 GiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// First WAL segment needed to restore this backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_start: Option<String>,
    /// Last WAL segment needed to make it consistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_stop: Option<String>,
    /// WAL location where the backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn_start: Option<String>,
    /// WAL location where it stopped: a restore of it reaches at least this point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn_stop: Option<String>,
    /// The earliest point the repository could restore to when this backup finished: the
    /// end of its oldest backup then (retention had just expired older ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recoverable_from: Option<Time>,
    /// The Job that runs (or ran) pgBackRest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Why the backup failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The verification of this backup (with `spec.verification`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationStatus>,
}

/// Phase of a backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    Pending,
    Running,
    Completed,
    Failed,
}
