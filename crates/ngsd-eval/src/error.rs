//! The crate's error type: every variant names what to fix (file, line, key, expected value).

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading suites and datasets, storing results or
/// writing reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done (`reading`, `writing`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The suite file is not valid TOML or does not match the suite schema.
    #[error("{}:{line}:{column}: {message}", path.display())]
    SuiteSyntax {
        /// The suite file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The suite parses but a value is wrong (missing dataset file, unknown gate, ...).
    #[error("{}:{line}:{column}: `{key}`: {message}", path.display())]
    SuiteInvalid {
        /// The suite file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The key holding the value, e.g. `configs[2].gate`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A dataset file does not have the shape its suite entry says.
    #[error("dataset `{dataset}` ({}): {message}", path.display())]
    Dataset {
        /// The dataset's name in the suite.
        dataset: String,
        /// The data file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A results file has a corrupt line that is not the last one (a torn last line is
    /// repaired silently).
    #[error("{}:{line}: corrupt result line ({message}); delete the line or the file to rerun those samples", path.display())]
    Store {
        /// The results file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The parse error.
        message: String,
    },
    /// The LLM judge's endpoint failed or answered something unreadable.
    #[error("LLM judge at {endpoint}: {message}")]
    Judge {
        /// The endpoint URL.
        endpoint: String,
        /// What went wrong and how to fix it.
        message: String,
    },
    /// The generator failed on a prompt.
    #[error("config `{config}`, dataset `{dataset}`, sample `{id}`: generation failed: {message}")]
    Generate {
        /// Configuration name.
        config: String,
        /// Dataset name.
        dataset: String,
        /// Sample id.
        id: String,
        /// The generator's error, rendered.
        message: String,
    },
    /// A report or plot could not be produced.
    #[error("writing report {}: {message}", path.display())]
    Report {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
