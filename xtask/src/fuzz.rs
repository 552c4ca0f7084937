//! `cargo xtask fuzz`: runs the cargo-fuzz targets in `fuzz/` (nightly, libFuzzer) for a given
//! time each, seeded from the committed corpora, and prints a table row per target (minutes,
//! executions, crashes) for docs/RESULTS.md. A crash leaves its input in
//! `fuzz/artifacts/<target>/`: turn it into a regression test and fix the code.

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::sh;

/// Every fuzz target (binaries of `fuzz/Cargo.toml`).
pub const TARGETS: &[&str] = &[
    "openai_request",
    "reflection_scores",
    "suite_toml",
    "model_manifest",
    "gate_params",
    "chat_template",
];

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Minutes per target.
    #[arg(long, default_value_t = 1.0)]
    pub minutes: f64,
    /// Run only this target (repeatable); default: all.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
}

/// What one run found.
struct Run {
    target: String,
    executions: u64,
    crashed: bool,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    if args.minutes.is_nan() || args.minutes <= 0.0 {
        bail!("--minutes must be positive");
    }
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in &args.targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!(
                    "unknown fuzz target `{t}`; the targets are {}",
                    TARGETS.join(", ")
                );
            }
        }
        args.targets.iter().map(String::as_str).collect()
    };
    let fuzz_dir = sh::root().join("fuzz");
    sh::step(
        "building the fuzz targets (cargo +nightly fuzz build; install with `cargo install cargo-fuzz`)",
    );
    sh::run(
        Command::new("cargo")
            .args(["+nightly", "fuzz", "build", "-s", "none"])
            .current_dir(&fuzz_dir),
    )?;
    let seconds = (args.minutes * 60.0).round().max(1.0) as u64;
    let mut runs = Vec::new();
    for target in targets {
        sh::step(&format!("fuzzing {target} for {seconds} s"));
        runs.push(run_target(&fuzz_dir, target, seconds)?);
    }
    println!("| target | minutes | executions | crashes |\n| --- | ---: | ---: | ---: |");
    for r in &runs {
        println!(
            "| {} | {} | {} | {} |",
            r.target,
            args.minutes,
            r.executions,
            u8::from(r.crashed)
        );
    }
    if let Some(r) = runs.iter().find(|r| r.crashed) {
        bail!(
            "{} crashed: the input is in fuzz/artifacts/{}/; add it as a regression test and fix the code",
            r.target,
            r.target
        );
    }
    Ok(())
}

fn run_target(fuzz_dir: &std::path::Path, target: &str, seconds: u64) -> Result<Run> {
    // New inputs go to an ignored folder; the committed seeds are read only.
    let work = sh::root().join("target/fuzz-corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let out = Command::new("cargo")
        .args(["+nightly", "fuzz", "run", "-s", "none", target])
        .arg(&work)
        .arg(fuzz_dir.join("corpus").join(target))
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-print_final_stats=1",
            "-max_len=4096",
            "-timeout=10",
        ])
        .current_dir(fuzz_dir)
        .stderr(std::process::Stdio::piped())
        .output()
        .with_context(|| format!("cannot run the fuzz target {target}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let executions = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let crashed = !out.status.success();
    if crashed {
        eprintln!("{log}");
    }
    Ok(Run {
        target: target.to_string(),
        executions,
        crashed,
    })
}
