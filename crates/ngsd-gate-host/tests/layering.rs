//! Layering: every plugin depends on `ngsd-gate` only (STYLE.md, "Plugins know only
//! ngsd-gate"), and every plugin folder is named after its package.

use std::path::Path;

/// The dependency names in a manifest's `[dependencies]` table.
fn dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
        } else if in_deps && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.']).next().unwrap_or("").trim();
            deps.push(name.to_owned());
        }
    }
    deps
}

fn package_name(manifest: &str) -> Option<&str> {
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("name"))?;
    line.split('"').nth(1)
}

#[test]
fn plugins_depend_on_ngsd_gate_only() {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
    let mut checked = 0;
    for entry in std::fs::read_dir(&plugins).expect("plugins/ exists") {
        let dir = entry.expect("readable entry").path();
        let manifest = dir.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest).expect("readable manifest");
        let folder = dir
            .file_name()
            .and_then(|f| f.to_str())
            .expect("utf-8 folder name");
        assert_eq!(
            package_name(&text),
            Some(folder),
            "{}: folder name != package name",
            manifest.display()
        );
        for dep in dependencies(&text) {
            assert_eq!(
                dep,
                "ngsd-gate",
                "{}: plugins may depend on ngsd-gate only",
                manifest.display()
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 6,
        "found only {checked} plugins in {}",
        plugins.display()
    );
}
