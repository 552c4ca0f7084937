//! The state of one request while it is answered, and each step of the loop as a named
//! method: prefill, reflect, observe the prompt, then per token decide → pick → trace → emit →
//! advance → check.

use std::time::{Duration, Instant};

use ngsd_gate::{AnswerInput, Decision, FeatureSpec, Gate, Needs, PromptInput, StepInput};
use ngsd_runtime::sampling::{argmax, softmax_into};
use ngsd_runtime::{
    Conversation, EncodedPrompt, FinishReason, ForwardOut, KvCache, Positions, Prefill,
    PromptPrefill, Sampler, TextOutput, Tokenizer,
};

use crate::assess::Reflection;
use crate::decoder::{DecodeConfig, Models, Output, Request};
use crate::error::{Error, Result};
use crate::features::{self, AnswerPool};
use crate::monitor::Monitor;
use crate::steer::{SteerScratch, steer_into, top_k};
use crate::stop::EarlyStopState;
use crate::trace::{Candidate, MonitorSummary, ReflectionRecord, Summary, Timings, TraceLine};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Reusable per-step buffers.
#[derive(Default)]
struct Scratch {
    p_base: Vec<f32>,
    p_expert: Vec<f32>,
    adjusted: Vec<f32>,
    steer: SteerScratch,
    top: Vec<u32>,
    features: Vec<f32>,
}

/// What [`Run::next_token`] leaves to do.
pub(crate) enum Next {
    /// Feed this token to the base model, then call [`Run::after_advance`].
    Feed(u32),
    /// The answer ended.
    Done(FinishReason),
}

/// What the expert and the divergence contributed to one step.
struct StepProbs {
    have_base: bool,
    have_expert: bool,
    divergence: Option<f32>,
}

/// One request in flight.
pub(crate) struct Run {
    /// The request (a copy: a batch admits requests that arrive while others run).
    req: Request,
    /// Its decoding settings (a copy: requests of one batch may differ).
    cfg: DecodeConfig,
    prompt: EncodedPrompt,
    cache: KvCache,
    out: ForwardOut,
    /// The gate's prompt features, then the probe's.
    prompt_features: Vec<f32>,
    probe_features: Vec<f32>,
    record: Option<ReflectionRecord>,
    alpha: f32,
    /// α once the monitor fires (the reflection's high level).
    alpha_high: f32,
    /// Hidden size of the base model.
    width: usize,
    timings: Timings,
    /// Set when `observe_prompt` failed and the policy failed closed: every step steers.
    gate_broken: Option<String>,
    gate_errors: usize,
    tokens: Vec<u32>,
    steered: Vec<bool>,
    trace: Vec<TraceLine>,
    sampler: Sampler,
    text: TextOutput,
    early: Option<EarlyStopState>,
    pool: Option<AnswerPool>,
    monitor: Option<Monitor>,
    /// After the monitor fired: every later step steers at least this much.
    floor: Option<Decision>,
    scratch: Scratch,
    /// The prefill stopped early because the request was cancelled: nothing more runs.
    cut_short: bool,
    /// How many times the monitor rolled the answer back (each rebuilt `cache` alone).
    rollbacks: usize,
}

/// Runs `prompt` through the base model in chunks (a cancelled request, a client gone or a
/// deadline passed, stops within one), reusing the rows of its head (markup, system prompt,
/// earlier turns) when an earlier request computed them. The features pool only the message,
/// which always runs; an empty message pools the whole prompt, so that prompt runs whole.
fn run_prompt(
    req: &Request,
    prompt: &EncodedPrompt,
    models: &mut Models,
    positions: Positions,
    out: &mut ForwardOut,
) -> Result<PromptPrefill> {
    let cancel = req.cancel.clone();
    let mut cancelled = move || cancel.as_ref().is_some_and(crate::Cancel::is_cancelled);
    let head = if prompt.request.is_empty() {
        0
    } else {
        prompt.request.start
    };
    Ok(models
        .base
        .prefill_prompt(&prompt.ids, head, positions, out, &mut cancelled)?)
}

impl Run {
    /// Whether the prefill stopped early because the request was cancelled.
    pub fn cut_short(&self) -> bool {
        self.cut_short
    }

