//! Tidy tests: the workspace's layering rules (read from `cargo metadata`) and file conventions.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::sh;

fn metadata() -> serde_json::Value {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(sh::root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Normal (non-dev) dependencies of each workspace package, by package name.
fn deps() -> BTreeMap<String, Vec<String>> {
    let meta = metadata();
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("name").to_string();
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().expect("dep name").to_string())
                .collect();
            (name, deps)
        })
        .collect()
}

#[test]
fn layering_rules_hold() {
    let deps = deps();
    let mut problems = Vec::new();
    for (pkg, ds) in &deps {
        let has = |d: &str| ds.iter().any(|x| x == d);
        if has("ort") && pkg != "ngsd-runtime" {
            problems.push(format!(
                "{pkg} depends on ort; only ngsd-runtime may name it"
            ));
        }
        if pkg.starts_with("gate-") {
            let internal: Vec<_> = ds
                .iter()
                .filter(|d| d.starts_with("ngsd-") && *d != "ngsd-gate")
                .collect();
            if !internal.is_empty() {
                problems.push(format!(
                    "plugin {pkg} depends on {internal:?}; plugins know only ngsd-gate"
                ));
            }
        }
        if pkg == "ngsd-gate" && ds.iter().any(|d| d.starts_with("ngsd-")) {
            problems.push(
                "ngsd-gate depends on another ngsd crate; it must know nothing of models".into(),
            );
        }
        if pkg == "ngsd-runtime" && ds.iter().any(|d| d.starts_with("ngsd-gate")) {
            problems.push("ngsd-runtime depends on ngsd-gate; the runtime knows no gates".into());
        }
        let binary_only = ["clap", "anyhow", "tracing-subscriber", "config"];
        if pkg.starts_with("ngsd-") && !["ngsd-cli", "ngsd-benches"].contains(&pkg.as_str()) {
            for b in binary_only {
                if has(b) {
                    problems.push(format!(
                        "library {pkg} depends on {b}; that belongs to the binary (ngsd-cli)"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering violations:\n{}",
        problems.join("\n")
    );
    assert!(deps.contains_key("ngsd-runtime") && deps.contains_key("ngsd-cli"));
}

#[test]
fn folder_name_equals_package_name_and_crates_are_unpublished() {
    let meta = metadata();
    for p in meta["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().expect("name");
        let manifest = Path::new(p["manifest_path"].as_str().expect("manifest_path"));
        let folder = manifest
            .parent()
            .and_then(Path::file_name)
            .expect("folder")
            .to_string_lossy();
        let allowed = folder == name || (folder == "benches" && name == "ngsd-benches");
        assert!(allowed, "package {name} lives in folder {folder}");
        assert_eq!(
            p["publish"],
            serde_json::json!([]),
            "package {name} must have publish = false"
        );
    }
}

#[test]
fn every_rust_file_starts_with_a_doc_line() {
    let out = Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "*.rs",
        ])
        .current_dir(sh::root())
        .output()
        .expect("git runs");
    let files = String::from_utf8_lossy(&out.stdout);
    let mut missing = Vec::new();
    for f in files.lines() {
        let text = std::fs::read_to_string(sh::root().join(f)).unwrap_or_default();
        if !text.lines().take(3).any(|l| l.starts_with("//!")) {
            missing.push(f.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "files without a `//!` line at the top: {missing:?}"
    );
}
