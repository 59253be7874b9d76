//! `BackupSchedule`: PostgresBackups on a cron schedule.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    BackupType, ClusterReference, Condition, Time, VerificationSpec, VerificationStatus,
};

/// A cron schedule in the 5-field form or a `@daily`-style macro, as CEL can check it.
/// The controller still parses it fully and reports a bad field in status.
pub(crate) const CRON_RULE: &str = "self.matches('^\\\\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*/,?-]+(\\\\s+[0-9A-Za-z*/,?-]+){4})\\\\s*$')";

/// Creates a PostgresBackup of one cluster on a cron schedule and prunes old ones.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "pgpilot.io",
    version = "v1alpha1",
    kind = "BackupSchedule",
    doc = "Creates PostgresBackups of one cluster on a cron schedule and prunes old ones.",
    namespaced,
    status = "BackupScheduleStatus",
    shortname = "pgbs",
    category = "pgpilot",
    derive = "PartialEq",
    cel,
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastScheduleTime"),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextScheduleTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.cluster == oldSelf.cluster").message("spec.cluster is immutable: create a new BackupSchedule for another cluster"))]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// The cluster to back up.
    pub cluster: ClusterReference,
    /// Cron schedule (`minute hour day-of-month month day-of-week`, or `@daily`, `@hourly`…).
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new(CRON_RULE).message("spec.schedule must be a cron schedule with 5 fields (e.g. '0 3 * * *') or a macro such as @daily"))]
    pub schedule: String,
    /// IANA time zone of the schedule, e.g. `Europe/Paris`. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// Full (default), Differential or Incremental.
    #[serde(default, rename = "type")]
    pub backup_type: BackupType,
    /// How many PostgresBackup objects of this schedule to keep.
    #[serde(default)]
    pub retention: ScheduleRetention,
    /// Create no new backups while true. Running ones finish.
    #[serde(default)]
    pub suspend: bool,
    /// What to do when a run is due while the previous backup still runs.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A run that could not start within this many seconds of its time is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 10").message("startingDeadlineSeconds must be at least 10"))]
    pub starting_deadline_seconds: Option<i64>,
    /// Verify every backup this schedule takes: restore it into a throwaway cluster and check
    /// the data (see PostgresBackup `spec.verification`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationSpec>,
}

/// How many backups of a schedule are kept as objects. The repository's own retention
/// (spec.backup.retention of the cluster) decides what data is kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRetention {
    /// Completed backups to keep.
    #[serde(default = "default_keep_successful")]
    #[x_kube(validation = Rule::new("self >= 1").message("retention.successful must be at least 1"))]
    pub successful: i32,
    /// Failed backups to keep for inspection.
    #[serde(default = "default_keep_failed")]
    #[x_kube(validation = Rule::new("self >= 0").message("retention.failed must not be negative"))]
    pub failed: i32,
}

impl Default for ScheduleRetention {
    fn default() -> Self {
        Self {
            successful: default_keep_successful(),
            failed: default_keep_failed(),
        }
    }
}

fn default_keep_successful() -> i32 {
    7
}
fn default_keep_failed() -> i32 {
    3
}

/// See [`BackupScheduleSpec::concurrency_policy`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Skip the run (default).
    #[default]
    Forbid,
    /// Cancel the running backup and start a new one.
    Replace,
}

/// Observed state of a schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    /// metav1.Condition list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When a backup was last created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When a backup last completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// Name of the last PostgresBackup created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// When the next backup is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The latest verification of one of this schedule's backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification: Option<VerificationStatus>,
    /// PostgresBackups of this schedule still running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
}
