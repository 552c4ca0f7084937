//! `cargo xtask bench-compare`: ngsd's decode speed against other runners on the same prompt.
//!
//! Runners (all greedy, forced to N new tokens, 2 threads, session load excluded, one warm-up):
//! - `ngsd`: the Rust runtime (benches/src/bin/decode_speed.rs);
//! - `python-plain`: the usual Python onnxruntime loop, `session.run` with numpy feeds (the KV
//!   cache goes through numpy every step);
//! - `python-ortvalue`: a tuned Python loop that keeps the KV cache in OrtValues;
//! - `llama.cpp` (with --llama-cpp): llama-cpp-python on the source GGUF.
//!
//! Runners alternate within each round (A B A B ...), so drifts of machine speed hit all of them;
//! ratios are taken per round and the median is reported. Every runner's tokens are compared
//! with ngsd's: a speed figure is only meaningful if the outputs agree.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use crate::{setup, sh};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Tokens generated per run.
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// Rounds (each runs every runner once).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Intra-op threads for every runner.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Also measure llama.cpp (installs llama-cpp-python into the venv: builds llama.cpp from
    /// source, several minutes the first time).
    #[arg(long)]
    pub llama_cpp: bool,
    /// Prompt length in tokens: 0 is the short chat prompt (38 tokens); larger values paste
    /// notes before the question, to measure decoding at a long context.
    #[arg(long, default_value_t = 0)]
    pub prompt_tokens: usize,
    /// Model variants to measure.
    #[arg(long, value_delimiter = ',', default_value = "fp32,int8")]
    pub variants: Vec<String>,
}

struct Runner {
    name: &'static str,
    cmd: Command,
}

fn run_json(cmd: &mut Command) -> Result<Value> {
    let out = sh::output(cmd)?;
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON line in the output")?;
    serde_json::from_str(line).context("parsing the runner's JSON line")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let installed = setup::run(&setup::SetupArgs::default())?;
    let root = sh::root();
    let python = installed.python.clone();
    if args.llama_cpp {
        ensure_llama_cpp(&python)?;
    }
    sh::step("building the Rust runner (release)");
    sh::run(sh::cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "ngsd-benches",
        "--bin",
        "decode_speed",
    ]))?;
    let rust_bin = root.join("target/release/decode_speed");
    let out_dir = root.join("target/bench-compare");
    std::fs::create_dir_all(&out_dir)?;
    let ids = out_dir.join("prompt_ids.json");
    sh::run(
        Command::new(&rust_bin)
            .arg("--model")
            .arg(&installed.fp32)
            .arg("--prompt-ids")
            .arg(&ids)
            .arg("--write-prompt-ids")
            .arg("--context-tokens")
            .arg(args.prompt_tokens.to_string()),
    )?;

    let mut report = Vec::new();
    let mut rows = Vec::new();
    for variant in &args.variants {
        let model = match variant.as_str() {
            "fp32" => installed.fp32.clone(),
            "int8" => installed
                .int8
                .clone()
                .context("setup produced no int8 variant")?,
            other => bail!("unknown variant `{other}`; use fp32 and/or int8"),
        };
        let mut runners = runners(args, &rust_bin, &python, &model, &ids, &installed.gguf);
        let mut speeds: Vec<Vec<f64>> = vec![Vec::new(); runners.len()];
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); runners.len()];
        let mut agree: Vec<String> = vec![String::new(); runners.len()];
        for round in 1..=args.rounds {
            sh::step(&format!("{variant}: round {round}/{}", args.rounds));
            let mut results = Vec::new();
            for r in runners.iter_mut() {
                let v = run_json(&mut r.cmd).with_context(|| format!("runner {}", r.name))?;
                results.push(v);
            }
            let rust_speed = results[0]["decode_tok_s"]
                .as_f64()
                .context("decode_tok_s")?;
            let rust_tokens = &results[0]["tokens"];
            for (i, v) in results.iter().enumerate() {
                let s = v["decode_tok_s"].as_f64().context("decode_tok_s")?;
                speeds[i].push(s);
                ratios[i].push(rust_speed / s);
                let same = &v["tokens"] == rust_tokens;
                let n_same = v["tokens"]
                    .as_array()
                    .zip(rust_tokens.as_array())
                    .map(|(a, b)| a.iter().zip(b).take_while(|(x, y)| x == y).count())
                    .unwrap_or(0);
                agree[i] = if same {
                    "identical".into()
                } else {
                    format!("first {n_same} equal")
                };
                eprintln!(
                    "    {:<16} {s:7.1} tok/s  prefill {:6.1} ms",
                    runners[i].name,
                    v["prefill_ms"].as_f64().unwrap_or(f64::NAN)
                );
            }
        }
        for (i, r) in runners.iter().enumerate() {
            let row = serde_json::json!({
                "variant": variant,
                "runner": r.name,
                "decode_tok_s_median": median(speeds[i].clone()),
                "decode_tok_s_min": speeds[i].iter().copied().fold(f64::INFINITY, f64::min),
                "decode_tok_s_max": speeds[i].iter().copied().fold(0.0, f64::max),
                "ngsd_over_this_median": median(ratios[i].clone()),
                "tokens_vs_ngsd": agree[i],
            });
            rows.push(format!(
                "| {variant} | {} | {:.1} ({:.1}–{:.1}) | {:.2} | {} |",
                r.name,
                row["decode_tok_s_median"].as_f64().unwrap_or(f64::NAN),
                row["decode_tok_s_min"].as_f64().unwrap_or(f64::NAN),
                row["decode_tok_s_max"].as_f64().unwrap_or(f64::NAN),
                row["ngsd_over_this_median"].as_f64().unwrap_or(f64::NAN),
                agree[i]
            ));
            report.push(row);
        }
    }
    let path = out_dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!(
        "\n| model | runner | decode tok/s, median (min–max) | ngsd ÷ runner (median of per-round ratios) | tokens vs ngsd |"
    );
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!(
        "\n{} prompt tokens, {} new tokens, {} rounds, {} threads; raw figures in {}",
        serde_json::from_str::<Vec<u32>>(&std::fs::read_to_string(&ids)?)?.len(),
        args.new_tokens,
        args.rounds,
        args.threads,
        path.strip_prefix(&root).unwrap_or(&path).display()
    );
    Ok(())
}

