//! Safety settings resolved from raw settings: the trained files, the probe's parameters.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use super::*;

fn probe_params(raw: &RawConfig, trained: &Trained) -> String {
    match SafetySettings::from_raw(raw, GenerateConfig::default(), trained)
        .unwrap()
        .reflection
    {
        ReflectionSpec::Probe { params, .. } => params,
        other => panic!("not a probe: {other:?}"),
    }
}

/// Issue 15: the probe's parameters were matched with `contains("timing")`, so a weights path
/// containing "timing" changed them. A path is only a path: the parameters differ by it alone.
#[test]
fn a_weights_path_containing_timing_is_only_a_path() {
    for (plain, timing) in [
        (
            "/data/runs/gate.safetensors",
            "/data/timing-runs/gate.safetensors",
        ),
        ("/data/gate.safetensors", "/data/gate-timing.safetensors"),
    ] {
        // Given in the probe's parameters.
        let raw = |path: &str| RawConfig {
            reflection: Some("probe".into()),
            probe_config: Some(format!("weights = \"{path}\"")),
            ..Default::default()
        };
        let none = Trained::default();
        assert_eq!(
            probe_params(&raw(timing), &none),
            probe_params(&raw(plain), &none).replace(plain, timing)
        );
        // The model's trained neuron, found beside it.
        let trained = |path: &str| Trained {
            gate: Some(PathBuf::from(path)),
            expert: None,
        };
        for mode in [None, Some("probe")] {
            let raw = RawConfig {
                reflection: mode.map(Into::into),
                ..Default::default()
            };
            assert_eq!(
                probe_params(&raw, &trained(timing)),
                probe_params(&raw, &trained(plain)).replace(plain, timing),
                "{mode:?}"
            );
        }
    }
}

#[test]
fn sigmoid_alone_gets_the_trained_neuron_unless_weights_are_named() {
    let trained = Trained {
        gate: Some(PathBuf::from("/m/gate.safetensors")),
        expert: None,
    };
    assert_eq!(
        trained.gate_params("sigmoid", ""),
        "weights = \"/m/gate.safetensors\""
    );
    assert_eq!(
        trained.gate_params("sigmoid", "monitor = false"),
        "monitor = false\nweights = \"/m/gate.safetensors\""
    );
    assert_eq!(
        trained.gate_params("sigmoid", "weights = \"/x.safetensors\""),
        "weights = \"/x.safetensors\""
    );
    assert_eq!(trained.gate_params("lif", "tau = 2"), "tau = 2");
    assert_eq!(Trained::default().gate_params("sigmoid", "a = 1"), "a = 1");
}

#[test]
fn head_means_the_trained_expert() {
    let trained = Trained {
        gate: None,
        expert: Some(PathBuf::from("/m/expert.safetensors")),
    };
    assert_eq!(
        trained.resolve_expert(ExpertSpec::Head(None)).unwrap(),
        ExpertSpec::Head(Some(PathBuf::from("/m/expert.safetensors")))
    );
    assert_eq!(
        trained.resolve_expert(ExpertSpec::Prompt).unwrap(),
        ExpertSpec::Prompt
    );
    let err = Trained::default()
        .resolve_expert(ExpertSpec::Head(None))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("invalid expert: `head` means the model's trained expert"),
        "{err}"
    );
}

/// A package in a folder of `dir` that opens as model `name` with model.onnx checksum
/// `onnx_sha` (none recorded: `None`): the default package's manifest, changed so, and empty
/// files in place of the ones it lists (the lookup reads only the manifest).
fn package_named(dir: &Path, name: &str, onnx_sha: Option<&str>) -> PathBuf {
    package_of(dir, name, "fp32", onnx_sha)
}

