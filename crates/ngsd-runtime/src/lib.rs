//! ngsd-runtime: loading ONNX-exported causal language models and decoding them incrementally.
//!
//! This is the only crate of the workspace that names `ort`. It provides:
//! - [`ModelPackage`]: a folder with the ONNX decoder, tokenizer, chat template and manifest;
//! - [`Model`]: an ONNX Runtime session with a [`KvCache`] per sequence; each step returns the
//!   logits and the final hidden state of the new position; a [`Batch`] decodes several
//!   sequences in one pass;
//! - [`Tokenizer`], [`TextStream`] (UTF-8-safe streaming) and [`ChatTemplate`];
//! - [`Conversation`]: a chat (or raw text) to token ids, message text never read as markup;
//! - [`Sampler`] (greedy, temperature, top-k, top-p, seeded) and plain [`generate`].

mod error;
mod generate;
mod graph_io;
pub mod kv;
mod model;
pub mod ortlib;
mod package;
mod prompt;
mod provider;
pub mod sampling;
mod template;
mod tokenizer;

pub use error::{Error, Result};
pub use generate::{FinishReason, GenerateConfig, Generation, StopFilter, TextOutput, generate};
pub use kv::KvCache;
pub use model::{
    Batch, DEFAULT_PREFILL_CHUNK, ForwardOut, IoDescription, MAX_DEFAULT_PREFILL_CHUNK, Model,
    ModelOptions, Positions, Prefill, PromptPrefill, default_prefill_chunk,
};
pub use package::{
    ChecksumReport, Files, IoNames, MANIFEST_FILE, MANIFEST_FORMAT, Manifest, ManifestSource,
    ModelPackage, sha256_file,
};
pub use prompt::{Conversation, EncodedPrompt};
pub use provider::{PROVIDER_NAMES, Provider};
pub use sampling::{Sampler, SamplingConfig};
pub use template::{ChatTemplate, Message};
pub use tokenizer::{TextStream, Tokenizer};
