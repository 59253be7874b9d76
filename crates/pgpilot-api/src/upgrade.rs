//! `PostgresUpgrade`: the record and control of one minor or major upgrade.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{ClusterReference, Condition, Time, default_true};

/// One upgrade of one cluster. The upgrade controller creates it (owned by the cluster) when
/// the cluster's spec asks for another version or image than the instances run; a user may
/// create one too. Each step shows in status and can be gated, paused or aborted.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "pgpilot.io",
    version = "v1alpha1",
    kind = "PostgresUpgrade",
    doc = "The record and control of one minor or major PostgreSQL upgrade of one cluster.",
    namespaced,
    status = "PostgresUpgradeStatus",
    shortname = "pgu",
    shortname = "pgupgrade",
    category = "pgpilot",
    derive = "PartialEq",
    cel,
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "From", type_ = "string", json_path = ".status.fromImage"),
    printcolumn(name = "To", type_ = "string", json_path = ".spec.targetImage"),
    printcolumn(name = "Kind", type_ = "string", json_path = ".status.kind"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.cluster == oldSelf.cluster && self.targetVersion == oldSelf.targetVersion && self.targetImage == oldSelf.targetImage").message("spec.cluster, spec.targetVersion and spec.targetImage are immutable: abort this upgrade and start another"),
    validation = Rule::new("!has(oldSelf.approved) || !oldSelf.approved || (has(self.approved) && self.approved)").message("spec.approved cannot be withdrawn once given: set spec.abort to stop the upgrade"),
    validation = Rule::new("!oldSelf.abort || self.abort").message("spec.abort cannot be undone: an aborted upgrade stays aborted; create a new PostgresUpgrade")
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresUpgradeSpec {
    /// The cluster to upgrade.
    pub cluster: ClusterReference,
    /// PostgreSQL major version after the upgrade (equal to the current one for a minor
    /// upgrade). Lower than the current version is refused.
    #[x_kube(validation = Rule::new("self >= 15 && self <= 18").message("spec.targetVersion must be a supported major version: 15, 16, 17 or 18"))]
    pub target_version: i32,
    /// Image to run after the upgrade.
    #[schemars(length(min = 1, max = 512))]
    pub target_image: String,
    /// Wait for `approved: true` before changing anything.
    #[serde(default)]
    pub require_approval: bool,
    /// Approval for an upgrade that requires it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
    /// Take a full backup first (when the cluster has a repository). On by default.
    #[serde(default = "default_true")]
    pub backup_before_upgrade: bool,
    /// Major upgrades: `Link` (pg_upgrade --link, fast, no way back once the new primary
    /// writes), `Copy` (needs twice the space, the old data stays intact), or `Auto` (link
    /// when a pre-upgrade backup succeeded).
    #[serde(default)]
    pub major_upgrade_method: MajorUpgradeMethod,
    /// Hold before the next step. In-flight steps finish.
    #[serde(default)]
    pub paused: bool,
    /// Stop and roll back what can be rolled back (see docs/upgrade.md). Final.
    #[serde(default)]
    pub abort: bool,
    /// Pause when an upgraded instance is not healthy this long after its pod was replaced.
    #[serde(default = "crate::cluster::default_instance_timeout")]
    #[x_kube(validation = Rule::new("self >= 60 && self <= 86400").message("spec.instanceTimeoutSeconds must be between 60 and 86400"))]
    pub instance_timeout_seconds: i32,
}

/// See [`PostgresUpgradeSpec::major_upgrade_method`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MajorUpgradeMethod {
    #[default]
    Auto,
    Link,
    Copy,
}

/// Observed state of an upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresUpgradeStatus {
    /// Current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<UpgradePhase>,
    /// `Minor` or `Major`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<UpgradeKind>,
    /// metav1.Condition list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Major version before the upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<i32>,
    /// Image before the upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    /// PostgresBackup taken before the upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Every step, in order, with its state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<UpgradeStep>,
    /// When the upgrade started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the upgrade ended (succeeded, failed or aborted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// What each instance runs, as the upgrade moves them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<UpgradeInstance>,
}

/// One instance during an upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeInstance {
    /// Pod name.
    pub name: String,
    /// The image its pod runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// PostgreSQL's own version string, e.g. `15.20`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<String>,
    /// Runs the target image and is healthy again.
    #[serde(default)]
    pub upgraded: bool,
}

/// Minor (same major, new image) or major (pg_upgrade).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpgradeKind {
    Minor,
    Major,
}

/// Phase of an upgrade.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpgradePhase {
    Pending,
    AwaitingApproval,
    BackingUp,
    UpgradingReplicas,
    SwitchingOver,
    UpgradingPrimary,
    Analyzing,
    RecloningReplicas,
    Paused,
    Succeeded,
    Failed,
    Aborted,
}

impl UpgradePhase {
    /// Succeeded, failed or aborted: the upgrade acts no more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Aborted)
    }
}

impl PostgresUpgrade {
    /// Whether the upgrade still acts on its cluster: one at a time per cluster.
    pub fn is_active(&self) -> bool {
        !self
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(UpgradePhase::is_final)
    }
}

/// Where a step of an upgrade is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StepState {
    #[default]
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

/// One step of an upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStep {
    /// Step name, e.g. `upgrade-replica/db-1`.
    pub name: String,
    /// Where the step is.
    pub state: StepState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// What happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