/// [`package_named`] with manifest `dtype` `dtype`, in a folder named so.
fn package_of(dir: &Path, name: &str, dtype: &str, onnx_sha: Option<&str>) -> PathBuf {
    let src = ngsd_test_support::model_dir().join("ngsd-model.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    manifest["name"] = name.into();
    manifest["dtype"] = dtype.into();
    let onnx = manifest["files"]["onnx"].as_str().unwrap().to_owned();
    match onnx_sha {
        Some(sha) => manifest["checksums"][&onnx] = sha.into(),
        None => {
            manifest["checksums"].as_object_mut().unwrap().remove(&onnx);
        }
    }
    let pkg = dir
        .join(format!("{name}-{}", onnx_sha.unwrap_or("none")))
        .join(dtype);
    std::fs::create_dir_all(&pkg).unwrap();
    for file in manifest["files"].as_object().unwrap().values() {
        std::fs::write(pkg.join(file.as_str().unwrap()), b"").unwrap();
    }
    std::fs::write(pkg.join("ngsd-model.json"), manifest.to_string()).unwrap();
    assert_eq!(
        ngsd_runtime::ModelPackage::open(&pkg)
            .unwrap()
            .manifest
            .name,
        name
    );
    pkg
}

/// The trained files committed in the checkout's models/<name>/ folders, by name.
fn committed_trained() -> Vec<(String, Trained)> {
    let root = ngsd_test_support::repo_root();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root.join("models")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let at = |file: &str| Some(dir.join(file)).filter(|p| p.is_file());
        let trained = Trained {
            gate: at(GATE_FILE),
            expert: at(EXPERT_FILE),
        };
        if trained != Trained::default() {
            found.push((name, trained));
        }
    }
    assert!(
        found.iter().any(|(n, _)| n == "smollm2-135m-instruct"),
        "{found:?}"
    );
    found
}

/// Every model with trained files committed in the checkout's models/<name>/ (the default
/// model's, Qwen's) gets them by its package's manifest name, from anywhere inside the
/// checkout, whatever folder the package is in, when the package is the build they were
/// trained on (or records no checksum); an unknown name gets none. Needs no package but the
/// default one's manifest.
#[test]
fn committed_trained_files_are_found_by_the_package_name() {
    let start = [ngsd_test_support::repo_root().join("crates/ngsd-cli")];
    let tmp = ngsd_test_support::temp_dir();
    for (name, wanted) in committed_trained() {
        let shas: Vec<String> = [&wanted.gate, &wanted.expert]
            .into_iter()
            .flatten()
            .map(|p| trained_model_sha256(p).unwrap())
            .collect();
        assert!(
            shas.windows(2).all(|w| w[0] == w[1]),
            "{name}: gate and expert trained on different builds"
        );
        for sha in [Some(shas[0].as_str()), None] {
            let found = Trained::find_from(&package_named(tmp.path(), &name, sha), &start);
            assert_eq!(found, wanted, "{name} ({sha:?})");
        }
    }
    let unknown = Trained::find_from(&package_named(tmp.path(), "no-such-model", None), &start);
    assert_eq!(unknown, Trained::default());
}

/// Another build of the same model (the q4 package shares the fp32 package's name) does not
/// get files trained on the fp32 graph: the untrained defaults apply, where the gate and
/// expert loaders would refuse the files.
#[test]
fn trained_files_of_another_build_are_passed_over() {
    let start = [ngsd_test_support::repo_root()];
    let tmp = ngsd_test_support::temp_dir();
    for (name, _) in committed_trained() {
        let pkg = package_named(tmp.path(), &name, Some(&"0".repeat(64)));
        assert_eq!(
            Trained::find_from(&pkg, &start),
            Trained::default(),
            "{name}"
        );
    }
}

/// Trained files beside the package come first.
#[test]
fn trained_files_beside_the_package_win() {
    let tmp = ngsd_test_support::temp_dir();
    let pkg = package_named(tmp.path(), "smollm2-135m-instruct", None);
    std::fs::write(pkg.join(GATE_FILE), b"").unwrap();
    let start = [ngsd_test_support::repo_root()];
    let found = Trained::find_from(&pkg, &start);
    assert_eq!(found.gate, Some(pkg.join(GATE_FILE)));
    assert_eq!(
        found.expert,
        Some(
            ngsd_test_support::repo_root().join("models/smollm2-135m-instruct/expert.safetensors")
        )
    );
}

/// A trained file recording `model_sha256` `sha`, at `path`.
fn trained_file(path: &Path, sha: &str) {
    trained_file_with(path, &[("model_sha256", sha)]);
}

/// A trained file with metadata `meta`, at `path`.
fn trained_file_with(path: &Path, meta: &[(&str, &str)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let meta: std::collections::HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let data = [1.0f32, 2.0];
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &bytes).unwrap();
    let out = safetensors::serialize([("w", view)], Some(meta)).unwrap();
    std::fs::write(path, out).unwrap();
}

