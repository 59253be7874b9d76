//! The cluster controller: a `PostgresCluster` becomes a highly available PostgreSQL
//! cluster run by Patroni.
//!
//! A reconcile ([`reconcile`]) reads top-down: [`observe`] → [`validate`] → [`desired`] →
//! [`plan`] → [`act`] → [`status`].

pub mod act;
pub mod context;
pub mod controller;
pub mod desired;
pub mod error;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod status;
pub mod storage;
pub mod trouble;
pub mod validate;

pub use controller::ClusterController;
pub use desired::network::OperatorPods;
pub use error::Error;
