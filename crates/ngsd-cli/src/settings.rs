//! Configuration: a TOML file, `NGSD_*` environment variables, then command-line flags, read into a
//! [`RawConfig`] and validated into the typed settings the libraries take.
//!
//! Keys (kebab-case, all optional; defaults in brackets):
//! - `model` [the embedded default, `.cache/models/smollm2-135m-instruct/fp32` of the checkout]
//! - `provider` [`cpu`]: `cpu`, `cuda[:N]`, `tensorrt[:N]`
//! - `strict-provider` [false]: fail instead of falling back to CPU
//! - `threads` [0 = one per core]: ONNX Runtime intra-op threads
//! - `ort-lib` [searched]: path of libonnxruntime.so
//! - `max-new-tokens` [256], `temperature` [0 = greedy], `top-k` [0 = off], `top-p` [1 = off], `seed` [0]
//! - `system` [the chat template's default]: system prompt
//! - `stop` [none]: list of stop strings (env: comma-separated)
//! - `gate-dirs` [none]: folders searched for gate plugins before the executable's own folder
//! - `gate` [`lif`]: gate plugin name (`libgate_<name>.so` in the plugin folders) or path
//! - `gate-config` [none]: the gate's parameters, `key = value` lines (`;` also separates)
//! - `expert` [`prompt`]: `prompt` (the base model under a safety system prompt) or `model:DIR`
//! - `expert-system` [a built-in safety prompt]: the expert's system prompt
//! - `reflection` [`generative`]: `off` (fixed `alpha`), `generative` (the base model rates the
//!   request) or `probe` (a neuron's probability on the prompt)
//! - `alpha` [0.9]: the fixed steering strength when `reflection = off`
//! - `reflection-budget` [64] tokens, `reflection-timeout-ms` [30000]
//! - `probe` [`sigmoid`] and `probe-config` [none]: the probe gate and its parameters
//! - `failure-policy` [`fail-closed`]: on a gate error steer (`fail-closed`) or `abort`
//! - `divergence` [`tv`]: `tv`, `kl` or `js`; `top-k-merge` [64]; `early-stop` [true]
//!
//! `ngsd serve` only:
//! - `serve-addr` [`127.0.0.1:8080`], `serve-model-id` [the manifest's name]
//! - `serve-api-key` [none]: clients must send `Authorization: Bearer <key>` (set it through
//!   `NGSD_SERVE_API_KEY` or the config file, not on the command line)
//! - `serve-workers` [16]: generations at once; `serve-batch` [16]: most of them one engine
//!   (one session) answers together, one forward pass per token; `serve-queue` [16]
//! - `serve-timeout-s` [120], `serve-max-body-bytes` [1048576], `serve-max-tokens` [1024]
//! - `serve-gates` [none]: gates clients may pick per request besides the default
//! - `serve-allow-alpha` [false]: let requests set α / turn reflection off
//! - `serve-allow-trace` [true]: let requests ask for the per-token trace
//!
//! Environment: `NGSD_<KEY>` with `_` for `-`, e.g. `NGSD_MAX_NEW_TOKENS=64`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use ngsd_runtime::{GenerateConfig, ModelOptions, Provider, SamplingConfig};

/// Environment variables with the `NGSD_` prefix that are not configuration keys: the config
/// file's path, the log filter, and the developer variables of the test and bench suites
/// (`NGSD_TEST_*`, `NGSD_BENCH_*`, `NGSD_GOLDEN_DIR`, `NGSD_UPDATE_HEADER`). Any other `NGSD_*`
/// variable must name a key: a typo is an error, not silently ignored.
fn is_config_var(name: &str) -> bool {
    const NOT_KEYS: &[&str] = &[
        "NGSD_CONFIG",
        "NGSD_LOG",
        "NGSD_GOLDEN_DIR",
        "NGSD_UPDATE_HEADER",
    ];
    name.starts_with("NGSD_")
        && !NOT_KEYS.contains(&name)
        && !name.starts_with("NGSD_TEST_")
        && !name.starts_with("NGSD_BENCH_")
}

/// Everything a config file or the environment may set.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    pub model: Option<PathBuf>,
    pub provider: Option<String>,
    pub strict_provider: Option<bool>,
    pub threads: Option<usize>,
    pub ort_lib: Option<PathBuf>,
    pub max_new_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub system: Option<String>,
    pub stop: Option<Vec<String>>,
    pub gate_dirs: Option<Vec<PathBuf>>,
    pub gate: Option<String>,
    pub gate_config: Option<String>,
    pub expert: Option<String>,
    pub expert_system: Option<String>,
    pub alpha: Option<f32>,
    pub reflection: Option<String>,
    pub reflection_budget: Option<usize>,
    pub reflection_timeout_ms: Option<u64>,
    pub probe: Option<String>,
    pub probe_config: Option<String>,
    pub failure_policy: Option<String>,
    pub divergence: Option<String>,
    pub top_k_merge: Option<usize>,
    pub early_stop: Option<bool>,
    pub monitor_every: Option<usize>,
    pub serve_addr: Option<String>,
    pub serve_model_id: Option<String>,
    pub serve_api_key: Option<String>,
    pub serve_workers: Option<usize>,
    pub serve_batch: Option<usize>,
    pub serve_queue: Option<usize>,
    pub serve_timeout_s: Option<u64>,
    pub serve_max_body_bytes: Option<usize>,
    pub serve_max_tokens: Option<usize>,
    pub serve_gates: Option<Vec<String>>,
    pub serve_allow_alpha: Option<bool>,
    pub serve_allow_trace: Option<bool>,
}

