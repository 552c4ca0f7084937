//! The gate family through the loaded cdylibs: sigmoid, always, never, the C example, and
//! discovery (`find`, `list`, `load`).

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

mod common;

use std::path::PathBuf;

use ngsd_gate::safetensors::{SafeTensors, Tensor};
use ngsd_gate::{AnswerInput, Decision, Gate, HostContext, Needs, PromptInput, StepInput};
use ngsd_gate_host::{AbiVersion, LoadedGate, Plugin};

const H: usize = 576;

/// A weights file for a 576-wide neuron: w_i = ±0.01, b = 0, standardised around 0.
fn sigmoid_weights(name: &str, meta: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ngsd-gate-host-it-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut st = SafeTensors::default();
    let w: Vec<f32> = (0..H)
        .map(|i| if i % 2 == 0 { 0.01 } else { -0.01 })
        .collect();
    st.tensors.insert(
        "weight".into(),
        Tensor {
            shape: vec![H],
            data: w,
        },
    );
    st.tensors.insert(
        "bias".into(),
        Tensor {
            shape: vec![1],
            data: vec![0.0],
        },
    );
    st.tensors.insert(
        "mean".into(),
        Tensor {
            shape: vec![H],
            data: vec![0.0; H],
        },
    );
    st.tensors.insert(
        "std".into(),
        Tensor {
            shape: vec![H],
            data: vec![0.5; H],
        },
    );
    for (k, v) in meta {
        st.metadata.insert((*k).into(), (*v).into());
    }
    let path = dir.join("sigmoid.safetensors");
    std::fs::write(&path, st.to_bytes()).unwrap();
    path
}

