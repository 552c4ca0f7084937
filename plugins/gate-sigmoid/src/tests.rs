//! In-process tests of the sigmoid gate, with weights files written by the tests.

use std::path::PathBuf;

use ngsd_gate::safetensors::Tensor;

use super::*;
use crate::neuron::dot;

/// Writes a weights file into a fresh temp dir; returns its path.
fn weights(name: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)], meta: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gate-sigmoid-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut st = SafeTensors::default();
    for (k, shape, data) in tensors {
        st.tensors.insert(
            (*k).to_owned(),
            Tensor {
                shape: shape.clone(),
                data: data.clone(),
            },
        );
    }
    for (k, v) in meta {
        st.metadata.insert((*k).to_owned(), (*v).to_owned());
    }
    let path = dir.join("w.safetensors");
    std::fs::write(&path, st.to_bytes()).unwrap();
    path
}

fn basic(name: &str) -> PathBuf {
    weights(
        name,
        &[
            ("weight", vec![2], vec![1.0, -1.0]),
            ("bias", vec![1], vec![0.0]),
        ],
        &[("hidden_size", "2"), ("model_sha256", "ABC")],
    )
}

fn create(path: &Path, extra: &str) -> Result<Sigmoid> {
    Sigmoid::create(&format!("weights = \"{}\"\n{extra}", path.display()))
}

fn step<'a>(step: u64, hidden: &'a [f32]) -> StepInput<'a> {
    StepInput {
        step,
        hidden,
        ..Default::default()
    }
}

#[test]
fn prompt_timing_holds_the_prompt_decision() {
    let mut g = create(&basic("hold"), "").unwrap();
    g.reset();
    g.observe_prompt(&PromptInput {
        hidden: &[3.0, 0.0],
        ..Default::default()
    })
    .unwrap();
    let p = 1.0 / (1.0 + (-3.0f32).exp());
    for s in 0..3 {
        // The step's own hidden state would say "pass"; the held decision steers.
        assert_eq!(
            g.decide(&step(s, &[-5.0, 5.0])).unwrap(),
            Decision::steer(1.0, p)
        );
    }
    g.reset();
    // Without observe_prompt, the first step decides and holds.
    assert_eq!(g.decide(&step(0, &[-5.0, 5.0])).unwrap().strength, 0.0);
    assert_eq!(g.decide(&step(1, &[5.0, -5.0])).unwrap().strength, 0.0);
}

#[test]
fn token_timing_and_soft_mode() {
    let mut g = create(
        &basic("token"),
        "timing = token\nmode = soft\nthreshold = 0.6",
    )
    .unwrap();
    let p = 1.0 / (1.0 + (-1.0f32).exp()); // 0.731
    assert_eq!(
        g.decide(&step(0, &[1.0, 0.0])).unwrap(),
        Decision::steer(p, p)
    );
    assert_eq!(
        g.decide(&step(1, &[0.0, 0.0])).unwrap(),
        Decision::pass(0.5)
    );
}

#[test]
fn standardisation_is_folded_in() {
    let path = weights(
        "std",
        &[
            ("weight", vec![2], vec![2.0, 1.0]),
            ("bias", vec![], vec![0.5]),
            ("mean", vec![2], vec![1.0, -1.0]),
            ("std", vec![2], vec![2.0, 4.0]),
        ],
        &[("threshold", "0.9")],
    );
    let g = create(&path, "").unwrap();
    let h = [3.0f32, 7.0];
    let z = 2.0 * (3.0 - 1.0) / 2.0 + 1.0 * (7.0 + 1.0) / 4.0 + 0.5;
    assert!((g.probability(&h).unwrap() - 1.0 / (1.0 + (-z as f32).exp())).abs() < 1e-6);
    assert_eq!(g.prompt.threshold, 0.9);
}

#[test]
fn dot_matches_naive_sum_for_odd_lengths() {
    let a: Vec<f32> = (0..577).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..577).map(|i| (i as f32 * 0.11).cos()).collect();
    let naive: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    assert!((f64::from(dot(&a, &b)) - naive).abs() < 1e-4);
}

#[test]
fn weights_for_another_model_are_refused() {
    let path = basic("other");
    let check = |extra: &str, expected: &str| {
        let err = create(&path, extra).unwrap_err().to_string();
        assert!(err.contains(expected), "`{err}` lacks `{expected}`");
    };
    check(
        "hidden-size = 576",
        "made for hidden size 2 but the model's hidden size is 576",
    );
    check(
        "model-sha256 = \"def\"",
        "made for model sha256 ABC but the loaded model is def",
    );
    create(&path, "hidden-size = 2\nmodel-sha256 = \"abc\"").unwrap();
    let mut g = create(&path, "timing = token").unwrap();
    let err = g.decide(&step(0, &[1.0; 3])).unwrap_err().to_string();
    assert!(
        err.contains("hidden state has 3 values but the gate weights expect 2"),
        "{err}"
    );
}