    /// Encodes the conversation (message text never becomes markup), checks it fits, runs
    /// the prompt through the base model and computes the prompt features of the gate and of
    /// a probe.
    pub fn prefill(
        req: &Request,
        models: &mut Models,
        gate: &dyn Gate,
        reflection: &Reflection,
        cfg: &DecodeConfig,
    ) -> Result<Self> {
        let spec = gate.features();
        let probe_spec = match reflection {
            Reflection::Probe { gate: probe, .. } => probe.features(),
            _ => FeatureSpec::default(),
        };
        let hidden_gate = gate.needs().contains(Needs::HIDDEN);
        if hidden_gate {
            features::check_model(&models.base, &spec.prompt)?;
            features::check_model(&models.base, &spec.answer)?;
        }
        if matches!(reflection, Reflection::Probe { .. }) {
            features::check_model(&models.base, &probe_spec.prompt)?;
        }
        let prompt = encode(req, models)?;
        let all_rows = features::needs_all_positions(&spec.prompt)
            || features::needs_all_positions(&probe_spec.prompt);
        let mut out = ForwardOut::default();
        let t = Instant::now();
        let positions = if all_rows {
            Positions::AllHidden
        } else {
            Positions::Last
        };
        let PromptPrefill { cache, fed, reused } =
            run_prompt(req, &prompt, models, positions, &mut out)?;
        let mut timings = Timings {
            base_ms: ms(t.elapsed()),
            ..Timings::default()
        };
        // Cut short: the features would read a partial prompt, and nothing more will run.
        let cut_short = matches!(fed, Prefill::Stopped { .. });
        let t = Instant::now();
        // `out` holds the rows from position `reused` on.
        let request = prompt.request.start - reused..prompt.request.end - reused;
        let pooled = |spec: &FeatureSpec, into: &mut Vec<f32>| {
            features::prompt_features(
                &spec.prompt,
                models.base.hidden_size(),
                prompt.ids.len() - reused,
                request.clone(),
                |layer| features::layer_rows(&models.base, &out, layer),
                into,
            )
        };
        let mut prompt_features = Vec::new();
        if hidden_gate && !cut_short {
            pooled(&spec, &mut prompt_features)?;
        }
        let mut probe_features = Vec::new();
        if matches!(reflection, Reflection::Probe { .. }) && !cut_short {
            pooled(&probe_spec, &mut probe_features)?;
        }
        timings.gate_ms += ms(t.elapsed());
        let width = models.base.hidden_size();
        let monitoring = hidden_gate && spec.monitors_answer();
        let pool = monitoring.then(|| AnswerPool::new(&spec.answer, width));
        let monitor = pool
            .as_ref()
            .map(|p| Monitor::new(cfg.monitor_every, p.clone()));
        Ok(Run {
            req: req.clone(),
            cfg: cfg.clone(),
            cache,
            out,
            prompt_features,
            probe_features,
            record: None,
            alpha: 0.0,
            alpha_high: reflection.alpha_map().high,
            width,
            timings,
            gate_broken: None,
            gate_errors: 0,
            tokens: Vec::new(),
            steered: Vec::new(),
            trace: Vec::new(),
            sampler: Sampler::new(cfg.generate.sampling)?,
            text: TextOutput::new(&cfg.generate.stop),
            early: cfg.early_stop.clone().map(crate::stop::EarlyStop::start),
            pool,
            monitor,
            floor: None,
            scratch: Scratch::default(),
            prompt,
            cut_short,
            rollbacks: 0,
        })
    }

    /// The base model's cache of this request: the prompt and the answer tokens fed so far
    /// (a batch copies it in once, and again after a rollback rebuilt it).
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// How many times the answer was rolled back (each rebuilt [`Run::cache`]).
    pub fn rollbacks(&self) -> usize {
        self.rollbacks
    }

    /// Takes row `r` of a batched step as this request's newest output, in place of
    /// [`Run::advance`]; `ms` is the step's time.
    pub fn take_batch_row(&mut self, models: &Models, from: &ForwardOut, r: usize, ms: f64) {
        let (vocab, hidden) = (models.base.vocab_size(), models.base.hidden_size());
        self.out.set_row_of(from, r, vocab, hidden);
        self.timings.base_ms += ms;
    }

    /// Self-reflection: sets α for this request.
    pub fn reflect(&mut self, models: &mut Models, reflection: &mut Reflection) -> Result<()> {
        let t = Instant::now();
        let record = reflection.assess(
            models,
            &self.req,
            &self.probe_features,
            self.cfg.failure_policy,
        )?;
        self.timings.reflection_ms = ms(t.elapsed());
        self.alpha = record.alpha;
        self.record = Some(record);
        Ok(())
    }

    fn risk(&self) -> Option<f32> {
        self.record.as_ref().and_then(|r| r.risk)
    }

