//! Turning the safety settings (gate, expert, reflection, steering) into the validated parts
//! ngsd-decode takes: a loaded gate plugin, an expert, a reflection mode and a `DecodeConfig`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use ngsd_decode::reflection::AlphaMap;
use ngsd_decode::{DecodeConfig, Divergence, Expert, ModelExpert, PromptExpert, Reflection};
use ngsd_gate::{FailurePolicy, Gate, HostContext};
use ngsd_runtime::{GenerateConfig, Model, ModelOptions, Tokenizer};

use crate::settings::RawConfig;

/// Default gate until a trained neuron ships: the paper's LIF neuron over the divergence.
pub const DEFAULT_GATE: &str = "lif";
/// α when reflection is off and none is given (the paper's high-risk level).
pub const DEFAULT_ALPHA: f32 = 0.9;

/// Which expert to build.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpertSpec {
    /// The base model under a safety system prompt.
    Prompt,
    /// A separate decoder package.
    Model(PathBuf),
}

impl std::str::FromStr for ExpertSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "prompt" => Ok(ExpertSpec::Prompt),
            _ if s.starts_with("model:") => {
                let dir = &s["model:".len()..];
                if dir.is_empty() {
                    bail!("invalid expert: `model:` needs a folder, e.g. `model:path/to/expert`");
                }
                Ok(ExpertSpec::Model(PathBuf::from(dir)))
            }
            other => {
                bail!("invalid expert: unknown expert kind `{other}`; use `prompt` or `model:DIR`")
            }
        }
    }
}

/// Validated safety settings.
#[derive(Debug, Clone)]
pub struct SafetySettings {
    pub gate: String,
    pub gate_params: String,
    pub expert: ExpertSpec,
    pub expert_system: Option<String>,
    pub reflection: ReflectionSpec,
    pub decode: DecodeConfig,
}

/// How α is set, before any plugin is loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum ReflectionSpec {
    Off(f32),
    Generative { budget: usize, timeout: Duration },
    Probe { gate: String, params: String },
}

impl SafetySettings {
    /// Validates the raw settings; `generate` carries token budget and sampling.
    pub fn from_raw(raw: &RawConfig, generate: GenerateConfig) -> Result<Self> {
        let expert: ExpertSpec = raw.expert.as_deref().unwrap_or("prompt").parse()?;
        let mode = raw.reflection.as_deref();
        if let Some(a) = raw.alpha {
            if !(0.0..=1.0).contains(&a) || a.is_nan() {
                bail!("invalid alpha: {a} is outside [0, 1]");
            }
            if matches!(mode, Some(m) if m != "off") {
                bail!(
                    "invalid alpha: --alpha sets a fixed α, but reflection is `{}`; use --reflection off with --alpha",
                    mode.unwrap_or_default()
                );
            }
        }
        let reflection = match (mode, raw.alpha) {
            (Some("off"), a) | (None, a @ Some(_)) => {
                ReflectionSpec::Off(a.unwrap_or(DEFAULT_ALPHA))
            }
            (Some("generative") | None, None) => ReflectionSpec::Generative {
                budget: raw.reflection_budget.unwrap_or(64),
                timeout: Duration::from_millis(raw.reflection_timeout_ms.unwrap_or(30_000)),
            },
            (Some("probe"), _) => ReflectionSpec::Probe {
                gate: raw.probe.clone().unwrap_or_else(|| "sigmoid".into()),
                params: {
                    let mut p = raw.probe_config.clone().unwrap_or_default();
                    // The probe reads the neuron's probability, re-deciding on what it is given.
                    if !p.contains("timing") {
                        if !p.is_empty() {
                            p.push('\n');
                        }
                        p.push_str("timing = token");
                    }
                    p
                },
            },
            (Some(other), _) => {
                bail!("invalid reflection: unknown mode `{other}`; choose off, generative or probe")
            }
        };
        if let ReflectionSpec::Generative { budget: 0, .. } = reflection {
            bail!(
                "invalid reflection-budget: 0; the rating needs at least a few tokens (default 64)"
            );
        }
        let failure_policy: FailurePolicy = match raw.failure_policy.as_deref() {
            Some(p) => p
                .parse()
                .map_err(|e| anyhow::anyhow!("invalid failure-policy: {e}"))?,
            None => FailurePolicy::FailClosed,
        };
        let divergence: Divergence = match raw.divergence.as_deref() {
            Some(d) => d.parse()?,
            None => Divergence::TotalVariation,
        };
        let decode = DecodeConfig {
            generate,
            top_k: raw.top_k_merge.unwrap_or(64),
            divergence,
            failure_policy,
            early_stop: if raw.early_stop.unwrap_or(true) {
                Some(ngsd_decode::EarlyStop::default())
            } else {
                None
            },
            trace: false,
        };
        decode.validate()?;
        Ok(SafetySettings {
            gate: raw.gate.clone().unwrap_or_else(|| DEFAULT_GATE.into()),
            gate_params: raw.gate_config.clone().unwrap_or_default(),
            expert,
            expert_system: raw.expert_system.clone(),
            reflection,
            decode,
        })
    }
}

/// What gates get to know about the base model.
pub fn host_context(model: &Model) -> HostContext {
    HostContext {
        hidden_size: Some(model.hidden_size()),
        model_sha256: model
            .package()
            .manifest
            .checksums
            .get(&model.package().manifest.files.onnx)
            .cloned(),
    }
}

/// Loads a gate plugin with the host context appended to its parameters.
pub fn load_gate(
    spec: &str,
    params: &str,
    dirs: &[PathBuf],
    model: &Model,
) -> Result<Box<dyn Gate + Send>> {
    let params = host_context(model).append_to(params);
    let gate = ngsd_gate_host::load(spec, dirs, &params)
        .with_context(|| format!("loading gate `{spec}`"))?;
    Ok(Box::new(gate))
}

/// Builds the expert.
pub fn build_expert(
    spec: &ExpertSpec,
    system: Option<String>,
    base: &Model,
    tokenizer: &Tokenizer,
    options: &ModelOptions,
) -> Result<Box<dyn Expert>> {
    Ok(match spec {
        ExpertSpec::Prompt => Box::new(PromptExpert::new(base, system)?),
        ExpertSpec::Model(dir) => Box::new(
            ModelExpert::load(dir, options, base, tokenizer, system)
                .with_context(|| format!("loading the expert model in {}", dir.display()))?,
        ),
    })
}

/// Builds the reflection.
pub fn build_reflection(
    spec: &ReflectionSpec,
    dirs: &[PathBuf],
    model: &Model,
) -> Result<Reflection> {
    Ok(match spec {
        ReflectionSpec::Off(a) => Reflection::Fixed(*a),
        ReflectionSpec::Generative { budget, timeout } => Reflection::Generative {
            budget: *budget,
            timeout: *timeout,
            map: AlphaMap::default(),
            zero_rule: Default::default(),
        },
        ReflectionSpec::Probe { gate, params } => Reflection::Probe {
            gate: load_gate(gate, params, dirs, model)
                .context("loading the probe for --reflection probe")?,
            map: AlphaMap::default(),
        },
    })
}
