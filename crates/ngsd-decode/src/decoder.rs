//! One safety-aware generation: base + expert + gate + α (spec §3.2, with KV caches and a lazy
//! expert instead of two full forward passes per token).

use std::time::{Duration, Instant};

use ngsd_gate::{Decision, FailurePolicy, Gate, Needs, PromptInput, StepInput};
use ngsd_runtime::sampling::{argmax, softmax_into};
use ngsd_runtime::{
    ChatTemplate, FinishReason, ForwardOut, GenerateConfig, Message, Model, Positions, Sampler,
    TextOutput, Tokenizer,
};

use crate::error::{Error, Result};
use crate::expert::Expert;
use crate::reflection::{self, AlphaMap, ZeroScoreRule};
use crate::steer::{Divergence, SteerScratch, steer_into, top_k};
use crate::trace::{Candidate, ReflectionRecord, Summary, Timings, TraceLine};

/// The finish reason's stop string when the early-stop detector ended the generation.
pub const EARLY_STOP: &str = "early stop";

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

/// How α is set for a request.
pub enum Reflection {
    /// A fixed α in [0, 1].
    Fixed(f32),
    /// The base model rates the request's risk (four scores as JSON); risk → α.
    Generative {
        /// Most tokens the rating may take.
        budget: usize,
        /// Wall-clock limit of the rating.
        timeout: Duration,
        /// Risk → α.
        map: AlphaMap,
        /// What all-zero scores mean.
        zero_rule: ZeroScoreRule,
    },
    /// A neuron's probability on the prompt's last hidden state (a gate whose explanation
    /// value is a probability, e.g. the sigmoid gate with `timing = token`); risk = 10·p.
    Probe {
        /// The probe.
        gate: Box<dyn Gate + Send>,
        /// Risk → α.
        map: AlphaMap,
    },
}

impl std::fmt::Debug for Reflection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.mode())
    }
}

impl Reflection {
    /// `off`, `generative` or `probe`.
    pub fn mode(&self) -> &'static str {
        match self {
            Reflection::Fixed(_) => "off",
            Reflection::Generative { .. } => "generative",
            Reflection::Probe { .. } => "probe",
        }
    }

    /// Generative reflection with the paper's defaults (64 tokens, 30 s).
    pub fn generative() -> Self {
        Reflection::Generative {
            budget: 64,
            timeout: Duration::from_secs(30),
            map: AlphaMap::default(),
            zero_rule: ZeroScoreRule::default(),
        }
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if let Reflection::Fixed(a) = self
            && !(0.0..=1.0).contains(a)
        {
            return Err(Error::InvalidConfig {
                name: "alpha",
                reason: format!("{a} is outside [0, 1]"),
            });
        }
        if let Reflection::Generative { budget: 0, .. } = self {
            return Err(Error::InvalidConfig {
                name: "reflection budget",
                reason: "0 tokens; the rating needs at least a few tokens (default 64)".into(),
            });
        }
        Ok(())
    }
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
        line
    }
}

