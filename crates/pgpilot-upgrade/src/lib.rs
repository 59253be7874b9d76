//! The upgrade controller (`--controllers=upgrade`). When a PostgresCluster's spec asks for
//! another PostgreSQL version or image than its instances run, it creates a PostgresUpgrade
//! owned by the cluster (or adopts one a user made), and carries it out step by step: gates,
//! approval, maintenance window, a pre-upgrade backup, then the instances moved by the
//! cluster controller's ordered pod roll (replicas first, a switchover, the old primary last).
//!
//! It cooperates through the API only: annotations on the PostgresCluster
//! ([`pgpilot_api::labels::UPGRADE`], `UPGRADE_TARGET`, `ROLL_HOLD`) tell the cluster
//! controller what the instances may run and when to hold; the cluster's status tells this
//! controller how they are.
//!
//! observe ([`reconcile`]) → plan ([`plan`], pure) → act (one step) → status.

pub mod controller;
pub mod error;
pub mod major;
pub mod metrics;
pub mod plan;
pub mod reconcile;

pub use controller::UpgradeController;
