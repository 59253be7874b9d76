//! Errors of the secret-rotation controller. None carries a secret value.

use pgpilot_postgres::sql::SqlError;
use pgpilot_toolkit::ReconcileError;

use crate::generate;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error(transparent)]
    Toolkit(#[from] pgpilot_toolkit::Error),
    /// A statement on the cluster's primary failed, or it could not be reached.
    #[error("on the primary: {0}")]
    Sql(#[from] SqlError),
    /// A new value could not be made.
    #[error(transparent)]
    Generate(#[from] generate::Error),
    /// The Secret changed since the cache saw it (another writer, or a cache behind a flip):
    /// the next reconcile looks again rather than rotate twice.
    #[error("Secret {0} changed since it was read; looking again")]
    Stale(String),
}

impl ReconcileError for Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::Toolkit(e) => e.metric_label(),
            Error::Sql(_) => "sql",
            Error::Generate(e) => e.label(),
            Error::Stale(_) => "stale",
        }
    }

    fn is_forbidden(&self) -> bool {
        matches!(self, Error::Toolkit(e) if e.is_forbidden())
    }

    fn is_retryable(&self) -> bool {
        match self {
            Error::Toolkit(e) => e.is_retryable(),
            Error::Sql(_) | Error::Stale(_) => true,
            // The issuer's Secret may yet be made or fixed; the spec's own errors need a change.
            Error::Generate(e) => matches!(e, generate::Error::Issuer { .. }),
        }
    }
}
