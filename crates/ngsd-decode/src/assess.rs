//! Self-reflection: how strongly to steer (α) for one request, set once before the answer —
//! fixed, rated by the base model itself (generative), or read off a neuron (probe).

use std::time::{Duration, Instant};

use ngsd_gate::{FailurePolicy, Gate, PromptInput, StepInput};
use ngsd_runtime::sampling::argmax;
use ngsd_runtime::{Conversation, ForwardOut, Positions};

use crate::decoder::{Models, Request};
use crate::error::{Error, Result};
use crate::reflection::{self, AlphaMap, ZeroScoreRule};
use crate::trace::ReflectionRecord;

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
    /// A neuron's probability on the prompt's features (a gate whose explanation value is a
    /// probability, such as the sigmoid gate); risk = 10·p.
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

    /// The α levels risk maps to (the paper's for a fixed α).
    pub fn alpha_map(&self) -> AlphaMap {
        match self {
            Reflection::Generative { map, .. } | Reflection::Probe { map, .. } => *map,
            Reflection::Fixed(_) => AlphaMap::default(),
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

    /// Sets α for `req`. `probe_features` are the prompt features the probe declared (empty
    /// for other modes). A failing probe follows `policy`: fail closed means the highest risk.
    pub(crate) fn assess(
        &mut self,
        models: &mut Models,
        req: &Request,
        probe_features: &[f32],
        policy: FailurePolicy,
    ) -> Result<ReflectionRecord> {
        match self {
            Reflection::Fixed(a) => Ok(ReflectionRecord {
                mode: "off",
                risk: None,
                alpha: *a,
                raw: None,
                scores: None,
                fallback: None,
                probability: None,
            }),
            Reflection::Generative {
                budget,
                timeout,
                map,
                zero_rule,
            } => rate(models, req, *budget, *timeout, map, *zero_rule),
            Reflection::Probe { gate, map } => probe(gate.as_mut(), map, probe_features, policy),
        }
    }
}

/// The probe's probability on the prompt features; a failure follows `policy`.
fn probe(
    gate: &mut (dyn Gate + Send),
    map: &AlphaMap,
    features: &[f32],
    policy: FailurePolicy,
) -> Result<ReflectionRecord> {
    gate.reset();
    let decided = gate
        .observe_prompt(&PromptInput {
            hidden: features,
            risk: None,
            alpha: None,
        })
        .and_then(|()| {
            gate.decide(&StepInput {
                step: 0,
                hidden: features,
                ..Default::default()
            })
        });
    let (p, fired, fallback) = match decided {
        Ok(d) if d.value.is_finite() => (d.value.clamp(0.0, 1.0), d.is_steering(), None),
        Ok(d) => (
            1.0,
            true,
            Some(format!(
                "probe `{}` gave no probability ({}); highest risk assumed",
                gate.name(),
                d.value
            )),
        ),
        Err(e) => {
            let failed = policy.on_error(e)?;
            (
                1.0,
                true,
                Some(format!(
                    "probe failed: {}; highest risk assumed (failed closed)",
                    failed.error
                )),
            )
        }
    };
    Ok(ReflectionRecord {
        mode: "probe",
        risk: Some(10.0 * p),
        alpha: probe_alpha(p, fired, map),
        raw: None,
        scores: None,
        fallback,
        probability: Some(p),
    })
}

/// α from a probe: a probe that fires steers at the high level, so that a fire is a clean
/// refusal rather than a weak blend (a low α mixed into a benign answer can cut it to a
/// fragment); below its threshold, the probability's band ([`reflection::alpha_for_probability`]).
fn probe_alpha(p: f32, fired: bool, map: &AlphaMap) -> f32 {
    if fired {
        map.high
    } else {
        reflection::alpha_for_probability(p, map)
    }
}

/// Rates the request with the base model itself and maps the risk to α.
fn rate(
    models: &mut Models,
    req: &Request,
    budget: usize,
    timeout: Duration,
    map: &AlphaMap,
    zero_rule: ZeroScoreRule,
) -> Result<ReflectionRecord> {
    let start = Instant::now();
    let (raw, stopped) = rating_text(models, req, budget, timeout)?;
    let outcome = reflection::parse_scores(&raw);
    let scores = outcome.scores;
    let risk = reflection::overall_risk(&scores, req.prompt.chars().count(), zero_rule);
    let mut fallback = outcome.status.fallback_note();
    if let Some(why) = stopped {
        let elapsed = start.elapsed().as_millis();
        fallback = Some(format!(
            "{why} after {elapsed} ms{}",
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

/// The base model's greedy rating of the request, and why it stopped early (time-out or
/// cancellation), if it did.
fn rating_text(
    models: &mut Models,
    req: &Request,
    budget: usize,
    timeout: Duration,
) -> Result<(String, Option<&'static str>)> {
    let user = reflection::user_prompt(&req.prompt);
    let conversation = Conversation {
        system: Some(reflection::system_prompt()),
        history: &[],
        user: &user,
        raw: req.raw,
    };
    let ids = conversation
        .encode(&models.tokenizer, models.template.as_ref())?
        .ids;
    let base = &mut models.base;
    let vocab = base.vocab_size();
    let eos = base.eos_token_ids().to_vec();
    let mut cache = base.new_cache()?;
    let mut out = ForwardOut::default();
    let start = Instant::now();
    base.forward(&mut cache, &ids, Positions::Last, &mut out)?;
    let mut answer = Vec::new();
    let mut stopped = None;
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
            stopped = Some("timed out");
            break;
        }
        if req.cancel.as_ref().is_some_and(crate::Cancel::is_cancelled) {
            stopped = Some("cancelled");
            break;
        }
        base.forward(&mut cache, &[t], Positions::Last, &mut out)?;
    }
    Ok((models.tokenizer.decode(&answer)?, stopped))
}
