//! Finding and loading the ONNX Runtime shared library (ort is built with `load-dynamic`).
//!
//! Search order, first hit wins:
//! 1. an explicit path given by the caller (the CLI's `ort-library` setting),
//! 2. the environment variables `NGSD_ORT_LIB`, then `ORT_DYLIB_PATH` (cargo sets the latter for
//!    `cargo run` / `cargo test` from `.cargo/config.toml`),
//! 3. `libonnxruntime.so` next to the running executable,
//! 4. `.ort/lib/libonnxruntime.so` in the executable's folder or any folder above it (a development
//!    checkout: `target/release/ngsd` finds `<repo>/.ort/lib`), then the same from the current directory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// File name of the library on this platform.
pub const LIBRARY_FILE: &str = "libonnxruntime.so";

/// The ONNX Runtime minor version this build needs at least (1.31).
pub const MIN_ORT_MINOR: u32 = 31;

/// A loaded ONNX Runtime: where it came from and the process-wide environment.
#[derive(Clone)]
pub struct OrtRuntime {
    /// The library file that was loaded.
    pub path: PathBuf,
    /// Intra-op threads of the process-wide pool.
    pub threads: usize,
    pub(crate) env: ort::environment::Environment,
}

impl std::fmt::Debug for OrtRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtRuntime")
            .field("path", &self.path)
            .field("threads", &self.threads)
            .finish()
    }
}

static LOADED: OnceLock<std::result::Result<OrtRuntime, String>> = OnceLock::new();

/// Where ONNX Runtime would be loaded from, without loading it.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    for var in ["NGSD_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(v));
        }
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(dir) = &exe_dir {
        let beside = dir.join(LIBRARY_FILE);
        if beside.is_file() {
            return Some(beside);
        }
    }
    let cwd = std::env::current_dir().ok();
    for start in exe_dir.iter().chain(cwd.iter()) {
        for dir in start.ancestors() {
            let candidate = dir.join(".ort").join("lib").join(LIBRARY_FILE);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Loads ONNX Runtime once per process, with one intra-op thread pool of `threads` threads
/// (0 = one per core) shared by every session of the process.
///
/// Sharing matters: a base model and a separate expert model alternate step by step, and with a
/// pool each their idle threads would spin against the busy ones on a small machine.
/// Later calls return the first outcome (the library and the pool are fixed for the process).
pub fn ensure_loaded(explicit: Option<&Path>, threads: usize) -> Result<OrtRuntime> {
    let outcome = LOADED.get_or_init(|| load(explicit, threads));
    match outcome {
        Ok(rt) => Ok(rt.clone()),
        Err(reason) => Err(Error::OrtLibrary {
            path: locate(explicit),
            reason: reason.clone(),
        }),
    }
}

fn load(explicit: Option<&Path>, threads: usize) -> std::result::Result<OrtRuntime, String> {
    let path = locate(explicit).ok_or_else(|| {
        format!("no {LIBRARY_FILE} found (looked at NGSD_ORT_LIB, ORT_DYLIB_PATH, beside the executable and in .ort/lib)")
    })?;
    if !path.exists() {
        return Err("the file does not exist".to_string());
    }
    let builder = ort::init_from(&path).map_err(|e| match e {
        ort::LoadDynamicError::BadVersion { version_str, .. } => {
            format!("it is ONNX Runtime {version_str}, but ngsd needs 1.{MIN_ORT_MINOR} or newer")
        }
        ort::LoadDynamicError::MissingApi { .. } => {
            "it is not an ONNX Runtime library (no `OrtGetApiBase` symbol)".to_string()
        }
        other => other.to_string(),
    })?;
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let pool = ort::environment::GlobalThreadPoolOptions::default()
        .with_intra_threads(threads)
        .and_then(|p| p.with_inter_threads(1))
        .map_err(|e| format!("configuring the thread pool failed: {e}"))?;
    let env = builder
        .with_name("ngsd")
        .with_global_thread_pool(pool)
        .build()
        .map_err(|e| format!("creating the ONNX Runtime environment failed: {e}"))?;
    // ort forwards ONNX Runtime's log to `tracing` at verbose level; building verbose lines on
    // the hot path costs time, and warnings are what a user needs.
    env.set_log_level(ort::logging::LogLevel::Warning);
    Ok(OrtRuntime { path, threads, env })
}
