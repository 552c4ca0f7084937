//! In-process tests of the never gate (traces through the cdylib: crates/ngsd-gate-host/tests).

use super::*;

#[test]
fn never_steers_and_takes_no_parameters() {
    assert_eq!(
        Never.decide(&StepInput::default()).unwrap(),
        Decision::pass(0.0)
    );
    let err = Never::create("x = 1").unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown gate parameter `x` (this gate knows: no parameters)"
    );
}