impl RawConfig {
    /// Reads the file (if any) and the environment. A named file must exist; without one,
    /// `./ngsd.toml` is read when present.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut builder = config::Config::builder();
        match file {
            Some(path) => {
                if !path.is_file() {
                    bail!("config file {} does not exist", path.display());
                }
                builder = builder.add_source(
                    config::File::from(path.to_path_buf()).format(config::FileFormat::Toml),
                );
            }
            None => {
                let local = PathBuf::from("ngsd.toml");
                if local.is_file() {
                    builder = builder
                        .add_source(config::File::from(local).format(config::FileFormat::Toml));
                }
            }
        }
        let env: config::Map<String, String> =
            std::env::vars().filter(|(k, _)| is_config_var(k)).collect();
        builder = builder.add_source(
            config::Environment::with_prefix("NGSD")
                .source(Some(env))
                .convert_case(config::Case::Kebab)
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("stop")
                .with_list_parse_key("gate-dirs")
                .with_list_parse_key("serve-gates"),
        );
        let cfg = builder.build().context("reading configuration")?;
        let raw: RawConfig = cfg.try_deserialize().map_err(|e| {
            anyhow::anyhow!(
                "{e} (from the config file or an NGSD_* environment variable); valid keys: model, provider, strict-provider, threads, ort-lib, max-new-tokens, \
                 temperature, top-k, top-p, seed, system, stop, gate-dirs, gate, gate-config, expert, \
                 expert-system, alpha, reflection, reflection-budget, reflection-timeout-ms, probe, \
                 probe-config, failure-policy, divergence, top-k-merge, early-stop, serve-addr, \
                 serve-model-id, serve-api-key, serve-workers, serve-batch, serve-queue, serve-timeout-s, \
                 serve-max-body-bytes, serve-max-tokens, serve-gates, serve-allow-alpha, serve-allow-trace"
            )
        })?;
        Ok(raw)
    }
}

/// Validated model settings.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub dir: PathBuf,
    pub options: ModelOptions,
}

impl TryFrom<&RawConfig> for ModelSettings {
    type Error = anyhow::Error;

    fn try_from(raw: &RawConfig) -> Result<Self> {
        let provider: Provider = match &raw.provider {
            Some(p) => p.parse()?,
            None => Provider::Cpu,
        };
        let dir = match &raw.model {
            Some(dir) => dir.clone(),
            None => default_model_dir().context(
                "no model given and the default model is not installed: run `cargo xtask setup`, \
                 or pass --model DIR",
            )?,
        };
        Ok(ModelSettings {
            dir,
            options: ModelOptions {
                provider,
                strict_provider: raw.strict_provider.unwrap_or(false),
                intra_threads: raw.threads.unwrap_or(0),
                ort_library: raw.ort_lib.clone(),
            },
        })
    }
}

impl TryFrom<&RawConfig> for GenerateConfig {
    type Error = anyhow::Error;

    fn try_from(raw: &RawConfig) -> Result<Self> {
        let max_new_tokens = raw.max_new_tokens.unwrap_or(256);
        if max_new_tokens == 0 {
            bail!("invalid max-new-tokens: 0; ask for at least 1 token");
        }
        let sampling = SamplingConfig {
            temperature: raw.temperature.unwrap_or(0.0),
            top_k: raw.top_k.unwrap_or(0),
            top_p: raw.top_p.unwrap_or(1.0),
            seed: raw.seed.unwrap_or(0),
        };
        sampling.validate()?;
        Ok(GenerateConfig {
            max_new_tokens,
            sampling,
            stop: raw.stop.clone().unwrap_or_default(),
            ignore_eos: false,
        })
    }
}

/// Relative location of the embedded default model inside a checkout.
pub const DEFAULT_MODEL: &str = ".cache/models/smollm2-135m-instruct/fp32";

/// The default model of a development checkout: searched upwards from the executable, then from
/// the current directory. `NGSD_MODEL` (the `model` key) overrides it.
pub fn default_model_dir() -> Option<PathBuf> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let cwd = std::env::current_dir().ok();
    exe_dir
        .iter()
        .chain(cwd.iter())
        .flat_map(|start| start.ancestors().map(|d| d.join(DEFAULT_MODEL)))
        .find(|p| p.join(ngsd_runtime::MANIFEST_FILE).is_file())
}

/// Folders searched for gate plugins: flags, then configuration, then the executable's folder.
pub fn gate_dirs(flags: &[PathBuf], raw: &RawConfig) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = flags.to_vec();
    dirs.extend(raw.gate_dirs.clone().unwrap_or_default());
    dirs.extend(ngsd_gate_host::default_dirs());
    dirs
}
