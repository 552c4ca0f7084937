//! ngsd-decode: safety-aware decoding. One request = prompt → tokens, with a base model, an
//! expert, a gate and a steering strength α set by self-reflection.
//!
//! Per step: the base model's distribution and hidden state; the gate decides on what it
//! declared it needs (a hidden-state gate needs no expert); the expert runs only when the gate
//! needs it to decide or decides to steer, catching up on skipped tokens in one batched pass;
//! when steering, the paper's rule mixes the two distributions over their top-k candidates.
//! No CLI, environment or config-file I/O here: callers pass validated settings.

mod assess;
mod batch;
mod cancel;
mod decoder;
pub mod early_stop;
mod error;
mod expert;
pub mod features;
mod head;
mod monitor;
pub mod reflection;
mod run;
pub mod steer;
mod stop;
pub mod trace;

pub use assess::Reflection;
pub use batch::{
    Admission, Admissions, Phase, Sinks, decode_batches, generate_batch, panic_message,
};
pub use cancel::Cancel;
pub use decoder::{DecodeConfig, Models, Output, Request, generate};
pub use error::{Error, Result};
pub use expert::{DEFAULT_SAFETY_PROMPT, Expert, ModelExpert, PromptExpert, encode_message};
pub use head::{HEAD_EXPERT_FORMAT, HeadAdapter, HeadExpert, LmHead};
pub use monitor::MonitorFire;
pub use steer::Divergence;
pub use stop::{EarlyStop, EarlyStopState};
