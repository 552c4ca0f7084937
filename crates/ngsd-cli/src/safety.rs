//! Turning the safety settings (gate, expert, reflection, steering) into the validated parts
//! ngsd-decode takes: a loaded gate plugin, an expert, a reflection mode and a `DecodeConfig`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use ngsd_decode::reflection::AlphaMap;
use ngsd_decode::{
    DecodeConfig, Divergence, Expert, HeadExpert, ModelExpert, PromptExpert, Reflection,
};
use ngsd_gate::{FailurePolicy, Gate};
use ngsd_runtime::{GenerateConfig, Model, ModelOptions, Tokenizer};

use crate::settings::RawConfig;

/// Default gate of a model with a trained neuron: the single-neuron sigmoid gate.
pub const DEFAULT_GATE: &str = "sigmoid";
/// Default gate of a model without one: the paper's LIF neuron over the divergence.
pub const UNTRAINED_GATE: &str = "lif";
/// File name of a trained gate neuron beside a model (or in the checkout's models/<name>/).
pub const GATE_FILE: &str = "gate.safetensors";
/// File name of a trained head expert beside a model (or in the checkout's models/<name>/).
pub const EXPERT_FILE: &str = "expert.safetensors";

/// The trained files for a model, when there are any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trained {
    /// The gate neuron (`ngsd train gate`).
    pub gate: Option<PathBuf>,
    /// The head expert (`ngsd train expert`).
    pub expert: Option<PathBuf>,
}

impl Trained {
    /// Looks for `gate.safetensors` and `expert.safetensors` in the model folder, then in
    /// `models/<model name>/<dtype>/` and `models/<model name>/` of the checkout (searched
    /// upwards from the executable and the current directory), where the trained files of
    /// pinned models are committed: the fp32 package's in `models/<name>/`, the q4 package's
    /// (which shares the name) in `models/<name>/q4/`. Only a file made for this build is
    /// taken (its `model_sha256` metadata is the package's model.onnx checksum, or either is
    /// unknown); when every file found was made for another build, the untrained defaults
    /// apply and a warning says so.
    pub fn find(model_dir: &Path) -> Trained {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf));
        let cwd = std::env::current_dir().ok();
        Trained::find_from(model_dir, exe_dir.iter().chain(cwd.iter()))
    }

    /// [`Trained::find`] searching `models/<model name>/` in the ancestors of `starts`, in
    /// order (the model name is the package manifest's `name`: the fp32 and q4 packages of a
    /// pinned model share it, its int8 package is `<name>-int8`).
    pub fn find_from<'a>(
        model_dir: &Path,
        starts: impl IntoIterator<Item = &'a PathBuf>,
    ) -> Trained {
        let package = ngsd_runtime::ModelPackage::open(model_dir).ok();
        let onnx_sha = package.as_ref().and_then(|p| {
            let m = &p.manifest;
            m.checksums.get(&m.files.onnx).cloned()
        });
        let mut dirs = vec![model_dir.to_path_buf()];
        if let Some(manifest) = package.map(|p| p.manifest)
            && let Some(d) = starts
                .into_iter()
                .flat_map(|start| {
                    start
                        .ancestors()
                        .map(|d| d.join("models").join(&manifest.name))
                })
                .find(|d| d.join(GATE_FILE).is_file() || d.join(EXPERT_FILE).is_file())
        {
            if let Some(dtype) = manifest.dtype.filter(|t| t != "fp32") {
                dirs.push(d.join(dtype));
            }
            dirs.push(d);
        }
        Trained {
            gate: pick(&dirs, GATE_FILE, onnx_sha.as_deref()),
            expert: pick(&dirs, EXPERT_FILE, onnx_sha.as_deref()),
        }
    }

    /// Parameters for gate `name`: the `sigmoid` gate gets the trained neuron unless
    /// `params` name weights of their own; other gates get `params` as they are.
    pub fn gate_params(&self, name: &str, params: &str) -> String {
        if self.gate_reads_trained(name, params) {
            with_weights(params, self.gate.as_deref())
        } else {
            params.to_string()
        }
    }

    /// Whether gate `name` with `params` reads the trained neuron: the `sigmoid` gate does
    /// when there is one, unless `params` name weights of their own.
    pub fn gate_reads_trained(&self, name: &str, params: &str) -> bool {
        name == "sigmoid" && self.gate.is_some() && !names_weights(params)
    }

    /// Answer tokens between the checks the trained gate's answer monitor was calibrated
    /// for (its `answer_every` metadata; 16 for files made before it was recorded, or when
    /// there is no trained gate). Decoding checks on this schedule unless `monitor-every` is
    /// set: checking more often than calibrated would let benign answers fire more often than
    /// the training measured.
    pub fn monitor_every(&self) -> usize {
        self.gate
            .as_deref()
            .and_then(|g| trained_metadata(g, "answer_every"))
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or(MONITOR_EVERY_BEFORE_RECORDED)
    }

    /// The expert to build: `head` without a file means the trained expert.
    pub fn resolve_expert(&self, spec: ExpertSpec) -> Result<ExpertSpec> {
        match spec {
            ExpertSpec::Head(None) => {
                let file = self.expert.clone().ok_or_else(|| {
                    anyhow::anyhow!(
                        "invalid expert: `head` means the model's trained expert, but there is no {EXPERT_FILE} beside the model or in the checkout's models/<model name>/; train one with `ngsd train expert` and pass `head:FILE`"
                    )
                })?;
                Ok(ExpertSpec::Head(Some(file)))
            }
            other => Ok(other),
        }
    }
}

