//! Runs every configuration of a suite over every sample through a [`Generator`], skipping
//! what the results stores already hold, with a progress bar and ETA.

use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::dataset::{Sample, load_dataset};
use crate::error::{Error, Result};
use crate::store::{Finish, Record, ResultStore};
use crate::suite::{ConfigSpec, DatasetSpec, Suite};

/// What a generator returns for one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct GenOutput {
    /// Generated text.
    pub text: String,
    /// Generated tokens.
    pub tokens: usize,
    /// Tokens chosen under steering.
    pub steered_tokens: usize,
    /// Expert forward passes.
    pub expert_passes: usize,
    /// Why it stopped.
    pub finish: Finish,
    /// The gate neuron's probability that the prompt is harmful, when the configuration
    /// reflects by probe (what sets α); `None` otherwise.
    pub prompt_p: Option<f32>,
}

/// One answer, or why it could not be generated.
pub type GenResult = std::result::Result<GenOutput, Box<dyn std::error::Error + Send + Sync>>;

/// Produces answers for a configuration; the real one is the safety-aware decoder, built
/// with the suite's [`crate::Generation`] settings.
pub trait Generator {
    /// Answers `sample` under `config`: its `text` as the user message after its `history`
    /// under its `system` prompt, or as raw text when `raw`.
    fn generate(&mut self, config: &ConfigSpec, sample: &Sample) -> GenResult;

    /// Answers `samples` under `config`, calling `done(i, answer, time_ms)` as each finishes,
    /// in any order (`time_ms`: that answer's own time, from its start to its end). The
    /// default answers them one by one through [`Generator::generate`] and stops at the first
    /// error; a batching generator decodes several at once.
    fn generate_many(
        &mut self,
        config: &ConfigSpec,
        samples: &[&Sample],
        done: &mut dyn FnMut(usize, GenResult, f64),
    ) {
        generate_each(self, config, samples, done);
    }
}

/// `samples` one after another through [`Generator::generate`], timing each and stopping at
/// the first error: what [`Generator::generate_many`] does unless a generator batches.
pub fn generate_each<G: Generator + ?Sized>(
    generator: &mut G,
    config: &ConfigSpec,
    samples: &[&Sample],
    done: &mut dyn FnMut(usize, GenResult, f64),
) {
    for (i, sample) in samples.iter().enumerate() {
        let start = Instant::now();
        let answer = generator.generate(config, sample);
        let failed = answer.is_err();
        done(i, answer, start.elapsed().as_secs_f64() * 1000.0);
        if failed {
            return;
        }
    }
}

/// Whether to draw a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A bar with position, rate and ETA on stderr.
    Bar,
    /// Nothing (tests, logs).
    Hidden,
}

/// Counts of one [`run_suite`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Answers generated now.
    pub generated: usize,
    /// Samples skipped because their result was already stored.
    pub skipped: usize,
}

/// The stored form of one answer.
fn record(dataset: &str, s: &Sample, out: GenOutput, time_ms: f64) -> Record {
    Record {
        dataset: dataset.to_owned(),
        id: s.id.clone(),
        sample_key: s.key(),
        text: out.text,
        tokens: out.tokens,
        steered_tokens: out.steered_tokens,
        expert_passes: out.expert_passes,
        time_ms,
        finish: out.finish,
        prompt_p: out.prompt_p,
    }
}

/// Loads every dataset of `suite`, keeping at most `limit` samples of each (on top of the
/// dataset's own limit).
pub fn load_suite_samples(
    suite: &Suite,
    limit: Option<usize>,
) -> Result<Vec<(&DatasetSpec, Vec<Sample>)>> {
    suite
        .datasets
        .iter()
        .map(|d| {
            let mut samples = load_dataset(d)?;
            if let Some(l) = limit {
                samples.truncate(l);
            }
            Ok((d, samples))
        })
        .collect()
}

/// Runs configurations × datasets × samples, appending each answer to
/// `<store_dir>/<config>.jsonl` as it finishes and skipping samples already there. A
/// generation error ends the run once the answers in flight are stored; a rerun resumes
/// after what was stored.
pub fn run_suite(
    suite: &Suite,
    generator: &mut dyn Generator,
    store_dir: &Path,
    limit: Option<usize>,
    progress: Progress,
) -> Result<RunSummary> {
    let data = load_suite_samples(suite, limit)?;
    let mut stores = suite
        .configs
        .iter()
        .map(|c| ResultStore::open(ResultStore::path_for(store_dir, &c.name)))
        .collect::<Result<Vec<_>>>()?;

    let mut summary = RunSummary::default();
    for store in &stores {
        for (d, samples) in &data {
            summary.skipped += samples.iter().filter(|s| store.is_done(&d.name, s)).count();
        }
    }
    let total: usize = data.iter().map(|(_, s)| s.len()).sum::<usize>() * suite.configs.len();
    let todo = (total - summary.skipped) as u64;

    let bar = match progress {
        Progress::Bar => ProgressBar::with_draw_target(Some(todo), ProgressDrawTarget::stderr()),
        Progress::Hidden => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta_precise} {msg}",
        )
        .expect("the template is a valid indicatif template"),
    );

    for (config, store) in suite.configs.iter().zip(stores.iter_mut()) {
        for (d, samples) in &data {
            bar.set_message(format!("{} / {}", config.name, d.name));
            let todo: Vec<&Sample> = samples
                .iter()
                .filter(|s| !store.is_done(&d.name, s))
                .collect();
            let mut failure = None;
            let mut stored = Ok(());
            generator.generate_many(config, &todo, &mut |i, answer, time_ms| {
                let s = todo[i];
                match answer {
                    Ok(out) if stored.is_ok() => {
                        stored = store.append(record(&d.name, s, out, time_ms));
                        summary.generated += 1;
                        bar.inc(1);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failure.get_or_insert(Error::Generate {
                            config: config.name.clone(),
                            dataset: d.name.clone(),
                            id: s.id.clone(),
                            message: e.to_string(),
                        });
                    }
                }
            });
            stored?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }
    bar.finish_and_clear();
    Ok(summary)
}
