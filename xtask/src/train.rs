//! `cargo xtask train [--model NAME]`: retrain a pinned model's gate neuron and head expert with
//! the committed data and settings, writing models/<model>/gate.safetensors and
//! expert.safetensors (and their reports) — the exact commands behind the committed files. Every
//! model trains on the same data lists with the same settings; only the model and the output
//! folder change.

use std::path::Path;
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
    /// The pinned model to train for (models/NAME.toml); the files go to models/NAME/. A model
    /// other than the default must be set up first (`cargo xtask setup --model NAME`): training
    /// reads its fp32 package and never downloads or converts it.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// The converted package to train on: `fp32` (files in models/NAME/) or `q4` (the fused
    /// graph; files in models/NAME/q4/). Trained files serve only the build they were trained
    /// on, so a q4 server needs its own.
    #[arg(long, value_enum, default_value_t = Variant::Fp32)]
    pub variant: Variant,
}

/// A converted package of a pinned model that has trained files of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    Fp32,
    Q4,
}

/// The default model, whose files `cargo xtask train` retrains without `--model`.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// The gate's training set over every request shape. It names prompts, not tokens, so every
/// model reads it; it stays in the default model's folder, where it was first written, so that
/// the default model's committed files keep their exact command.
pub const GATE_DATA: &str = "models/smollm2-135m-instruct/gate-shapes.toml";
/// The head expert's training set, shared by every model the same way.
pub const EXPERT_DATA: &str = "models/smollm2-135m-instruct/train.toml";

/// Folder of `model`'s trained files for its fp32 package, relative to the checkout.
pub fn model_dir(model: &str) -> String {
    format!("models/{model}")
}

/// Folder of the trained files of `model`'s `variant` package: models/NAME/ for fp32,
/// models/NAME/q4/ for q4 (where `ngsd` looks for a q4 package's files).
pub fn variant_dir(model: &str, variant: Variant) -> String {
    match variant {
        Variant::Fp32 => model_dir(model),
        Variant::Q4 => format!("{}/q4", model_dir(model)),
    }
}

