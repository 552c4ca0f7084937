//! `gate-sigmoid`, the default gate: a logistic neuron over the base model's hidden-state
//! features, and optionally a second neuron that monitors the answer.
//!
//! ```text
//! p = σ(w·z + b),   z = (x − mean) / std  when the weights carry `mean` and `std`, else x
//! steer when p ≥ threshold: strength 1 (mode = hard) or p (mode = soft)
//! ```
//!
//! `x` is what the weights file's `features` metadata names (default `prompt = final.last`:
//! the final hidden state at the prompt's last token), e.g. `prompt = final.last, 22.mean`:
//! the decoder hands over those vectors concatenated (see [`ngsd_gate::FeatureSpec`]).
//!
//! Timing: `prompt` (default) decides once, on the prompt features given to
//! `observe_prompt`, and holds that decision for the whole response; `token` re-decides every
//! step on that step's final hidden state (only for weights over `final.last`). With `prompt`
//! timing and no `observe_prompt` call, the first step's hidden state is used instead.
//!
//! Answer monitoring: a file with `answer.weight` and `answer.bias` (and optionally
//! `answer.mean` / `answer.std`, metadata `answer_threshold`) also lists answer features
//! (`…; answer = 22.mean`). At each check the decoder passes them; when that neuron's p
//! reaches `answer-threshold`, the gate steers from then on (the decoder regenerates the
//! tokens the check did not clear).
//!
//! Parameters:
//! - `weights` (required): a safetensors file with `weight` [F], `bias` [1] or scalar, and
//!   optionally `mean` [F] and `std` [F], where F is the number of prompt features times the
//!   hidden size. Metadata may name the model the neuron was trained on: `hidden_size`,
//!   `model_sha256` (and `threshold`, used as the default; `features`).
//!   A relative path is relative to the process's working directory.
//! - `threshold` (default: the file's `threshold` metadata, else 0.5; in [0, 1]);
//!   `answer-threshold` (default: the file's `answer_threshold`, else 0.5).
//! - `mode = hard | soft` (default `hard`), `timing = prompt | token` (default `prompt`),
//!   `monitor = true | false` (default true when the file has an answer neuron).
//! - Host keys `hidden-size` and `model-sha256`: weights made for another model (a different
//!   hidden size, or a `model_sha256` that differs) are refused.
//!
//! The explanation value is p. Standardisation is folded into `w` and `b` at load, so a
//! decision is one dot product.

mod neuron;

use std::path::Path;

use ngsd_gate::safetensors::SafeTensors;
use ngsd_gate::{
    AnswerInput, Decision, Error, Feature, FeatureSpec, Gate, GatePlugin, Needs, Params,
    PromptInput, Result, StepInput,
};

use neuron::Neuron;

/// When the gate decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// Once per request, on the prompt's features; held for every token.
    Prompt,
    /// Every token, on that step's final hidden state.
    Token,
}

/// The prompt neuron, and the answer neuron when the gate monitors answers.
#[derive(Clone, Debug)]
pub struct Sigmoid {
    prompt: Neuron,
    answer: Option<Neuron>,
    features: FeatureSpec,
    soft: bool,
    timing: Timing,
    held: Option<Decision>,
}

impl Sigmoid {
    /// The prompt neuron's probability for one feature vector.
    pub fn probability(&self, features: &[f32]) -> Result<f32> {
        self.prompt.probability(features)
    }

    fn decision(&self, p: f32, threshold: f32) -> Decision {
        if p >= threshold {
            Decision::steer(if self.soft { p } else { 1.0 }, p)
        } else {
            Decision::pass(p)
        }
    }

