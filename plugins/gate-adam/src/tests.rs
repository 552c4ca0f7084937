//! In-process tests of the adam gate (traces through the cdylib: crates/ngsd-gate-host/tests).

use super::*;

#[test]
fn first_step_is_half_of_one() {
    // m̂ = I and √ŝ = I on the first step, so v = 0.5·I/(I + ε) just below 0.5.
    let mut g = Adam::create("").unwrap();
    let d = g.decide(&StepInput {
        divergence: Some(0.625_735_6),
        ..Default::default()
    });
    let d = d.unwrap();
    assert_eq!(d.strength, 0.0);
    assert!((d.value - 0.5).abs() < 1e-7);
    assert!(
        Adam::create("beta2 = 1")
            .unwrap_err()
            .to_string()
            .contains("must be below 1")
    );
}
