//! Shared helpers: locate the cdylibs cargo built next to the test executable.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::path::PathBuf;

use ngsd_gate_host::{LoadedGate, Plugin};

/// Where cargo puts cdylibs: `target/<profile>/deps/` (dev-dependencies) and
/// `target/<profile>/` (workspace builds).
pub fn build_dirs() -> Vec<PathBuf> {
    ngsd_gate_host::default_dirs()
}

/// The built library `lib<stem>.so`; fails (never skips) when it is not built.
pub fn lib(stem: &str) -> PathBuf {
    let file = format!("{DLL_PREFIX}{stem}{DLL_SUFFIX}");
    let dirs = build_dirs();
    dirs.iter()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{file} is not built in {dirs:?}: run `cargo build --workspace` \
             (or `cargo test -p ngsd-gate-host`, which builds the plugins as dev-dependencies)"
            )
        })
}

/// A fresh instance of a built gate plugin (`lif` → `libgate_lif.so`).
pub fn gate(name: &str, params: &str) -> LoadedGate {
    let plugin = Plugin::open(&lib(&format!("gate_{}", name.replace('-', "_"))))
        .unwrap_or_else(|e| panic!("{e}"));
    plugin.create(params).unwrap_or_else(|e| panic!("{e}"))
}
