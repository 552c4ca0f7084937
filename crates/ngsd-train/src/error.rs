//! Errors of training: bad input data, the model, and writing results.

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: missing files, empty sets, bad flags.
    #[error("{0}")]
    Input(String),
    /// A dataset or training-set file.
    #[error(transparent)]
    Data(ngsd_eval::Error),
    /// The model runtime.
    #[error(transparent)]
    Runtime(#[from] ngsd_runtime::Error),
    /// The decoder side (prompt rendering, LM head).
    #[error(transparent)]
    Decode(#[from] ngsd_decode::Error),
}