    /// The gate sees the prompt's features; a failure follows the failure policy.
    pub fn observe_prompt(&mut self, gate: &mut dyn Gate) -> Result<()> {
        gate.reset();
        let t = Instant::now();
        let seen = gate.observe_prompt(&PromptInput {
            hidden: &self.prompt_features,
            risk: self.risk(),
            alpha: Some(self.alpha),
        });
        if let Err(e) = seen {
            let failed = self.cfg.failure_policy.on_error(e)?;
            self.gate_broken = Some(failed.error.to_string());
        }
        self.timings.gate_ms += ms(t.elapsed());
        Ok(())
    }

    /// The answer, token by token, until a stop rule ends it (and the monitor, if any, has
    /// cleared the last tokens).
    pub fn answer(
        &mut self,
        models: &mut Models,
        gate: &mut dyn Gate,
        on_text: &mut impl FnMut(&str),
    ) -> Result<FinishReason> {
        loop {
            match self.next_token(models, gate, on_text)? {
                Next::Feed(token) => {
                    self.advance(models, token)?;
                    self.after_advance(models, gate, on_text)?;
                }
                Next::Done(finish) => return Ok(finish),
            }
        }
    }

    /// Decides, picks and emits the next token; returns it for the base model to be fed, or
    /// why the answer ended. The two halves of a step ([`Run::next_token`], then the forward
    /// pass, then [`Run::after_advance`]) are apart so that a batch can run the forward pass
    /// of many requests at once.
    pub fn next_token(
        &mut self,
        models: &mut Models,
        gate: &mut dyn Gate,
        on_text: &mut impl FnMut(&str),
    ) -> Result<Next> {
        loop {
            let token = self.step(models, gate)?;
            if let Some(finish) = self.emit(models, token, on_text)? {
                if self.check(models, gate, on_text, true)? {
                    continue; // the last tokens were not cleared: generated again, steered
                }
                return Ok(Next::Done(finish));
            }
            return Ok(Next::Feed(token));
        }
    }

    /// After the newest token was fed: its hidden states join the answer pool, and the
    /// monitor's check runs when one is due.
    pub fn after_advance(
        &mut self,
        models: &mut Models,
        gate: &mut dyn Gate,
        on_text: &mut impl FnMut(&str),
    ) -> Result<()> {
        if let Some(pool) = self.pool.as_mut() {
            let (base, out) = (&models.base, &self.out);
            pool.add(|layer| features::layer_rows(base, out, layer))?;
        }
        self.check(models, gate, on_text, false)?;
        Ok(())
    }

    /// Decide, pick and trace one token; it joins the answer and the expert's sequence.
    fn step(&mut self, models: &mut Models, gate: &mut dyn Gate) -> Result<u32> {
        let step = self.tokens.len();
        let needs = gate.needs();
        let probs = self.step_probs(models, needs)?;
        let (decision, gate_error) = self.decide(gate, step, &probs)?;
        let token = self.pick(models, decision, &probs)?;
        if self.cfg.trace {
            self.trace_line(models, step, token, decision, &probs, gate_error);
        }
        self.tokens.push(token);
        self.steered.push(decision.is_steering());
        models.expert.push(token);
        Ok(token)
    }

    /// The base distribution and the expert's, when the gate or the trace needs them.
    fn step_probs(&mut self, models: &mut Models, needs: Needs) -> Result<StepProbs> {
        let vocab = models.base.vocab_size();
        let logits = self.out.last_logits(vocab);
        let need_base = needs.contains(Needs::BASE_PROBS) || needs.contains(Needs::DIVERGENCE);
        let have_base = need_base || self.cfg.trace;
        if have_base {
            softmax_into(logits, 1.0, &mut self.scratch.p_base);
        }
        let mut probs = StepProbs {
            have_base,
            have_expert: false,
            divergence: None,
        };
        if needs.needs_expert() {
            self.expert_probs(models)?;
            probs.have_expert = true;
            if needs.contains(Needs::DIVERGENCE) || self.cfg.trace {
                probs.divergence = Some(
                    self.cfg
                        .divergence
                        .compute(&self.scratch.p_base, &self.scratch.p_expert),
                );
            }
        }
        Ok(probs)
    }

