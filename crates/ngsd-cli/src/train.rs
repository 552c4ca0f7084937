//! `ngsd train gate` and `ngsd train expert`: read the data, run the base model, fit, report,
//! and write the safetensors file atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use ngsd_decode::LmHead;
use ngsd_eval::Judge;
use ngsd_gate::{Feature, FeatureSpec};
use ngsd_train::data::{self, Example, FileSpec};
use ngsd_train::expert::{self, ExpertTrainConfig, RefusalPair};
use ngsd_train::features::{Encoder, candidate_features};
use ngsd_train::gate::{self, GateTrainConfig, ThresholdRule};
use ngsd_train::select;

use crate::settings::{ModelSettings, RawConfig};
use crate::{ModelFlags, load_model};

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Fit the gate neuron: logistic regression on the base model's hidden-state features of
    /// the prompt (which layers and poolings: chosen by cross-validation, see --features),
    /// class-balanced, L2 chosen by cross-validation, standardisation and threshold stored in
    /// the output file (read by the `sigmoid` gate's `weights` parameter); optionally the
    /// answer monitor's neuron too (--monitor-prompts).
    Gate(TrainGateArgs),
    /// Train the `head` expert: a low-rank adapter on the base model's final hidden state,
    /// read through the model's LM head, taught to refuse harmful prompts and to match the
    /// base model on benign ones (use with `--expert head:FILE`).
    Expert(TrainExpertArgs),
}

/// Where the labelled prompts come from.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Training-set file (TOML): `[[datasets]]` entries as in evaluation suites (path,
    /// text-field, label = "harmful" | "benign", optional ids, where, limit). Repeatable.
    #[arg(long = "data", value_name = "FILE")]
    sets: Vec<PathBuf>,
    /// A file of harmful prompts (.json, .jsonl or .csv). Repeatable.
    #[arg(long, value_name = "FILE")]
    harmful: Vec<PathBuf>,
    /// A file of benign prompts (.json, .jsonl or .csv). Repeatable.
    #[arg(long, value_name = "FILE")]
    benign: Vec<PathBuf>,
    /// The prompt field of the --harmful/--benign files [default: the first of prompt, goal,
    /// Goal, text, question, instruction that the file has].
    #[arg(long, value_name = "NAME")]
    text_field: Option<String>,
    /// Keep only rows of the --harmful/--benign files whose FIELD equals VALUE (e.g. label=0).
    #[arg(long = "where", value_name = "FIELD=VALUE")]
    filter: Option<String>,
}

impl DataArgs {
    fn load(&self) -> Result<Vec<Example>> {
        if self.sets.is_empty() && self.harmful.is_empty() && self.benign.is_empty() {
            bail!(
                "no training data: name a training-set file with --data FILE.toml, or files with --harmful FILE and --benign FILE"
            );
        }
        let filter = self.filter.as_deref().map(data::parse_filter).transpose()?;
        let mut all = Vec::new();
        for set in &self.sets {
            all.extend(
                data::load_set_file(set)
                    .with_context(|| format!("reading the training set {}", set.display()))?,
            );
        }
        for (files, harmful) in [(&self.harmful, true), (&self.benign, false)] {
            for path in files {
                all.extend(data::load_file(&FileSpec {
                    path: path.clone(),
                    harmful,
                    text_field: self.text_field.clone(),
                    filter: filter.clone(),
                })?);
            }
        }
        Ok(all)
    }
}

