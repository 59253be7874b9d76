//! Errors of the upgrade controller.

use pgpilot_toolkit::ReconcileError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error(transparent)]
    Toolkit(#[from] pgpilot_toolkit::Error),
}

impl ReconcileError for Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::Toolkit(e) => e.metric_label(),
        }
    }

    fn is_forbidden(&self) -> bool {
        matches!(self, Error::Toolkit(e) if e.is_forbidden())
    }

    fn is_retryable(&self) -> bool {
        match self {
            Error::Toolkit(e) => e.is_retryable(),
        }
    }
}