fn top5(tokenizer: &Tokenizer, probs: &[f32], scratch: &mut Vec<u32>) -> Vec<Candidate> {
    top_k(probs, 5, scratch);
    scratch
        .iter()
        .map(|&id| Candidate {
            id,
            text: tokenizer.token_text(id),
            p: probs[id as usize],
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Rates the request with the base model itself and maps the risk to α.
fn reflect_generative(
    models: &mut Models,
    req: &Request,
    budget: usize,
    timeout: Duration,
    map: &AlphaMap,
    zero_rule: ZeroScoreRule,
) -> Result<ReflectionRecord> {
    let text = match (&models.template, req.raw) {
        (Some(t), false) => t.render(
            &[
                Message::new("system", reflection::system_prompt()),
                Message::new("user", &reflection::user_prompt(&req.prompt)),
            ],
            true,
        )?,
        _ => format!(
            "{}\n\n{}",
            reflection::system_prompt(),
            reflection::user_prompt(&req.prompt)
        ),
    };
    let ids = models.tokenizer.encode(&text)?;
    let base = &mut models.base;
    let vocab = base.vocab_size();
    let eos = base.eos_token_ids().to_vec();
    let mut cache = base.new_cache()?;
    let mut out = ForwardOut::default();
    let start = Instant::now();
    base.forward(&mut cache, &ids, Positions::Last, &mut out)?;
    let mut answer = Vec::new();
    let mut timed_out = false;
    while answer.len() < budget {
        let t = argmax(out.last_logits(vocab));
        if eos.contains(&t) {
            break;
        }
        answer.push(t);
        // A complete JSON object ends the rating early.
        if models.tokenizer.token_text(t).contains('}') {
            break;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            break;
        }
        base.forward(&mut cache, &[t], Positions::Last, &mut out)?;
    }
    let raw = models.tokenizer.decode(&answer)?;
    let outcome = reflection::parse_scores(&raw);
    let scores = outcome.scores;
    let risk = reflection::overall_risk(&scores, req.prompt.chars().count(), zero_rule);
    let mut fallback = match &outcome.status {
        reflection::ParseStatus::Fallback { reason } => Some(match reason {
            reflection::FallbackReason::NoJson => "no JSON object in the answer".to_string(),
            reflection::FallbackReason::NotAnObject => {
                "the first JSON value is not an object".to_string()
            }
        }),
        reflection::ParseStatus::Parsed { defaulted } if !defaulted.is_empty() => Some(format!(
            "defaulted to 7: {}",
            defaulted
                .iter()
                .map(|d| format!("{} ({:?})", d.dimension.key(), d.issue))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        reflection::ParseStatus::Parsed { .. } => None,
    };
    if timed_out {
        fallback = Some(format!(
            "timed out after {} ms{}",
            timeout.as_millis(),
            fallback.map(|f| format!("; {f}")).unwrap_or_default()
        ));
    }
    Ok(ReflectionRecord {
        mode: "generative",
        risk: Some(risk),
        alpha: map.map(risk),
        raw: Some(raw),
        scores: Some([
            scores.severity,
            scores.actionability,
            scores.evasion,
            scores.targeting,
        ]),
        fallback,
        probability: None,
    })
}

/// Generates a safety-aware answer. `on_text` receives each piece of text once the gate has
/// decided on the tokens that make it (nothing is shown and then taken back).
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
    let t_start = Instant::now();
    let mut timings = Timings::default();
    let vocab = models.base.vocab_size();
    let hidden_size = models.base.hidden_size();
    let needs = gate.needs();
    if needs.contains(Needs::HIDDEN) && !models.base.has_hidden_state() {
        return Err(Error::InvalidConfig {
            name: "gate",
            reason: format!(
                "gate `{}` reads the hidden state, but the base model has no `last_hidden_state` output; \
                 add it with `cargo xtask export-hidden <model.onnx>`",
                gate.name()
            ),
        });
    }

    let prompt_text = crate::expert::render_conversation(
        models.template.as_ref(),
        req.system.as_deref(),
        &req.history,
        &req.prompt,
        req.raw,
    )?;
    let prompt_ids = models.tokenizer.encode(&prompt_text)?;
    if prompt_ids.is_empty() {
        return Err(Error::InvalidConfig {
            name: "prompt",
            reason: "the prompt is empty".into(),
        });
    }
    if prompt_ids.len() >= models.base.max_context() {
        return Err(ngsd_runtime::Error::ContextOverflow {
            prompt_tokens: prompt_ids.len(),
            max_context: models.base.max_context(),
        }
        .into());
    }

    // Prefill the base model, in chunks: a cancelled request stops within one chunk.
    let mut cache = models.base.new_cache()?;
    let mut out = ForwardOut::default();
    let t = Instant::now();
    let mut cancelled = || req.cancel.as_ref().is_some_and(crate::Cancel::is_cancelled);
    let prefill = models.base.prefill(
        &mut cache,
        &prompt_ids,
        Positions::Last,
        &mut out,
        &mut cancelled,
    )?;
    let prefill_stopped = matches!(prefill, ngsd_runtime::Prefill::Stopped { .. });
    timings.base_ms += ms(t.elapsed());
    let prompt_hidden = out.last_hidden(hidden_size).to_vec();

    // Self-reflection → α.
    let t = Instant::now();
    let record = match reflection {
        Reflection::Fixed(a) => ReflectionRecord {
            mode: "off",
            risk: None,
            alpha: *a,
            raw: None,
            scores: None,
            fallback: None,
            probability: None,
        },
        Reflection::Generative {
            budget,
            timeout,
            map,
            zero_rule,
        } => reflect_generative(models, req, *budget, *timeout, map, *zero_rule)?,
        Reflection::Probe { gate: probe, map } => {
            probe.reset();
            let d = probe.decide(&StepInput {
                step: 0,
                hidden: &prompt_hidden,
                base_probs: None,
                expert_probs: None,
                divergence: None,
                risk: None,
                alpha: None,
            })?;
            let p = d.value.clamp(0.0, 1.0);
            ReflectionRecord {
                mode: "probe",
                risk: Some(10.0 * p),
                alpha: reflection::alpha_for_probability(p, map),
                raw: None,
                scores: None,
                fallback: None,
                probability: Some(p),
            }
        }
    };
    timings.reflection_ms = ms(t.elapsed());
    let alpha = record.alpha;

    // The gate sees the prompt.
    let mut gate_errors: Vec<String> = Vec::new();
    let mut gate_broken: Option<String> = None;
    gate.reset();
    let t = Instant::now();
    if let Err(e) = gate.observe_prompt(&PromptInput {
        hidden: &prompt_hidden,
        risk: record.risk,
        alpha: Some(alpha),
    }) {
        let failed = cfg.failure_policy.on_error(e)?;
        gate_broken = Some(failed.error.to_string());
    }
    timings.gate_ms += ms(t.elapsed());

    models.expert.begin(&req.prompt, req.raw)?;
    let mut sampler = Sampler::new(cfg.generate.sampling)?;
    let eos = models.base.eos_token_ids().to_vec();
    let mut text = TextOutput::new(&cfg.generate.stop);
    let mut early = cfg.early_stop.clone().map(crate::stop::EarlyStop::start);

    let mut tokens: Vec<u32> = Vec::new();
    let mut trace = Vec::new();
    let mut p_base: Vec<f32> = Vec::with_capacity(vocab);
    let mut adjusted: Vec<f32> = Vec::with_capacity(vocab);
    let mut scratch = SteerScratch::default();
    let mut top_scratch = Vec::new();
    let mut steered_tokens = 0usize;
    let mut first_steered = None;
    let needs_expert_to_decide = needs.needs_expert();
    let needs_base_probs = needs.contains(Needs::BASE_PROBS) || needs.contains(Needs::DIVERGENCE);

    let finish = loop {
        if prefill_stopped {
            break FinishReason::Cancelled;
        }
        let step = tokens.len();
        let logits = out.last_logits(vocab);
        let hidden = out.last_hidden(hidden_size);
        let mut have_base_probs = false;
        if needs_base_probs || cfg.trace {
            softmax_into(logits, 1.0, &mut p_base);
            have_base_probs = true;
        }
        let mut p_expert: Option<&[f32]> = None;
        if needs_expert_to_decide {
            let t = Instant::now();
            p_expert = Some(models.expert.probs(&mut models.base, hidden, logits)?);
            timings.expert_ms += ms(t.elapsed());
        }
        let divergence = match p_expert {
            Some(pe) if needs.contains(Needs::DIVERGENCE) || cfg.trace => {
                Some(cfg.divergence.compute(&p_base, pe))
            }
            _ => None,
        };
        let t = Instant::now();
        let mut gate_error = None;
        let decision = match &gate_broken {
            Some(e) => {
                gate_error = Some(e.clone());
                Decision::steer(1.0, f32::NAN)
            }
            None => {
                let result = gate
                    .decide(&StepInput {
                        step: step as u64,
                        hidden,
                        base_probs: have_base_probs.then_some(&p_base[..]),
                        expert_probs: p_expert,
                        divergence,
                        risk: record.risk,
                        alpha: Some(alpha),
                    })
                    .and_then(|d| {
                        if d.is_valid() {
                            Ok(d)
                        } else {
                            Err(ngsd_gate::Error::InvalidDecision {
                                gate: gate.name().to_string(),
                                strength: d.strength,
                            })
                        }
                    });
                match result {
                    Ok(d) => d,
                    Err(e) => {
                        let failed = cfg.failure_policy.on_error(e)?;
                        gate_error = Some(failed.error.to_string());
                        failed.decision
                    }
                }
            }
        };
        timings.gate_ms += ms(t.elapsed());
        if gate_error.is_some() {
            gate_errors.push(gate_error.clone().unwrap_or_default());
        }

        let strength = decision.strength;
        let token;
        let mut expert_probs_for_trace = None;
        if strength > 0.0 {
            steered_tokens += 1;
            first_steered.get_or_insert(step);
            if !have_base_probs {
                softmax_into(logits, 1.0, &mut p_base);
            }
            let pe = match p_expert {
                Some(pe) => pe,
                None => {
                    let t = Instant::now();
                    let pe = models.expert.probs(&mut models.base, hidden, logits)?;
                    timings.expert_ms += ms(t.elapsed());
                    pe
                }
            };
            steer_into(
                &p_base,
                pe,
                alpha * strength,
                cfg.top_k,
                &mut scratch,
                &mut adjusted,
            );
            if cfg.trace {
                expert_probs_for_trace = Some(top5(&models.tokenizer, pe, &mut top_scratch));
            }
            token = sampler.sample_probs(&adjusted);
        } else {
            if cfg.trace {
                expert_probs_for_trace =
                    p_expert.map(|pe| top5(&models.tokenizer, pe, &mut top_scratch));
            }
            token = sampler.sample(logits);
        }
        if cfg.trace {
            trace.push(TraceLine {
                step,
                token,
                text: models.tokenizer.token_text(token),
                chosen_by: if strength > 0.0 && token != argmax(logits) {
                    "steered"
                } else {
                    "base"
                },
                steered: strength > 0.0,
                strength,
                gate_value: decision.value,
                divergence,
                base_top: top5(&models.tokenizer, &p_base, &mut top_scratch),
                expert_top: expert_probs_for_trace,
                alpha,
                gate_error,
            });
        }

        tokens.push(token);
        models.expert.push(token);
        if !cfg.generate.ignore_eos && eos.contains(&token) {
            break FinishReason::Eos;
        }
        if let Some(stop) = text.push(&models.tokenizer, token, &mut on_text)? {
            break FinishReason::Stop(stop);
        }
        let limit = match early.as_mut() {
            Some(early) => {
                let tokenizer = &models.tokenizer;
                if early.after_token(&tokens, alpha, cfg.generate.max_new_tokens, |ids| {
                    tokenizer.decode(ids).unwrap_or_default()
                }) {
                    break FinishReason::Stop(EARLY_STOP.into());
                }
                early.limit(cfg.generate.max_new_tokens)
            }
            None => cfg.generate.max_new_tokens,
        };
        if tokens.len() >= limit {
            break FinishReason::MaxTokens;
        }
        if req.cancel.as_ref().is_some_and(crate::Cancel::is_cancelled) {
            break FinishReason::Cancelled;
        }
        if cache.len() + 1 > models.base.max_context() {
            break FinishReason::ContextFull;
        }
        let t = Instant::now();
        models
            .base
            .forward(&mut cache, &[token], Positions::Last, &mut out)?;
        timings.base_ms += ms(t.elapsed());
    };
    if !matches!(finish, FinishReason::Stop(ref s) if s != EARLY_STOP) {
        text.finish(&models.tokenizer, &mut on_text)?;
    }
    timings.total_ms = ms(t_start.elapsed());
    let summary = Summary {
        summary: true,
        tokens: tokens.len(),
        steered_tokens,
        first_steered,
        expert_forward_passes: models.expert.forward_passes(),
        gate_errors: gate_errors.len(),
        finish: match &finish {
            FinishReason::Stop(s) if s == EARLY_STOP => "early-stop".to_string(),
            FinishReason::Stop(_) => "stop".to_string(),
            FinishReason::Eos => "eos".to_string(),
            FinishReason::MaxTokens => "max-tokens".to_string(),
            FinishReason::ContextFull => "context-full".to_string(),
            FinishReason::Cancelled => "cancelled".to_string(),
        },
        early_stop: early.and_then(|e| e.fired).map(|r| format!("{r:?}")),
        gate: gate.name().to_string(),
        expert: models.expert.describe(),
        reflection: record,
        timings,
    };
    Ok(Output {
        text: text.text().to_string(),
        tokens,
        prompt_tokens: prompt_ids.len(),
        finish,
        trace,
        summary,
    })
}
