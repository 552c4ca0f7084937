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
