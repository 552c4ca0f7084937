//! `ngsd eval`: runs an evaluation suite through the safety-aware decoder and writes the reports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use ngsd_decode::{DecodeConfig, Expert, Models, Reflection, Request};
use ngsd_eval::{
    ConfigSpec, Finish, GenOutput, GenResult, Generator, Judge, KeywordJudge, LlmJudge, Progress,
    Report, Sample, Suite,
};
use ngsd_gate::Gate;
use ngsd_runtime::{FinishReason, GenerateConfig, Message, ModelOptions};

use crate::safety::{self, ExpertSpec, Trained};

/// The decoder behind the harness: one base model, gates and experts loaded once per
/// configuration and kept.
struct DecoderGenerator {
    models: Models,
    options: ModelOptions,
    dirs: Vec<PathBuf>,
    gates: HashMap<String, Box<dyn Gate + Send>>,
    reflections: HashMap<String, Reflection>,
    trained: Trained,
    experts: HashMap<String, Box<dyn Expert>>,
    current_expert: String,
    decode: DecodeConfig,
    /// Samples decoded at once (`--batch`).
    batch: usize,
    /// Expert instances handed back by the last batch, by expert key, for the next one.
    spares: HashMap<String, Vec<Box<dyn Expert>>>,
}

impl DecoderGenerator {
    fn expert_key(config: &ConfigSpec) -> String {
        match config.expert.as_str() {
            "none" | "" => "prompt".to_string(),
            other => other.to_string(),
        }
    }

    /// Puts the configuration's expert into `models.expert`, loading it the first time.
    fn select_expert(&mut self, key: &str) -> Result<()> {
        if self.current_expert == key {
            return Ok(());
        }
        let next = match self.experts.remove(key) {
            Some(e) => e,
            None => {
                let spec = self.trained.resolve_expert(key.parse()?)?;
                safety::build_expert(
                    &spec,
                    None,
                    &self.models.base,
                    &self.models.tokenizer,
                    &self.options,
                )?
            }
        };
        let previous = std::mem::replace(&mut self.models.expert, next);
        self.experts.insert(
            std::mem::replace(&mut self.current_expert, key.to_string()),
            previous,
        );
        Ok(())
    }
}

impl DecoderGenerator {
    /// Loads the configuration's gate and reflection the first time it is seen, and puts its
    /// expert into `models.expert`.
    fn prepare(&mut self, config: &ConfigSpec) -> std::result::Result<(), BoxError> {
        let key = Self::expert_key(config);
        self.select_expert(&key).map_err(|e| format!("{e:#}"))?;
        if !self.gates.contains_key(&config.name) {
            let params = self.trained.gate_params(&config.gate, &config.gate_config);
            let gate = safety::load_gate(&config.gate, &params, &self.dirs, &self.models.base)
                .map_err(|e| format!("configuration `{}`: {e:#}", config.name))?;
            self.gates.insert(config.name.clone(), gate);
        }
        if !self.reflections.contains_key(&config.name) {
            let reflection = self.reflection(config)?;
            self.reflections.insert(config.name.clone(), reflection);
        }
        Ok(())
    }

    fn reflection(&self, config: &ConfigSpec) -> std::result::Result<Reflection, BoxError> {
        Ok(match config.reflection {
            ngsd_eval::Reflection::Off => Reflection::Fixed(config.alpha),
            ngsd_eval::Reflection::Generative => Reflection::generative(),
            ngsd_eval::Reflection::Probe => {
                // The probe reads the configuration's own neuron when its sigmoid gate names
                // one (`weights`), else the model's trained neuron.
                let params = if config.gate == "sigmoid"
                    && safety::names_weights(&config.gate_config)
                {
                    safety::probe_params(&config.gate_config)
                } else if self.trained.gate.is_some() {
                    self.trained.gate_params("sigmoid", "monitor = false")
                } else {
                    return Err(format!(
                        "configuration `{}`: probe reflection needs the model's trained neuron ({}), and there is none; or name one with a sigmoid gate's `weights`",
                        config.name,
                        safety::GATE_FILE
                    )
                    .into());
                };
                Reflection::Probe {
                    gate: safety::load_gate("sigmoid", &params, &self.dirs, &self.models.base)
                        .map_err(|e| format!("configuration `{}`: {e:#}", config.name))?,
                    map: Default::default(),
                }
            }
        })
    }

    /// `n` instances of the current expert for a batch: spares kept from the last batch of the
    /// same expert first, then new forks; `None` when it cannot fork.
    fn expert_forks(
        &mut self,
        n: usize,
    ) -> std::result::Result<Option<Vec<Box<dyn Expert>>>, BoxError> {
        let mut forks = self.spares.remove(&self.current_expert).unwrap_or_default();
        while forks.len() < n {
            match self.models.expert.fork(&self.models.base)? {
                Some(e) => forks.push(e),
                None => return Ok(None),
            }
        }
        Ok(Some(forks))
    }