    /// Runs the expert for the current position into `scratch.p_expert`.
    fn expert_probs(&mut self, models: &mut Models) -> Result<()> {
        let t = Instant::now();
        let hidden = self.out.last_hidden(models.base.hidden_size());
        let logits = self.out.last_logits(models.base.vocab_size());
        let pe = models.expert.probs(&mut models.base, hidden, logits)?;
        self.scratch.p_expert.clear();
        self.scratch.p_expert.extend_from_slice(pe);
        self.timings.expert_ms += ms(t.elapsed());
        Ok(())
    }

    /// The gate's decision for this step (validated; a failure follows the policy), raised to
    /// the monitor's floor once it fired.
    fn decide(
        &mut self,
        gate: &mut dyn Gate,
        step: usize,
        probs: &StepProbs,
    ) -> Result<(Decision, Option<String>)> {
        let t = Instant::now();
        let hidden = self.out.last_hidden(self.width);
        let result = match &self.gate_broken {
            Some(e) => Err(ngsd_gate::Error::Failed(e.clone())),
            None => gate
                .decide(&StepInput {
                    step: step as u64,
                    hidden,
                    base_probs: probs.have_base.then_some(&self.scratch.p_base[..]),
                    expert_probs: probs.have_expert.then_some(&self.scratch.p_expert[..]),
                    divergence: probs.divergence,
                    risk: self.risk(),
                    alpha: Some(self.alpha),
                })
                .and_then(|d| validated(gate.name(), d)),
        };
        let (mut decision, error) = match result {
            Ok(d) => (d, None),
            Err(e) => {
                let failed = self.cfg.failure_policy.on_error(e)?;
                self.gate_errors += 1;
                (failed.decision, Some(failed.error.to_string()))
            }
        };
        if let Some(floor) = self.floor
            && decision.strength < floor.strength
        {
            decision.strength = floor.strength;
        }
        self.timings.gate_ms += ms(t.elapsed());
        Ok((decision, error))
    }

    /// The next token: the base model's choice, or the steered mixture when the gate steers.
    fn pick(&mut self, models: &mut Models, decision: Decision, probs: &StepProbs) -> Result<u32> {
        let vocab = models.base.vocab_size();
        if !decision.is_steering() {
            return Ok(self.sampler.sample(self.out.last_logits(vocab)));
        }
        if !probs.have_base {
            softmax_into(self.out.last_logits(vocab), 1.0, &mut self.scratch.p_base);
        }
        if !probs.have_expert {
            self.expert_probs(models)?;
        }
        let s = &mut self.scratch;
        steer_into(
            &s.p_base,
            &s.p_expert,
            self.alpha * decision.strength,
            self.cfg.top_k,
            &mut s.steer,
            &mut s.adjusted,
        );
        Ok(self.sampler.sample_probs(&s.adjusted))
    }

    fn trace_line(
        &mut self,
        models: &Models,
        step: usize,
        token: u32,
        decision: Decision,
        probs: &StepProbs,
        gate_error: Option<String>,
    ) {
        let tokenizer = &models.tokenizer;
        let logits = self.out.last_logits(models.base.vocab_size());
        let s = &mut self.scratch;
        let expert_top = (probs.have_expert || decision.is_steering())
            .then(|| top5(tokenizer, &s.p_expert, &mut s.top));
        self.trace.push(TraceLine {
            step,
            token,
            text: tokenizer.token_text(token),
            chosen_by: if decision.is_steering() && token != argmax(logits) {
                "steered"
            } else {
                "base"
            },
            steered: decision.is_steering(),
            strength: decision.strength,
            gate_value: decision.value,
            divergence: probs.divergence,
            base_top: top5(tokenizer, &s.p_base, &mut s.top),
            expert_top,
            alpha: self.alpha,
            gate_error,
        });
    }

    /// The token's text goes out (held while the monitor has not cleared it); returns why the
    /// answer ends, if it does.
    fn emit(
        &mut self,
        models: &Models,
        token: u32,
        on_text: &mut impl FnMut(&str),
    ) -> Result<Option<FinishReason>> {
        let tokenizer = &models.tokenizer;
        if !self.cfg.generate.ignore_eos && models.base.eos_token_ids().contains(&token) {
            let mut sink = Sink::new(self.monitor.as_mut(), on_text);
            self.text.finish(tokenizer, &mut |t| sink.send(t))?;
            return Ok(Some(FinishReason::Eos));
        }
        let mut sink = Sink::new(self.monitor.as_mut(), on_text);
        if let Some(stop) = self.text.push(tokenizer, token, &mut |t| sink.send(t))? {
            return Ok(Some(FinishReason::Stop(stop)));
        }
        let finish = self.stop_rule(models);
        if finish
            .as_ref()
            .is_some_and(|f| *f != FinishReason::SafetyStop)
        {
            let mut sink = Sink::new(self.monitor.as_mut(), on_text);
            self.text.finish(tokenizer, &mut |t| sink.send(t))?;
        }
        Ok(finish)
    }

