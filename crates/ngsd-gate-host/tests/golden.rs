//! The paper's gates reproduce the recorded traces, through the loaded cdylibs.
//!
//! The table is spec §14.1 (the first 20 tokens of the `*_gcg_log.txt` logs): the input
//! currents I_t = 2·v_t − v_{t−1} recovered from the EMA log at full precision (they are
//! exact f32 values), and the LIF / EMA / Adam potentials as the spec rounds them.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

mod common;

use ngsd_gate::{Gate, PromptInput, StepInput};

#[rustfmt::skip]
const CURRENT: [f64; 20] = [
    0.6257356405258179, 0.008257269859313965, 0.9458508491516113, 0.18512099981307983,
    0.043989986181259155, 0.049679338932037354, 0.43935778737068176, 0.010591447353363037,
    2.467632293701172e-05, 0.01222112774848938, 0.0025111138820648193, 0.0005638003349304199,
    0.0004716813564300537, 0.042988866567611694, 0.0033411383628845215, 0.0008823871612548828,
    0.0005144178867340088, 6.273388862609863e-05, 0.21345722675323486, 0.22323286533355713,
];

#[rustfmt::skip]
const LIF: [f64; 20] = [
    0.625736, 0.555776, 1.432155, 0.937002, 0.863867, 0.805563, 1.144225, 0.61131, 0.534921,
    0.480277, 0.422753, 0.370473, 0.324635, 0.327045, 0.289505, 0.2542, 0.222939, 0.195134,
    0.3842, 0.559408,
];
#[rustfmt::skip]
const LIF_SPIKE: [u8; 20] = [0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

#[rustfmt::skip]
const EMA: [f64; 20] = [
    0.312868, 0.160563, 0.553207, 0.369164, 0.206577, 0.128128, 0.283743, 0.147167, 0.073596,
    0.042909, 0.02271, 0.011637, 0.006054, 0.024522, 0.013931, 0.007407, 0.003961, 0.002012,
    0.107734, 0.165484,
];

#[rustfmt::skip]
const ADAM: [f64; 20] = [
    0.4999999920094052, 0.589912, 0.7063, 0.732535, 0.697146, 0.644768, 0.654445, 0.622079,
    0.572799, 0.522413, 0.473212, 0.427338, 0.385707, 0.356658, 0.32723, 0.298733, 0.272062,
    0.247469, 0.266634, 0.306072,
];

const TOLERANCE: f64 = 1e-6;

/// Runs `gate` over `currents` (one request) and compares each step's explanation value,
/// and the steering decision when `spikes` is given.
fn check(gate: &str, params: &str, currents: &[f64], expected: &[f64], spikes: Option<&[u8]>) {
    let mut g = common::gate(gate, params);
    g.reset();
    g.observe_prompt(&PromptInput::default()).unwrap();
    for (t, (&i, &want)) in currents.iter().zip(expected).enumerate() {
        // Exact: the currents are f32 values written out in full.
        let input = StepInput {
            step: t as u64,
            divergence: Some(i as f32),
            ..Default::default()
        };
        let d = g
            .decide(&input)
            .unwrap_or_else(|e| panic!("{gate} step {t}: {e}"));
        let got = f64::from(d.value);
        assert!(
            (got - want).abs() <= TOLERANCE,
            "{gate} step {t}: potential {got}, expected {want} (I = {i})"
        );
        if let Some(spikes) = spikes {
            assert_eq!(
                d.strength,
                f32::from(spikes[t]),
                "{gate} step {t}: steering strength"
            );
        }
    }
}

#[test]
fn gates_reproduce_the_gcg_traces() {
    check("lif", "", &CURRENT, &LIF, Some(&LIF_SPIKE));
    check(
        "lif",
        "tau = 8; threshold = 1.0; soft-reset = 0.6",
        &CURRENT,
        &LIF,
        Some(&LIF_SPIKE),
    );
    check("ema", "", &CURRENT, &EMA, Some(&[0; 20]));
    check("adam", "", &CURRENT, &ADAM, None);
    // Adam steers where v >= 0.5: the first value is just below.
    let adam_spikes: Vec<u8> = ADAM.iter().map(|&v| u8::from(v >= 0.5)).collect();
    check("adam", "", &CURRENT, &ADAM, Some(&adam_spikes));
}

#[test]
fn reset_restarts_the_trace() {
    let mut g = common::gate("lif", "");
    for _ in 0..2 {
        g.reset();
        for (t, &i) in CURRENT.iter().enumerate() {
            let d = g
                .decide(&StepInput {
                    divergence: Some(i as f32),
                    ..Default::default()
                })
                .unwrap();
            assert!(
                (f64::from(d.value) - LIF[t]).abs() <= TOLERANCE,
                "after reset, step {t}"
            );
        }
    }
}

/// The full logs in `$NGSD_GOLDEN_DIR/{lif,ema}_{gcg,pair,autodan}_log.txt` (the shared
/// golden data; not committed). The input of each step is recovered from the log under the
/// gate's own equations; each recovered input must be a valid total-variation distance in
/// [0, 1], except where it goes negative, which marks a request boundary (the potential
/// restarted from 0), where the test resets the gate. Then the loaded plugin must reproduce
/// every logged value to 1e-6.
#[test]
#[ignore = "needs NGSD_GOLDEN_DIR=<shared>/golden/gates (the long logs are not committed)"]
fn gates_reproduce_the_full_logs() {
    let dir = std::path::PathBuf::from(
        std::env::var_os("NGSD_GOLDEN_DIR").expect("set NGSD_GOLDEN_DIR to the golden/gates dir"),
    );
    for gate in ["lif", "ema"] {
        for attack in ["gcg", "pair", "autodan"] {
            let path = dir.join(format!("{gate}_{attack}_log.txt"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let logged: Vec<f64> = text
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
            let mut g = common::gate(gate, "");
            g.reset();
            let (mut prev, mut boundaries) = (0.0f64, 0);
            for (t, &v) in logged.iter().enumerate() {
                let carried = match gate {
                    "lif" => 0.875 * if prev >= 1.0 { 0.6 * prev } else { prev },
                    _ => 0.5 * prev,
                };
                let mut current = if gate == "lif" {
                    v - carried
                } else {
                    2.0 * v - 2.0 * carried
                };
                if current < 0.0 {
                    boundaries += 1;
                    g.reset();
                    current = if gate == "lif" { v } else { 2.0 * v };
                }
                assert!(
                    current <= 1.0,
                    "{} line {}: recovered input {current} > 1",
                    path.display(),
                    t + 1
                );
                let input = StepInput {
                    divergence: Some(current as f32),
                    ..Default::default()
                };
                let got = f64::from(g.decide(&input).unwrap().value);
                assert!(
                    (got - v).abs() <= TOLERANCE,
                    "{} line {}: {got}, logged {v}",
                    path.display(),
                    t + 1
                );
                prev = v;
            }
            eprintln!(
                "{}: {} steps, {boundaries} request boundaries",
                path.display(),
                logged.len()
            );
        }
    }
}
