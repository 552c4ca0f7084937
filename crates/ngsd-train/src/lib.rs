//! Training the two learned parts of ngsd from the base model's own hidden states:
//! the gate neuron (`ngsd train gate`) and the `head` expert (`ngsd train expert`).
//!
//! Everything runs on the CPU in this process: the base model through ngsd-runtime, the
//! maths through ndarray. Inputs are prompt files (JSON, JSON Lines, CSV); outputs are
//! safetensors files with metadata naming the model they belong to.

pub mod data;
mod error;
pub mod expert;
pub mod features;
pub mod gate;
pub mod logreg;
pub mod select;

pub use error::{Error, Result};