/// The `model_sha256` metadata of a trained file (`ngsd train` records the checksum of the
/// model.onnx it read); `None` when the file has none or is not readable safetensors.
pub fn trained_model_sha256(path: &Path) -> Option<String> {
    trained_metadata(path, "model_sha256")
}

/// The metadata entry `key` of a trained file; `None` when the file has none or is not
/// readable safetensors.
fn trained_metadata(path: &Path, key: &str) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).ok()?;
    meta.metadata().as_ref()?.get(key).cloned()
}

/// The answer monitor's schedule before the gate file recorded one: `ngsd train gate`
/// calibrated every monitor for checks 16 tokens apart, and decoding checked as often.
pub const MONITOR_EVERY_BEFORE_RECORDED: usize = 16;

/// The first `file` in `dirs` made for the package whose model.onnx has checksum `onnx_sha`;
/// when there are such files but none was made for it, a warning names the first.
fn pick(dirs: &[PathBuf], file: &str, onnx_sha: Option<&str>) -> Option<PathBuf> {
    let found: Vec<(PathBuf, Option<String>)> = dirs
        .iter()
        .map(|d| d.join(file))
        .filter(|p| p.is_file())
        .map(|p| {
            let sha = trained_model_sha256(&p);
            (p, sha)
        })
        .collect();
    // A file that cannot be read is left to its loader, which says what is wrong with it.
    let made_for =
        |sha: &Option<String>| sha.is_none() || onnx_sha.is_none() || sha.as_deref() == onnx_sha;
    if let Some((path, _)) = found.iter().find(|(_, sha)| made_for(sha)) {
        return Some(path.clone());
    }
    if let Some((path, sha)) = found.first() {
        tracing::warn!(
            "not using {}: it was trained on another build of this model (model sha256 {}, this package's is {}); the untrained defaults apply (naming it explicitly is refused the same way); train files for this build with `ngsd train` and --model pointing at it (`cargo xtask train --variant q4` for a pinned model's q4 package)",
            path.display(),
            sha.as_deref().unwrap_or_default(),
            onnx_sha.unwrap_or_default()
        );
    }
    None
}

/// The key of a `key = value` item of gate parameters (items are separated by `;` or new
/// lines), if the item has one.
fn param_key(item: &str) -> Option<&str> {
    item.split_once('=').map(|(k, _)| k.trim())
}

/// Parameters of a probe over the sigmoid gate parameters `params`: the same neuron with its
/// answer monitor off (the probe only reads the prompt's probability; the gate itself
/// monitors). A `monitor` the parameters set is replaced, not given twice.
pub fn probe_params(params: &str) -> String {
    let kept: Vec<&str> = params
        .split([';', '\n'])
        .filter(|item| !item.trim().is_empty() && param_key(item) != Some("monitor"))
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str("monitor = false");
    out
}

/// Whether gate parameters `params` name a `weights` file.
pub fn names_weights(params: &str) -> bool {
    params
        .split([';', '\n'])
        .any(|item| param_key(item) == Some("weights"))
}

/// Adds `weights = "<path>"` to gate parameters that name none.
pub fn with_weights(params: &str, weights: Option<&Path>) -> String {
    match weights {
        Some(w) if !names_weights(params) => {
            let quoted = w
                .display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            if params.trim().is_empty() {
                format!("weights = \"{quoted}\"")
            } else {
                format!("{params}\nweights = \"{quoted}\"")
            }
        }
        _ => params.to_string(),
    }
}
/// α when reflection is off and none is given (the paper's high-risk level).
pub const DEFAULT_ALPHA: f32 = 0.9;

/// Which expert to build.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpertSpec {
    /// The base model under a safety system prompt.
    Prompt,
    /// A separate decoder package.
    Model(PathBuf),
    /// A low-rank adapter read through the base model's LM head (`ngsd train expert`);
    /// `None` means the model's trained one.
    Head(Option<PathBuf>),
}

