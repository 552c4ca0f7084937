//! `cargo xtask test`: the whole suite, as CI runs it.

use std::process::Command;

use anyhow::Result;
use clap::Args;

use crate::{deploy, setup, sh, synthetic};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy (faster local runs; CI runs them).
    #[arg(long)]
    pub no_lint: bool,
    /// Extra arguments passed to `cargo test` (after `--` goes to the test binaries).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_test_args: Vec<String>,
}

pub fn run(args: &TestArgs) -> Result<()> {
    let installed = setup::run(&setup::SetupArgs::default())?;
    if !args.no_lint {
        lint()?;
    }
    sh::step("building the workspace (gate plugins included)");
    sh::run(sh::cargo().args(["build", "--workspace", "--quiet"]))?;
    sh::step("the synthetic qwen2 model (xtask/py/synthetic_gguf.py, converted to fp32 and q4)");
    let synthetic = synthetic::build(&installed.python)?;
    cargo_tests(args, &installed, &synthetic)?;
    golden_gates()?;
    python_checks(&installed)?;
    // The qwen2 code paths (biases, untied head, qwen2 tokenizer, ChatML) on a tiny random
    // model: converter refusals, fp32 against numpy, q4 against the GGUF, ngsd's greedy loop.
    sh::step(
        "checks of the synthetic qwen2 model (test_synthetic, test_export, test_fused, greedy_check)",
    );
    let ngsd = sh::root().join("target/debug/ngsd");
    synthetic::check(&installed.python, &synthetic, &ngsd)?;
    sh::step("deployment files (deploy/*.yaml against the Kubernetes schemas and the server)");
    deploy::check(std::path::Path::new(&setup::which_python()?), &ngsd)?;
    sh::step("all checks passed");
    Ok(())
}

/// `cargo fmt --check` and clippy with warnings as errors.
fn lint() -> Result<()> {
    sh::step("cargo fmt --check");
    sh::run(sh::cargo().args(["fmt", "--all", "--", "--check"]))?;
    sh::step("cargo clippy -D warnings");
    sh::run(sh::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))
}

/// `cargo test --workspace`, told where the installed and synthetic models are.
fn cargo_tests(
    args: &TestArgs,
    installed: &setup::Installed,
    synthetic: &synthetic::Synthetic,
) -> Result<()> {
    sh::step("running the tests");
    sh::run(
        sh::cargo()
            .args(["test", "--workspace"])
            .env("NGSD_TEST_SYNTHETIC", &synthetic.dir)
            .env("NGSD_TEST_MODEL", &installed.fp32)
            .env("NGSD_TEST_MODEL_Q4", &installed.q4)
            .env(
                "NGSD_TEST_MODEL_INT8",
                installed.int8.as_deref().unwrap_or(&installed.fp32),
            )
            .args(&args.cargo_test_args),
    )
}

/// The gate traces against the paper authors' full logs, when ../shared has them.
fn golden_gates() -> Result<()> {
    let golden = sh::root().join("../shared/golden/gates");
    if !golden.is_dir() {
        eprintln!(
            "    (no ../shared/golden/gates beside the checkout: the full-log gate test is skipped)"
        );
        return Ok(());
    }
    sh::step("gate traces against the paper authors' full logs (../shared/golden/gates)");
    sh::run(
        sh::cargo()
            .args([
                "test",
                "-p",
                "ngsd-gate-host",
                "--test",
                "golden",
                "--",
                "--ignored",
            ])
            .env("NGSD_GOLDEN_DIR", &golden),
    )
}

/// The export tooling's checks on the installed packages.
fn python_checks(installed: &setup::Installed) -> Result<()> {
    sh::step("export tooling checks (Python, on the converted models)");
    // fp32: a plain float LM head, so the LM-head file is written and compared; int8: a
    // quantized head (MatMulNBits), found through its own pattern.
    for model in std::iter::once(&installed.fp32).chain(installed.int8.as_ref()) {
        sh::run(
            Command::new(&installed.python)
                .arg(sh::root().join("xtask/py/test_add_hidden.py"))
                .arg("--model")
                .arg(model),
        )?;
    }
    // The converted graph against an independent numpy forward pass over the GGUF's own
    // weights: logits, last_hidden_state and every `hidden_states.{L}` layer output.
    sh::step(
        "numerical checks of the converted model (xtask/py/test_export.py, fp32 against the GGUF)",
    );
    sh::run(
        Command::new(&installed.python)
            .arg(sh::root().join("xtask/py/test_export.py"))
            .arg("--model")
            .arg(&installed.fp32)
            .arg("--gguf")
            .arg(&installed.gguf),
    )?;
    // The q4 package: exact weights (bit for bit against the GGUF, through ONNX Runtime's own
    // kernel too) and, at fp32 activations, the fp32 reference's outputs.
    sh::step("exact-weight checks of the q4 package (xtask/py/test_fused.py)");
    sh::run(
        Command::new(&installed.python)
            .arg(sh::root().join("xtask/py/test_fused.py"))
            .arg("--model")
            .arg(&installed.q4)
            .arg("--gguf")
            .arg(&installed.gguf)
            .arg("--reference")
            .arg(&installed.fp32),
    )
}
