//! Errors of the backup controller.

use pgpilot_toolkit::ReconcileError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec asks for something pgpilot cannot do; waits for the spec to change.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// pgBackRest's configuration could not be built.
    #[error(transparent)]
    Pgbackrest(#[from] pgpilot_postgres::pgbackrest::Error),
    /// A Kubernetes API call failed.
    #[error(transparent)]
    Toolkit(#[from] pgpilot_toolkit::Error),
}

impl Error {
    /// A failed Kubernetes API call, for `map_err` (the toolkit's).
    pub(crate) fn api(
        verb: &'static str,
        kind: &str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> Error {
        pgpilot_toolkit::Error::api(verb, kind, name)
    }
}

impl ReconcileError for Error {
    fn metric_label(&self) -> &'static str {
        use pgpilot_postgres::pgbackrest::Error as P;
        match self {
            Error::Invalid { .. } | Error::Pgbackrest(P::Invalid { .. }) => "invalid_spec",
            Error::Pgbackrest(P::Tls(_)) => "tls",
            Error::Toolkit(e) => e.metric_label(),
        }
    }

    fn is_forbidden(&self) -> bool {
        matches!(self, Error::Toolkit(e) if e.is_forbidden())
    }

    fn is_retryable(&self) -> bool {
        use pgpilot_postgres::pgbackrest::Error as P;
        match self {
            Error::Invalid { .. } | Error::Pgbackrest(P::Invalid { .. }) => false,
            Error::Pgbackrest(P::Tls(_)) => true,
            Error::Toolkit(e) => e.is_retryable(),
        }
    }
}