    /// Early stop, the token budget, cancellation and the context window.
    fn stop_rule(&mut self, models: &Models) -> Option<FinishReason> {
        let max = self.cfg.generate.max_new_tokens;
        let limit = match self.early.as_mut() {
            Some(early) => {
                let tokenizer = &models.tokenizer;
                if early.after_token(&self.tokens, self.alpha, max, |ids| {
                    tokenizer.decode(ids).unwrap_or_default()
                }) {
                    return Some(FinishReason::SafetyStop);
                }
                early.limit(max)
            }
            None => max,
        };
        if self.tokens.len() >= limit {
            return Some(FinishReason::MaxTokens);
        }
        if self
            .req
            .cancel
            .as_ref()
            .is_some_and(crate::Cancel::is_cancelled)
        {
            return Some(FinishReason::Cancelled);
        }
        // the newest token is not fed yet (and, in a batch, `cache` is not the live one)
        if self.prompt.ids.len() + self.tokens.len() > models.base.max_context() {
            return Some(FinishReason::ContextFull);
        }
        None
    }

    /// Feeds `token` (the newest, from [`Run::next_token`]) to the base model alone.
    fn advance(&mut self, models: &mut Models, token: u32) -> Result<()> {
        let t = Instant::now();
        models
            .base
            .forward(&mut self.cache, &[token], Positions::Last, &mut self.out)?;
        self.timings.base_ms += ms(t.elapsed());
        Ok(())
    }

    /// The monitor's check when one is due (`at_end`: before the answer ends, if any token
    /// waits). Clearing releases the held text; firing rolls the answer back to the last
    /// cleared token and steers from there. Returns whether it rolled back.
    fn check(
        &mut self,
        models: &mut Models,
        gate: &mut dyn Gate,
        on_text: &mut impl FnMut(&str),
        at_end: bool,
    ) -> Result<bool> {
        let (Some(monitor), Some(pool)) = (self.monitor.as_mut(), self.pool.as_ref()) else {
            return Ok(false);
        };
        let n = self.tokens.len();
        let due = if at_end {
            monitor.pending(n)
        } else {
            monitor.due(n)
        };
        if !due {
            return Ok(false);
        }
        let t = Instant::now();
        pool.features_into(&mut self.scratch.features);
        let checked = gate
            .check_answer(&AnswerInput {
                tokens: n as u64,
                features: &self.scratch.features,
                risk: self.record.as_ref().and_then(|r| r.risk),
                alpha: Some(self.alpha),
            })
            .and_then(|d| validated(gate.name(), d));
        let decision = match checked {
            Ok(d) => d,
            Err(e) => {
                self.gate_errors += 1;
                self.cfg.failure_policy.on_error(e)?.decision
            }
        };
        self.timings.gate_ms += ms(t.elapsed());
        if !decision.is_steering() {
            monitor.clear(n, pool, on_text);
            return Ok(false);
        }
        let (keep, pool_then) = monitor.fire(n, decision.value);
        self.pool = Some(pool_then);
        self.floor = Some(Decision::steer(1.0, decision.value));
        self.alpha = self.alpha.max(self.alpha_high);
        self.rollback(models, keep)?;
        Ok(true)
    }

    /// Keeps the first `keep` answer tokens and rebuilds everything that followed them: the
    /// base model's cache, the expert's sequence, the text, early stop and the trace.
    fn rollback(&mut self, models: &mut Models, keep: usize) -> Result<()> {
        self.rollbacks += 1;
        self.tokens.truncate(keep);
        self.steered.truncate(keep);
        self.trace.truncate(keep);
        let tokenizer = &models.tokenizer;
        self.text = TextOutput::new(&self.cfg.generate.stop);
        self.early = self
            .cfg
            .early_stop
            .clone()
            .map(crate::stop::EarlyStop::start);
        for i in 0..keep {
            self.text.push(tokenizer, self.tokens[i], &mut |_| {})?;
            if let Some(early) = self.early.as_mut() {
                early.after_token(
                    &self.tokens[..=i],
                    self.alpha,
                    self.cfg.generate.max_new_tokens,
                    |ids| tokenizer.decode(ids).unwrap_or_default(),
                );
            }
        }
        let t = Instant::now();
        let mut ids = self.prompt.ids.clone();
        ids.extend_from_slice(&self.tokens);
        self.cache = models.base.new_cache()?;
        models
            .base
            .forward(&mut self.cache, &ids, Positions::Last, &mut self.out)?;
        self.timings.base_ms += ms(t.elapsed());
        models.expert.begin(&self.req.prompt, self.req.raw)?;
        for &token in &self.tokens {
            models.expert.push(token);
        }
        Ok(())
    }

