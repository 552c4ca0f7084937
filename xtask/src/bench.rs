//! `cargo xtask bench-compare`: ngsd against llama.cpp on the same GGUF, prefill and decode.
//!
//! Scenarios (`--scenarios`): `decode@C` generates `--new-tokens` tokens after a C-token context
//! and reports tokens per second of the single-token steps (llama.cpp: `llama-bench -n N -d C`);
//! `prefill@P` feeds a P-token prompt and reports prompt tokens per second (ngsd:
//! `Model::prefill`, chunked as in serving; llama.cpp: `llama-bench -p P`, its own batching).
//! ngsd's context or prompt is the first C (P) token ids of one chat-templated prompt (notes
//! pasted before the benchmark question); llama-bench feeds its own tokens, the same count.
//!
//! Runners: `ngsd <variant>` for each `--variants` package (benches/src/bin/decode_speed.rs),
//! and `llama.cpp` (llama-bench built from the PyPI sdist, see llama_cpp.rs) on the source GGUF.
//! Same thread count for all; within each round every scenario runs every runner once, in turn,
//! so drifts of machine speed hit all of them; ratios are taken per round and the median is
//! reported. Each round also measures memory copy bandwidth, for the fraction of the bandwidth
//! limit a decode step reaches (weight bytes read per token × tokens per second ÷ copy rate).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::{llama_cpp, setup, sh};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Tokens generated in the decode scenarios.
    #[arg(long, default_value_t = 128)]
    pub new_tokens: usize,
    /// Rounds (each runs every scenario on every runner once).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Threads for every runner.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// ngsd model variants to measure: fp32, q4, int8, or the folder of any other package
    /// (a value with a `/`, e.g. an experimental conversion).
    #[arg(long, value_delimiter = ',', default_value = "q4")]
    pub variants: Vec<String>,
    /// What to measure: decode@CONTEXT and prefill@PROMPT_TOKENS.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "decode@40,decode@1500,prefill@512,prefill@4096"
    )]
    pub scenarios: Vec<String>,
    /// Leave llama.cpp out (it is built on first use: about 15 minutes).
    #[arg(long)]
    pub no_llama_cpp: bool,
    /// Measure another pinned model (a name under models/, set up first with `cargo xtask
    /// setup --model NAME`) and llama.cpp on that model's GGUF, instead of the default model.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Decode(usize),
    Prefill(usize),
}

impl Scenario {
    fn parse(s: &str) -> Result<Self> {
        let (kind, n) = s
            .split_once('@')
            .with_context(|| format!("scenario `{s}`: write decode@CONTEXT or prefill@TOKENS"))?;
        let n: usize = n
            .parse()
            .with_context(|| format!("scenario `{s}`: `{n}` is not a token count"))?;
        match kind {
            "decode" if n > 0 => Ok(Scenario::Decode(n)),
            "prefill" if n > 0 => Ok(Scenario::Prefill(n)),
            _ => bail!("scenario `{s}`: write decode@CONTEXT or prefill@TOKENS"),
        }
    }

    fn label(self) -> String {
        match self {
            Scenario::Decode(c) => format!("decode tok/s at a {c}-token context"),
            Scenario::Prefill(p) => format!("prefill tok/s, {p}-token prompt"),
        }
    }
}

