//! What every pgpilot controller shares: status conditions, finalizers, per-object backoff,
//! server-side apply that skips no-op writes, Kubernetes Events, reconcile metrics and
//! tracing spans, and the loop that ties them to a kube-runtime controller.

pub mod apply;
pub mod backoff;
pub mod conditions;
pub mod error;
pub mod events;
pub mod finalizer;
pub mod metrics;
pub mod runtime;
pub mod telemetry;

pub use error::{Error, ReconcileError};
