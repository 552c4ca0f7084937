//! `gate-sigmoid`, the default gate: a logistic neuron over the base model's hidden state.
//!
//! ```text
//! p = σ(w·z + b),   z = (h − mean) / std  when the weights carry `mean` and `std`, else h
//! steer when p ≥ threshold: strength 1 (mode = hard) or p (mode = soft)
//! ```
//!
//! Timing: `prompt` (default) decides once, on the prompt's last hidden state given to
//! `observe_prompt`, and holds that decision for the whole response (a prototype found that
//! re-deciding per token lets the base take over after the first steered token); `token`
//! re-decides every step on that step's hidden state. With `prompt` timing and no
//! `observe_prompt` call, the first step's hidden state is used instead.
//!
//! Parameters:
//! - `weights` (required): a safetensors file with `weight` [H], `bias` [1] or scalar, and
//!   optionally `mean` [H] and `std` [H]. Its metadata may name the model the neuron was
//!   trained on: `hidden_size`, `model_sha256` (and `threshold`, used as the default).
//!   A relative path is relative to the process's working directory.
//! - `threshold` (default: the file's `threshold` metadata, else 0.5; in [0, 1]).
//! - `mode = hard | soft` (default `hard`), `timing = prompt | token` (default `prompt`).
//! - Host keys `hidden-size` and `model-sha256`: weights made for another model (a different
//!   hidden size, or a `model_sha256` that differs) are refused.
//!
//! The explanation value is p. Standardisation is folded into `w` and `b` at load, so a
//! decision is one dot product.

use std::path::Path;

use ngsd_gate::safetensors::SafeTensors;
use ngsd_gate::{Decision, Error, Gate, GatePlugin, Needs, Params, PromptInput, Result, StepInput};

/// When the gate decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// Once per request, on the prompt's last hidden state; held for every token.
    Prompt,
    /// Every token, on that step's hidden state.
    Token,
}

/// The logistic neuron with standardisation folded in.
#[derive(Clone, Debug)]
pub struct Sigmoid {
    weight: Vec<f32>,
    bias: f32,
    threshold: f32,
    soft: bool,
    timing: Timing,
    held: Option<Decision>,
}

/// `Σ a·b` with eight independent accumulators, so the compiler can vectorise it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    for (x, y) in a8.iter().zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

impl Sigmoid {
    /// The neuron's probability for one hidden state.
    pub fn probability(&self, hidden: &[f32]) -> Result<f32> {
        if hidden.len() != self.weight.len() {
            return Err(Error::Failed(format!(
                "hidden state has {} values but the gate weights expect {}: \
                 the weights belong to another model",
                hidden.len(),
                self.weight.len()
            )));
        }
        let z = dot(&self.weight, hidden) + self.bias;
        Ok(1.0 / (1.0 + (-z).exp()))
    }

    fn decision(&self, p: f32) -> Decision {
        if p >= self.threshold {
            Decision::steer(if self.soft { p } else { 1.0 }, p)
        } else {
            Decision::pass(p)
        }
    }

    fn decide_on(&self, hidden: &[f32]) -> Result<Decision> {
        if hidden.is_empty() {
            return Err(Error::MissingInput {
                what: "hidden state",
            });
        }
        Ok(self.decision(self.probability(hidden)?))
    }
}

impl Gate for Sigmoid {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn needs(&self) -> Needs {
        Needs::HIDDEN
    }

    fn reset(&mut self) {
        self.held = None;
    }

    fn observe_prompt(&mut self, prompt: &PromptInput<'_>) -> Result<()> {
        if self.timing == Timing::Prompt {
            if prompt.hidden.is_empty() {
                return Err(Error::MissingInput {
                    what: "prompt hidden state",
                });
            }
            self.held = Some(self.decide_on(prompt.hidden)?);
        }
        Ok(())
    }

    fn decide(&mut self, input: &StepInput<'_>) -> Result<Decision> {
        match (self.timing, self.held) {
            (Timing::Prompt, Some(held)) => Ok(held),
            (Timing::Prompt, None) => {
                let d = self.decide_on(input.hidden)?;
                self.held = Some(d);
                Ok(d)
            }
            (Timing::Token, _) => self.decide_on(input.hidden),
        }
    }
}