/// What a run needs besides the runner: binaries, prompts, the GGUF.
struct Setup {
    rust_bin: PathBuf,
    llama_bench: Option<PathBuf>,
    gguf: PathBuf,
    prompt_ids: PathBuf,
    threads: usize,
    new_tokens: usize,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let installed = match &args.model {
        None => setup::run(&setup::SetupArgs::default())?,
        Some(model) => setup::existing(model)?,
    };
    let scenarios = args
        .scenarios
        .iter()
        .map(|s| Scenario::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let mut runners: Vec<(String, Option<PathBuf>)> = Vec::new();
    for v in &args.variants {
        let dir = match v.as_str() {
            "fp32" => installed.fp32.clone(),
            "q4" => installed.q4.clone(),
            "int8" => installed
                .int8
                .clone()
                .context("no int8 variant was set up for this model")?,
            path if path.contains('/') => PathBuf::from(path),
            other => bail!(
                "unknown variant `{other}`; use fp32, q4, int8 or a package folder (with a `/`)"
            ),
        };
        if !dir.join("ngsd-model.json").is_file() {
            bail!(
                "{} is not a model package (no ngsd-model.json)",
                dir.display()
            );
        }
        let name = match v.rsplit_once('/') {
            Some((_, last)) if !last.is_empty() => last,
            _ => v.as_str(),
        };
        runners.push((format!("ngsd {name}"), Some(dir)));
    }
    let llama_bench = if args.no_llama_cpp {
        None
    } else {
        runners.push(("llama.cpp".into(), None));
        Some(llama_cpp::ensure_llama_bench(&installed.python)?)
    };
    let setup = prepare(args, &installed, llama_bench, &scenarios)?;
    let mut results: BTreeMap<(Scenario, usize), Vec<f64>> = BTreeMap::new();
    let mut copy_rates = Vec::new();
    let mut loads = Vec::new();
    for round in 1..=args.rounds {
        let load = load_average();
        sh::step(&format!(
            "round {round}/{}; load average {load}",
            args.rounds
        ));
        loads.push(load);
        copy_rates.push(copy_bandwidth(&setup)?);
        for &scenario in &scenarios {
            for (i, (name, dir)) in runners.iter().enumerate() {
                let tok_s = match dir {
                    Some(dir) => ngsd(&setup, dir, scenario)?,
                    None => llama(&setup, scenario)?,
                };
                eprintln!("    {:<40} {name:<12} {tok_s:9.1}", scenario.label());
                results.entry((scenario, i)).or_default().push(tok_s);
            }
        }
    }
    report(
        args,
        &installed,
        &runners,
        &scenarios,
        &results,
        &copy_rates,
        &loads,
    )
}

/// The 1-, 5- and 15-minute load averages (other work on the machine skews every runner).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The CPU model and the number of logical CPUs, for the record.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{n} logical CPUs, {cpu}")
}

fn prepare(
    args: &BenchArgs,
    installed: &setup::Installed,
    llama_bench: Option<PathBuf>,
    scenarios: &[Scenario],
) -> Result<Setup> {
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
    let root = sh::root();
    let rust_bin = root.join("target/release/decode_speed");
    let out_dir = root.join("target/bench-compare");
    std::fs::create_dir_all(&out_dir)?;
    let longest = scenarios
        .iter()
        .map(|s| match s {
            Scenario::Decode(c) | Scenario::Prefill(c) => *c,
        })
        .max()
        .unwrap_or(0);
    let prompt_ids = out_dir.join("prompt_ids.json");
    sh::run(
        Command::new(&rust_bin)
            .arg("--model")
            .arg(&installed.fp32)
            .arg("--prompt-ids")
            .arg(&prompt_ids)
            .arg("--write-prompt-ids")
            .args(["--context-tokens", &longest.to_string()]),
    )?;
    Ok(Setup {
        rust_bin,
        llama_bench,
        gguf: installed.gguf.clone(),
        prompt_ids,
        threads: args.threads,
        new_tokens: args.new_tokens,
    })
}

fn run_json(cmd: &mut Command) -> Result<Value> {
    let out = sh::output(cmd)?;
    let start = out
        .find(['{', '['])
        .context("no JSON in the runner's output")?;
    serde_json::from_str(out[start..].trim()).context("parsing the runner's JSON")
}

fn ngsd(setup: &Setup, model: &Path, scenario: Scenario) -> Result<f64> {
    let mut cmd = Command::new(&setup.rust_bin);
    cmd.arg("--model")
        .arg(model)
        .args(["--threads", &setup.threads.to_string()]);
    let (Scenario::Decode(c) | Scenario::Prefill(c)) = scenario;
    cmd.arg("--prompt-ids")
        .arg(&setup.prompt_ids)
        .args(["--prompt-len", &c.to_string()]);
    let new = match scenario {
        Scenario::Decode(_) => setup.new_tokens,
        Scenario::Prefill(_) => 2,
    };
    let v = run_json(cmd.args(["--new-tokens", &new.to_string()]))?;
    let field = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("decode_speed: no `{k}`"))
    };
    Ok(match scenario {
        Scenario::Decode(_) => field("decode_tok_s")?,
        Scenario::Prefill(p) => p as f64 / (field("prefill_ms")? / 1e3),
    })
}

fn llama(setup: &Setup, scenario: Scenario) -> Result<f64> {
    let bin = setup
        .llama_bench
        .as_ref()
        .context("llama.cpp was not built")?;
    let (p, n, d) = match scenario {
        Scenario::Decode(c) => (0, setup.new_tokens, c),
        Scenario::Prefill(p) => (p, 0, 0),
    };
    let v = run_json(
        Command::new(bin)
            .arg("-m")
            .arg(&setup.gguf)
            .args(["-t", &setup.threads.to_string()])
            .args(["-p", &p.to_string(), "-n", &n.to_string()])
            .args(["-d", &d.to_string(), "-r", "1", "-o", "json"]),
    )?;
    v[0]["avg_ts"]
        .as_f64()
        .context("llama-bench printed no avg_ts")
}