#[derive(Debug, Args)]
pub struct TrainGateArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Output file (safetensors: weight, bias, mean, std; metadata: model checksum, hidden
    /// size, threshold, training data). Written atomically.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Threshold rule: the lowest p at which at most this share of the benign training
    /// prompts (each scored by a model fitted without it) fire.
    #[arg(
        long,
        value_name = "R",
        default_value_t = 0.01,
        conflicts_with = "recall"
    )]
    benign_fire_rate: f64,
    /// Threshold rule instead: the highest p at which this share of the harmful training
    /// prompts (scored the same way) still fire.
    #[arg(long, value_name = "R")]
    recall: Option<f64>,
    /// Cross-validation folds.
    #[arg(long, value_name = "K", default_value_t = 5)]
    folds: usize,
    /// What the neuron reads at the prompt: `auto` tries the final state at the prompt's end
    /// alone, with the request's mean, and with each exported intermediate layer, and keeps
    /// the set with the lowest cross-validated loss on the training prompts; or a list such
    /// as `final.last, 22.mean` (LAYER.POOL, LAYER = final or a layer number, POOL = last or
    /// mean).
    #[arg(long, value_name = "auto|LIST", default_value = "auto")]
    features: String,
    /// Also train the answer monitor on the base model's own greedy answers to this many
    /// training prompts of each label (0 = no monitor). The monitor re-checks answers every
    /// --monitor-every tokens and steers when they turn harmful.
    #[arg(long, value_name = "N", default_value_t = 0)]
    monitor_prompts: usize,
    /// Answer tokens between the monitor's checks. The threshold is calibrated over checks
    /// on this schedule, the file records it, and decoding with this file checks on it
    /// (unless `monitor-every` is set). Text is held until the first check, so this is also
    /// the most tokens a streaming client waits for.
    #[arg(long, value_name = "N", default_value_t = 8)]
    monitor_every: usize,
    /// Tokens of each greedy answer the monitor is trained on.
    #[arg(long, value_name = "N", default_value_t = 48)]
    monitor_tokens: usize,
    /// The monitor's threshold: the lowest p at which at most this share of benign answers
    /// fire at some check.
    #[arg(long, value_name = "R", default_value_t = 0.01)]
    monitor_benign_rate: f64,
    /// Also write the training report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Evaluation only: after training, run the prompts of this suite or training-set file
    /// (its labelled `[[datasets]]`; configurations are ignored) through the model and report
    /// the trained neuron's fire rate at its threshold per dataset and AUROC per harmful ×
    /// benign pair (printed, and under `evaluation` in --report). Nothing from it is used to fit
    /// the neuron, choose L2 or choose the threshold. Repeatable.
    #[arg(long = "report-on", value_name = "SUITE.toml")]
    report_on: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelFlags,
}

#[derive(Debug, Args)]
pub struct TrainExpertArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Refusals to teach (a file with a `response` field per row, e.g. JSON Lines); each
    /// harmful prompt is paired with one, drawn with the seed. Repeatable.
    #[arg(long, value_name = "FILE")]
    refusals: Vec<PathBuf>,
    /// Prompt-refusal pairs: rows with `prompt` and `response` fields, or a `text` field
    /// in the form "USER: … ASSISTANT: …". Repeatable.
    #[arg(long, value_name = "FILE")]
    pairs: Vec<PathBuf>,
    /// Output file (safetensors: lora_a [rank, hidden], lora_b [hidden, rank]). Written
    /// atomically.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Adapter rank.
    #[arg(long, default_value_t = 32)]
    rank: usize,
    /// Passes over the data.
    #[arg(long, default_value_t = 6)]
    epochs: usize,
    /// Adam learning rate.
    #[arg(long = "learning-rate", value_name = "LR", default_value_t = 3e-3)]
    learning_rate: f32,
    /// Greedy base-model tokens per benign prompt (training positions that keep the expert
    /// close to the base).
    #[arg(long, value_name = "N", default_value_t = 6)]
    benign_steps: usize,
    /// Weight of staying close to the base on benign text, against learning the refusals
    /// (1 = equal halves).
    #[arg(long, value_name = "W", default_value_t = 3.0)]
    benign_weight: f32,
    /// Sentences kept of each refusal, then the end-of-turn token (0 = whole refusals):
    /// short refusals teach the expert to stop rather than let the base model carry on.
    #[arg(long, value_name = "N", default_value_t = 1)]
    refusal_sentences: usize,
    /// Seed (refusal pairing, initialisation, shuffling, hold-out).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the training report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    #[command(flatten)]
    model: ModelFlags,
}

