//! Negative fixtures: every way a plugin can be wrong yields an error that says what and
//! how to fix it.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers panic on failure by design"
)]

mod common;

use std::path::Path;

use ngsd_gate::{Error as GateError, FailurePolicy, Gate, StepInput};
use ngsd_gate_host::{AbiVersion, Error, Plugin, check_compatible};

fn open_err(stem: &str) -> (String, String) {
    let path = common::lib(stem);
    let err = Plugin::open(&path).unwrap_err();
    assert_eq!(err.path(), Some(path.as_path()));
    (err.to_string(), path.display().to_string())
}

#[test]
fn wrong_abi_major() {
    let (err, path) = open_err("fixture_bad_abi");
    assert_eq!(
        err,
        format!(
            "gate plugin {path} speaks gate ABI 99.0 but this ngsd speaks 1.1: rebuild the \
             plugin against ngsd-gate with ABI 1.x"
        )
    );
}

#[test]
fn older_minor_or_short_vtable() {
    let p = Path::new("/plugins/libgate_x.so");
    let current = AbiVersion::CURRENT;
    check_compatible(p, current, Some(size_of::<ngsd_gate::abi::GateVTableV1>())).unwrap();
    check_compatible(
        p,
        AbiVersion {
            minor: current.minor + 1,
            ..current
        },
        None,
    )
    .unwrap();
    if current.minor > 0 {
        let older = AbiVersion {
            minor: current.minor - 1,
            ..current
        };
        let err = check_compatible(p, older, None).unwrap_err().to_string();
        assert!(err.ends_with("or newer"), "{err}");
    }
    let err = check_compatible(p, current, Some(16))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "gate plugin /plugins/libgate_x.so is broken: its vtable is 16 bytes, ABI {current} \
             needs at least {}; rebuild it against this ngsd-gate",
            size_of::<ngsd_gate::abi::GateVTableV1>()
        )
    );
}

#[test]
fn library_without_the_entry_symbol() {
    let (err, path) = open_err("fixture_no_entry");
    assert!(
        err.starts_with(&format!(
            "{path} is not an ngsd gate plugin: it does not export `ngsd_gate_v1`"
        )),
        "{err}"
    );
    let (err, path) = open_err("fixture_not_a_gate");
    assert!(
        err.starts_with(&format!(
            "{path} is not an ngsd gate plugin: it does not export `ngsd_gate_abi_version` \
             (a Rust gate needs `ngsd_gate::export_gate!(YourGate);`"
        )),
        "{err}"
    );
}

fn misbehave(mode: &str) -> ngsd_gate_host::LoadedGate {
    let plugin = Plugin::open(&common::lib("fixture_misbehave")).unwrap();
    plugin.create(&format!("mode = {mode}")).unwrap()
}

#[test]
fn gate_that_panics_in_decide() {
    let mut g = misbehave("panic");
    let err = g.decide(&StepInput::default()).unwrap_err();
    assert!(matches!(err, GateError::Panicked { .. }));
    assert_eq!(
        err.to_string(),
        "gate `misbehave` panicked: fixture panics in decide (the gate is disabled until the \
         next reset)"
    );
    // Mid-generation: fail closed steers fully and keeps the error; abort returns it.
    let closed = FailurePolicy::FailClosed.on_error(err).unwrap();
    assert_eq!(closed.decision.strength, 1.0);
    assert!(closed.error.to_string().contains("panicked"));
    // Poisoned until reset, then it runs (and panics) again.
    let again = g.decide(&StepInput::default()).unwrap_err().to_string();
    assert!(again.contains("fixture panics in decide"), "{again}");
    g.reset();
    assert!(
        FailurePolicy::Abort
            .on_error(g.decide(&StepInput::default()).unwrap_err())
            .is_err()
    );
}

#[test]
fn gate_that_panics_in_reset_reports_it_on_the_next_call() {
    let mut g = misbehave("panic-reset");
    g.reset();
    let err = g.decide(&StepInput::default()).unwrap_err().to_string();
    assert!(
        err.starts_with("gate `misbehave` panicked: fixture panics in reset"),
        "{err}"
    );
}

#[test]
fn gate_that_returns_nan_or_out_of_range() {
    for (mode, shown) in [("nan", "NaN"), ("above", "1.5"), ("below", "-0.25")] {
        let err = misbehave(mode).decide(&StepInput::default()).unwrap_err();
        assert!(matches!(err, GateError::InvalidDecision { .. }), "{mode}");
        assert_eq!(
            err.to_string(),
            format!(
                "gate `misbehave` returned steering strength {shown}, expected a number in [0, 1]"
            )
        );
    }
    let err = misbehave("error")
        .decide(&StepInput::default())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "gate `misbehave` failed: fixture fails on purpose"
    );
    assert!(misbehave("ok").decide(&StepInput::default()).is_ok());
}

#[test]
fn parameter_the_gate_rejects() {
    let path = common::lib("gate_lif");
    let plugin = Plugin::open(&path).unwrap();
    let check = |params: &str, expected: &str| {
        let err = plugin.create(params).unwrap_err();
        assert!(matches!(err, Error::Create { .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "gate `lif` ({}) rejected its parameters: {expected}",
                path.display()
            )
        );
    };
    check(
        "tau = 0.5",
        "gate parameter `tau`: 0.5 is below 1 (decay = 1 − 1/tau)",
    );
    check(
        "tau = 8\nthresold = 1",
        "unknown gate parameter `thresold` (this gate knows: tau, threshold, soft-reset, v-reset, strength)",
    );
    check(
        "tau",
        "gate parameters, line 1: `tau` has no `=` (expected `key = value` lines)",
    );
    let fixture = Plugin::open(&common::lib("fixture_misbehave")).unwrap();
    let err = fixture.create("mode = loud").unwrap_err().to_string();
    assert!(err.ends_with("gate parameter `mode`: `loud` is not one of: ok, panic, nan, above, below, error, panic-reset"), "{err}");
}

#[test]
fn gate_file_that_does_not_exist() {
    let err = Plugin::open(Path::new("/nonexistent/libgate_lif.so"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "gate plugin /nonexistent/libgate_lif.so does not exist: check the path, or give a gate \
         name to search the plugin directories"
    );
    let dirs = common::build_dirs();
    let err = ngsd_gate_host::load("no-such-gate", &dirs, "")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("gate `no-such-gate` not found: no libgate_no_such_gate.so in "),
        "{err}"
    );
    assert!(
        err.contains("build the plugins (`cargo build --workspace`)"),
        "{err}"
    );
}