    /// `samples` through [`ngsd_decode::generate_batch`], each with a fresh gate of the
    /// configuration and a fork of its expert.
    fn generate_batched(
        &mut self,
        config: &ConfigSpec,
        samples: &[&Sample],
        experts: Vec<Box<dyn Expert>>,
        done: &mut dyn FnMut(usize, GenResult, f64),
    ) -> std::result::Result<(), BoxError> {
        let requests: Vec<Request> = samples.iter().map(|s| request(s)).collect();
        let params = self.trained.gate_params(&config.gate, &config.gate_config);
        let params = safety::with_host_context(&params, &self.models.base);
        let (spec, dirs) = (&config.gate, &self.dirs);
        let reflection = self
            .reflections
            .get_mut(&config.name)
            .ok_or("reflection vanished")?;
        let mut make_gate = |_: usize| -> ngsd_decode::Result<Box<dyn Gate>> {
            let gate = safety::load_gate_with_context(spec, &params, dirs).map_err(|e| {
                ngsd_decode::Error::from(ngsd_gate::Error::Failed(format!("{e:#}")))
            })?;
            Ok(gate)
        };
        let spares = ngsd_decode::generate_batch(
            &requests,
            &mut self.models,
            reflection,
            &self.decode,
            experts,
            &mut make_gate,
            ngsd_decode::Sinks {
                on_text: &mut |_, _| {},
                on_done: &mut |i, out| {
                    let time_ms = out.as_ref().map_or(0.0, |o| o.summary.timings.total_ms);
                    done(i, out.map(gen_output).map_err(Into::into), time_ms);
                },
            },
        )?;
        self.spares.insert(self.current_expert.clone(), spares);
        Ok(())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn gen_output(out: ngsd_decode::Output) -> GenOutput {
    GenOutput {
        text: out.text,
        tokens: out.tokens.len(),
        steered_tokens: out.summary.steered_tokens,
        expert_passes: out.summary.expert_forward_passes,
        finish: finish(&out.finish),
        prompt_p: out.summary.reflection.probability,
    }
}

impl Generator for DecoderGenerator {
    fn generate(&mut self, config: &ConfigSpec, sample: &Sample) -> GenResult {
        self.prepare(config)?;
        let gate = self.gates.get_mut(&config.name).ok_or("gate vanished")?;
        let reflection = self
            .reflections
            .get_mut(&config.name)
            .ok_or("reflection vanished")?;
        let request = request(sample);
        let out = ngsd_decode::generate(
            &request,
            &mut self.models,
            gate.as_mut(),
            reflection,
            &self.decode,
            |_| {},
        )?;
        Ok(gen_output(out))
    }

    /// Up to `--batch` samples decoded at once; one at a time when the batch is 1 or the
    /// configuration's expert cannot fork (a model expert).
    fn generate_many(
        &mut self,
        config: &ConfigSpec,
        samples: &[&Sample],
        done: &mut dyn FnMut(usize, GenResult, f64),
    ) {
        let n = self.batch.min(samples.len());
        if let Err(e) = self.prepare(config) {
            return done(0, Err(e), 0.0);
        }
        let forks = match n {
            0 | 1 => None,
            _ => match self.expert_forks(n) {
                Ok(forks) => forks,
                Err(e) => return done(0, Err(e), 0.0),
            },
        };
        match forks {
            Some(experts) => {
                if let Err(e) = self.generate_batched(config, samples, experts, done) {
                    done(0, Err(e), 0.0);
                }
            }
            None => ngsd_eval::generate_each(self, config, samples, done),
        }
    }
}

/// How the stored answer ended. Only the decoder's safety stop is an early stop: a user's stop
/// string is a plain stop, whatever its text (D2).
fn finish(reason: &FinishReason) -> Finish {
    match reason {
        FinishReason::Eos => Finish::Eos,
        FinishReason::MaxTokens => Finish::Length,
        FinishReason::SafetyStop => Finish::EarlyStop,
        FinishReason::Stop(_) => Finish::Stop,
        FinishReason::ContextFull | FinishReason::Cancelled => Finish::Other,
    }
}

/// The decoder's request for a sample: its text after its history, under its system prompt,
/// or raw.
fn request(sample: &Sample) -> Request {
    Request {
        prompt: sample.text.clone(),
        system: sample.system.clone(),
        raw: sample.raw,
        history: sample
            .history
            .iter()
            .map(|t| Message::new(t.role.as_str(), &t.content))
            .collect(),
        ..Default::default()
    }
}

/// The judge chosen on the command line.
pub fn judge(
    kind: &str,
    url: Option<&str>,
    model: Option<&str>,
    key_env: &str,
) -> Result<Box<dyn Judge>> {
    match kind {
        "keyword" => {
            if url.is_some() || model.is_some() {
                bail!("--judge-url and --judge-model are for --judge llm");
            }
            Ok(Box::new(KeywordJudge))
        }
        "llm" => {
            let (Some(url), Some(model)) = (url, model) else {
                bail!(
                    "--judge llm needs --judge-url (an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1) and --judge-model"
                );
            };
            let key = std::env::var(key_env).ok().filter(|k| !k.is_empty());
            Ok(Box::new(LlmJudge::new(
                url,
                model,
                key,
                std::time::Duration::from_secs(60),
            )?))
        }
        other => bail!("invalid --judge `{other}`: use keyword or llm"),
    }
}

/// Which part of a suite runs, and how.
pub struct Selection<'a> {
    /// At most this many samples per dataset.
    pub limit: Option<usize>,
    /// Only these configurations (all when empty).
    pub only: &'a [String],
    /// Samples decoded at once.
    pub batch: usize,
}

/// Runs the suite (skipping answers already stored in `out/runs`) and writes the reports to `out`.
pub fn run(
    suite_path: &Path,
    out: &Path,
    settings: &crate::settings::ModelSettings,
    dirs: Vec<PathBuf>,
    judge: &dyn Judge,
    selection: &Selection<'_>,
) -> Result<()> {
    let Selection { limit, only, batch } = *selection;
    if batch == 0 {
        bail!("--batch 0: at least 1 sample must be decoded at a time (default 16)");
    }
    let found: Vec<String> = ngsd_gate_host::list(&dirs)
        .into_iter()
        .filter_map(|r| r.ok().map(|i| i.name))
        .collect();
    if found.is_empty() {
        bail!("no gate plugins found; build them with `cargo build --workspace --release`");
    }
    let known: Vec<&str> = found.iter().map(String::as_str).collect();
    let mut suite = Suite::load(suite_path, &known)?;
    if !only.is_empty() {
        let names: Vec<String> = suite.configs.iter().map(|c| c.name.clone()).collect();
        if let Some(unknown) = only.iter().find(|o| !names.contains(o)) {
            bail!(
                "--only `{unknown}`: the suite has no such configuration; it has {}",
                names.join(", ")
            );
        }
        suite.configs.retain(|c| only.contains(&c.name));
        if let Some(b) = &suite.baseline
            && !only.contains(b)
        {
            suite.baseline = None;
        }
    }
    let (base, tokenizer, template) = crate::load_model(settings)?;
    let expert = safety::build_expert(
        &ExpertSpec::Prompt,
        None,
        &base,
        &tokenizer,
        &settings.options,
    )?;
    let trained = Trained::find(&settings.dir);
    // The answer monitor (of configurations over the trained neuron) checks on the schedule
    // its threshold was calibrated for.
    let decode = DecodeConfig {
        generate: GenerateConfig {
            max_new_tokens: suite.generation.max_new_tokens,
            ..Default::default()
        },
        monitor_every: trained.monitor_every(),
        ..Default::default()
    };
    if !suite.generation.greedy {
        bail!("suites with greedy = false are not supported yet: ngsd eval decodes greedily");
    }
    let mut generator = DecoderGenerator {
        models: Models {
            base,
            tokenizer,
            template,
            expert,
        },
        options: settings.options.clone(),
        dirs,
        gates: HashMap::new(),
        reflections: HashMap::new(),
        trained,
        experts: HashMap::new(),
        current_expert: "prompt".into(),
        decode,
        batch,
        spares: HashMap::new(),
    };
    let store = out.join("runs");
    let summary = ngsd_eval::run_suite(&suite, &mut generator, &store, limit, Progress::Bar)
        .with_context(|| format!("running {}", suite_path.display()))?;
    eprintln!(
        "generated {} answers ({} already stored, skipped)",
        summary.generated, summary.skipped
    );
    let report = Report::build(&suite, &store, judge, limit)?;
    let files = report.write_all(out)?;
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_string_like_the_early_stop_marker_is_a_plain_stop() {
        for text in ["early stop", "[early stop]", "stop"] {
            assert_eq!(
                finish(&FinishReason::Stop(text.into())),
                Finish::Stop,
                "{text}"
            );
        }
        assert_eq!(finish(&FinishReason::SafetyStop), Finish::EarlyStop);
        assert_eq!(finish(&FinishReason::Eos), Finish::Eos);
        assert_eq!(finish(&FinishReason::MaxTokens), Finish::Length);
    }
}
