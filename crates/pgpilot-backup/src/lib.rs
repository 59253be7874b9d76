//! The backup controller, three loops over the API:
//!
//! - [`archiving`]: the WAL archive of every PostgresCluster with `spec.backup` — its
//!   pgBackRest stanza created and checked by a Job, `ContinuousArchiving`, `status.backup`
//!   and `status.lastBackup`, read from the primary itself;
//! - [`backups`]: PostgresBackups, each run by a Job of its own;
//! - [`schedules`]: BackupSchedules, which create PostgresBackups.
//!
//! Each reconcile reads top-down: observe → plan (pure) → act → status. pgBackRest runs in
//! the instances and in Jobs ([`job`]), never through `pods/exec`.

pub mod archiving;
pub mod backups;
pub mod controller;
pub mod error;
pub mod job;
pub mod metrics;
pub mod restores;
pub mod schedules;
pub mod verification;

pub use controller::BackupController;
pub use error::Error;
