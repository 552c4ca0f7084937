//! The gate: the policy that decides, token by token, how strongly to steer the base model
//! toward the safety expert; its versioned C plugin ABI; and the `export_gate!` macro.
//!
//! # The API the decoder uses
//!
//! A [`Gate`] declares the inputs it reads ([`Gate::needs`], a set of [`Needs`] flags) so
//! the decoder computes only those: a hidden-state gate decides before any expert work. Per
//! request the decoder calls [`Gate::reset`], then [`Gate::observe_prompt`] with the
//! prompt's last hidden state, then [`Gate::decide`] once per generated token with a
//! [`StepInput`]. The answer is a [`Decision`]: a strength in `[0, 1]` (0 leaves the base
//! alone) and one explanation value for the trace. When `decide` fails mid-generation the
//! decoder applies the configured [`FailurePolicy`].
//!
//! Gates usually live in plugins loaded by `ngsd-gate-host`, which wraps them in a type
//! implementing [`Gate`] and validates every decision.
//!
//! # Writing a gate in Rust
//!
//! Make a crate `gate-<name>` with `crate-type = ["cdylib", "rlib"]` that depends only on
//! `ngsd-gate`, implement [`Gate`] and [`GatePlugin`], and export it:
//!
//! ```
//! use ngsd_gate::{Decision, Gate, GatePlugin, Needs, Params, Result, StepInput};
//!
//! /// Steers when the divergence exceeds a threshold.
//! pub struct Threshold {
//!     threshold: f32,
//! }
//!
//! impl Gate for Threshold {
//!     fn name(&self) -> &str {
//!         Self::NAME
//!     }
//!     fn needs(&self) -> Needs {
//!         Needs::DIVERGENCE
//!     }
//!     fn reset(&mut self) {}
//!     fn decide(&mut self, input: &StepInput<'_>) -> Result<Decision> {
//!         let d = input.require_divergence()?;
//!         Ok(if d >= self.threshold { Decision::steer(1.0, d) } else { Decision::pass(d) })
//!     }
//! }
//!
//! impl GatePlugin for Threshold {
//!     const NAME: &'static str = "threshold";
//!     const DESCRIPTION: &'static str = "steer when the divergence is at least `threshold`";
//!     const NEEDS: Needs = Needs::DIVERGENCE;
//!     fn create(config: &str) -> Result<Self> {
//!         let mut p = Params::parse(config)?;
//!         let threshold = p.f64_in("threshold", 0.5, 0.0, 1.0)? as f32;
//!         p.finish()?; // unknown keys are an error
//!         Ok(Threshold { threshold })
//!     }
//! }
//!
//! ngsd_gate::export_gate!(Threshold);
//! # fn main() {}
//! ```
//!
//! `cargo build` then produces `libgate_threshold.so`; put it in a plugin directory (next to
//! the `ngsd` binary, or any directory on the configured search path) and select it with
//! `--gate threshold`, or pass its path. Parameters are `key = value` lines ([`Params`]).
//! Rules: `decide` must not allocate on success; panics are caught at the boundary but
//! disable the instance until the next reset; return errors instead.
//!
//! # Writing a gate in C
//!
//! Include `include/ngsd_gate.h` (generated from [`abi`], checked by a test), fill a static
//! `NgsdGateVTableV1` and export `ngsd_gate_abi_version()` and `ngsd_gate_v1()`. A complete
//! example is `plugins/gate-c-example/gate_c_example.c`; build it with
//! `cc -shared -fPIC -I crates/ngsd-gate/include gate_c_example.c -o libgate_c_example.so`.
//! Never let a C++ exception or `longjmp` cross the boundary; report errors with a status
//! and `last_error`.
//!
//! # Features
//!
//! - `safetensors`: [`safetensors`], a small reader/writer for gates that load weights.
#![deny(missing_docs)]

pub mod abi;
mod error;
mod features;
mod gate;
mod params;
mod policy;
#[cfg(feature = "safetensors")]
pub mod safetensors;

pub use error::{Error, Result};
pub use features::{Feature, FeatureSpec, Layer, Pool};
pub use gate::{AnswerInput, Decision, Gate, GatePlugin, Needs, PromptInput, StepInput};
pub use params::{HOST_KEYS, HostContext, Params};
pub use policy::{FailedClosed, FailurePolicy, ParsePolicyError};