#[test]
fn bad_parameters_and_files_are_explained() {
    let check = |config: &str, expected: &str| {
        let err = Sigmoid::create(config).unwrap_err().to_string();
        assert!(err.contains(expected), "`{err}` lacks `{expected}`");
    };
    check("", "gate parameter `weights`: required");
    check(
        "weights = \"/nonexistent/w.safetensors\"",
        "cannot read weights file /nonexistent/",
    );
    let p = basic("params");
    let w = format!("weights = \"{}\"\n", p.display());
    check(
        &format!("{w}mode = medium"),
        "`medium` is not one of: hard, soft",
    );
    check(
        &format!("{w}threshold = 2"),
        "gate parameter `threshold`: 2 is outside [0, 1]",
    );
    let half = weights(
        "half",
        &[
            ("weight", vec![1], vec![1.0]),
            ("bias", vec![1], vec![0.0]),
            ("mean", vec![1], vec![0.0]),
        ],
        &[],
    );
    check(
        &format!("weights = \"{}\"", half.display()),
        "only one of `mean` and `std`",
    );
    let no_bias = weights("nobias", &[("weight", vec![1], vec![1.0])], &[]);
    check(
        &format!("weights = \"{}\"", no_bias.display()),
        "no tensor `bias`",
    );
    let matrix = weights(
        "matrix",
        &[
            ("weight", vec![2, 2], vec![1.0; 4]),
            ("bias", vec![1], vec![0.0]),
        ],
        &[],
    );
    check(
        &format!("weights = \"{}\"", matrix.display()),
        "tensor `weight` has shape [2, 2], expected [H]",
    );
}

#[test]
fn features_metadata_sets_the_input_width() {
    let path = weights(
        "features",
        &[
            ("weight", vec![4], vec![1.0, 0.0, 0.0, 1.0]),
            ("bias", vec![1], vec![0.0]),
        ],
        &[
            ("hidden_size", "2"),
            ("features", "prompt = final.last, 3.mean"),
        ],
    );
    let mut g = create(&path, "").unwrap();
    assert_eq!(g.features().to_string(), "prompt = final.last, 3.mean");
    g.reset();
    g.observe_prompt(&PromptInput {
        hidden: &[2.0, 0.0, 0.0, 2.0],
        ..Default::default()
    })
    .unwrap();
    let p = 1.0 / (1.0 + (-4.0f32).exp());
    assert_eq!(g.decide(&step(0, &[])).unwrap(), Decision::steer(1.0, p));
    let err = create(&path, "timing = token").unwrap_err().to_string();
    assert!(err.contains("use timing = prompt"), "{err}");
    let err = create(&path, "hidden-size = 4").unwrap_err().to_string();
    assert!(err.contains("made for hidden size 2"), "{err}");
}

fn monitored(name: &str) -> PathBuf {
    weights(
        name,
        &[
            ("weight", vec![2], vec![1.0, 0.0]),
            ("bias", vec![1], vec![0.0]),
            ("answer.weight", vec![2], vec![0.0, 1.0]),
            ("answer.bias", vec![1], vec![0.0]),
        ],
        &[
            ("hidden_size", "2"),
            ("threshold", "0.9"),
            ("answer_threshold", "0.8"),
            ("features", "prompt = final.last; answer = 4.mean"),
        ],
    )
}

#[test]
fn the_answer_neuron_fires_and_then_holds() {
    let mut g = create(&monitored("answer"), "").unwrap();
    assert!(g.features().monitors_answer());
    g.reset();
    g.observe_prompt(&PromptInput {
        hidden: &[0.0, 0.0],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(g.decide(&step(0, &[])).unwrap().strength, 0.0);
    let check = |g: &mut Sigmoid, x: f32| {
        g.check_answer(&AnswerInput {
            tokens: 16,
            features: &[0.0, x],
            ..Default::default()
        })
        .unwrap()
    };
    assert_eq!(check(&mut g, 0.0).strength, 0.0, "p 0.5 < 0.8 clears");
    assert_eq!(g.decide(&step(1, &[])).unwrap().strength, 0.0);
    assert_eq!(check(&mut g, 3.0).strength, 1.0, "p 0.95 fires");
    assert_eq!(
        g.decide(&step(2, &[])).unwrap().strength,
        1.0,
        "held after the check fired"
    );
    g.reset();
    assert_eq!(g.decide(&step(0, &[0.0, 0.0])).unwrap().strength, 0.0);
}

#[test]
fn monitoring_can_be_switched_off_and_needs_an_answer_neuron() {
    let g = create(&monitored("off"), "monitor = false").unwrap();
    assert!(!g.features().monitors_answer());
    let err = create(&basic("no-answer"), "monitor = true")
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no answer neuron"), "{err}");
    let bad = weights(
        "answer-width",
        &[
            ("weight", vec![2], vec![1.0, 0.0]),
            ("bias", vec![1], vec![0.0]),
            ("answer.weight", vec![3], vec![0.0; 3]),
            ("answer.bias", vec![1], vec![0.0]),
        ],
        &[("features", "prompt = final.last; answer = 4.mean")],
    );
    let err = create(&bad, "").unwrap_err().to_string();
    assert!(err.contains("`answer.weight` has 3 values"), "{err}");
    let err = create(&monitored("thr"), "answer-threshold = 1.5")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`answer-threshold`: 1.5 is outside"), "{err}");
}
