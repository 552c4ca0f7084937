//! The committed suites load, and the stress suite gives the shapes and sizes its comments
//! promise (the public sets it draws on live in ../shared/datasets beside the checkout).

use std::collections::HashMap;
use std::path::PathBuf;

use ngsd_eval::{Label, Sample, Suite, load_dataset, load_wrappers};

const GATES: &[&str] = &["never", "always", "lif", "ema", "adam", "sigmoid"];

fn suites() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("suites")
}

/// Whether the public sets are there; prints why a check is skipped when not.
fn shared_datasets() -> bool {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets");
    if !dir.is_dir() {
        eprintln!(
            "NOTE: {} is missing, so the committed suites were not loaded",
            dir.display()
        );
    }
    dir.is_dir()
}

#[test]
fn every_committed_suite_loads() {
    if !shared_datasets() {
        return;
    }
    for name in ["dev.toml", "safety-dev.toml", "stress.toml"] {
        let suite =
            Suite::load(suites().join(name), GATES).unwrap_or_else(|e| panic!("{name}: {e}"));
        for d in &suite.datasets {
            let samples = load_dataset(d).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!samples.is_empty(), "{name}: dataset {} is empty", d.name);
        }
    }
}

/// (samples, samples with history, raw samples, wrapped samples) of each stress dataset.
fn shapes(samples: &[Sample]) -> (usize, usize, usize, usize) {
    (
        samples.len(),
        samples.iter().filter(|s| !s.history.is_empty()).count(),
        samples.iter().filter(|s| s.raw).count(),
        samples.iter().filter(|s| s.wrapper.is_some()).count(),
    )
}

#[test]
fn stress_suite_has_every_shape() {
    if !shared_datasets() {
        return;
    }
    let suite = Suite::load(suites().join("stress.toml"), GATES).expect("stress suite");
    let mut groups: HashMap<String, (Label, usize)> = HashMap::new();
    for d in &suite.datasets {
        let samples = load_dataset(d).expect("dataset");
        let (n, chats, raw, wrapped) = shapes(&samples);
        let name = d.name.as_str();
        if name.starts_with("wrap-") {
            let family = d.wrap.as_ref().expect("wrapped").templates[0]
                .family
                .clone();
            assert_eq!(wrapped, n, "{name}");
            assert!(
                samples
                    .iter()
                    .all(|s| s.wrapper.as_deref().is_some_and(|w| w.starts_with("eval-")))
            );
            assert_eq!(n, if d.label == Label::Harmful { 40 } else { 24 }, "{name}");
            let expected_chats = if family == "payload_split" { n / 3 } else { 0 };
            assert!(chats <= expected_chats + 1, "{name}: {chats} chats");
        }
        if name.starts_with("multiturn-") {
            assert_eq!(chats, n, "{name}: every sample is a conversation");
        }
        if name.starts_with("raw-") {
            assert_eq!(raw, n, "{name}: every sample is raw");
        }
        if let Some(g) = &d.group {
            let e = groups.entry(g.clone()).or_insert((d.label, 0));
            e.1 += n;
        }
    }
    let size = |g: &str| groups.get(g).map_or(0, |e| e.1);
    assert_eq!(size("wrapped-harmful"), 6 * 40);
    assert_eq!(size("wrapped-benign"), 6 * 24);
    assert_eq!(size("multiturn-harmful"), 60 + 40);
    assert_eq!(size("multiturn-benign"), 60 + 24);
    assert_eq!(size("raw-harmful"), 3 * 40);
    assert_eq!(size("raw-benign"), 36 + 40);
}

#[test]
fn held_out_wrapper_files_load() {
    let wrappers = load_wrappers(&suites().join("stress-wrappers.toml")).expect("wrappers");
    let mut per_family: HashMap<&str, usize> = HashMap::new();
    for t in &wrappers {
        *per_family.entry(t.family.as_str()).or_default() += 1;
    }
    for family in [
        "persona",
        "refusal_suppression",
        "prefix_injection",
        "fiction",
        "payload_split",
        "long_document",
    ] {
        assert!(
            per_family.get(family).is_some_and(|&n| n >= 3),
            "{family}: {per_family:?}"
        );
    }
    assert!(
        load_wrappers(&suites().join("stress-openers.toml"))
            .expect("openers")
            .len()
            >= 6
    );
    let forms = load_wrappers(&suites().join("stress-raw-forms.toml")).expect("raw forms");
    assert!(forms.iter().all(|t| t.history.is_empty()));
}