fn copy_bandwidth(setup: &Setup) -> Result<f64> {
    let v = run_json(
        Command::new(&setup.rust_bin)
            .args(["--copy-bandwidth", "--model", ".", "--prompt-ids", "."])
            .args(["--threads", &setup.threads.to_string()]),
    )?;
    v["copy_gb_s"].as_f64().context("no copy_gb_s")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Weight bytes each runner reads per generated token (xtask/py/weight_bytes.py).
fn weight_bytes(
    installed: &setup::Installed,
    runners: &[(String, Option<PathBuf>)],
) -> Result<Vec<f64>> {
    let script = sh::root().join("xtask/py/weight_bytes.py");
    runners
        .iter()
        .map(|(_, dir)| {
            let mut cmd = Command::new(&installed.python);
            cmd.arg(&script);
            match dir {
                Some(d) => cmd.arg("--onnx").arg(d.join("model.onnx")),
                None => cmd.arg("--gguf").arg(&installed.gguf),
            };
            run_json(&mut cmd)?["weight_bytes_per_token"]
                .as_f64()
                .context("weight_bytes.py printed no weight_bytes_per_token")
        })
        .collect()
}

fn report(
    args: &BenchArgs,
    installed: &setup::Installed,
    runners: &[(String, Option<PathBuf>)],
    scenarios: &[Scenario],
    results: &BTreeMap<(Scenario, usize), Vec<f64>>,
    copy_rates: &[f64],
    loads: &[String],
) -> Result<()> {
    let reference = runners.len() - 1;
    let names: Vec<&str> = runners.iter().map(|(n, _)| n.as_str()).collect();
    println!(
        "\n| scenario | {} | {} |",
        names.join(" | "),
        names[..reference]
            .iter()
            .map(|n| format!("{n} ÷ {}", names[reference]))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(2 * runners.len() - 1));
    let mut rows = Vec::new();
    for &s in scenarios {
        let speeds: Vec<&Vec<f64>> = (0..runners.len()).map(|i| &results[&(s, i)]).collect();
        let ratios: Vec<f64> = (0..reference)
            .map(|i| {
                median(
                    speeds[i]
                        .iter()
                        .zip(speeds[reference])
                        .map(|(a, b)| a / b)
                        .collect(),
                )
            })
            .collect();
        let cells: Vec<String> = speeds
            .iter()
            .map(|v| format!("{:.1}", median(v.to_vec())))
            .chain(ratios.iter().map(|r| format!("{r:.2}")))
            .collect();
        println!("| {} | {} |", s.label(), cells.join(" | "));
        rows.push(json!({"scenario": s.label(), "tok_s": speeds, "ratios_median": ratios}));
    }
    let bytes = weight_bytes(installed, runners)?;
    let copy = median(copy_rates.to_vec());
    for &s in scenarios
        .iter()
        .filter(|s| matches!(s, Scenario::Decode(_)))
    {
        let cells: Vec<String> = (0..runners.len())
            .map(|i| {
                let rate = bytes[i] * median(results[&(s, i)].clone()) / 1e9;
                format!("{rate:.1} GB/s = {:.0}%", 100.0 * rate / copy)
            })
            .collect();
        println!(
            "| weights read at {} ÷ copy bandwidth {copy:.1} GB/s | {} |{}",
            s.label(),
            cells.join(" | "),
            " |".repeat(reference)
        );
    }
    let path = sh::root().join("target/bench-compare/results.json");
    let model = args.model.as_deref().unwrap_or(crate::train::DEFAULT_MODEL);
    let doc = json!({"model": model, "rows": rows, "copy_gb_s": copy_rates, "weight_bytes_per_token": bytes,
        "runners": names, "threads": args.threads, "rounds": args.rounds, "new_tokens": args.new_tokens,
        "load_average_per_round": loads, "load_average_after": load_average(), "machine": machine()});
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    println!(
        "\nmodel {model}; {}; load average at each round's start: {}, after: {}",
        machine(),
        loads.join(" / "),
        load_average()
    );
    println!(
        "{} threads, {} rounds (medians), {} new tokens per decode run; weight bytes per token: {}; raw figures in target/bench-compare/results.json",
        args.threads,
        args.rounds,
        args.new_tokens,
        names
            .iter()
            .zip(&bytes)
            .map(|(n, b)| format!("{n} {:.1} MB", b / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
