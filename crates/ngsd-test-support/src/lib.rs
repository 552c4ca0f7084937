//! Test-only helpers (a dev-dependency of the crates' tests, never of their code): where the
//! converted default model is, fixtures built from it, and a running `ngsd serve`.
//!
//! Tests that need the model fail with "run `cargo xtask setup`" rather than skip
//! (`cargo xtask test` runs the setup first).

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "test helpers fail loudly on any unexpected error"
)]

mod server;

use std::path::{Path, PathBuf};

pub use server::ServeProcess;

/// The checkout's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn installed(var: &str, variant: &str) -> PathBuf {
    let dir = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        repo_root()
            .join(".cache/models/smollm2-135m-instruct")
            .join(variant)
    });
    assert!(
        dir.join("ngsd-model.json").is_file(),
        "the converted default model is missing at {}: run `cargo xtask setup` (cargo xtask test does)",
        dir.display()
    );
    dir
}

/// The fp32 default model installed by `cargo xtask setup` (or `NGSD_TEST_MODEL`).
pub fn model_dir() -> PathBuf {
    installed("NGSD_TEST_MODEL", "fp32")
}

/// The int8 default model (or `NGSD_TEST_MODEL_INT8`).
pub fn model_dir_int8() -> PathBuf {
    installed("NGSD_TEST_MODEL_INT8", "int8")
}

/// The q4 default model, the fused exact-weight graph (or `NGSD_TEST_MODEL_Q4`).
pub fn model_dir_q4() -> PathBuf {
    installed("NGSD_TEST_MODEL_Q4", "q4")
}

/// Runs the `ngsd` binary `bin` (a test's `env!("CARGO_BIN_EXE_ngsd")`) with `args` on two
/// ONNX Runtime threads and returns what it printed.
pub fn run_ngsd(bin: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin)
        .args(args)
        .env("NGSD_THREADS", "2")
        .output()
        .expect("ngsd runs")
}

/// A folder under the system temp dir that is removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ngsd-test-")
        .tempdir()
        .expect("temp dir")
}

/// A copy of the default model package in `dir` whose manifest declares no
/// `last_hidden_state` output (its files are links to the real ones), as an export without
/// the hidden state would load. Returns the package folder.
pub fn model_without_hidden_state(dir: &Path) -> PathBuf {
    let src = model_dir();
    let pkg = dir.join("no-hidden");
    std::fs::create_dir_all(&pkg).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "ngsd-model.json" {
            continue;
        }
        link_or_copy(&entry.path(), &pkg.join(&name));
    }
    let text = std::fs::read_to_string(src.join("ngsd-model.json")).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    manifest["io"]["hidden"] = serde_json::Value::Null;
    std::fs::write(
        pkg.join("ngsd-model.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    pkg
}

fn link_or_copy(from: &Path, to: &Path) {
    #[cfg(unix)]
    if std::os::unix::fs::symlink(from, to).is_ok() {
        return;
    }
    std::fs::copy(from, to).unwrap();
}
