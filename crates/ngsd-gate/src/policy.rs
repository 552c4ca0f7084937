//! What the decoder does when a gate fails in the middle of a generation.

use std::fmt;
use std::str::FromStr;

use crate::{Decision, Error};

/// The configured answer to a gate error during generation. A failure is never ignored:
/// either the step is steered and the error recorded, or the request ends with the error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Steer this step with strength 1 (the safe side) and record the error in the trace.
    #[default]
    FailClosed,
    /// End the request with the error.
    Abort,
}

/// A step that was steered because the gate failed: the decision to apply, and the error
/// the decoder must record (trace, log, metrics).
#[derive(Debug)]
pub struct FailedClosed {
    /// Full-strength steering; `value` is NaN because the gate gave no explanation.
    pub decision: Decision,
    /// Why the gate failed.
    pub error: Error,
}

impl FailurePolicy {
    /// Apply the policy to a gate error: `Ok` with the fail-closed decision and the error to
    /// record, or `Err` with the error that ends the request.
    pub fn on_error(self, error: Error) -> Result<FailedClosed, Error> {
        match self {
            FailurePolicy::FailClosed => Ok(FailedClosed {
                decision: Decision::steer(1.0, f32::NAN),
                error,
            }),
            FailurePolicy::Abort => Err(error),
        }
    }

    /// The configuration spelling: `fail-closed` or `abort`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "fail-closed",
            FailurePolicy::Abort => "abort",
        }
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a failure-policy spelling other than `fail-closed` or `abort`.
#[derive(Debug, thiserror::Error)]
#[error("unknown gate failure policy `{0}` (expected `fail-closed` or `abort`)")]
pub struct ParsePolicyError(String);

impl FromStr for FailurePolicy {
    type Err = ParsePolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail-closed" => Ok(FailurePolicy::FailClosed),
            "abort" => Ok(FailurePolicy::Abort),
            other => Err(ParsePolicyError(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests;
