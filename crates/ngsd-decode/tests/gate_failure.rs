//! A gate that fails in the middle of a generation, or a probe that fails while setting α: the
//! failure policy decides (fail closed = steer and record, or abort), and the failure is never
//! silently ignored.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

mod common;

use common::models;
use ngsd_decode::{DecodeConfig, Models, Output, Reflection, Request, generate};
use ngsd_gate::{FailurePolicy, Gate};
use ngsd_runtime::GenerateConfig;

/// The misbehaving fixture plugin (built as a dev-dependency), loaded from disk.
fn misbehave(mode: &str) -> Box<dyn Gate + Send> {
    let file = format!(
        "{}fixture_misbehave{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let path = ngsd_gate_host::default_dirs()
        .into_iter()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{file} is not built: run `cargo build --workspace`"));
    let plugin = ngsd_gate_host::Plugin::open(&path).unwrap();
    Box::new(plugin.create(&format!("mode = {mode}")).unwrap())
}

fn config(policy: FailurePolicy) -> DecodeConfig {
    DecodeConfig {
        generate: GenerateConfig {
            max_new_tokens: 3,
            ..Default::default()
        },
        failure_policy: policy,
        trace: true,
        ..Default::default()
    }
}

#[test]
fn fail_closed_steers_and_records_every_failure() {
    let mut m = models();
    let req = Request {
        prompt: "Hello".into(),
        ..Default::default()
    };
    for mode in ["nan", "above", "error", "panic"] {
        let mut gate = misbehave(mode);
        let out = generate(
            &req,
            &mut m,
            gate.as_mut(),
            &mut Reflection::Fixed(0.9),
            &config(FailurePolicy::FailClosed),
            |_| {},
        )
        .unwrap();
        assert_eq!(out.summary.gate_errors, out.tokens.len(), "{mode}");
        assert_eq!(
            out.summary.steered_tokens,
            out.tokens.len(),
            "{mode}: failing closed steers"
        );
        assert!(
            out.trace
                .iter()
                .all(|l| l.gate_error.is_some() && l.steered),
            "{mode}"
        );
        assert!(
            out.explain().contains("gate errors (failed closed)"),
            "{}",
            out.explain()
        );
    }
}

#[test]
fn abort_ends_the_request_with_the_gate_error() {
    let mut m = models();
    let req = Request {
        prompt: "Hello".into(),
        ..Default::default()
    };
    let check = |m: &mut Models, mode: &str, expected: &str| {
        let mut gate = misbehave(mode);
        let err = generate(
            &req,
            m,
            gate.as_mut(),
            &mut Reflection::Fixed(0.9),
            &config(FailurePolicy::Abort),
            |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(expected), "{mode}: {err}");
    };
    check(
        &mut m,
        "nan",
        "gate `misbehave` returned steering strength NaN, expected a number in [0, 1]",
    );
    check(
        &mut m,
        "below",
        "gate `misbehave` returned steering strength -0.25, expected a number in [0, 1]",
    );
    check(&mut m, "error", "fixture fails on purpose");
    check(
        &mut m,
        "panic",
        "gate `misbehave` panicked: fixture panics in decide",
    );
}

/// Decodes "Hello" with a passing gate and the misbehaving fixture as the probe.
fn with_failing_probe(
    m: &mut Models,
    mode: &str,
    policy: FailurePolicy,
) -> ngsd_decode::Result<Output> {
    let req = Request {
        prompt: "Hello".into(),
        ..Default::default()
    };
    let mut probe = Reflection::Probe {
        gate: misbehave(mode),
        map: Default::default(),
    };
    generate(
        &req,
        m,
        misbehave("ok").as_mut(),
        &mut probe,
        &config(policy),
        |_| {},
    )
}

/// Issue 15: probe errors bypassed the failure policy.
#[test]
fn a_failing_probe_follows_the_failure_policy() {
    let mut m = models();
    for (mode, message) in [
        ("error", "fixture fails on purpose"),
        ("panic", "fixture panics in decide"),
    ] {
        let out = with_failing_probe(&mut m, mode, FailurePolicy::FailClosed).unwrap();
        let r = &out.summary.reflection;
        assert_eq!(r.mode, "probe", "{mode}");
        assert_eq!(
            r.probability,
            Some(1.0),
            "{mode}: failing closed is the highest risk"
        );
        assert!((r.alpha - 0.9).abs() < 1e-6, "{mode}: {r:?}");
        let why = r.fallback.as_deref().unwrap_or_default();
        assert!(
            why.starts_with("probe failed: ") && why.ends_with("(failed closed)"),
            "{mode}: {why}"
        );
        let err = with_failing_probe(&mut m, mode, FailurePolicy::Abort)
            .unwrap_err()
            .to_string();
        assert!(err.contains(message), "{mode}: {err}");
    }
}
