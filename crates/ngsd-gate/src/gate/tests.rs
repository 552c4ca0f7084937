//! Tests for needs flags and decisions.

use super::*;

#[test]
fn needs_display_and_bits() {
    assert_eq!(Needs::NONE.to_string(), "none");
    assert_eq!(
        (Needs::DIVERGENCE | Needs::HIDDEN).to_string(),
        "hidden|divergence"
    );
    assert_eq!(
        Needs::from_bits(0b1111).unwrap().to_string(),
        "hidden|base-probs|expert-probs|divergence"
    );
    assert_eq!(Needs::from_bits(16), None);
    assert!(Needs::DIVERGENCE.needs_expert());
    assert!(!(Needs::HIDDEN | Needs::BASE_PROBS).needs_expert());
    assert!((Needs::HIDDEN | Needs::DIVERGENCE).contains(Needs::HIDDEN));
    assert!(!Needs::HIDDEN.contains(Needs::HIDDEN | Needs::DIVERGENCE));
}

#[test]
fn decision_validity() {
    assert!(Decision::pass(3.0).is_valid());
    assert!(!Decision::pass(3.0).is_steering());
    assert!(Decision::steer(1.0, 0.0).is_valid());
    assert!(!Decision::steer(f32::NAN, 0.0).is_valid());
    assert!(!Decision::steer(1.01, 0.0).is_valid());
    assert!(!Decision::steer(-0.01, 0.0).is_valid());
}

#[test]
fn missing_inputs_are_named() {
    let input = StepInput::default();
    assert_eq!(
        input.require_divergence().unwrap_err().to_string(),
        "gate input missing: divergence (the decoder must provide every input listed in needs())"
    );
    assert!(
        input
            .require_hidden()
            .unwrap_err()
            .to_string()
            .contains("hidden state")
    );
}