/// `ngsd train gate` arguments behind the committed gate.safetensors in `dir` (before
/// `--model`).
pub fn gate_args(dir: &str) -> Vec<String> {
    [
        "train",
        "gate",
        // Every request shape: single-turn, conversations, raw openings, long and wrapped prompts.
        "--data",
        GATE_DATA,
        // Prompt features chosen by cross-validation among the layers the package exports
        // (final/intermediate layers, last/mean).
        "--features",
        "auto",
        // The answer monitor, trained on the base model's own greedy answers.
        "--monitor-prompts",
        "100",
        "--monitor-tokens",
        "32",
        "--out",
        &format!("{dir}/gate.safetensors"),
        "--report",
        &format!("{dir}/gate-report.json"),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `ngsd train expert` arguments behind the committed expert.safetensors in `dir` (before
/// `--model`).
pub fn expert_args(dir: &str) -> Vec<String> {
    [
        "train",
        "expert",
        "--data",
        EXPERT_DATA,
        "--refusals",
        "models/training/expert_refusals.jsonl",
        "--pairs",
        "../shared/datasets/refusal_sft_vicuna.json",
        "--out",
        &format!("{dir}/expert.safetensors"),
        "--report",
        &format!("{dir}/expert-report.json"),
    ]
    .map(str::to_owned)
    .to_vec()
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let root = sh::root();
    if !root.join("../shared/datasets").is_dir() {
        bail!(
            "the training data includes the public sets in ../shared/datasets (beside the checkout), which is missing; \
             see models/smollm2-135m-instruct/README.md for where to get them"
        );
    }
    let fp32 = if args.model == DEFAULT_MODEL {
        setup::run(&setup::SetupArgs::default())?.fp32
    } else {
        setup::existing_fp32(&args.model)?
    };
    let package = match args.variant {
        Variant::Fp32 => fp32,
        Variant::Q4 => existing_q4(&fp32)?,
    };
    let dir = variant_dir(&args.model, args.variant);
    std::fs::create_dir_all(root.join(&dir))?;
    sh::step("building ngsd (release)");
    sh::run(sh::cargo().args(["build", "--release", "--quiet", "-p", "ngsd-cli"]))?;
    let ngsd = root.join("target/release/ngsd");
    let start = Instant::now();
    for (name, argv, skip) in [
        ("gate neuron", gate_args(&dir), args.expert_only),
        ("head expert", expert_args(&dir), args.gate_only),
    ] {
        if skip {
            continue;
        }
        sh::step(&format!("training the {name}"));
        sh::run(&mut train_command(&ngsd, &root, &argv, &package))?;
    }
    sh::step(&format!(
        "trained in {:.1} min; the files are in {dir}",
        start.elapsed().as_secs_f64() / 60.0
    ));
    Ok(())
}

/// The q4 package beside `fp32`, which setup converts with it; its files must be current.
fn existing_q4(fp32: &Path) -> Result<std::path::PathBuf> {
    let q4 = fp32.with_file_name("q4");
    if !q4.join("ngsd-model.json").is_file() {
        bail!(
            "{} is missing; run `cargo xtask setup` (or `cargo xtask setup --model NAME`) first",
            q4.display()
        );
    }
    Ok(q4)
}

/// `ngsd <argv> --model <package>`, run from the checkout (the data paths are relative to it).
fn train_command(ngsd: &Path, root: &Path, argv: &[String], package: &Path) -> Command {
    let mut cmd = Command::new(ngsd);
    cmd.current_dir(root).args(argv).arg("--model").arg(package);
    cmd
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The default model's arguments, as they were before `--model` existed: the committed
    /// files' `command` metadata records exactly these.
    #[test]
    fn the_default_model_keeps_its_commands() {
        assert_eq!(
            gate_args(&model_dir(DEFAULT_MODEL)),
            [
                "train",
                "gate",
                "--data",
                "models/smollm2-135m-instruct/gate-shapes.toml",
                "--features",
                "auto",
                "--monitor-prompts",
                "100",
                "--monitor-tokens",
                "32",
                "--out",
                "models/smollm2-135m-instruct/gate.safetensors",
                "--report",
                "models/smollm2-135m-instruct/gate-report.json",
            ]
        );
        assert_eq!(
            expert_args(&model_dir(DEFAULT_MODEL)),
            [
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
            ]
        );
    }

    #[test]
    fn another_model_reads_the_same_data_and_writes_its_own_folder() {
        let name = "qwen2.5-coder-0.5b-instruct";
        for (args, default) in [
            (
                gate_args(&model_dir(name)),
                gate_args(&model_dir(DEFAULT_MODEL)),
            ),
            (
                expert_args(&model_dir(name)),
                expert_args(&model_dir(DEFAULT_MODEL)),
            ),
        ] {
            assert_eq!(args.len(), default.len());
            for (a, d) in args.iter().zip(&default) {
                if a != d {
                    assert_eq!(*a, d.replace(DEFAULT_MODEL, name), "only outputs differ");
                    assert!(a.starts_with("models/qwen2.5-coder-0.5b-instruct/"), "{a}");
                }
            }
            let data = args.iter().position(|a| a == "--data").expect("--data");
            assert_eq!(args[data + 1], default[data + 1], "the same data list");
        }
    }

    /// Every committed trained file (in any models/<name>/ or models/<name>/q4/) was made by
    /// `cargo xtask train --model <name> [--variant q4]`: its `command` metadata is that
    /// command's arguments, then the package. Reads only the committed files, never a
    /// converted package.
    #[test]
    fn committed_trained_files_record_the_train_commands() {
        let models = sh::root().join("models");
        let mut checked = 0;
        for entry in std::fs::read_dir(&models).expect("models/ is readable") {
            let Some(name) = entry
                .expect("a folder entry")
                .file_name()
                .to_str()
                .map(str::to_owned)
            else {
                continue;
            };
            for (variant, package) in [(Variant::Fp32, "fp32"), (Variant::Q4, "q4")] {
                checked += check_commands(&name, &variant_dir(&name, variant), package);
            }
        }
        assert!(checked >= 2, "the default model's two files at least");
    }

    /// Checks the trained files in `dir` (if any) against their commands; returns how many.
    fn check_commands(name: &str, dir: &str, package: &str) -> usize {
        let mut checked = 0;
        for (file, args) in [
            ("gate.safetensors", gate_args(dir)),
            ("expert.safetensors", expert_args(dir)),
        ] {
            let path = sh::root().join(dir).join(file);
            if !path.is_file() {
                continue;
            }
            let command = metadata(&path)
                .remove("command")
                .unwrap_or_else(|| panic!("{} has no command", path.display()));
            let expected = format!("ngsd {} --model ", args.join(" "));
            assert!(
                command.starts_with(&expected),
                "{}: `{command}` is not `{expected}…`",
                path.display()
            );
            assert!(
                std::path::Path::new(&command[expected.len()..])
                    .ends_with(format!(".cache/models/{name}/{package}")),
                "{}: trained on `{}`, not the {package} package",
                path.display(),
                &command[expected.len()..]
            );
            checked += 1;
        }
        checked
    }

    /// The `__metadata__` of a safetensors file.
    fn metadata(path: &Path) -> HashMap<String, String> {
        let bytes = std::fs::read(path).expect("the file is readable");
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors");
        meta.metadata().clone().unwrap_or_default()
    }
}
