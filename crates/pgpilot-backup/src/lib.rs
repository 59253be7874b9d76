//! The backup controller: the WAL archive of every PostgresCluster with `spec.backup` —
//! its pgBackRest stanza created and checked by a Job, and `ContinuousArchiving` with the
//! archive's state in the cluster's status, read from the primary itself — and
//! PostgresBackups, each run by a Job of its own ([`backups`]), and BackupSchedules that
//! create them ([`schedules`]).
//!
//! A cluster's reconcile ([`reconcile`]) reads top-down: [`observe`] → [`plan`] → act (the
//! stanza Job, [`stanza`]) → [`status`].

pub mod backups;
pub mod context;
pub mod controller;
pub mod error;
pub mod job;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod schedules;
pub mod stanza;
pub mod status;

pub use controller::BackupController;
pub use error::Error;
