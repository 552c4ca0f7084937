//! Tests for the failure policy.

use super::*;

#[test]
fn fail_closed_steers_and_keeps_the_error() {
    let out = FailurePolicy::FailClosed
        .on_error(Error::Failed("x".into()))
        .unwrap();
    assert_eq!(out.decision.strength, 1.0);
    assert!(out.decision.value.is_nan());
    assert_eq!(out.error.to_string(), "x");
    assert_eq!(FailurePolicy::default(), FailurePolicy::FailClosed);
}

#[test]
fn abort_returns_the_error() {
    let err = FailurePolicy::Abort
        .on_error(Error::Failed("x".into()))
        .unwrap_err();
    assert_eq!(err.to_string(), "x");
}

#[test]
fn parses_and_prints() {
    for p in [FailurePolicy::FailClosed, FailurePolicy::Abort] {
        assert_eq!(p.to_string().parse::<FailurePolicy>().unwrap(), p);
    }
    assert_eq!(
        "open".parse::<FailurePolicy>().unwrap_err().to_string(),
        "unknown gate failure policy `open` (expected `fail-closed` or `abort`)"
    );
}
