//! The operator's error type.

/// Everything that can go wrong in a reconcile or in the operator's servers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),

    /// An object could not be serialized for a patch.
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        /// What was being serialized.
        what: &'static str,
        /// The cause.
        source: serde_json::Error,
    },

    /// The object has no namespace, which a namespaced kind always has.
    #[error("{kind} {name} has no namespace")]
    MissingNamespace {
        /// Kind of the object.
        kind: &'static str,
        /// Name of the object.
        name: String,
    },

    /// Publishing an Event failed.
    #[error("cannot publish event: {0}")]
    Event(#[source] kube::Error),

    /// Leader election failed.
    #[error("leader election: {0}")]
    Leader(String),

    /// The broker cannot work (its keys, its listener).
    #[error("broker: {0}")]
    Broker(String),
}

impl Error {
    /// A short, fixed label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Serialize { .. } => "serialize",
            Error::MissingNamespace { .. } => "missing_namespace",
            Error::Event(_) => "event",
            Error::Leader(_) => "leader",
            Error::Broker(_) => "broker",
        }
    }
}

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