    fn decide_on(&self, features: &[f32]) -> Result<Decision> {
        if features.is_empty() {
            return Err(Error::MissingInput {
                what: "hidden state",
            });
        }
        let p = self.prompt.probability(features)?;
        Ok(self.decision(p, self.prompt.threshold))
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

    fn features(&self) -> FeatureSpec {
        self.features.clone()
    }

    fn check_answer(&mut self, input: &AnswerInput<'_>) -> Result<Decision> {
        let Some(answer) = &self.answer else {
            return Ok(Decision::pass(f32::NAN));
        };
        let p = answer.probability(input.features)?;
        let d = self.decision(p, answer.threshold);
        if d.is_steering() {
            self.held = Some(d);
        }
        Ok(d)
    }
}

/// The gate's parameters, read before the weights file.
struct Settings {
    weights: String,
    threshold: Option<f64>,
    answer_threshold: Option<f64>,
    soft: bool,
    timing: Timing,
    monitor: Option<bool>,
    host_hidden: Option<usize>,
    host_sha: Option<String>,
}

fn settings(config: &str) -> Result<Settings> {
    let mut p = Params::parse(config)?;
    let weights = p.string("weights").ok_or_else(|| {
        Error::invalid_param(
            "weights",
            "required: path to a safetensors file with `weight` [F] and `bias`",
        )
    })?;
    let s = Settings {
        weights,
        threshold: p.parsed::<f64>("threshold")?,
        answer_threshold: p.parsed::<f64>("answer-threshold")?,
        soft: p.choice("mode", &["hard", "soft"], "hard")? == "soft",
        timing: match p.choice("timing", &["prompt", "token"], "prompt")? {
            "token" => Timing::Token,
            _ => Timing::Prompt,
        },
        monitor: p.parsed::<bool>("monitor")?,
        host_hidden: p.parsed::<usize>("hidden-size")?,
        host_sha: p.string("model-sha256"),
    };
    p.finish()?;
    Ok(s)
}

/// Refuses weights made for another model (hidden size or model checksum).
fn check_model(st: &SafeTensors, path: &Path, hidden: usize, s: &Settings) -> Result<()> {
    let fail = |m: String| Error::Failed(format!("weights file {}: {m}", path.display()));
    let model = st
        .metadata
        .get("model")
        .map_or(String::new(), |m| format!(" ({m})"));
    if let Some(model_h) = s.host_hidden.filter(|&m| m != hidden) {
        return Err(fail(format!(
            "made for hidden size {hidden}{model} but the model's hidden size is {model_h}: \
             these weights belong to another model; train or pick weights for this model"
        )));
    }
    if let (Some(want), Some(have)) = (&s.host_sha, st.metadata.get("model_sha256"))
        && !want.eq_ignore_ascii_case(have)
    {
        return Err(fail(format!(
            "made for model sha256 {have}{model} but the loaded model is {want}: \
             these weights belong to another model; train or pick weights for this model"
        )));
    }
    Ok(())
}

/// The file's feature declaration (`prompt = final.last` when it has none).
fn feature_spec(st: &SafeTensors, path: &Path) -> Result<FeatureSpec> {
    match st.metadata.get("features") {
        Some(text) => text.parse().map_err(|e| {
            Error::Failed(format!(
                "weights file {}: metadata `features`: {e}",
                path.display()
            ))
        }),
        None => Ok(FeatureSpec::default()),
    }
}

impl GatePlugin for Sigmoid {
    const NAME: &'static str = "sigmoid";
    const DESCRIPTION: &'static str = "logistic neuron over the base model's hidden-state features, decided on the prompt, \
         optionally re-checked on the answer (default)";
    const NEEDS: Needs = Needs::HIDDEN;

    fn create(config: &str) -> Result<Self> {
        let s = settings(config)?;
        let path = Path::new(&s.weights);
        let st = SafeTensors::read(path)?;
        let mut features = feature_spec(&st, path)?;
        let prompt = Neuron::load(&st, path, "", features.prompt.len(), s.threshold)?;
        let hidden = prompt.width() / features.prompt.len();
        check_model(&st, path, hidden, &s)?;
        let has_answer = st.tensors.contains_key("answer.weight");
        let answer = match (s.monitor, has_answer) {
            (Some(true), false) => {
                return Err(Error::invalid_param(
                    "monitor",
                    format!("{} has no answer neuron (`answer.weight`)", path.display()),
                ));
            }
            (Some(false), _) | (None, false) => None,
            (_, true) => Some(Neuron::load(
                &st,
                path,
                "answer.",
                features.answer.len(),
                s.answer_threshold,
            )?),
        };
        if let Some(a) = &answer
            && a.width() != hidden * features.answer.len()
        {
            return Err(Error::Failed(format!(
                "weights file {}: `answer.weight` has {} values, expected {} answer features × hidden size {hidden}",
                path.display(),
                a.width(),
                features.answer.len()
            )));
        }
        if answer.is_none() {
            features.answer.clear();
        }
        if s.timing == Timing::Token && features.prompt != [Feature::FINAL_LAST] {
            return Err(Error::invalid_param(
                "timing",
                format!(
                    "`token` reads each step's final hidden state, but these weights read `{features}`; \
                     use timing = prompt"
                ),
            ));
        }
        Ok(Sigmoid {
            prompt,
            answer,
            features,
            soft: s.soft,
            timing: s.timing,
            held: None,
        })
    }
}

ngsd_gate::export_gate!(Sigmoid);

#[cfg(test)]
mod tests;