/// A 1-D tensor of `len` values, or a clear error.
fn vector(st: &SafeTensors, path: &Path, name: &str, len: Option<usize>) -> Result<Vec<f32>> {
    let t = st.tensors.get(name).ok_or_else(|| {
        Error::Failed(format!(
            "weights file {}: no tensor `{name}`",
            path.display()
        ))
    })?;
    let flat = t.shape.iter().filter(|&&d| d != 1).count() <= 1;
    if !flat || len.is_some_and(|n| t.data.len() != n) {
        return Err(Error::Failed(format!(
            "weights file {}: tensor `{name}` has shape {:?}, expected [{}]",
            path.display(),
            t.shape,
            len.map_or("H".to_owned(), |n| n.to_string()),
        )));
    }
    Ok(t.data.clone())
}

impl GatePlugin for Sigmoid {
    const NAME: &'static str = "sigmoid";
    const DESCRIPTION: &'static str =
        "logistic neuron over the base model's hidden state, decided on the prompt (default)";
    const NEEDS: Needs = Needs::HIDDEN;

    fn create(config: &str) -> Result<Self> {
        let mut p = Params::parse(config)?;
        let weights = p.string("weights").ok_or_else(|| {
            Error::invalid_param(
                "weights",
                "required: path to a safetensors file with `weight` [H] and `bias`",
            )
        })?;
        let threshold = p.parsed::<f64>("threshold")?;
        let soft = p.choice("mode", &["hard", "soft"], "hard")? == "soft";
        let timing = match p.choice("timing", &["prompt", "token"], "prompt")? {
            "token" => Timing::Token,
            _ => Timing::Prompt,
        };
        let host_hidden = p.parsed::<usize>("hidden-size")?;
        let host_sha = p.string("model-sha256");
        p.finish()?;

        let path = Path::new(&weights);
        let st = SafeTensors::read(path)?;
        let fail = |m: String| Error::Failed(format!("weights file {}: {m}", path.display()));
        let mut weight = vector(&st, path, "weight", None)?;
        let h = weight.len();
        if h == 0 {
            return Err(fail("`weight` is empty".to_owned()));
        }
        let bias = vector(&st, path, "bias", Some(1))?[0];
        let model = st
            .metadata
            .get("model")
            .map_or(String::new(), |m| format!(" ({m})"));
        if let Some(meta_h) = st.metadata.get("hidden_size")
            && meta_h.parse::<usize>().ok() != Some(h)
        {
            return Err(fail(format!(
                "metadata hidden_size `{meta_h}` disagrees with `weight` [{h}]"
            )));
        }
        if let Some(model_h) = host_hidden.filter(|&m| m != h) {
            return Err(fail(format!(
                "made for hidden size {h}{model} but the model's hidden size is {model_h}: \
                 these weights belong to another model; train or pick weights for this model"
            )));
        }
        if let (Some(want), Some(have)) = (&host_sha, st.metadata.get("model_sha256"))
            && !want.eq_ignore_ascii_case(have)
        {
            return Err(fail(format!(
                "made for model sha256 {have}{model} but the loaded model is {want}: \
                 these weights belong to another model; train or pick weights for this model"
            )));
        }
        let mut bias = f64::from(bias);
        match (
            st.tensors.contains_key("mean"),
            st.tensors.contains_key("std"),
        ) {
            (false, false) => {}
            (true, true) => {
                let mean = vector(&st, path, "mean", Some(h))?;
                let std = vector(&st, path, "std", Some(h))?;
                if let Some(i) = std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
                    return Err(fail(format!(
                        "std[{i}] is {}, expected a positive number",
                        std[i]
                    )));
                }
                // σ(w·(h − μ)/s + b) = σ((w/s)·h + b − Σ w·μ/s)
                for ((w, m), s) in weight.iter_mut().zip(&mean).zip(&std) {
                    *w /= s;
                    bias -= f64::from(*w) * f64::from(*m);
                }
            }
            _ => {
                return Err(fail(
                    "has only one of `mean` and `std`; give both or neither".into(),
                ));
            }
        }
        if let Some(i) = weight.iter().position(|w| !w.is_finite()) {
            return Err(fail(format!(
                "weight[{i}] is not finite after standardisation"
            )));
        }
        let threshold = match threshold {
            Some(t) => t,
            None => match st.metadata.get("threshold") {
                Some(t) => t
                    .parse::<f64>()
                    .map_err(|_| fail(format!("metadata threshold `{t}` is not a number")))?,
                None => 0.5,
            },
        };
        if !(0.0..=1.0).contains(&threshold) {
            return Err(Error::invalid_param(
                "threshold",
                format!("{threshold} is outside [0, 1]"),
            ));
        }
        Ok(Sigmoid {
            weight,
            bias: bias as f32,
            threshold: threshold as f32,
            soft,
            timing,
            held: None,
        })
    }
}

ngsd_gate::export_gate!(Sigmoid);

#[cfg(test)]
mod tests;
