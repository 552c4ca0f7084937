//! The error type shared by gates, the plugin ABI and the host.

/// Everything that can go wrong when a gate is configured or asked for a decision.
///
/// Across the plugin ABI only the message travels; the host wraps it in [`Error::Plugin`]
/// with the gate's name, so the user always learns which gate failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The parameter text is not a list of `key = value` lines.
    #[error("gate parameters, line {line}: {message} (expected `key = value` lines)")]
    Syntax {
        /// 1-based line (or `;`-separated item) number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A parameter has a value the gate does not accept.
    #[error("gate parameter `{key}`: {message}")]
    InvalidParam {
        /// The parameter's key.
        key: String,
        /// What is wrong and what would be accepted.
        message: String,
    },
    /// A parameter the gate does not know (unknown keys are an error, never ignored).
    #[error("unknown gate parameter `{key}` (this gate knows: {known})")]
    UnknownParam {
        /// The key as written.
        key: String,
        /// The keys the gate asked for, comma-separated.
        known: String,
    },
    /// The decoder did not provide an input the gate declared in its [`crate::Needs`].
    #[error("gate input missing: {what} (the decoder must provide every input listed in needs())")]
    MissingInput {
        /// The missing input, e.g. `divergence`.
        what: &'static str,
    },
    /// Any other failure reported by the gate itself.
    #[error("{0}")]
    Failed(String),
    /// A plugin reported an error through the ABI (host side).
    #[error("gate `{gate}` failed: {message}")]
    Plugin {
        /// The plugin's gate name.
        gate: String,
        /// The plugin's `last_error` text.
        message: String,
    },
    /// A gate panicked; the panic was caught at the ABI boundary.
    #[error("gate `{gate}` panicked: {message}")]
    Panicked {
        /// The gate's name.
        gate: String,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// A gate answered a strength that is NaN or outside `[0, 1]` (host side validation).
    #[error("gate `{gate}` returned steering strength {strength}, expected a number in [0, 1]")]
    InvalidDecision {
        /// The gate's name.
        gate: String,
        /// The value it returned.
        strength: f32,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidParam`].
    pub fn invalid_param(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidParam {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
