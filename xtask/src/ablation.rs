//! `cargo xtask ablation`: runs the committed dev suite through `ngsd eval` and regenerates the
//! ablation section of docs/RESULTS.md (table and plots under docs/ablation/).

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{demo, setup, sh};

/// The committed suite for the dev split (datasets from ../shared/datasets).
pub const DEV_SUITE: &str = "crates/ngsd-eval/suites/dev.toml";
const START: &str = "<!-- ablation:start -->";
const END: &str = "<!-- ablation:end -->";

#[derive(Debug, Args)]
pub struct AblationArgs {
    /// At most N samples per dataset (the full dev split is ~1,100 prompts per configuration).
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
    /// The suite to run.
    #[arg(long, default_value = DEV_SUITE)]
    pub suite: String,
}

pub fn run(args: &AblationArgs) -> Result<()> {
    let installed = setup::run(&setup::SetupArgs::default())?;
    let root = sh::root();
    let ngsd = demo::build_release()?;
    let out = root.join("target/ablation");
    let started = std::time::Instant::now();
    sh::step(&format!(
        "running {} (limit {} per dataset; resumable)",
        args.suite, args.limit
    ));
    sh::run(
        Command::new(&ngsd)
            .current_dir(&root)
            .args([
                "eval",
                "--suite",
                &args.suite,
                "--limit",
                &args.limit.to_string(),
                // one request at a time: the tables' tok/s and speed.svg compare configurations
                // by single-request speed, which a batch would mix with the others' load
                "--batch",
                "1",
            ])
            .arg("--out")
            .arg(&out)
            .arg("--model")
            .arg(&installed.fp32),
    )?;
    let minutes = started.elapsed().as_secs_f64() / 60.0;

    let docs = root.join("docs/ablation");
    std::fs::create_dir_all(&docs)?;
    for f in ["results.json", "results.md", "tradeoff.svg", "speed.svg"] {
        sh::copy_atomic(&out.join(f), &docs.join(f))?;
    }
    let table = std::fs::read_to_string(out.join("results.md"))?;
    let results_path = root.join("docs/RESULTS.md");
    let text = std::fs::read_to_string(&results_path).context("reading docs/RESULTS.md")?;
    let (Some(a), Some(b)) = (text.find(START), text.find(END)) else {
        bail!("docs/RESULTS.md has no {START} … {END} section to replace");
    };
    let section = format!(
        "{START}\nCommand: `cargo xtask ablation --limit {}` (suite `{}`, model fp32, greedy); \
         generated on {} in {minutes:.0} min of this run (stored answers are reused).\n\n\
         ![ASR against benign refusal](ablation/tradeoff.svg)\n\n![tok/s per configuration](ablation/speed.svg)\n\n{}\n{END}",
        args.limit,
        args.suite,
        today(),
        table.trim()
    );
    let new = format!("{}{}{}", &text[..a], section, &text[b + END.len()..]);
    ngsd_fs::write_atomic(&results_path, new.as_bytes())?;
    sh::step("docs/RESULTS.md and docs/ablation/ updated");
    Ok(())
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "today".into())
}
