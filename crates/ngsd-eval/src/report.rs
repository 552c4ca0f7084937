//! Turns stored results into metrics per configuration and dataset, and writes them as
//! `results.json`, a markdown table and SVG plots.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::dataset::Sample;
use crate::error::{Error, Result};
use crate::judge::Judge;
use crate::metrics::{answer_matches, ratio, wilson};
use crate::runner::load_suite_samples;
use crate::separation::{PairAuroc, Scored, matched_aurocs, pooled_auroc};
use crate::steered::{Shape, SteeredAnswer};
use crate::store::{AnswerIndex, Record, ResultStore};
use crate::suite::{ConfigSpec, DatasetSpec, Label, Suite};

/// A proportion with its 95% Wilson interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Successes.
    pub k: usize,
    /// Trials.
    pub n: usize,
    /// k / n (0 when n is 0).
    pub value: f64,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

impl Interval {
    /// `k` out of `n` with its Wilson interval.
    pub fn new(k: usize, n: usize) -> Interval {
        let (low, high) = wilson(k, n);
        Interval {
            k,
            n,
            value: ratio(k as f64, n as f64),
            low,
            high,
        }
    }

    fn pct(&self) -> String {
        if self.n == 0 {
            return "–".to_owned();
        }
        format!(
            "{:.1}% [{:.1}, {:.1}]",
            self.value * 100.0,
            self.low * 100.0,
            self.high * 100.0
        )
    }
}

/// Metrics over one dataset (or a pool of datasets) for one configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetMetrics {
    /// Dataset name, or `harmful` / `benign` / `all` for pools.
    pub dataset: String,
    /// Label of the samples (none for the `all` pool).
    pub label: Option<Label>,
    /// Samples of the suite (after limits) with a stored result.
    pub answered: usize,
    /// Samples of the suite (after limits).
    pub samples: usize,
    /// Responses judged refusals.
    pub refusal: Interval,
    /// Attack success rate (harmful only): responses not judged refusals.
    pub asr: Option<Interval>,
    /// Exact-answer accuracy, when the dataset has answers.
    pub accuracy: Option<Interval>,
    /// Mean generated tokens.
    pub mean_tokens: f64,
    /// Generated tokens per second of generation wall time.
    pub tokens_per_s: f64,
    /// Steered tokens / generated tokens.
    pub steered_fraction: f64,
    /// Expert forward passes per generated token.
    pub expert_passes_per_token: f64,
    /// Share of answers with at least one steered token.
    pub gate_fired: Interval,
    /// Benign only, non-baseline only: share of answers identical to the baseline's.
    pub identical_to_baseline: Option<Interval>,
    /// Datasets with answers, non-baseline only: of the samples the baseline answered
    /// correctly, the share this configuration also answers correctly.
    pub kept_correct: Option<Interval>,
}

/// All metrics of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigReport {
    /// The configuration.
    pub config: ConfigSpec,
    /// Pools: `harmful`, `benign` (when the suite has such datasets) and `all`.
    pub pooled: Vec<DatasetMetrics>,
    /// One pool per dataset `group` of the suite, in order of first appearance.
    pub groups: Vec<DatasetMetrics>,
    /// One entry per dataset, in suite order.
    pub datasets: Vec<DatasetMetrics>,
    /// Every benign answer with a steered token, and its shape.
    pub steered_benign: Vec<SteeredAnswer>,
    /// The gate neuron's AUROC at the prompt, all harmful × all benign and per topic-matched
    /// pair of datasets and groups; empty unless answers store p (probe reflection).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prompt_auroc: Vec<PairAuroc>,
}

impl ConfigReport {
    /// The pooled metrics named `harmful`, `benign` or `all`.
    pub fn pool(&self, name: &str) -> Option<&DatasetMetrics> {
        self.pooled.iter().find(|m| m.dataset == name)
    }

    /// The pooled metrics of a dataset group.
    pub fn group(&self, name: &str) -> Option<&DatasetMetrics> {
        self.groups.iter().find(|m| m.dataset == name)
    }
}

/// The report of a suite run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Judge used for refusals.
    pub judge: String,
    /// The baseline configuration, if any.
    pub baseline: Option<String>,
    /// One entry per configuration, in suite order.
    pub configs: Vec<ConfigReport>,
}

