//! The per-token trace: why each token was or was not steered, as JSON lines, and the summary.

use serde::Serialize;

/// A token and its probability, for the trace's top-5 lists.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Candidate {
    /// Token id.
    pub id: u32,
    /// Token text (special tokens shown).
    pub text: String,
    /// Probability.
    pub p: f32,
}

/// One generated token.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TraceLine {
    /// 0-based index of the generated token.
    pub step: usize,
    /// Chosen token id.
    pub token: u32,
    /// Its text.
    pub text: String,
    /// `base` when the base model's choice stood, `steered` when the expert moved it.
    pub chosen_by: &'static str,
    /// Whether the gate asked to steer this step (strength > 0).
    pub steered: bool,
    /// Gate strength in [0, 1].
    pub strength: f32,
    /// The gate's explanation value (membrane potential, probability, ...).
    pub gate_value: f32,
    /// Divergence between base and expert, when it was computed.
    pub divergence: Option<f32>,
    /// Base top-5.
    pub base_top: Vec<Candidate>,
    /// Expert top-5, when the expert ran this step.
    pub expert_top: Option<Vec<Candidate>>,
    /// Steering strength α of this request.
    pub alpha: f32,
    /// A gate error handled by the failure policy at this step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_error: Option<String>,
}

/// Where the time went, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Timings {
    /// Self-reflection (a generation of its own, or the probe).
    pub reflection_ms: f64,
    /// Base model forward passes.
    pub base_ms: f64,
    /// Expert forward passes (and catch-ups).
    pub expert_ms: f64,
    /// Gate decisions.
    pub gate_ms: f64,
    /// Everything, end to end.
    pub total_ms: f64,
}

/// How α was set.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReflectionRecord {
    /// `off`, `generative` or `probe`; `skipped` when the request was cancelled before
    /// reflection ran.
    pub mode: &'static str,
    /// The risk in [0, 10], when assessed.
    pub risk: Option<f32>,
    /// The resulting α.
    pub alpha: f32,
    /// Generative mode: the model's raw answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// Generative mode: the four scores (severity, actionability, evasion, targeting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<[i64; 4]>,
    /// Why the default scores were used, when parsing failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Probe mode: the neuron's probability on the prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f32>,
}

impl ReflectionRecord {
    /// The record of a request cancelled before reflection ran.
    pub fn skipped() -> Self {
        ReflectionRecord {
            mode: "skipped",
            risk: None,
            alpha: 0.0,
            raw: None,
            scores: None,
            fallback: None,
            probability: None,
        }
    }
}

/// The trace's last line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Always `summary`.
    pub summary: bool,
    /// Tokens generated.
    pub tokens: usize,
    /// Tokens whose step was steered.
    pub steered_tokens: usize,
    /// Index of the first steered token.
    pub first_steered: Option<usize>,
    /// Expert forward passes (a lazy catch-up counts once).
    pub expert_forward_passes: usize,
    /// Gate errors handled by the failure policy.
    pub gate_errors: usize,
    /// Why generation ended.
    pub finish: String,
    /// Why the early-stop detector fired, if it did.
    pub early_stop: Option<String>,
    /// Gate used.
    pub gate: String,
    /// Expert used.
    pub expert: String,
    /// Self-reflection.
    pub reflection: ReflectionRecord,
    /// The answer monitor, when the gate re-checks the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorSummary>,
    /// Time split.
    pub timings: Timings,
}

/// What the answer monitor did in one request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MonitorSummary {
    /// Checks made (clearing or firing).
    pub checks: usize,
    /// When a check fired, if one did.
    pub fired: Option<crate::monitor::MonitorFire>,
}