impl std::str::FromStr for ExpertSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "prompt" => Ok(ExpertSpec::Prompt),
            "head" => Ok(ExpertSpec::Head(None)),
            _ if s.starts_with("head:") => {
                let file = &s["head:".len()..];
                if file.is_empty() {
                    bail!("invalid expert: `head:` needs a file, e.g. `head:expert.safetensors`");
                }
                Ok(ExpertSpec::Head(Some(PathBuf::from(file))))
            }
            _ if s.starts_with("model:") => {
                let dir = &s["model:".len()..];
                if dir.is_empty() {
                    bail!("invalid expert: `model:` needs a folder, e.g. `model:path/to/expert`");
                }
                Ok(ExpertSpec::Model(PathBuf::from(dir)))
            }
            other => {
                bail!(
                    "invalid expert: unknown expert kind `{other}`; use `prompt`, `head`, `head:FILE` or `model:DIR`"
                )
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
    ///
    /// Defaults depend on `trained`, the model's trained files: with a trained neuron the
    /// gate is `sigmoid` over it and α comes from the same neuron (probe reflection); with a
    /// trained expert the expert is `head`. Without them: the `lif` gate, the `prompt` expert
    /// and generative reflection.
    pub fn from_raw(raw: &RawConfig, generate: GenerateConfig, trained: &Trained) -> Result<Self> {
        let expert = match raw.expert.as_deref() {
            Some(e) => e.parse()?,
            None if trained.expert.is_some() => ExpertSpec::Head(None),
            None => ExpertSpec::Prompt,
        };
        let expert = trained.resolve_expert(expert)?;
        let reflection = reflection_spec(raw, trained)?;
        let gate = match &raw.gate {
            Some(g) => g.clone(),
            None if trained.gate.is_some() => DEFAULT_GATE.into(),
            None => UNTRAINED_GATE.into(),
        };
        let own_params = raw.gate_config.as_deref().unwrap_or("");
        let gate_params = trained.gate_params(&gate, own_params);
        // Checks on the trained neuron's schedule when the gate reads it.
        let monitor_every =
            raw.monitor_every
                .unwrap_or(if trained.gate_reads_trained(&gate, own_params) {
                    trained.monitor_every()
                } else {
                    MONITOR_EVERY_BEFORE_RECORDED
                });
        let decode = decode_config(raw, generate, monitor_every)?;
        Ok(SafetySettings {
            gate,
            gate_params,
            expert,
            expert_system: raw.expert_system.clone(),
            reflection,
            decode,
        })
    }
}

/// How α is set: `--alpha` fixes it (reflection off); without a mode, the trained neuron
/// probes when there is one, else the model rates the prompt (generative).
fn reflection_spec(raw: &RawConfig, trained: &Trained) -> Result<ReflectionSpec> {
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
        (Some("off"), a) | (None, a @ Some(_)) => ReflectionSpec::Off(a.unwrap_or(DEFAULT_ALPHA)),
        (None, None) if trained.gate.is_some() => ReflectionSpec::Probe {
            gate: "sigmoid".into(),
            // The probe reads the prompt decision's probability; the gate itself monitors.
            params: trained.gate_params("sigmoid", "monitor = false"),
        },
        (Some("generative") | None, None) => ReflectionSpec::Generative {
            budget: raw.reflection_budget.unwrap_or(64),
            timeout: Duration::from_millis(raw.reflection_timeout_ms.unwrap_or(30_000)),
        },
        (Some("probe"), _) => {
            let gate = raw.probe.clone().unwrap_or_else(|| "sigmoid".into());
            let params = trained.gate_params(&gate, raw.probe_config.as_deref().unwrap_or(""));
            ReflectionSpec::Probe { gate, params }
        }
        (Some(other), _) => {
            bail!("invalid reflection: unknown mode `{other}`; choose off, generative or probe")
        }
    };
    if let ReflectionSpec::Generative { budget: 0, .. } = reflection {
        bail!("invalid reflection-budget: 0; the rating needs at least a few tokens (default 64)");
    }
    Ok(reflection)
}

/// The decoder's settings: merge width, divergence, failure policy, early stop, and the
/// answer monitor checking every `monitor_every` tokens.
fn decode_config(
    raw: &RawConfig,
    generate: GenerateConfig,
    monitor_every: usize,
) -> Result<DecodeConfig> {
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
        monitor_every,
    };
    decode.validate()?;
    Ok(decode)
}

/// Loads a gate plugin with the host context appended to its parameters.
pub fn load_gate(
    spec: &str,
    params: &str,
    dirs: &[PathBuf],
    model: &Model,
) -> Result<Box<dyn Gate + Send>> {
    load_gate_with_context(spec, &with_host_context(params, model), dirs)
}

/// `params` with the model's host context appended, as [`load_gate`] passes them.
pub fn with_host_context(params: &str, model: &Model) -> String {
    ngsd_decode::features::host_context(model).append_to(params)
}

/// Loads a gate plugin whose parameters already carry the host context (for callers that
/// load many instances while the model is in use).
pub fn load_gate_with_context(
    spec: &str,
    params: &str,
    dirs: &[PathBuf],
) -> Result<Box<dyn Gate + Send>> {
    let gate = ngsd_gate_host::load(spec, dirs, params)
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
        ExpertSpec::Head(Some(file)) => Box::new(
            HeadExpert::load(file, base)
                .with_context(|| format!("loading the head expert {}", file.display()))?,
        ),
        ExpertSpec::Head(None) => {
            bail!("the `head` expert needs its file (head:FILE); none was resolved")
        }
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

#[cfg(test)]
mod tests;
