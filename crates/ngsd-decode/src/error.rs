//! The error type of ngsd-decode.

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in a safety-aware generation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model runtime failed.
    #[error(transparent)]
    Runtime(#[from] ngsd_runtime::Error),

    /// The gate failed and the failure policy is to abort.
    #[error("{0}")]
    Gate(#[from] ngsd_gate::Error),

    /// A configuration value is invalid.
    #[error("invalid {name}: {reason}")]
    InvalidConfig {
        /// The option.
        name: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// Code run for one request of a batch (its gate, expert or checks) panicked; the request
    /// ended, the others go on.
    #[error("the generation panicked: {0}")]
    Panicked(String),

    /// The expert cannot be used with this base model.
    #[error("the expert {expert} cannot steer this base model: {reason}")]
    IncompatibleExpert {
        /// Which expert (kind and path).
        expert: String,
        /// What differs.
        reason: String,
    },
}
