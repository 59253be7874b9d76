use std::net::SocketAddr;

/// Why the webhook server cannot start or answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {kind}: {source}")]
    Lookup {
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing to the Kubernetes API: {0}")]
    Write(#[source] kube::Error),
    #[error("{what}: {reason}")]
    Certificate { what: String, reason: String },
    #[error("binding the webhook address {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("the review carries no object")]
    NoObject,
    #[error("the object does not decode: {0}")]
    Decode(#[source] serde_json::Error),
}

impl Error {
    /// For a metric label or a log field: a fixed set.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Lookup { .. } => "lookup",
            Error::Write(_) => "write",
            Error::Certificate { .. } => "certificate",
            Error::Bind(..) => "bind",
            Error::NoObject | Error::Decode(_) => "decode",
        }
    }
}
