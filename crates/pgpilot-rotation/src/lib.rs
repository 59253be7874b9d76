//! The secret-rotation controller (`--controllers=secret-rotation`). A SecretRotation rotates
//! one credential on a schedule, on demand or when it is missing: the keys of a Secret
//! ([`generate`]), or a PostgreSQL role's password, in place or by two login alternates in turn
//! (zero downtime). It rolls the workloads that read the Secret ([`consumers`]) and, for
//! alternates, invalidates the previous login once they rolled and the grace period ended.
//!
//! It cooperates through the API only: the rotation record is annotations on the Secret,
//! written with the new value; the cluster controller reads the Secret as the source of truth.
//!
//! observe ([`reconcile`], the caches and the database's view of the logins) → [`plan`]
//! (pure, [`schedule`] for when) → act (one step) → status.

pub mod consumers;
pub mod controller;
pub mod database;
pub mod error;
pub mod generate;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod schedule;

pub use controller::RotationController;