    /// The finished request.
    /// A steered answer that ends before any text is withheld by the safety layer
    /// ([`FinishReason::SafetyStop`], OpenAI's `content_filter`), not an ordinary end of text:
    /// a raw completion steered from its first token often ends at once.
    pub fn filtered(&self, finish: FinishReason) -> FinishReason {
        let steered = self.steered.iter().any(|s| *s);
        if finish == FinishReason::Eos && steered && self.text.text().trim().is_empty() {
            FinishReason::SafetyStop
        } else {
            finish
        }
    }

    pub fn into_output(
        self,
        models: &Models,
        gate: &dyn Gate,
        finish: FinishReason,
        started: Instant,
    ) -> Output {
        let mut timings = self.timings;
        timings.total_ms = ms(started.elapsed());
        let summary = Summary {
            summary: true,
            tokens: self.tokens.len(),
            steered_tokens: self.steered.iter().filter(|s| **s).count(),
            first_steered: self.steered.iter().position(|s| *s),
            expert_forward_passes: models.expert.forward_passes(),
            gate_errors: self.gate_errors,
            finish: finish_name(&finish).to_string(),
            early_stop: self.early.and_then(|e| e.fired).map(|r| format!("{r:?}")),
            gate: gate.name().to_string(),
            expert: models.expert.describe(),
            reflection: self.record.unwrap_or_else(ReflectionRecord::skipped),
            monitor: self.monitor.map(|m| MonitorSummary {
                checks: m.checks,
                fired: m.fired,
            }),
            timings,
        };
        Output {
            text: self.text.text().to_string(),
            tokens: self.tokens,
            prompt_tokens: self.prompt.ids.len(),
            finish,
            trace: self.trace,
            summary,
        }
    }
}

/// Where emitted text goes: held by the monitor until cleared, else straight to the caller.
struct Sink<'m, 'f, F: FnMut(&str)> {
    monitor: Option<&'m mut Monitor>,
    on_text: &'f mut F,
}

impl<'m, 'f, F: FnMut(&str)> Sink<'m, 'f, F> {
    fn new(monitor: Option<&'m mut Monitor>, on_text: &'f mut F) -> Self {
        Sink { monitor, on_text }
    }

    fn send(&mut self, piece: &str) {
        match self.monitor.as_deref_mut() {
            Some(m) if !m.passes_through() => m.hold(piece),
            _ => (self.on_text)(piece),
        }
    }
}

/// A gate's decision, or an error naming the gate when the strength is not in [0, 1].
fn validated(gate: &str, d: Decision) -> ngsd_gate::Result<Decision> {
    if d.is_valid() {
        Ok(d)
    } else {
        Err(ngsd_gate::Error::InvalidDecision {
            gate: gate.to_string(),
            strength: d.strength,
        })
    }
}

/// The summary's name for a finish reason.
fn finish_name(finish: &FinishReason) -> &'static str {
    match finish {
        FinishReason::SafetyStop => "early-stop",
        FinishReason::Stop(_) => "stop",
        FinishReason::Eos => "eos",
        FinishReason::MaxTokens => "max-tokens",
        FinishReason::ContextFull => "context-full",
        FinishReason::Cancelled => "cancelled",
    }
}

/// The conversation as token ids; refuses empty prompts and prompts that fill the context.
fn encode(req: &Request, models: &Models) -> Result<EncodedPrompt> {
    let prompt = Conversation {
        system: req.system.as_deref(),
        history: &req.history,
        user: &req.prompt,
        raw: req.raw,
    }
    .encode(&models.tokenizer, models.template.as_ref())?;
    if prompt.ids.is_empty() {
        return Err(Error::InvalidConfig {
            name: "prompt",
            reason: "the prompt is empty".into(),
        });
    }
    if prompt.ids.len() >= models.base.max_context() {
        return Err(ngsd_runtime::Error::ContextOverflow {
            prompt_tokens: prompt.ids.len(),
            max_context: models.base.max_context(),
        }
        .into());
    }
    Ok(prompt)
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