/// A q4 package takes the files in models/<name>/q4/ that were trained on it, and an fp32
/// package of the same name the ones in models/<name>/; the q4 package falls back to
/// models/<name>/ only for a file made for it, and a build that matches neither gets none.
#[test]
fn a_q4_package_takes_the_files_in_its_own_folder() {
    let tmp = ngsd_test_support::temp_dir();
    let (fp32_sha, q4_sha) = ("a".repeat(64), "b".repeat(64));
    let models = tmp.path().join("checkout/models/foo");
    trained_file(&models.join(GATE_FILE), &fp32_sha);
    trained_file(&models.join(EXPERT_FILE), &fp32_sha);
    trained_file(&models.join("q4").join(GATE_FILE), &q4_sha);
    let start = [tmp.path().join("checkout")];
    let packages = tmp.path().join("packages");
    let q4 = Trained::find_from(&package_of(&packages, "foo", "q4", Some(&q4_sha)), &start);
    assert_eq!(q4.gate, Some(models.join("q4").join(GATE_FILE)));
    assert_eq!(q4.expert, None, "the fp32 expert is not the q4 build's");
    let fp32 = Trained::find_from(
        &package_of(&packages, "foo", "fp32", Some(&fp32_sha)),
        &start,
    );
    assert_eq!(fp32.gate, Some(models.join(GATE_FILE)));
    assert_eq!(fp32.expert, Some(models.join(EXPERT_FILE)));
    let other = Trained::find_from(
        &package_of(&packages, "foo", "q4", Some(&"c".repeat(64))),
        &start,
    );
    assert_eq!(other, Trained::default());
}

/// The q4 package that `cargo xtask setup` converts finds the files trained on it in
/// models/<name>/q4/. A change to the fused graph (another model.onnx) fails here rather than
/// silently falling back to the untrained defaults; `cargo xtask train --variant q4` makes
/// files for the new build.
#[test]
fn the_q4_package_finds_the_files_trained_on_it() {
    let q4 = ngsd_test_support::model_dir_q4();
    let root = ngsd_test_support::repo_root();
    let dir = root.join("models/smollm2-135m-instruct/q4");
    assert_eq!(
        Trained::find_from(&q4, &[root]),
        Trained {
            gate: Some(dir.join(GATE_FILE)),
            expert: Some(dir.join(EXPERT_FILE)),
        },
        "the committed q4 files were trained on another build of {}; retrain them with `cargo xtask train --variant q4`",
        q4.display()
    );
}

/// A probe over a configuration's own neuron turns its monitor off; a `monitor` the
/// configuration sets is replaced (the parameter parser refuses a key given twice).
#[test]
fn probe_params_replace_the_monitor_setting() {
    for (params, want) in [
        (
            "weights = \"/g.safetensors\"",
            "weights = \"/g.safetensors\"\nmonitor = false",
        ),
        (
            "weights = \"/g.safetensors\"; monitor = true",
            "weights = \"/g.safetensors\"\nmonitor = false",
        ),
        (
            "monitor=true\nthreshold = 0.5",
            "threshold = 0.5\nmonitor = false",
        ),
        ("", "monitor = false"),
    ] {
        let got = crate::safety::probe_params(params);
        assert_eq!(got, want, "{params}");
        ngsd_gate::Params::parse(&got).expect("each key once");
    }
}

/// The answer monitor checks on the schedule the trained neuron was calibrated for (its
/// `answer_every` metadata), every 16 tokens for a file that records none. `monitor-every`
/// overrides it, and a gate that does not read the trained neuron keeps the old default.
#[test]
fn the_monitor_checks_on_the_trained_schedule() {
    let tmp = ngsd_test_support::temp_dir();
    let recorded = tmp.path().join("new").join(GATE_FILE);
    trained_file_with(&recorded, &[("model_sha256", "a"), ("answer_every", "8")]);
    let older = tmp.path().join("old").join(GATE_FILE);
    trained_file(&older, "a");
    let every = |gate: &Path, raw: RawConfig| {
        let trained = Trained {
            gate: Some(gate.to_path_buf()),
            expert: None,
        };
        SafetySettings::from_raw(&raw, GenerateConfig::default(), &trained)
            .unwrap()
            .decode
            .monitor_every
    };
    assert_eq!(every(&recorded, RawConfig::default()), 8);
    assert_eq!(every(&older, RawConfig::default()), 16);
    let set = RawConfig {
        monitor_every: Some(32),
        ..Default::default()
    };
    assert_eq!(every(&recorded, set), 32);
    let own_weights = RawConfig {
        gate_config: Some("weights = \"/x.safetensors\"".into()),
        ..Default::default()
    };
    assert_eq!(every(&recorded, own_weights), 16);
    let other_gate = RawConfig {
        gate: Some("lif".into()),
        ..Default::default()
    };
    assert_eq!(every(&recorded, other_gate), 16);
}
