//! pgpilot's custom resources (group `pgpilot.io`, version `v1alpha1`).
//!
//! Types only: specs, statuses, CRD schemas with their CEL rules. No I/O, so every
//! controller, the manager and the tests can share them.

// kube's `printcolumn(...)` attributes repeat keys by design.
#![allow(clippy::duplicated_attributes)]

pub mod backup;
pub mod cluster;
pub mod common;
pub mod crds;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod labels;
pub mod parameters;
pub mod rotation;
pub mod schedule;
pub mod upgrade;

pub use backup::{PostgresBackup, PostgresBackupSpec, PostgresBackupStatus};
pub use cluster::{PostgresCluster, PostgresClusterSpec, PostgresClusterStatus};
pub use rotation::{SecretRotation, SecretRotationSpec, SecretRotationStatus};
pub use schedule::{BackupSchedule, BackupScheduleSpec, BackupScheduleStatus};
pub use upgrade::{PostgresUpgrade, PostgresUpgradeSpec, PostgresUpgradeStatus};

/// API group of every pgpilot resource.
pub const GROUP: &str = "pgpilot.io";
/// The version this crate serves and stores.
pub const VERSION: &str = "v1alpha1";
/// `kubectl get pgpilot` lists every pgpilot resource.
pub const CATEGORY: &str = "pgpilot";
