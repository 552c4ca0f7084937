//! `cargo xtask train`: retrain the default model's gate neuron and head expert with the
//! committed data and settings, writing models/<model>/gate.safetensors and expert.safetensors
//! (and their reports) — the exact commands behind the committed files.

use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;

use crate::{setup, sh};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Train only the gate neuron.
    #[arg(long, conflicts_with = "expert_only")]
    pub gate_only: bool,
    /// Train only the head expert.
    #[arg(long)]
    pub expert_only: bool,
}

/// Folder of the default model's trained files, relative to the checkout.
pub const MODEL_DIR: &str = "models/smollm2-135m-instruct";

/// `ngsd train gate` arguments behind the committed gate.safetensors (after `--model`).
pub const GATE_ARGS: &[&str] = &[
    "train",
    "gate",
    // Every request shape: single-turn, conversations, raw openings, long and wrapped prompts.
    "--data",
    "models/smollm2-135m-instruct/gate-shapes.toml",
    // Prompt features chosen by cross-validation (final/intermediate layers, last/mean).
    "--features",
    "auto",
    // The answer monitor, trained on the base model's own greedy answers.
    "--monitor-prompts",
    "100",
    "--monitor-tokens",
    "32",
    "--out",
    "models/smollm2-135m-instruct/gate.safetensors",
    "--report",
    "models/smollm2-135m-instruct/gate-report.json",
];

/// `ngsd train expert` arguments behind the committed expert.safetensors (after `--model`).
pub const EXPERT_ARGS: &[&str] = &[
    "train",
    "expert",
    "--data",
    "models/smollm2-135m-instruct/train.toml",
    "--refusals",
    "models/training/expert_refusals.jsonl",
    "--pairs",
    "../shared/datasets/refusal_sft_vicuna.json",
    "--out",
    "models/smollm2-135m-instruct/expert.safetensors",
    "--report",
    "models/smollm2-135m-instruct/expert-report.json",
];

pub fn run(args: &TrainArgs) -> Result<()> {
    let root = sh::root();
    if !root.join("../shared/datasets").is_dir() {
        bail!(
            "the training data includes the public sets in ../shared/datasets (beside the checkout), which is missing; \
             see models/smollm2-135m-instruct/README.md for where to get them"
        );
    }
    let installed = setup::run(&setup::SetupArgs::default())?;
    sh::step("building ngsd (release)");
    sh::run(sh::cargo().args(["build", "--release", "--quiet", "-p", "ngsd-cli"]))?;
    let ngsd = root.join("target/release/ngsd");
    let start = Instant::now();
    for (name, argv, skip) in [
        ("gate neuron", GATE_ARGS, args.expert_only),
        ("head expert", EXPERT_ARGS, args.gate_only),
    ] {
        if skip {
            continue;
        }
        sh::step(&format!("training the {name}"));
        sh::run(
            Command::new(&ngsd)
                .current_dir(&root)
                .args(argv)
                .arg("--model")
                .arg(&installed.fp32),
        )?;
    }
    sh::step(&format!(
        "trained in {:.1} min; the files are in {MODEL_DIR}",
        start.elapsed().as_secs_f64() / 60.0
    ));
    Ok(())
}
