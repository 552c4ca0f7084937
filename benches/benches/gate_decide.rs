//! gate_decide: the cost of one `decide()` through the dynamic plugin ABI, for the sigmoid
//! gate on a 576-float hidden state (token timing, so every call computes) and for LIF on
//! a precomputed divergence; plus the sigmoid gate called in-process, to show the ABI's
//! share. Run: `cargo bench -p ngsd-benches --bench gate_decide`.

use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use ngsd_gate::safetensors::{SafeTensors, Tensor};
use ngsd_gate::{Gate, GatePlugin, StepInput};
use ngsd_gate_host::{LoadedGate, Plugin};

const HIDDEN: usize = 576;

fn plugin(stem: &str) -> Plugin {
    let file = format!("{DLL_PREFIX}{stem}{DLL_SUFFIX}");
    let dirs = ngsd_gate_host::default_dirs();
    let path = dirs
        .iter()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{file} is not built in {dirs:?}: run `cargo build --workspace --release`")
        });
    Plugin::open(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn sigmoid_params() -> String {
    let dir = std::env::temp_dir().join(format!("ngsd-bench-gate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    let mut st = SafeTensors::default();
    let weight = (0..HIDDEN)
        .map(|i| ((i as f32) * 0.37).sin() * 0.05)
        .collect();
    st.tensors.insert(
        "weight".into(),
        Tensor {
            shape: vec![HIDDEN],
            data: weight,
        },
    );
    st.tensors.insert(
        "bias".into(),
        Tensor {
            shape: vec![1],
            data: vec![-0.1],
        },
    );
    st.tensors.insert(
        "mean".into(),
        Tensor {
            shape: vec![HIDDEN],
            data: vec![0.01; HIDDEN],
        },
    );
    st.tensors.insert(
        "std".into(),
        Tensor {
            shape: vec![HIDDEN],
            data: vec![1.5; HIDDEN],
        },
    );
    let path: PathBuf = dir.join("sigmoid.safetensors");
    std::fs::write(&path, st.to_bytes()).expect("temp file is writable");
    format!("weights = \"{}\"\ntiming = token", path.display())
}

fn decide_loop(c: &mut Criterion, id: &str, gate: &mut dyn Gate, input: &StepInput<'_>) {
    gate.reset();
    c.bench_function(id, |b| {
        b.iter(|| black_box(gate.decide(black_box(input)).expect("gate decides")));
    });
}

fn gate_decide(c: &mut Criterion) {
    let hidden: Vec<f32> = (0..HIDDEN).map(|i| ((i as f32) * 0.11).cos()).collect();
    let params = sigmoid_params();

    let mut sigmoid: LoadedGate = plugin("gate_sigmoid")
        .create(&params)
        .expect("sigmoid gate");
    let step = StepInput {
        hidden: &hidden,
        ..Default::default()
    };
    decide_loop(c, "gate_decide/sigmoid-576/abi", &mut sigmoid, &step);

    let mut direct = gate_sigmoid::Sigmoid::create(&params).expect("sigmoid gate");
    decide_loop(c, "gate_decide/sigmoid-576/in-process", &mut direct, &step);

    let mut lif = plugin("gate_lif").create("").expect("lif gate");
    let step = StepInput {
        divergence: Some(0.3),
        ..Default::default()
    };
    decide_loop(c, "gate_decide/lif/abi", &mut lif, &step);
}

criterion_group!(benches, gate_decide);
criterion_main!(benches);