fn runners(
    args: &BenchArgs,
    rust_bin: &Path,
    python: &Path,
    model: &Path,
    ids: &Path,
    gguf: &Path,
) -> Vec<Runner> {
    let n = args.new_tokens.to_string();
    let t = args.threads.to_string();
    let py = sh::root().join("xtask/py");
    let mut rust = Command::new(rust_bin);
    rust.arg("--model")
        .arg(model)
        .arg("--prompt-ids")
        .arg(ids)
        .args(["--new-tokens", &n, "--threads", &t]);
    let mut v = vec![Runner {
        name: "ngsd",
        cmd: rust,
    }];
    for (name, mode) in [("python-plain", "plain"), ("python-ortvalue", "ortvalue")] {
        let mut c = Command::new(python);
        c.arg(py.join("bench_ort.py"))
            .arg("--model")
            .arg(model)
            .arg("--prompt-ids")
            .arg(ids)
            .args(["--new-tokens", &n, "--threads", &t, "--mode", mode]);
        v.push(Runner { name, cmd: c });
    }
    if args.llama_cpp {
        let mut c = Command::new(python);
        c.arg(py.join("bench_llamacpp.py"))
            .arg("--gguf")
            .arg(gguf)
            .arg("--prompt-ids")
            .arg(ids)
            .args(["--new-tokens", &n, "--threads", &t]);
        v.push(Runner {
            name: "llama.cpp",
            cmd: c,
        });
    }
    v
}

fn ensure_llama_cpp(python: &PathBuf) -> Result<()> {
    let has = Command::new(python)
        .args(["-c", "import llama_cpp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has {
        return Ok(());
    }
    sh::step(
        "installing llama-cpp-python into the venv (builds llama.cpp from source; several minutes)",
    );
    sh::run(
        setup::pip(python, "install")
            .arg("-r")
            .arg(sh::root().join("xtask/py/requirements-bench.txt")),
    )
}
