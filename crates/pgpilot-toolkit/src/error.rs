//! Errors: each knows the label it is counted under and whether retrying can help.

/// What every controller's error type tells the shared machinery.
pub trait ReconcileError: std::error::Error + Send + Sync + 'static {
    /// Short, stable category: the `reason` label of the error metric and the Event reason.
    fn metric_label(&self) -> &'static str;
    /// Whether running the reconcile again, unchanged, can succeed (a conflict, a timeout, an
    /// unreachable pod). Permanent errors (an invalid spec) wait for the object to change.
    fn is_retryable(&self) -> bool;
    /// Whether the API server refused the operator a permission (RBAC): retried with
    /// backoff, and shown on the object at once so someone can grant it.
    fn is_forbidden(&self) -> bool {
        false
    }
}

/// Errors of the toolkit's own operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API {verb} {kind} {name}: {source}")]
    Api {
        verb: &'static str,
        kind: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("serializing {kind} {name}: {source}")]
    Serialize {
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("running {program} in {pod}/{container}: {reason}")]
    Exec {
        pod: String,
        container: String,
        program: String,
        reason: String,
    },
    #[error("{kind} has no {field}: {what}")]
    MissingField {
        kind: String,
        field: &'static str,
        what: String,
    },
}

impl Error {
    /// A failed Kubernetes API call, for `map_err`: any controller error that converts from
    /// this one takes it with `?`.
    pub fn api<E: From<Error>>(
        verb: &'static str,
        kind: &str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> E {
        let (kind, name) = (kind.to_owned(), name.to_owned());
        move |source| {
            E::from(Error::Api {
                verb,
                kind,
                name,
                source: Box::new(source),
            })
        }
    }
}

impl ReconcileError for Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::Api { source, .. } => api_error_label(source),
            Error::Serialize { .. } => "serialize",
            Error::Exec { .. } => "exec",
            Error::MissingField { .. } => "missing_field",
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Error::Api { source, .. } => api_error_retryable(source),
            Error::Exec { .. } => true,
            Error::Serialize { .. } | Error::MissingField { .. } => false,
        }
    }

    fn is_forbidden(&self) -> bool {
        matches!(self, Error::Api { source, .. } if api_error_forbidden(source))
    }
}

/// Whether the API server answered 403: a missing RBAC rule.
pub fn api_error_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 403)
}

/// Metric label for a kube client error: the HTTP status class, or the transport failure.
pub fn api_error_label(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(status) => match status.code {
            404 => "api_not_found",
            409 => "api_conflict",
            403 => "api_forbidden",
            422 => "api_invalid",
            429 => "api_throttled",
            500..=599 => "api_server_error",
            _ => "api_other",
        },
        _ => "api_transport",
    }
}

/// Whether a kube client error can go away by itself. A 403 can: someone grants the
/// missing permission, and the object must not stall until it changes.
pub fn api_error_retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => matches!(status.code, 403 | 404 | 409 | 429 | 500..=599),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("x", "y").with_code(code),
        ))
    }

    #[test]
    fn conflicts_server_errors_and_missing_permissions_are_retried_invalid_objects_are_not() {
        assert!(api_error_retryable(&api(409)));
        assert!(api_error_retryable(&api(503)));
        assert!(api_error_retryable(&api(429)));
        assert!(api_error_retryable(&api(403)));
        assert!(!api_error_retryable(&api(422)));
        assert!(api_error_forbidden(&api(403)));
        assert!(!api_error_forbidden(&api(401)));
    }

    #[test]
    fn labels_are_bounded_categories() {
        assert_eq!(api_error_label(&api(409)), "api_conflict");
        assert_eq!(api_error_label(&api(502)), "api_server_error");
        assert_eq!(api_error_label(&api(418)), "api_other");
    }
}
