//! In-process tests of the LIF gate (the golden traces run through the cdylib in
//! crates/ngsd-gate-host/tests).

use super::*;

fn step(gate: &mut Lif, d: f32) -> Decision {
    gate.decide(&StepInput {
        divergence: Some(d),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn integrates_spikes_and_soft_resets() {
    let mut g = Lif::create("").unwrap();
    assert_eq!(step(&mut g, 0.5), Decision::pass(0.5));
    // 0.875 * 0.5 + 0.6 = 1.0375 >= 1: spike, then v = 0.6 * 1.0375.
    let d = step(&mut g, 0.6);
    assert_eq!(d.strength, 1.0);
    assert!((d.value - 1.0375).abs() < 1e-6);
    assert!((step(&mut g, 0.0).value - 0.875 * 0.6 * 1.0375).abs() < 1e-6);
    g.reset();
    assert_eq!(step(&mut g, 0.25), Decision::pass(0.25));
}

#[test]
fn parameters_are_checked() {
    let err = |c: &str| Lif::create(c).unwrap_err().to_string();
    assert_eq!(
        err("tau = 0.5"),
        "gate parameter `tau`: 0.5 is below 1 (decay = 1 − 1/tau)"
    );
    assert_eq!(
        err("threshold = 0"),
        "gate parameter `threshold`: 0 is not positive"
    );
    assert!(err("soft-reset = 2").contains("outside [0, 1]"));
    assert!(err("decay = 2").starts_with("unknown gate parameter `decay`"));
}

#[test]
fn needs_the_divergence() {
    let mut g = Lif::create("").unwrap();
    assert!(g.decide(&StepInput::default()).is_err());
    let nan = StepInput {
        divergence: Some(f32::NAN),
        ..Default::default()
    };
    assert_eq!(
        g.decide(&nan).unwrap_err().to_string(),
        "divergence is NaN, expected a number"
    );
}
