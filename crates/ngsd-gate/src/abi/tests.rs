//! Tests for the ABI: the committed header, and the export shims called in-process.

use std::ffi::c_char;
use std::path::PathBuf;
use std::process::Command;

use super::*;
use crate::{Decision, Error, Gate, GatePlugin, Needs, Params, Result};

fn header_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include/ngsd_gate.h")
}

#[test]
#[cfg(target_pointer_width = "64")]
fn header_is_fresh() {
    let path = header_path();
    let expected = c_header();
    if std::env::var_os("NGSD_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "{} is stale: run `NGSD_UPDATE_HEADER=1 cargo test -p ngsd-gate header_is_fresh` \
         and commit the result",
        path.display()
    );
}

#[test]
#[cfg(target_pointer_width = "64")]
fn header_compiles_and_matches_rust_layout() {
    let dir = std::env::temp_dir().join(format!("ngsd-gate-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("check.c");
    std::fs::write(
        &src,
        "#include \"ngsd_gate.h\"\nint main(void) { return 0; }\n",
    )
    .unwrap();
    let include = header_path().parent().unwrap().to_owned();
    let out = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Werror", "-fsyntax-only", "-I"])
        .arg(&include)
        .arg(&src)
        .output()
        .expect("a C compiler `cc` is needed to check the header (it is also Rust's linker)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_encoding() {
    assert_eq!(AbiVersion::CURRENT.to_u32(), ABI_VERSION);
    assert_eq!(
        AbiVersion::from_u32(0x0002_0003),
        AbiVersion { major: 2, minor: 3 }
    );
    assert_eq!(AbiVersion { major: 1, minor: 4 }.to_string(), "1.4");
}

/// A gate that misbehaves on request, to test the shims.
struct Probe {
    calls: u32,
}

impl Gate for Probe {
    fn name(&self) -> &str {
        "probe"
    }
    fn needs(&self) -> Needs {
        Needs::DIVERGENCE | Needs::HIDDEN
    }
    fn reset(&mut self) {
        self.calls = 0;
    }
    fn decide(&mut self, input: &crate::StepInput<'_>) -> Result<Decision> {
        self.calls += 1;
        let d = input.require_divergence()?;
        if d < 0.0 {
            panic!("negative divergence {d}");
        }
        Ok(Decision::steer(
            d,
            input.hidden.iter().sum::<f32>() + input.step as f32,
        ))
    }
}

impl GatePlugin for Probe {
    const NAME: &'static str = "probe";
    const DESCRIPTION: &'static str = "test gate";
    const NEEDS: Needs = Needs::DIVERGENCE;
    fn create(config: &str) -> Result<Self> {
        let mut p = Params::parse(config)?;
        if p.bool_or("explode", false)? {
            panic!("boom at create");
        }
        p.finish()?;
        Ok(Probe { calls: 0 })
    }
}

static VT: GateVTableV1 = vtable_for::<Probe>();

fn create(config: &str) -> std::result::Result<*mut GateState, (Status, String)> {
    let mut state = std::ptr::null_mut();
    let mut buf = [0 as c_char; 16];
    let mut len = 0usize;
    // SAFETY: valid config, out pointer, buffer of buf.len() bytes and length pointer.
    let status = unsafe {
        VT.create.unwrap()(
            StrRef::new(config),
            &mut state,
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
        )
    };
    if status == STATUS_OK {
        Ok(state)
    } else {
        let bytes: Vec<u8> = buf[..len].iter().map(|&c| c as u8).collect();
        Err((status, String::from_utf8(bytes).unwrap()))
    }
}

fn decide(
    state: *mut GateState,
    input: &crate::StepInput<'_>,
) -> std::result::Result<Decision, (Status, String)> {
    let raw = StepInput::from_rust(input);
    let mut out = Decision::default();
    // SAFETY: state from create, valid input and output.
    let status = unsafe { VT.decide.unwrap()(state, &raw, &mut out) };
    if status == STATUS_OK {
        Ok(out)
    } else {
        // SAFETY: state is live; the message is copied before the next call.
        let msg = unsafe { VT.last_error.unwrap()(state).to_str_lossy().into_owned() };
        Err((status, msg))
    }
}

#[test]
fn vtable_statics() {
    assert_eq!(VT.size as usize, size_of::<GateVTableV1>());
    assert_eq!(VT.abi_version, ABI_VERSION);
    // SAFETY: static strings from the plugin.
    unsafe {
        assert_eq!(VT.name.unwrap()().to_str_lossy(), "probe");
        assert_eq!(VT.description.unwrap()().to_str_lossy(), "test gate");
        assert_eq!(VT.default_needs.unwrap()(), NEEDS_DIVERGENCE);
    }
}

#[test]
fn create_errors_are_truncated_utf8_and_panics_caught() {
    // "unknown gate parameter `x` ..." truncated to the 16-byte buffer.
    assert_eq!(
        create("x = 1").unwrap_err(),
        (STATUS_ERROR, "unknown gate par".to_owned())
    );
    let (status, msg) = create("explode = true").unwrap_err();
    assert_eq!(status, STATUS_PANIC);
    assert_eq!(msg, "panicked while r");
    assert_eq!(
        create("tau = \u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}")
            .unwrap_err()
            .0,
        STATUS_ERROR
    );
}

#[test]
fn inputs_cross_and_errors_and_panics_come_back() {
    let state = create("").unwrap();
    // SAFETY: live state.
    assert_eq!(
        unsafe { VT.needs.unwrap()(state) },
        NEEDS_DIVERGENCE | NEEDS_HIDDEN
    );
    let hidden = [1.0, 2.0];
    let ok = crate::StepInput {
        step: 3,
        hidden: &hidden,
        divergence: Some(0.5),
        ..Default::default()
    };
    assert_eq!(decide(state, &ok).unwrap(), Decision::steer(0.5, 6.0));

    let missing = crate::StepInput {
        step: 4,
        ..Default::default()
    };
    let (status, msg) = decide(state, &missing).unwrap_err();
    assert_eq!(status, STATUS_ERROR);
    assert!(msg.starts_with("gate input missing: divergence"), "{msg}");

    let bad = crate::StepInput {
        divergence: Some(-1.0),
        ..Default::default()
    };
    let (status, msg) = decide(state, &bad).unwrap_err();
    assert_eq!(status, STATUS_PANIC);
    assert_eq!(
        msg,
        "negative divergence -1 (the gate is disabled until the next reset)"
    );
    // Poisoned until reset.
    assert_eq!(decide(state, &ok).unwrap_err().0, STATUS_PANIC);
    // SAFETY: live state.
    assert_eq!(unsafe { VT.reset.unwrap()(state) }, STATUS_OK);
    assert!(decide(state, &ok).is_ok());

    // A struct claiming to be smaller than v1.0 is refused.
    let mut raw = StepInput::from_rust(&ok);
    raw.size = 8;
    let mut out = Decision::default();
    // SAFETY: live state; valid pointers.
    let status = unsafe { VT.decide.unwrap()(state, &raw, &mut out) };
    assert_eq!(status, STATUS_INVALID_ARGUMENT);
    // SAFETY: live state, then destroyed once.
    unsafe {
        assert!(
            VT.last_error.unwrap()(state)
                .to_str_lossy()
                .contains("NgsdStepInput.size is 8")
        );
        VT.destroy.unwrap()(state);
    }
}

#[test]
fn null_arguments_are_refused() {
    let raw = StepInput::from_rust(&crate::StepInput::default());
    let mut out = Decision::default();
    // SAFETY: null state is explicitly handled by every shim.
    unsafe {
        assert_eq!(
            VT.decide.unwrap()(std::ptr::null_mut(), &raw, &mut out),
            STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            VT.reset.unwrap()(std::ptr::null_mut()),
            STATUS_INVALID_ARGUMENT
        );
        VT.destroy.unwrap()(std::ptr::null_mut());
    }
    let state = create("").unwrap();
    // SAFETY: live state; null input/output are handled.
    unsafe {
        assert_eq!(
            VT.decide.unwrap()(state, std::ptr::null(), &mut out),
            STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            VT.decide.unwrap()(state, &raw, std::ptr::null_mut()),
            STATUS_INVALID_ARGUMENT
        );
        VT.destroy.unwrap()(state);
    }
}

#[test]
fn error_type_is_usable() {
    let e = Error::invalid_param("tau", "must be positive");
    assert_eq!(e.to_string(), "gate parameter `tau`: must be positive");
}
