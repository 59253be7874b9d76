//! pgpilot's admission webhooks, served by the manager: the rules CEL cannot express because
//! they look at another object (one active upgrade per cluster, a restore's source, a
//! rotation's target and its one owner, backups an earlier cluster of the same name left).
//!
//! - [`rules`]: the rules, pure;
//! - [`review`]: an AdmissionReview in, the lookups, a verdict out;
//! - [`webhooks`]: the table of webhooks (paths, failure policies) and the configuration;
//! - [`certs`]: the serving certificate, bootstrapped into a Secret or read from files;
//! - [`serve`]: the TLS server and the CA bundle kept in the configuration.
//!
//! No data path depends on a webhook: every rule is checked again by the controller that acts.

pub mod certs;
mod error;
pub mod review;
pub mod rules;
pub mod serve;
pub mod webhooks;

pub use error::Error;
