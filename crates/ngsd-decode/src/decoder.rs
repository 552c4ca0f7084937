//! One safety-aware generation: base + expert + gate + α (spec §3.2, with KV caches and a lazy
//! expert instead of two full forward passes per token), read as the paper's algorithm:
//! prepare the prompt, reflect (α), let the gate see the prompt, then per token decide, pick,
//! trace and stop, with the answer re-checked every few tokens when the gate monitors it.

use std::time::Instant;

use ngsd_gate::{FailurePolicy, Gate};
use ngsd_runtime::{ChatTemplate, FinishReason, GenerateConfig, Message, Model, Tokenizer};

use crate::assess::Reflection;
use crate::error::{Error, Result};
use crate::expert::Expert;
use crate::run::Run;
use crate::steer::Divergence;
use crate::trace::{Summary, TraceLine};

/// The models of one deployment: the base decoder, its tokenizer and template, and the expert.
pub struct Models {
    /// The base model.
    pub base: Model,
    /// The base tokenizer (shared by the expert).
    pub tokenizer: Tokenizer,
    /// The base chat template.
    pub template: Option<ChatTemplate>,
    /// The expert.
    pub expert: Box<dyn Expert>,
}

/// One request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The user's message.
    pub prompt: String,
    /// A system prompt for the base model (the template's default when `None`).
    pub system: Option<String>,
    /// Feed the prompt as raw text, without the chat template.
    pub raw: bool,
    /// Earlier turns of the conversation (`user` / `assistant` messages), rendered through the
    /// chat template before `prompt`. Reflection and the expert see only `prompt`, the message
    /// being answered. Ignored when `raw`.
    pub history: Vec<Message>,
    /// Stops the generation at its next token (finish reason `Cancelled`).
    pub cancel: Option<crate::Cancel>,
}

/// Decoding settings.
#[derive(Debug, Clone)]
pub struct DecodeConfig {
    /// Token budget, sampling and stop strings.
    pub generate: GenerateConfig,
    /// Candidates from each of base and expert considered when steering (paper: 64).
    pub top_k: usize,
    /// Divergence fed to gates that need one.
    pub divergence: Divergence,
    /// What a gate failure does.
    pub failure_policy: FailurePolicy,
    /// Early stop for steered, risky generations (`None` = off).
    pub early_stop: Option<crate::stop::EarlyStop>,
    /// Record a trace line per token (costs two top-5 selections and a softmax per token).
    pub trace: bool,
    /// Answer tokens between the checks of a gate that monitors the answer; the text of at
    /// most this many tokens waits for a check before it is shown.
    pub monitor_every: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            generate: GenerateConfig::default(),
            top_k: 64,
            divergence: Divergence::TotalVariation,
            failure_policy: FailurePolicy::FailClosed,
            early_stop: Some(crate::stop::EarlyStop::default()),
            trace: false,
            monitor_every: 16,
        }
    }
}

impl DecodeConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.top_k == 0 {
            return Err(Error::InvalidConfig {
                name: "top-k merge",
                reason: "0; steering needs at least one candidate (paper: 64)".into(),
            });
        }
        if self.monitor_every == 0 {
            return Err(Error::InvalidConfig {
                name: "monitor-every",
                reason: "0 tokens; the answer monitor needs at least 1 token between checks \
                         (default 16)"
                    .into(),
            });
        }
        if self.generate.max_new_tokens == 0 {
            return Err(Error::InvalidConfig {
                name: "max-new-tokens",
                reason: "0; ask for at least 1 token".into(),
            });
        }
        self.generate.sampling.validate()?;
        Ok(())
    }
}

/// The result of one request.
#[derive(Debug, Clone)]
pub struct Output {
    /// The answer (stop string excluded).
    pub text: String,
    /// Generated token ids.
    pub tokens: Vec<u32>,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Why generation ended.
    pub finish: FinishReason,
    /// Per-token trace (empty unless `trace` was set).
    pub trace: Vec<TraceLine>,
    /// The summary.
    pub summary: Summary,
}

impl Output {
    /// One line for humans: how much was steered and why.
    pub fn explain(&self) -> String {
        let s = &self.summary;
        let mut line = format!("steered {} of {} tokens", s.steered_tokens, s.tokens);
        if let Some(first) = s.first_steered {
            line.push_str(&format!(", first at token {first}"));
        }
        let r = &s.reflection;
        match (r.mode, r.risk) {
            (_, Some(risk)) if r.mode == "probe" => line.push_str(&format!(
                "; probe p {:.2} → risk {risk:.1} → α {:.2}",
                r.probability.unwrap_or(f32::NAN),
                r.alpha
            )),
            (_, Some(risk)) => {
                line.push_str(&format!("; risk {risk:.0} → α {:.2}", r.alpha));
                if let Some(fb) = &r.fallback {
                    line.push_str(&format!(" (rating unreadable: {fb}; defaults used)"));
                }
            }
            _ => line.push_str(&format!("; α {:.2} (fixed)", r.alpha)),
        }
        line.push_str(&format!(
            "; gate {}, expert {}, {} expert passes",
            s.gate, s.expert, s.expert_forward_passes
        ));
        if s.gate_errors > 0 {
            line.push_str(&format!("; {} gate errors (failed closed)", s.gate_errors));
        }
        if let Some(m) = &s.monitor {
            match &m.fired {
                Some(f) => line.push_str(&format!(
                    "; answer monitor fired after {} tokens (p {:.2}), kept {}, steered the rest",
                    f.at_tokens, f.value, f.kept_tokens
                )),
                None => line.push_str(&format!("; answer monitor cleared {} checks", m.checks)),
            }
        }
        line
    }
}

/// Generates a safety-aware answer. `on_text` receives each piece of text once the gate has
/// decided on the tokens that make it, and, when the gate monitors the answer, once a check
/// has cleared them (nothing is shown and then taken back).
pub fn generate(
    req: &Request,
    models: &mut Models,
    gate: &mut dyn Gate,
    reflection: &mut Reflection,
    cfg: &DecodeConfig,
    mut on_text: impl FnMut(&str),
) -> Result<Output> {
    cfg.validate()?;
    reflection.validate()?;
    let started = Instant::now();
    let mut run = Run::prefill(req, models, gate, reflection, cfg)?;
    if run.cut_short() {
        return Ok(run.into_output(models, gate, FinishReason::Cancelled, started));
    }
    run.reflect(models, reflection)?;
    run.observe_prompt(gate)?;
    models.expert.begin(&req.prompt, req.raw)?;
    let finish = run.answer(models, gate, &mut on_text)?;
    let finish = run.filtered(finish);
    Ok(run.into_output(models, gate, finish, started))
}
