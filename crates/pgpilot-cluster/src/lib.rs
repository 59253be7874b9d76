//! The cluster controller: a `PostgresCluster` becomes a highly available PostgreSQL
//! cluster run by Patroni.
//!
//! One module per reconcile step: [`validate`] → [`desired`] → apply → status.

pub mod actions;
pub mod controller;
pub mod desired;
pub mod error;
pub mod names;
pub mod patroni;
pub mod reconcile;
pub mod sql;
pub mod status;
pub mod storage;
pub mod triggers;
pub mod validate;

pub use controller::ClusterController;
pub use error::Error;
