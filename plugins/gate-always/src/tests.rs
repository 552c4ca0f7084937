//! In-process tests of the always gate (traces through the cdylib: crates/ngsd-gate-host/tests).

use super::*;

#[test]
fn window() {
    let mut g = Always::create("first-m = 2").unwrap();
    let mut at = |step| {
        g.decide(&StepInput {
            step,
            ..Default::default()
        })
        .unwrap()
        .strength
    };
    assert_eq!((at(0), at(1), at(2)), (1.0, 1.0, 0.0));
    let err = Always::create("first-m = -1").unwrap_err().to_string();
    assert_eq!(
        err,
        "gate parameter `first-m`: `-1` is not a valid non-negative integer"
    );
}
