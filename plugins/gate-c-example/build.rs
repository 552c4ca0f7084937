//! Compiles gate_c_example.c into a shared library in OUT_DIR with the system C compiler
//! (`$CC`, else `cc`), exactly as a third party would build a C gate.

use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let source = manifest.join("gate_c_example.c");
    let include = manifest.join("../../crates/ngsd-gate/include");
    println!("cargo::rerun-if-changed={}", source.display());
    println!(
        "cargo::rerun-if-changed={}",
        include.join("ngsd_gate.h").display()
    );
    println!("cargo::rerun-if-env-changed=CC");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let output = out_dir.join(format!("{DLL_PREFIX}gate_c_example{DLL_SUFFIX}"));
    let shared = if cfg!(target_os = "macos") {
        "-dynamiclib"
    } else {
        "-shared"
    };
    let status = Command::new(&cc)
        .args([shared, "-fPIC", "-O2", "-std=c11", "-Wall", "-Wextra", "-I"])
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&output)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}` (set CC): {e}"));
    assert!(
        status.success(),
        "`{cc}` failed to compile {}",
        source.display()
    );
    println!(
        "cargo::rustc-env=GATE_C_EXAMPLE_LIBRARY={}",
        output.display()
    );
}