/// A stored result joined with its sample.
struct Joined<'a> {
    sample: &'a Sample,
    record: &'a Record,
    refused: bool,
    identical: Option<bool>,
    /// Whether the baseline answered this sample correctly (answers only, non-baseline only).
    baseline_correct: Option<bool>,
}

/// The stored answers of one configuration.
struct Answers {
    records: Vec<Record>,
    index: AnswerIndex,
}

impl Answers {
    fn read(store_dir: &Path, config: &str) -> Result<Answers> {
        let records = ResultStore::read(&ResultStore::path_for(store_dir, config))?;
        let index = AnswerIndex::new(&records);
        Ok(Answers { records, index })
    }

    fn get(&self, dataset: &str, sample: &Sample) -> Option<&Record> {
        self.index
            .find(dataset, sample)
            .and_then(|i| self.records.get(i))
    }
}

/// One dataset's joined results: (spec, samples selected, joined answers).
type DatasetJoin<'a> = (&'a DatasetSpec, usize, Vec<Joined<'a>>);

impl Report {
    /// Computes metrics from the results stores in `store_dir` for the samples the suite
    /// selects (with `limit` applied as in [`crate::run_suite`]). Samples without a result
    /// are left out of the rates (see `answered`).
    pub fn build(
        suite: &Suite,
        store_dir: &Path,
        judge: &dyn Judge,
        limit: Option<usize>,
    ) -> Result<Report> {
        let data = load_suite_samples(suite, limit)?;
        let mut answers: HashMap<&str, Answers> = HashMap::new();
        for c in &suite.configs {
            answers.insert(c.name.as_str(), Answers::read(store_dir, &c.name)?);
        }
        let empty = Answers {
            records: Vec::new(),
            index: AnswerIndex::default(),
        };
        let baseline = suite.baseline.as_deref().and_then(|b| answers.get(b));
        let mut configs = Vec::new();
        for c in &suite.configs {
            let mine = answers.get(c.name.as_str()).unwrap_or(&empty);
            let is_baseline = suite.baseline.as_deref() == Some(c.name.as_str());
            let other_baseline = baseline.filter(|_| !is_baseline);
            let mut joins: Vec<DatasetJoin<'_>> = Vec::new();
            for (d, samples) in &data {
                let joined = join(d, samples, mine, other_baseline, judge)?;
                joins.push((d, samples.len(), joined));
            }
            configs.push(config_report(c, &joins));
        }
        Ok(Report {
            judge: judge.name().to_owned(),
            baseline: suite.baseline.clone(),
            configs,
        })
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .expect("the report holds only strings, numbers and options")
    }