fn check_out(out: &Path) -> Result<()> {
    if out.is_dir() {
        bail!(
            "--out {} is a folder; name the file to write, e.g. {}/gate.safetensors",
            out.display(),
            out.display()
        );
    }
    Ok(())
}

/// Metadata common to both files: the model they belong to and how they were made.
fn provenance(model: &ngsd_runtime::Model, examples: &[Example]) -> BTreeMap<String, String> {
    let mut counts: BTreeMap<(bool, &str), usize> = BTreeMap::new();
    for e in examples {
        *counts.entry((e.harmful, e.set.as_str())).or_default() += 1;
    }
    let describe = |harmful: bool| {
        counts
            .iter()
            .filter(|((h, _), _)| *h == harmful)
            .map(|((_, s), n)| format!("{s} ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let pkg = model.package();
    let mut m = BTreeMap::new();
    m.insert("hidden_size".into(), model.hidden_size().to_string());
    m.insert("vocab_size".into(), model.vocab_size().to_string());
    m.insert("model".into(), pkg.manifest.name.clone());
    if let Some(sha) = pkg.manifest.checksums.get(&pkg.manifest.files.onnx) {
        m.insert("model_sha256".into(), sha.clone());
    }
    m.insert(
        "training_data".into(),
        format!("harmful: {}; benign: {}", describe(true), describe(false)),
    );
    let args: Vec<String> = std::env::args().skip(1).collect();
    m.insert("command".into(), format!("ngsd {}", args.join(" ")));
    m
}

/// The configured model, which must export its final hidden state (training reads it).
fn load_model_with_hidden(raw: &RawConfig) -> Result<ngsd_runtime::Model> {
    let settings = ModelSettings::try_from(raw)?;
    let (model, _, _) = load_model(&settings)?;
    if !model.has_hidden_state() {
        bail!(
            "the model in {} has no `last_hidden_state` output; add it with `cargo xtask export-hidden <model.onnx>`",
            settings.dir.display()
        );
    }
    Ok(model)
}

/// The last line of both commands: where the file went and where the time went (from `start`
/// to `end`; anything after `end`, such as `--report-on`, is not training time).
fn print_written(out: &Path, start: Instant, t_fit: Instant, end: Instant, parts: [&str; 2]) {
    println!(
        "wrote {} in {:.0} s ({} {:.0} s, {} {:.0} s)",
        out.display(),
        (end - start).as_secs_f64(),
        parts[0],
        (t_fit - start).as_secs_f64(),
        parts[1],
        (end - t_fit).as_secs_f64()
    );
}

fn write_report(path: Option<&Path>, report: &impl serde::Serialize) -> Result<()> {
    if let Some(p) = path {
        let text = serde_json::to_string_pretty(report)? + "\n";
        ngsd_fs::write_atomic(p, text.as_bytes())?;
    }
    Ok(())
}

pub fn run(cmd: TrainCommand, mut raw: RawConfig) -> Result<()> {
    match cmd {
        TrainCommand::Gate(args) => {
            args.model.apply(&mut raw);
            train_gate(&args, &raw)
        }
        TrainCommand::Expert(args) => {
            args.model.apply(&mut raw);
            train_expert(&args, &raw)
        }
    }
}

/// L2 strength used to compare candidate feature sets (the full L2 search runs on the winner).
const SELECTION_L2: f64 = 1e-2;

fn threshold_rule(args: &TrainGateArgs) -> Result<ThresholdRule> {
    Ok(match args.recall {
        Some(r) if !(0.5..=1.0).contains(&r) => {
            bail!("invalid --recall {r}: use a share in [0.5, 1], e.g. 0.97")
        }
        Some(r) => ThresholdRule::HarmfulRecall(r),
        None if !(0.0..0.5).contains(&args.benign_fire_rate) => bail!(
            "invalid --benign-fire-rate {}: use a share in [0, 0.5), e.g. 0.01",
            args.benign_fire_rate
        ),
        None => ThresholdRule::BenignFireRate(args.benign_fire_rate),
    })
}

/// The candidate prompt feature sets of `--features` over what the model exports.
fn feature_candidates(args: &TrainGateArgs, available: &[Feature]) -> Result<Vec<Vec<Feature>>> {
    if args.features.trim() == "auto" {
        return Ok(select::prompt_candidates(available));
    }
    let spec: FeatureSpec = format!("prompt = {}", args.features)
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid --features: {e}"))?;
    if let Some(f) = spec.prompt.iter().find(|f| !available.contains(f)) {
        bail!(
            "invalid --features: the model does not export {f}; it offers {}",
            select::names(available)
        );
    }
    Ok(vec![spec.prompt])
}

fn check_gate_args(args: &TrainGateArgs) -> Result<()> {
    check_out(&args.out)?;
    if args.folds < 2 {
        bail!(
            "invalid --folds {}: cross-validation needs at least 2",
            args.folds
        );
    }
    if args.monitor_prompts > 0
        && (args.monitor_every == 0 || args.monitor_tokens < args.monitor_every)
    {
        bail!(
            "invalid monitor settings: --monitor-tokens ({}) must be at least --monitor-every ({}), which must be at least 1",
            args.monitor_tokens,
            args.monitor_every
        );
    }
    if !(0.0..0.5).contains(&args.monitor_benign_rate) {
        bail!(
            "invalid --monitor-benign-rate {}: use a share in [0, 0.5), e.g. 0.01",
            args.monitor_benign_rate
        );
    }
    Ok(())
}

fn train_gate(args: &TrainGateArgs, raw: &RawConfig) -> Result<()> {
    check_gate_args(args)?;
    let rule = threshold_rule(args)?;
    let examples = args.data.load()?;
    let (harmful, benign) = data::check_classes(&examples)?;
    // Read evaluation files before the slow part, so a bad path fails at once.
    let mut eval_sets = Vec::new();
    for path in &args.report_on {
        let ex = data::load_suite_datasets(path)
            .with_context(|| format!("reading --report-on {}", path.display()))?;
        eval_sets.push((path.display().to_string(), ex));
    }
    let start = Instant::now();
    let mut model = load_model_with_hidden(raw)?;
    let candidates = feature_candidates(args, &candidate_features(&model))?;
    eprintln!("reading {harmful} harmful and {benign} benign prompts through the base model");
    let meta = provenance(&model, &examples);
    let mut enc = Encoder::new(&mut model)?;
    let mut needed: Vec<Feature> = candidates.iter().flatten().copied().collect();
    needed.sort();
    needed.dedup();
    let bank = enc.prompt_bank(&examples, &needed, "prompt features")?;
    let t_fit = Instant::now();
    let cfg = GateTrainConfig {
        folds: args.folds,
        rule,
        ..GateTrainConfig::default()
    };
    let y: Vec<bool> = examples.iter().map(|e| e.harmful).collect();
    let folds = ngsd_train::logreg::stratified_folds(&y, cfg.folds, cfg.seed);
    let (chosen, trials) = if candidates.len() > 1 {
        select::choose(&bank, &y, &candidates, &folds, cfg.folds, SELECTION_L2)
    } else {
        (candidates[0].clone(), Vec::new())
    };
    let (mut trained, mut report) =
        gate::train_gate(&examples, &chosen, &bank.matrix(&chosen), &cfg);
    report.feature_trials = trials;
    if args.monitor_prompts > 0 {
        let (neuron, answer_report) = train_monitor(&mut enc, args, &examples)?;
        trained.answer = Some(neuron);
        report.answer = Some(answer_report);
    }
    let st = trained.to_safetensors(meta);
    ngsd_fs::write_atomic(&args.out, &st.to_bytes())?;
    let t_done = Instant::now();
    for (source, ex) in &eval_sets {
        let b = enc.prompt_bank(ex, &chosen, "evaluation prompts")?;
        report
            .evaluation
            .push(trained.evaluate(source, ex, &b.matrix(&chosen), &examples));
    }
    let eval_secs = t_done.elapsed().as_secs_f64();
    write_report(args.report.as_deref(), &report)?;
    print_gate_report(&report, &cfg);
    if !report.evaluation.is_empty() {
        println!("evaluation took {eval_secs:.0} s (not training: not counted below)");
    }
    print_written(&args.out, start, t_fit, t_done, ["features", "fitting"]);
    Ok(())
}

/// Up to `n` examples of each label, spread evenly over the training sets.
fn monitor_examples(examples: &[Example], n: usize) -> Vec<Example> {
    let mut picked = Vec::new();
    for harmful in [true, false] {
        let pool: Vec<&Example> = examples.iter().filter(|e| e.harmful == harmful).collect();
        let stride = (pool.len() as f64 / n.max(1) as f64).max(1.0);
        picked.extend((0..n.min(pool.len())).map(|i| pool[(i as f64 * stride) as usize].clone()));
    }
    picked
}

/// The answer monitor: the base model's greedy answers, checkpoint features, a neuron.
fn train_monitor(
    enc: &mut Encoder<'_>,
    args: &TrainGateArgs,
    examples: &[Example],
) -> Result<(select::AnswerNeuron, select::AnswerReport)> {
    let picked = monitor_examples(examples, args.monitor_prompts);
    let available = candidate_features(enc.model);
    let mut needed: Vec<Feature> = select::answer_candidates(&available)
        .into_iter()
        .flatten()
        .collect();
    needed.sort();
    needed.dedup();
    let (rows, bank, answers) = enc.answer_bank(
        &picked,
        &needed,
        args.monitor_every,
        args.monitor_tokens,
        "base answers",
    )?;
    // A harmful prompt the base model refused on its own teaches nothing about harmful
    // answers: leave it out.
    let judge = ngsd_eval::KeywordJudge;
    let refused: Vec<bool> = picked
        .iter()
        .zip(&answers)
        .map(|(e, a)| e.harmful && judge.is_refusal(&e.text, a).unwrap_or(false))
        .collect();
    let keep: Vec<usize> = (0..rows.len())
        .filter(|&i| !refused[rows[i].example])
        .collect();
    let kept_rows: Vec<_> = keep.iter().map(|&i| rows[i].clone()).collect();
    let harmful: Vec<bool> = picked.iter().map(|e| e.harmful).collect();
    let (neuron, mut report) = select::fit_answer(
        &bank.select(&keep),
        &kept_rows,
        &harmful,
        (args.monitor_every, args.folds),
        SELECTION_L2,
        args.monitor_benign_rate,
    );
    report.refused_by_base = refused.iter().filter(|&&r| r).count();
    Ok((neuron, report))
}

fn print_gate_report(report: &gate::GateReport, cfg: &GateTrainConfig) {
    for t in &report.feature_trials {
        println!(
            "features {:<36} CV loss {:.4}  AUROC {:.3}",
            t.features, t.loss, t.auroc
        );
    }
    println!(
        "gate neuron over {}: {} harmful / {} benign prompts, L2 {} ({}-fold CV over {:?})",
        report.features, report.harmful, report.benign, report.l2, cfg.folds, cfg.l2_grid
    );
    println!(
        "threshold p ≥ {:.4}: {}",
        report.threshold, report.threshold_rule
    );
    println!("out-of-fold AUROC, all prompts: {:.3}", report.auroc);
    println!(
        "{:<28} {:<28} {:>6} {:>14} {:>12}",
        "harmful set", "benign set", "AUROC", "harmful fired", "benign quiet"
    );
    for p in &report.pairs {
        println!(
            "{:<28} {:<28} {:>6.3} {:>13.1}% {:>11.1}%",
            p.harmful,
            p.benign,
            p.auroc,
            100.0 * p.harmful_recall,
            100.0 * p.benign_pass
        );
    }
    if let Some(a) = &report.answer {
        println!(
            "answer monitor over {}, checking every {} tokens: {} harmful / {} benign answers ({} harmful prompts refused by the base, left out), threshold p ≥ {:.4}; out of fold: {:.1}% of harmful answers caught, {:.1}% of benign answers fire",
            a.features,
            a.every,
            a.harmful_answers,
            a.benign_answers,
            a.refused_by_base,
            a.threshold,
            100.0 * a.harmful_caught,
            100.0 * a.benign_fired
        );
    }
    for e in &report.evaluation {
        print_evaluation(e, report.threshold);
    }
}

fn print_evaluation(e: &gate::EvalReport, threshold: f32) {
    println!(
        "evaluation only, {} (p ≥ {:.4}; not used for fitting or the threshold):",
        e.source, threshold
    );
    println!(
        "{:<28} {:>8} {:>6} {:>8} {:>8}",
        "dataset", "label", "n", "fired", "mean p"
    );
    for d in &e.datasets {
        let overlap = if d.in_training > 0 {
            format!(" ({} also in training)", d.in_training)
        } else {
            String::new()
        };
        println!(
            "{:<28} {:>8} {:>6} {:>7.1}% {:>8.3}{overlap}",
            d.name,
            d.label,
            d.n,
            100.0 * d.fired,
            d.mean_p
        );
    }
    println!("{:<28} {:<28} {:>6}", "harmful set", "benign set", "AUROC");
    for p in &e.pairs {
        println!("{:<28} {:<28} {:>6.3}", p.harmful, p.benign, p.auroc);
    }
}

/// Reads `USER: … ASSISTANT: …` text or prompt/response rows.
fn load_pairs(path: &Path) -> Result<Vec<RefusalPair>> {
    let read = |field: &str| {
        data::load_file(&FileSpec {
            path: path.to_owned(),
            harmful: true,
            text_field: Some(field.into()),
            filter: None,
        })
    };
    if let Ok(rows) = read("text") {
        return rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let t = r.text.trim().trim_end_matches("</s>");
                let (user, answer) = t.split_once("ASSISTANT:").with_context(|| {
                    format!(
                        "{} row {i}: `text` has no \"ASSISTANT:\" part",
                        path.display()
                    )
                })?;
                Ok(RefusalPair {
                    prompt: user.trim().trim_start_matches("USER:").trim().to_owned(),
                    response: answer.trim().to_owned(),
                })
            })
            .collect();
    }
    let prompts = read("prompt").with_context(|| {
        format!(
            "{}: pairs need a `text` field (\"USER: … ASSISTANT: …\") or `prompt` and `response` fields",
            path.display()
        )
    })?;
    let responses = read("response")?;
    Ok(prompts
        .into_iter()
        .zip(responses)
        .map(|(p, r)| RefusalPair {
            prompt: p.text,
            response: r.text,
        })
        .collect())
}

fn train_expert(args: &TrainExpertArgs, raw: &RawConfig) -> Result<()> {
    check_out(&args.out)?;
    check_expert_args(args)?;
    let examples = args.data.load()?;
    let (pairs, benign) = expert_pairs(args, &examples)?;
    let start = Instant::now();
    let mut model = load_model_with_hidden(raw)?;
    let head = LmHead::load(&model)?;
    let mut meta = provenance(&model, &examples);
    let (trained, report, t_fit) = fit_expert(args, &mut model, &head, &pairs, &benign)?;
    meta.insert(
        "heldout_refusal_accuracy".into(),
        format!("{:.4}", report.heldout_refusal_accuracy),
    );
    meta.insert(
        "heldout_benign_agreement".into(),
        format!("{:.4}", report.heldout_benign_agreement),
    );
    let st = trained.to_safetensors(meta);
    ngsd_fs::write_atomic(&args.out, &st.to_bytes())?;
    write_report(args.report.as_deref(), &report)?;
    print_expert_report(&report);
    print_written(
        &args.out,
        start,
        t_fit,
        Instant::now(),
        ["data", "optimisation"],
    );
    Ok(())
}

/// Rank, epochs and the benign weight are usable.
fn check_expert_args(args: &TrainExpertArgs) -> Result<()> {
    if args.rank == 0 || args.epochs == 0 {
        bail!("--rank and --epochs must be at least 1");
    }
    if !(args.benign_weight >= 0.0 && args.benign_weight.is_finite()) {
        bail!(
            "invalid --benign-weight {}: use a number ≥ 0, e.g. 3",
            args.benign_weight
        );
    }
    Ok(())
}

/// The (harmful prompt, refusal) pairs (from --pairs, and each harmful prompt paired with a
/// refusal drawn with the seed) and the benign prompts.
fn expert_pairs(
    args: &TrainExpertArgs,
    examples: &[Example],
) -> Result<(Vec<RefusalPair>, Vec<String>)> {
    let mut refusals = Vec::new();
    for path in &args.refusals {
        refusals.extend(
            data::load_file(&FileSpec {
                path: path.clone(),
                harmful: true,
                text_field: Some("response".into()),
                filter: None,
            })?
            .into_iter()
            .map(|e| e.text),
        );
    }
    let mut pairs = Vec::new();
    for path in &args.pairs {
        pairs.extend(load_pairs(path)?);
    }
    let harmful: Vec<&Example> = examples.iter().filter(|e| e.harmful).collect();
    if !harmful.is_empty() && refusals.is_empty() {
        bail!(
            "{} harmful prompts but no refusals to pair them with; add --refusals FILE (rows with a `response` field)",
            harmful.len()
        );
    }
    // Pair each harmful prompt with a refusal, drawn with the seed.
    let mut state = args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for e in &harmful {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        pairs.push(RefusalPair {
            prompt: e.text.clone(),
            response: refusals[(state % refusals.len() as u64) as usize].clone(),
        });
    }
    let benign: Vec<String> = examples
        .iter()
        .filter(|e| !e.harmful)
        .map(|e| e.text.clone())
        .collect();
    if pairs.is_empty() || benign.is_empty() {
        bail!(
            "the expert needs harmful prompts with refusals and benign prompts; got {} pairs and {} benign prompts",
            pairs.len(),
            benign.len()
        );
    }
    Ok((pairs, benign))
}

/// Teacher-forces the pairs and benign prompts through the base model and fits the adapter;
/// also returns when the fit began.
fn fit_expert(
    args: &TrainExpertArgs,
    model: &mut ngsd_runtime::Model,
    head: &LmHead,
    pairs: &[RefusalPair],
    benign: &[String],
) -> Result<(expert::TrainedExpert, expert::ExpertReport, Instant)> {
    let cfg = ExpertTrainConfig {
        rank: args.rank,
        epochs: args.epochs,
        learning_rate: args.learning_rate,
        benign_steps: args.benign_steps,
        benign_weight: args.benign_weight,
        refusal_sentences: args.refusal_sentences,
        seed: args.seed,
        ..ExpertTrainConfig::default()
    };
    eprintln!(
        "teacher-forcing {} refusals and {} benign continuations through the base model",
        pairs.len(),
        benign.len()
    );
    let mut enc = Encoder::new(model)?;
    let positions = expert::collect(&mut enc, pairs, benign, &cfg)?;
    let t_fit = Instant::now();
    let (trained, report) = expert::train_expert(&positions, head, &cfg)?;
    Ok((trained, report, t_fit))
}

/// The expert's size, loss per epoch and held-out figures, on stdout.
fn print_expert_report(report: &expert::ExpertReport) {
    println!(
        "head expert: rank {} ({} parameters), {} refusal + {} benign training positions",
        report.rank, report.parameters, report.train_positions.0, report.train_positions.1
    );
    for (i, (ce, kl)) in report.epoch_loss.iter().enumerate() {
        println!(
            "  epoch {}: refusal cross-entropy {ce:.3}, benign KL {kl:.4}",
            i + 1
        );
    }
    println!(
        "held out ({} refusal, {} benign positions): refusal top-1 {:.1}%, benign top-1 = base {:.1}%, benign KL {:.4}",
        report.heldout_positions.0,
        report.heldout_positions.1,
        100.0 * report.heldout_refusal_accuracy,
        100.0 * report.heldout_benign_agreement,
        report.heldout_benign_kl
    );
}
