//! What every pgpilot controller shares: the loop that runs a controller (namespaces,
//! caches, spans, metrics, backoff), children applied and pruned as a set, status written per
//! controller with server-side apply, conditions, Kubernetes Events, pod exec, cron calendars
//! in a time zone, and values that redact themselves.

pub mod apply;
pub mod backoff;
pub mod calendar;
pub mod children;
pub mod client;
pub mod conditions;
pub mod error;
pub mod events;
pub mod exec;
pub mod jobs;
pub mod metrics;
pub mod queue;
pub mod relist;
pub mod runner;
pub mod runtime;
pub mod sensitive;
pub mod status;
pub mod telemetry;

pub use error::{Error, ReconcileError};
pub use sensitive::Sensitive;