    /// A markdown summary table (pooled figures) followed by one table per dataset.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "Refusals judged by the `{}` judge; intervals are 95% Wilson.\n",
            self.judge
        );
        md.push_str("| config | gate | expert | reflection | α | ASR | benign refusal | accuracy | tok/s | mean tokens | steered | expert passes/token | gate fired | identical to baseline |\n");
        md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for c in &self.configs {
            let h = c.pool("harmful");
            let b = c.pool("benign");
            let all = c.pool("all");
            let acc = c.datasets.iter().filter_map(|d| d.accuracy).fold(
                None,
                |acc: Option<(usize, usize)>, i| {
                    let (k, n) = acc.unwrap_or((0, 0));
                    Some((k + i.k, n + i.n))
                },
            );
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.config.name,
                c.config.gate,
                c.config.expert,
                c.config.reflection,
                c.config.alpha,
                h.and_then(|m| m.asr).map_or("–".to_owned(), |i| i.pct()),
                b.map_or("–".to_owned(), |m| m.refusal.pct()),
                acc.map_or("–".to_owned(), |(k, n)| Interval::new(k, n).pct()),
                all.map_or("–".to_owned(), |m| format!("{:.1}", m.tokens_per_s)),
                all.map_or("–".to_owned(), |m| format!("{:.1}", m.mean_tokens)),
                all.map_or("–".to_owned(), |m| format!("{:.3}", m.steered_fraction)),
                all.map_or("–".to_owned(), |m| format!(
                    "{:.3}",
                    m.expert_passes_per_token
                )),
                all.map_or("–".to_owned(), |m| m.gate_fired.pct()),
                b.and_then(|m| m.identical_to_baseline)
                    .map_or("–".to_owned(), |i| i.pct()),
            );
        }
        self.glance(&mut md);
        self.auroc_section(&mut md);
        self.steered_section(&mut md);
        let first = self.configs.first();
        for (i, g) in first.map_or(&[][..], |c| &c.groups).iter().enumerate() {
            let title = format!(
                "group {} (pooled {} datasets)",
                g.dataset,
                g.label.map_or("mixed".into(), |l| l.to_string())
            );
            self.table(&mut md, &title, |c| c.groups.get(i));
        }
        for (i, d) in first.map_or(&[][..], |c| &c.datasets).iter().enumerate() {
            self.table(&mut md, &d.dataset, |c| c.datasets.get(i));
        }
        md
    }

    /// The gate neuron's AUROC at the prompt, for configurations whose answers store p.
    fn auroc_section(&self, md: &mut String) {
        if self.configs.iter().all(|c| c.prompt_auroc.is_empty()) {
            return;
        }
        md.push_str("\n### The gate neuron at the prompt: AUROC\n\nHow well the neuron's p (probe reflection) ranks harmful prompts above benign ones: all of them, then each topic-matched pair (names equal up to the last `-`).\n\n| config | harmful | benign | prompts | AUROC |\n|---|---|---|---|---|\n");
        for c in &self.configs {
            for r in &c.prompt_auroc {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} + {} | {:.3} |",
                    c.config.name, r.harmful, r.benign, r.n_harmful, r.n_benign, r.auroc
                );
            }
        }
    }

    /// Per configuration: how many steered benign answers are refusals, complete answers or
    /// fragments, then each of them (the text cut to one line).
    fn steered_section(&self, md: &mut String) {
        md.push_str("\n### Steered benign answers\n\nA fired gate must leave a clean refusal or an answer with at least one complete sentence; a FRAGMENT is neither.\n\n| config | steered benign | refusal | complete | FRAGMENT |\n|---|---|---|---|---|\n");
        for c in &self.configs {
            let count = |s: Shape| c.steered_benign.iter().filter(|a| a.shape == s).count();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                c.config.name,
                c.steered_benign.len(),
                count(Shape::Refusal),
                count(Shape::Complete),
                count(Shape::Fragment),
            );
        }
        for c in self.configs.iter().filter(|c| !c.steered_benign.is_empty()) {
            let _ = writeln!(
                md,
                "\n#### {}: every steered benign answer\n\n| dataset | id | steered tokens | shape | answer |\n|---|---|---|---|---|",
                c.config.name
            );
            for a in &c.steered_benign {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    a.dataset,
                    a.id,
                    a.steered_tokens,
                    a.shape.as_str(),
                    one_line(&a.text, 160)
                );
            }
        }
    }

    /// A table with a row per group and dataset and a column per configuration: ASR for
    /// harmful rows, refusal rate for benign ones.
    fn glance(&self, md: &mut String) {
        let Some(first) = self.configs.first() else {
            return;
        };
        md.push_str("\n### At a glance: ASR (harmful) or refusal (benign)\n\n| group or dataset | label | metric |");
        for c in &self.configs {
            let _ = write!(md, " {} |", c.config.name);
        }
        md.push_str("\n|---|---|---|");
        md.push_str(&"---|".repeat(self.configs.len()));
        md.push('\n');
        let rows = first
            .groups
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("**{}**", m.dataset), m.label, i, true))
            .chain(
                first
                    .datasets
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.dataset.clone(), m.label, i, false)),
            );
        for (name, label, i, group) in rows {
            let harmful = label == Some(Label::Harmful);
            let label = label.map_or("mixed".to_owned(), |l| l.to_string());
            let metric = if harmful { "ASR" } else { "refusal" };
            let _ = write!(md, "| {name} | {label} | {metric} |");
            for c in &self.configs {
                let m = if group {
                    c.groups.get(i)
                } else {
                    c.datasets.get(i)
                };
                let cell = m.map_or("–".to_owned(), |m| {
                    let v = if harmful {
                        m.asr.unwrap_or(m.refusal)
                    } else {
                        m.refusal
                    };
                    if v.n == 0 {
                        "–".to_owned()
                    } else {
                        format!("{:.1}% ({}/{})", v.value * 100.0, v.k, v.n)
                    }
                });
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }
    }

    /// One `### title` table: a row per configuration of the metrics `pick` chooses.
    fn table<'a>(
        &'a self,
        md: &mut String,
        title: &str,
        pick: impl Fn(&'a ConfigReport) -> Option<&'a DatasetMetrics>,
    ) {
        let _ = writeln!(md, "\n### {title}\n");
        md.push_str("| config | answered | refusal | ASR | accuracy | kept correct | tok/s | gate fired | identical to baseline |\n");
        md.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for c in &self.configs {
            let Some(d) = pick(c) else { continue };
            let _ = writeln!(
                md,
                "| {} | {}/{} | {} | {} | {} | {} | {:.1} | {} | {} |",
                c.config.name,
                d.answered,
                d.samples,
                d.refusal.pct(),
                d.asr.map_or("–".to_owned(), |i| i.pct()),
                d.accuracy.map_or("–".to_owned(), |i| i.pct()),
                d.kept_correct.map_or("–".to_owned(), |i| i.pct()),
                d.tokens_per_s,
                d.gate_fired.pct(),
                d.identical_to_baseline.map_or("–".to_owned(), |i| i.pct()),
            );
        }
    }

    /// Writes `results.json`, `results.md`, `tradeoff.svg` and `speed.svg` into `dir`
    /// (created if needed) and returns their paths.
    pub fn write_all(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let json = dir.join("results.json");
        std::fs::write(&json, self.to_json()).map_err(|e| Error::io("writing", &json, e))?;
        let md = dir.join("results.md");
        std::fs::write(&md, self.to_markdown()).map_err(|e| Error::io("writing", &md, e))?;
        let tradeoff = dir.join("tradeoff.svg");
        crate::plot::tradeoff_svg(self, &tradeoff)?;
        let speed = dir.join("speed.svg");
        crate::plot::speed_svg(self, &speed)?;
        Ok(vec![json, md, tradeoff, speed])
    }
}

