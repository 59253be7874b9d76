//! Errors of the cluster controller.

use pgpilot_postgres::pgbackrest::Error::{Invalid, Tls};
use pgpilot_toolkit::ReconcileError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec asks for something pgpilot cannot do; waits for the spec to change.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A desired object could not be built (a bug: caught by unit tests).
    #[error("building {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A builder wrote a field the typed object does not have (a misspelling): it would
    /// have been dropped silently. A bug, caught by the builders' unit tests.
    #[error("building {what}: the field {path} does not exist in the type")]
    UnknownField { what: &'static str, path: String },
    /// pgBackRest's configuration or TLS material could not be built.
    #[error(transparent)]
    Pgbackrest(#[from] pgpilot_postgres::pgbackrest::Error),
    /// The cluster's CA or server certificate could not be made or read.
    #[error("TLS: {0}")]
    Certificate(#[from] pgpilot_postgres::tls::TlsError),
    /// The client of the members' REST APIs could not be made.
    #[error(transparent)]
    Patroni(#[from] pgpilot_postgres::patroni::PatroniError),
    /// A Kubernetes API call failed.
    #[error(transparent)]
    Toolkit(#[from] pgpilot_toolkit::Error),
}

impl Error {
    pub(crate) fn serialize(what: &'static str) -> impl FnOnce(serde_json::Error) -> Error {
        move |source| Error::Serialize { what, source }
    }

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
        match self {
            Error::Invalid { .. } => "invalid_spec",
            Error::Serialize { .. } | Error::UnknownField { .. } => "build",
            Error::Pgbackrest(Invalid { .. }) => "invalid_spec",
            Error::Pgbackrest(Tls(_)) | Error::Certificate(_) => "tls",
            Error::Patroni(_) => "patroni",
            Error::Toolkit(e) => e.metric_label(),
        }
    }

    fn is_forbidden(&self) -> bool {
        matches!(self, Error::Toolkit(e) if e.is_forbidden())
    }

    fn is_retryable(&self) -> bool {
        match self {
            Error::Invalid { .. }
            | Error::Serialize { .. }
            | Error::UnknownField { .. }
            | Error::Pgbackrest(Invalid { .. }) => false,
            Error::Pgbackrest(Tls(_)) | Error::Certificate(_) | Error::Patroni(_) => true,
            Error::Toolkit(e) => e.is_retryable(),
        }
    }
}