/// A hidden state whose neuron input is `z`: every even feature `x`, odd `-x`, so
/// w·h/std = 576 · 0.01 · x / 0.5 = 11.52 · x.
fn hidden(z: f32) -> Vec<f32> {
    let x = z / 11.52;
    (0..H).map(|i| if i % 2 == 0 { x } else { -x }).collect()
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

fn step(g: &mut LoadedGate, t: u64, h: &[f32]) -> Decision {
    g.decide(&StepInput {
        step: t,
        hidden: h,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn sigmoid_prompt_timing_decides_once_and_holds() {
    let w = sigmoid_weights(
        "prompt",
        &[("hidden_size", "576"), ("model_sha256", "aa11")],
    );
    let ctx = HostContext {
        hidden_size: Some(H),
        model_sha256: Some("AA11".into()),
    };
    let mut g = common::gate(
        "sigmoid",
        &ctx.append_to(&format!("weights = \"{}\"", w.display())),
    );
    assert_eq!(g.name(), "sigmoid");
    assert_eq!(g.needs(), Needs::HIDDEN);
    for (prompt_z, strength) in [(2.0, 1.0), (-2.0, 0.0)] {
        g.reset();
        g.observe_prompt(&PromptInput {
            hidden: &hidden(prompt_z),
            ..Default::default()
        })
        .unwrap();
        for t in 0..4 {
            // Whatever each step's hidden state says, the prompt's decision holds.
            let d = step(&mut g, t, &hidden(-prompt_z));
            assert_eq!(d.strength, strength, "prompt z {prompt_z}, step {t}");
            assert!((d.value - sigmoid(prompt_z)).abs() < 1e-5, "{d:?}");
        }
    }
}

#[test]
fn sigmoid_answer_monitor_crosses_the_abi() {
    // The same 576-wide neuron serves as the answer neuron over one answer feature.
    let w = sigmoid_weights("monitor", &[]);
    let mut st = SafeTensors::read(&w).unwrap();
    for name in ["weight", "bias", "mean", "std"] {
        let t = st.tensors[name].clone();
        st.tensors.insert(format!("answer.{name}"), t);
    }
    st.metadata.insert(
        "features".into(),
        "prompt = final.last; answer = 20.mean".into(),
    );
    st.metadata.insert("answer_threshold".into(), "0.9".into());
    std::fs::write(&w, st.to_bytes()).unwrap();
    let mut g = common::gate("sigmoid", &format!("weights = \"{}\"", w.display()));
    assert_eq!(
        g.features().to_string(),
        "prompt = final.last; answer = 20.mean"
    );
    g.reset();
    g.observe_prompt(&PromptInput {
        hidden: &hidden(-3.0),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(step(&mut g, 0, &[]).strength, 0.0);
    let mut check = |z: f32| {
        g.check_answer(&AnswerInput {
            tokens: 16,
            features: &hidden(z),
            ..Default::default()
        })
        .unwrap()
    };
    assert_eq!(check(1.0).strength, 0.0, "p 0.73 < 0.9 clears the answer");
    let fired = check(4.0);
    assert!(fired.strength == 1.0 && (fired.value - sigmoid(4.0)).abs() < 1e-5);
    assert_eq!(step(&mut g, 1, &[]).strength, 1.0, "steers from then on");
    let err = g
        .check_answer(&AnswerInput {
            tokens: 32,
            features: &[1.0; 3],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has 3 values but the gate weights expect 576"),
        "{err}"
    );
}

#[test]
fn sigmoid_token_timing_and_soft_mode() {
    let w = sigmoid_weights("token", &[]);
    let params = format!(
        "weights = \"{}\"\ntiming = token\nmode = soft\nthreshold = 0.7",
        w.display()
    );
    let mut g = common::gate("sigmoid", &params);
    g.reset();
    g.observe_prompt(&PromptInput {
        hidden: &hidden(5.0),
        ..Default::default()
    })
    .unwrap();
    let d = step(&mut g, 0, &hidden(1.0));
    assert!(
        (d.strength - sigmoid(1.0)).abs() < 1e-5 && d.value == d.strength,
        "{d:?}"
    );
    assert_eq!(step(&mut g, 1, &hidden(0.0)).strength, 0.0);
}

#[test]
fn sigmoid_refuses_weights_for_another_model() {
    let w = sigmoid_weights(
        "other",
        &[("model_sha256", "aa11"), ("model", "SmolLM2-135M")],
    );
    let plugin = Plugin::open(&common::lib("gate_sigmoid")).unwrap();
    let check = |ctx: HostContext, expected: &str| {
        let params = ctx.append_to(&format!("weights = \"{}\"", w.display()));
        let err = plugin.create(&params).unwrap_err().to_string();
        assert!(err.starts_with("gate `sigmoid` ("), "{err}");
        assert!(err.contains(expected), "`{err}` lacks `{expected}`");
    };
    check(
        HostContext {
            hidden_size: Some(2048),
            model_sha256: None,
        },
        "made for hidden size 576 (SmolLM2-135M) but the model's hidden size is 2048: these \
         weights belong to another model",
    );
    check(
        HostContext {
            hidden_size: Some(H),
            model_sha256: Some("bb22".into()),
        },
        "made for model sha256 aa11 (SmolLM2-135M) but the loaded model is bb22",
    );
    // Wrong hidden width at decision time (token timing) is an error too.
    let params = format!("weights = \"{}\"\ntiming = token", w.display());
    let mut g = plugin.create(&params).unwrap();
    let err = g
        .decide(&StepInput {
            hidden: &[0.0; 8],
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("hidden state has 8 values but the gate weights expect 576")
    );
}

#[test]
fn a_fork_has_the_same_configuration_and_its_own_state() {
    let w = sigmoid_weights("fork", &[("hidden_size", "576")]);
    let ctx = HostContext {
        hidden_size: Some(H),
        model_sha256: None,
    };
    let mut g = common::gate(
        "sigmoid",
        &ctx.append_to(&format!("weights = \"{}\"", w.display())),
    );
    let mut twin = g.fork().unwrap().expect("a plugin gate forks");
    assert_eq!(twin.name(), "sigmoid");
    assert_eq!(twin.needs(), g.needs());
    assert_eq!(twin.features(), g.features());
    // Each decides on its own prompt: the twin shares the weights, not the decision.
    for (gate, z) in [(&mut g as &mut dyn Gate, 2.0), (&mut *twin, -2.0)] {
        gate.reset();
        gate.observe_prompt(&PromptInput {
            hidden: &hidden(z),
            ..Default::default()
        })
        .unwrap();
    }
    let held = step(&mut g, 0, &hidden(0.0));
    let input = StepInput {
        step: 0,
        hidden: &hidden(0.0),
        ..Default::default()
    };
    let forked = twin.decide(&input).unwrap();
    assert_eq!((held.strength, forked.strength), (1.0, 0.0));
    assert!((forked.value - sigmoid(-2.0)).abs() < 1e-5, "{forked:?}");
}

#[test]
fn always_and_never() {
    let mut always = common::gate("always", "first-m = 2");
    let mut never = common::gate("never", "");
    for g in [&mut always, &mut never] {
        assert_eq!(g.needs(), Needs::NONE);
        g.reset();
    }
    let strengths: Vec<f32> = (0..4).map(|t| step(&mut always, t, &[]).strength).collect();
    assert_eq!(strengths, [1.0, 1.0, 0.0, 0.0]);
    let mut always_all = common::gate("always", "strength = 0.5");
    assert_eq!(step(&mut always_all, 1000, &[]), Decision::steer(0.5, 0.5));
    assert_eq!(step(&mut never, 0, &[]), Decision::pass(0.0));
}

#[test]
fn c_example_loads_and_decides() {
    let path = PathBuf::from(gate_c_example::LIBRARY);
    let plugin = Plugin::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let info = plugin.info();
    assert_eq!(
        (info.name.as_str(), info.needs, info.abi),
        ("c-example", Needs::DIVERGENCE, AbiVersion::CURRENT)
    );
    let mut g = plugin.create("threshold = 0.3\nhidden-size = 576").unwrap();
    let at = |g: &mut LoadedGate, d: f32| {
        g.decide(&StepInput {
            divergence: Some(d),
            ..Default::default()
        })
        .unwrap()
    };
    assert_eq!(at(&mut g, 0.2), Decision::pass(0.2));
    assert_eq!(at(&mut g, 0.3), Decision::steer(1.0, 0.3));
    let err = g.decide(&StepInput::default()).unwrap_err().to_string();
    assert_eq!(
        err,
        "gate `c-example` failed: gate input missing: divergence"
    );
    let err = plugin.create("tau = 8").unwrap_err().to_string();
    assert!(
        err.ends_with(
            "rejected its parameters: unknown gate parameter `tau` (this gate knows: threshold)"
        ),
        "{err}"
    );
}

#[test]
fn discovery_finds_every_gate_by_name() {
    let dirs = common::build_dirs();
    common::lib("gate_lif"); // fails with a build hint when the plugins are not built
    let listed: Vec<_> = ngsd_gate_host::list(&dirs)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let expected = [
        ("adam", Needs::DIVERGENCE),
        ("always", Needs::NONE),
        ("ema", Needs::DIVERGENCE),
        ("lif", Needs::DIVERGENCE),
        ("never", Needs::NONE),
        ("sigmoid", Needs::HIDDEN),
    ];
    for (name, needs) in expected {
        let info = listed
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("`{name}` not listed in {dirs:?}: {listed:?}"));
        assert_eq!(info.needs, needs, "{name}");
        assert_eq!(info.abi, AbiVersion::CURRENT);
        assert!(!info.description.is_empty());
        assert_eq!(info.path, ngsd_gate_host::find(name, &dirs).unwrap());
    }
    // Fixtures are not named libgate_*, so they are never listed.
    assert!(listed.iter().all(|i| i.name != "misbehave"));
    let mut g = ngsd_gate_host::load("lif", &dirs, "tau = 4").unwrap();
    assert_eq!(g.needs(), Needs::DIVERGENCE);
    let by_path = common::lib("gate_never");
    let mut g2 = ngsd_gate_host::load(by_path.to_str().unwrap(), &[], "").unwrap();
    g.reset();
    g2.reset();
}

#[test]
fn loaded_gates_are_send_and_usable_as_dyn_gate() {
    fn assert_send<T: Send>() {}
    assert_send::<LoadedGate>();
    assert_send::<Plugin>();
    let mut boxed: Box<dyn Gate + Send> = Box::new(common::gate("never", ""));
    let handle = std::thread::spawn(move || boxed.decide(&StepInput::default()).unwrap());
    assert_eq!(handle.join().unwrap(), Decision::pass(0.0));
}
