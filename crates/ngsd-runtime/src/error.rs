//! The error type of ngsd-runtime: every variant carries what the user needs to fix the problem.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error(
        "cannot load the ONNX Runtime library{}: {reason}; run `cargo xtask setup` to install it, \
         or point NGSD_ORT_LIB at a libonnxruntime.so of version 1.31 or newer",
        path.as_ref().map(|p| format!(" from {}", p.display())).unwrap_or_default()
    )]
    OrtLibrary {
        /// The library path that was tried, if one was found.
        path: Option<PathBuf>,
        /// Why loading failed.
        reason: String,
    },

    /// A model folder or file does not exist.
    #[error("{what} not found at {path}{hint}")]
    NotFound {
        /// What was looked for ("model folder", "ONNX file", "tokenizer").
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// Extra advice, starting with "; ".
        hint: String,
    },

    /// A file exists but could not be read or parsed.
    #[error("cannot read {what} {path}: {reason}")]
    BadFile {
        /// What the file is ("manifest", "config.json", "tokenizer").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's or OS's message.
        reason: String,
    },

    /// ONNX Runtime refused to load the model file.
    #[error(
        "ONNX Runtime cannot load {path}: {reason}; the file may be truncated or not an ONNX model \
         (re-run `cargo xtask setup`, or re-export it)"
    )]
    OnnxLoad {
        /// The ONNX file.
        path: PathBuf,
        /// ONNX Runtime's message.
        reason: String,
    },

    /// The model's declared inputs or outputs do not match what the package says or what decoding needs.
    #[error("model {path} has no {kind} named `{name}` (it has: {available}){hint}")]
    MissingIo {
        /// The ONNX file.
        path: PathBuf,
        /// "input" or "output".
        kind: &'static str,
        /// The missing name.
        name: String,
        /// The names the model does declare.
        available: String,
        /// Extra advice, starting with "; ".
        hint: String,
    },

    /// The model is not a decoder this runtime can drive.
    #[error("model {path} is not supported: {reason}")]
    Unsupported {
        /// The ONNX file or package folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// An execution provider could not be registered and fallback is disabled.
    #[error(
        "execution provider `{provider}` is not available: {reason}; \
         set `strict-provider = false` to fall back to CPU, or use provider `cpu`"
    )]
    Provider {
        /// The provider asked for.
        provider: String,
        /// ONNX Runtime's reason.
        reason: String,
    },

    /// A configuration value is invalid.
    #[error("invalid {name}: {reason}")]
    InvalidArgument {
        /// The option's name.
        name: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// The prompt does not fit the model's context window.
    #[error(
        "the prompt is {prompt_tokens} tokens but the model's context is {max_context} tokens; \
         shorten the prompt (leave room for the answer too)"
    )]
    ContextOverflow {
        /// Length of the prompt in tokens.
        prompt_tokens: usize,
        /// The model's context length.
        max_context: usize,
    },

    /// The chat template failed to render.
    #[error("chat template error: {0}")]
    Template(String),

    /// Tokenization failed.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    /// ONNX Runtime failed while running the model.
    #[error("ONNX Runtime error while running the model: {0}")]
    Run(String),

    /// An I/O error with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn run(err: impl std::fmt::Display) -> Self {
        Error::Run(err.to_string())
    }
}
