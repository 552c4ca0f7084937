//! In-process tests of the ema gate (traces through the cdylib: crates/ngsd-gate-host/tests).

use super::*;

#[test]
fn averages_and_thresholds() {
    let mut g = Ema::create("threshold = 0.5").unwrap();
    let mut step = |d: f32| {
        g.decide(&StepInput {
            divergence: Some(d),
            ..Default::default()
        })
    };
    assert_eq!(step(0.8).unwrap(), Decision::pass(0.4));
    assert_eq!(step(0.8).unwrap(), Decision::steer(1.0, 0.6));
    assert!(
        Ema::create("beta = 1")
            .unwrap_err()
            .to_string()
            .contains("[0, 1)")
    );
}