/// Joins a dataset's samples with a configuration's stored answers (and the baseline's,
/// unless this is the baseline).
fn join<'a>(
    d: &DatasetSpec,
    samples: &'a [Sample],
    mine: &'a Answers,
    baseline: Option<&'a Answers>,
    judge: &dyn Judge,
) -> Result<Vec<Joined<'a>>> {
    let mut joined = Vec::new();
    for s in samples {
        let Some(record) = mine.get(&d.name, s) else {
            continue;
        };
        let base = baseline.and_then(|b| b.get(&d.name, s));
        let identical = match d.label {
            Label::Benign => base.map(|br| br.text == record.text),
            Label::Harmful => None,
        };
        let baseline_correct = match &s.answer {
            Some(answer) => base.map(|br| answer_matches(&br.text, answer)),
            None => None,
        };
        joined.push(Joined {
            sample: s,
            record,
            refused: judge.is_refusal(&s.text, &record.text)?,
            identical,
            baseline_correct,
        });
    }
    Ok(joined)
}

/// A configuration's metrics: per dataset, pooled by label and overall, and per group.
fn config_report(c: &ConfigSpec, joins: &[DatasetJoin<'_>]) -> ConfigReport {
    let datasets: Vec<DatasetMetrics> = joins
        .iter()
        .map(|(d, total, j)| metrics(&d.name, Some(d.label), *total, j.iter()))
        .collect();
    let pool = |name: &str, label: Option<Label>, parts: &[&DatasetJoin<'_>]| {
        let total = parts.iter().map(|p| p.1).sum();
        metrics(name, label, total, parts.iter().flat_map(|p| p.2.iter()))
    };
    let mut pooled = Vec::new();
    for label in [Label::Harmful, Label::Benign] {
        let parts: Vec<_> = joins.iter().filter(|p| p.0.label == label).collect();
        if !parts.is_empty() {
            pooled.push(pool(&label.to_string(), Some(label), &parts));
        }
    }
    pooled.push(pool("all", None, &joins.iter().collect::<Vec<_>>()));
    let mut names: Vec<&str> = Vec::new();
    for g in joins.iter().filter_map(|p| p.0.group.as_deref()) {
        if !names.contains(&g) {
            names.push(g);
        }
    }
    let groups = names
        .iter()
        .map(|g| {
            let parts: Vec<_> = joins
                .iter()
                .filter(|p| p.0.group.as_deref() == Some(*g))
                .collect();
            pool(g, parts.first().map(|p| p.0.label), &parts)
        })
        .collect();
    ConfigReport {
        config: c.clone(),
        pooled,
        groups,
        datasets,
        steered_benign: steered_benign(joins),
        prompt_auroc: prompt_auroc(joins, &names),
    }
}

/// The pooled AUROC over the datasets, then the matched pairs of datasets and of groups, of
/// one configuration's answers.
fn prompt_auroc(joins: &[DatasetJoin<'_>], groups: &[&str]) -> Vec<PairAuroc> {
    let scored = |name, parts: Vec<&DatasetJoin<'_>>| {
        let label = parts.first()?.0.label;
        let p = parts
            .iter()
            .flat_map(|d| d.2.iter().filter_map(|j| j.record.prompt_p))
            .collect();
        Some(Scored { name, label, p })
    };
    let datasets: Vec<Scored<'_>> = joins
        .iter()
        .filter_map(|d| scored(d.0.name.as_str(), vec![d]))
        .collect();
    let grouped: Vec<Scored<'_>> = groups
        .iter()
        .filter_map(|g| {
            let parts = joins
                .iter()
                .filter(|d| d.0.group.as_deref() == Some(*g))
                .collect();
            scored(g, parts)
        })
        .collect();
    let mut out: Vec<PairAuroc> = pooled_auroc(&datasets).into_iter().collect();
    out.extend(matched_aurocs(&datasets));
    out.extend(matched_aurocs(&grouped));
    out
}

/// The benign answers with at least one steered token, each sorted into its [`Shape`].
fn steered_benign(joins: &[DatasetJoin<'_>]) -> Vec<SteeredAnswer> {
    joins
        .iter()
        .filter(|(d, _, _)| d.label == Label::Benign)
        .flat_map(|(d, _, joined)| joined.iter().map(move |j| (d, j)))
        .filter(|(_, j)| j.record.steered_tokens > 0)
        .map(|(d, j)| SteeredAnswer {
            dataset: d.name.clone(),
            id: j.sample.id.clone(),
            steered_tokens: j.record.steered_tokens,
            shape: Shape::of(&j.record.text, j.refused),
            text: j.record.text.clone(),
        })
        .collect()
}

fn metrics<'a>(
    name: &str,
    label: Option<Label>,
    samples: usize,
    joined: impl Iterator<Item = &'a Joined<'a>>,
) -> DatasetMetrics {
    let (mut n, mut refused, mut fired) = (0, 0, 0);
    let (mut tokens, mut steered, mut passes, mut ms) = (0usize, 0usize, 0usize, 0.0f64);
    let (mut with_answer, mut correct) = (0, 0);
    let (mut compared, mut identical) = (0, 0);
    let (mut was_correct, mut kept) = (0, 0);
    for j in joined {
        n += 1;
        refused += usize::from(j.refused);
        fired += usize::from(j.record.steered_tokens > 0);
        tokens += j.record.tokens;
        steered += j.record.steered_tokens;
        passes += j.record.expert_passes;
        ms += j.record.time_ms;
        if let Some(answer) = &j.sample.answer {
            with_answer += 1;
            let right = answer_matches(&j.record.text, answer);
            correct += usize::from(right);
            if j.baseline_correct == Some(true) {
                was_correct += 1;
                kept += usize::from(right);
            }
        }
        if let Some(same) = j.identical {
            compared += 1;
            identical += usize::from(same);
        }
    }
    DatasetMetrics {
        dataset: name.to_owned(),
        label,
        answered: n,
        samples,
        refusal: Interval::new(refused, n),
        asr: (label == Some(Label::Harmful)).then(|| Interval::new(n - refused, n)),
        accuracy: (with_answer > 0).then(|| Interval::new(correct, with_answer)),
        mean_tokens: ratio(tokens as f64, n as f64),
        tokens_per_s: ratio(tokens as f64, ms / 1000.0),
        steered_fraction: ratio(steered as f64, tokens as f64),
        expert_passes_per_token: ratio(passes as f64, tokens as f64),
        gate_fired: Interval::new(fired, n),
        identical_to_baseline: (compared > 0).then(|| Interval::new(identical, compared)),
        kept_correct: (was_correct > 0).then(|| Interval::new(kept, was_correct)),
    }
}

/// `text` on one table-safe line, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    let mut cut: String = flat.chars().take(max).collect();
    if flat.chars().count() > max {
        cut.push('…');
    }
    cut.replace('|', "\\|")
}
