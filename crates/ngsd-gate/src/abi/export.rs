//! The plugin side of the ABI: `extern "C"` shims over a [`GatePlugin`], and `export_gate!`.
//!
//! Every shim catches panics, so none unwinds into the host. After a panic the instance is
//! poisoned: every call but `reset`, `last_error` and `destroy` fails until a `reset`
//! succeeds, because the gate's state may be half-updated.

use std::ffi::c_char;
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{
    ABI_VERSION, AnswerInput, Decision, GateState, GateVTableV1, HAS_ALPHA, HAS_DIVERGENCE,
    HAS_RISK, PromptInput, STATUS_ERROR, STATUS_INVALID_ARGUMENT, STATUS_OK, STATUS_PANIC, Status,
    StepInput, StrRef,
};
use crate::GatePlugin;

/// The vtable of gate type `G`; [`export_gate!`](crate::export_gate) puts it in a static.
pub const fn vtable_for<G: GatePlugin>() -> GateVTableV1 {
    GateVTableV1 {
        size: size_of::<GateVTableV1>() as u32,
        abi_version: ABI_VERSION,
        name: Some(name::<G>),
        description: Some(description::<G>),
        default_needs: Some(default_needs::<G>),
        create: Some(create::<G>),
        destroy: Some(destroy::<G>),
        needs: Some(needs::<G>),
        reset: Some(reset::<G>),
        observe_prompt: Some(observe_prompt::<G>),
        decide: Some(decide::<G>),
        last_error: Some(last_error::<G>),
        features: Some(features::<G>),
        check_answer: Some(check_answer::<G>),
    }
}

/// Export a [`GatePlugin`] type as an ngsd gate plugin (ABI 1.x).
///
/// Defines the two symbols the host looks for, `ngsd_gate_abi_version` and `ngsd_gate_v1`.
/// Use it once, at the root of a `cdylib` crate:
///
/// ```ignore
/// ngsd_gate::export_gate!(MyGate);
/// ```
#[macro_export]
macro_rules! export_gate {
    ($gate:ty) => {
        /// The ngsd gate ABI version this plugin speaks: `(major << 16) | minor`.
        #[unsafe(no_mangle)]
        pub extern "C" fn ngsd_gate_abi_version() -> u32 {
            $crate::abi::ABI_VERSION
        }

        /// The ngsd gate vtable (ABI major 1) of this plugin.
        #[unsafe(no_mangle)]
        pub extern "C" fn ngsd_gate_v1() -> *const $crate::abi::GateVTableV1 {
            static VTABLE: $crate::abi::GateVTableV1 = $crate::abi::vtable_for::<$gate>();
            &VTABLE
        }

        const _: $crate::abi::AbiVersionFn = ngsd_gate_abi_version;
        const _: $crate::abi::EntryV1Fn = ngsd_gate_v1;
    };
}

/// What a state pointer points to.
struct Instance<G> {
    gate: G,
    error: String,
    poisoned: bool,
    /// The gate's `FeatureSpec` text, fixed at creation (features never change).
    features: String,
}

impl<G: GatePlugin> Instance<G> {
    fn set_error(&mut self, message: std::fmt::Arguments<'_>) {
        self.error.clear();
        let _ = self.error.write_fmt(message);
    }

    /// Run `f` on the gate, catching errors and panics into `self.error`.
    fn call<T>(&mut self, f: impl FnOnce(&mut G) -> crate::Result<T>) -> Result<T, Status> {
        if self.poisoned {
            // Keep the panic message in `error`; callers see the same status again.
            return Err(STATUS_PANIC);
        }
        match catch_unwind(AssertUnwindSafe(|| f(&mut self.gate))) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.set_error(format_args!("{e}"));
                Err(STATUS_ERROR)
            }
            Err(payload) => {
                self.poisoned = true;
                self.set_error(format_args!(
                    "{} (the gate is disabled until the next reset)",
                    panic_message(payload.as_ref())
                ));
                Err(STATUS_PANIC)
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "panic with a non-string payload"
    }
}

/// # Safety
/// `state` is null or was returned by `create::<G>` and not destroyed, and no other call on
/// it is running (the ABI contract).
unsafe fn instance<'a, G>(state: *mut GateState) -> Option<&'a mut Instance<G>> {
    // SAFETY: per this function's contract the pointer is null or a live, unaliased
    // `Box<Instance<G>>` made by `create::<G>`.
    unsafe { state.cast::<Instance<G>>().as_mut() }
}

/// # Safety
/// `ptr` is null or points to `len` floats valid for `'a`.
unsafe fn floats<'a>(ptr: *const f32, len: usize) -> Result<Option<&'a [f32]>, &'static str> {
    if ptr.is_null() {
        return if len == 0 {
            Ok(None)
        } else {
            Err("null float pointer with non-zero length")
        };
    }
    if !ptr.is_aligned() {
        return Err("misaligned float pointer");
    }
    // SAFETY: non-null and aligned (checked), and the caller guarantees `len` valid floats.
    Ok(Some(unsafe { std::slice::from_raw_parts(ptr, len) }))
}

fn opt(flags: u32, bit: u32, v: f32) -> Option<f32> {
    if flags & bit != 0 { Some(v) } else { None }
}

/// # Safety
/// `input` is null or points to an `NgsdStepInput` of at least the size its `size` field
/// states, whose slices are valid for `'a`.
unsafe fn step_input<'a>(input: *const StepInput) -> Result<crate::StepInput<'a>, String> {
    if input.is_null() || !input.is_aligned() {
        return Err("null or misaligned NgsdStepInput pointer".to_owned());
    }
    // SAFETY: non-null and aligned; every version of the struct starts with `size: u32`.
    let size = unsafe { input.cast::<u32>().read() } as usize;
    if size < size_of::<StepInput>() {
        return Err(format!(
            "NgsdStepInput.size is {size}, this gate needs at least {}",
            size_of::<StepInput>()
        ));
    }
    // SAFETY: the host's struct is at least as large as ours (checked just above).
    let raw = unsafe { &*input };
    // SAFETY: the host guarantees the pointers and lengths describe valid slices.
    let (hidden, base_probs, expert_probs) = unsafe {
        (
            floats(raw.hidden, raw.hidden_len)?.unwrap_or(&[]),
            floats(raw.base_probs, raw.base_probs_len)?,
            floats(raw.expert_probs, raw.expert_probs_len)?,
        )
    };
    Ok(crate::StepInput {
        step: raw.step,
        hidden,
        base_probs,
        expert_probs,
        divergence: opt(raw.flags, HAS_DIVERGENCE, raw.divergence),
        risk: opt(raw.flags, HAS_RISK, raw.risk),
        alpha: opt(raw.flags, HAS_ALPHA, raw.alpha),
    })
}

/// # Safety
/// As [`step_input`], for an `NgsdAnswerInput`.
unsafe fn answer_input<'a>(input: *const AnswerInput) -> Result<crate::AnswerInput<'a>, String> {
    if input.is_null() || !input.is_aligned() {
        return Err("null or misaligned NgsdAnswerInput pointer".to_owned());
    }
    // SAFETY: non-null and aligned; every version of the struct starts with `size: u32`.
    let size = unsafe { input.cast::<u32>().read() } as usize;
    if size < size_of::<AnswerInput>() {
        return Err(format!(
            "NgsdAnswerInput.size is {size}, this gate needs at least {}",
            size_of::<AnswerInput>()
        ));
    }
    // SAFETY: the host's struct is at least as large as ours (checked just above).
    let raw = unsafe { &*input };
    // SAFETY: the host guarantees the pointer and length describe a valid slice.
    let features = unsafe { floats(raw.features, raw.features_len)? }.unwrap_or(&[]);
    Ok(crate::AnswerInput {
        tokens: raw.tokens,
        features,
        risk: opt(raw.flags, HAS_RISK, raw.risk),
        alpha: opt(raw.flags, HAS_ALPHA, raw.alpha),
    })
}

/// # Safety
/// As [`step_input`], for an `NgsdPromptInput`.
unsafe fn prompt_input<'a>(input: *const PromptInput) -> Result<crate::PromptInput<'a>, String> {
    if input.is_null() || !input.is_aligned() {
        return Err("null or misaligned NgsdPromptInput pointer".to_owned());
    }
    // SAFETY: non-null and aligned; every version of the struct starts with `size: u32`.
    let size = unsafe { input.cast::<u32>().read() } as usize;
    if size < size_of::<PromptInput>() {
        return Err(format!(
            "NgsdPromptInput.size is {size}, this gate needs at least {}",
            size_of::<PromptInput>()
        ));
    }
    // SAFETY: the host's struct is at least as large as ours (checked just above).
    let raw = unsafe { &*input };
    // SAFETY: the host guarantees the pointer and length describe a valid slice.
    let hidden = unsafe { floats(raw.hidden, raw.hidden_len)? }.unwrap_or(&[]);
    Ok(crate::PromptInput {
        hidden,
        risk: opt(raw.flags, HAS_RISK, raw.risk),
        alpha: opt(raw.flags, HAS_ALPHA, raw.alpha),
    })
}

extern "C" fn name<G: GatePlugin>() -> StrRef {
    StrRef::new(G::NAME)
}

extern "C" fn description<G: GatePlugin>() -> StrRef {
    StrRef::new(G::DESCRIPTION)
}

extern "C" fn default_needs<G: GatePlugin>() -> u32 {
    G::NEEDS.bits()
}

/// Copy `message` into the host's buffer, truncated at a character boundary.
///
/// # Safety
/// `buf` is null or valid for `capacity` bytes of writes; `len_out` is null or writable.
unsafe fn write_error(message: &str, buf: *mut c_char, capacity: usize, len_out: *mut usize) {
    let mut n = message.len().min(if buf.is_null() { 0 } else { capacity });
    while !message.is_char_boundary(n) {
        n -= 1;
    }
    if n > 0 {
        // SAFETY: `buf` is non-null (n > 0 implies it) and valid for `capacity >= n` bytes;
        // the source is a live &str of at least n bytes; the regions cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), n) };
    }
    if !len_out.is_null() {
        // SAFETY: non-null, and the caller guarantees it is writable.
        unsafe { len_out.write(n) };
    }
}

unsafe extern "C" fn create<G: GatePlugin>(
    config: StrRef,
    out_state: *mut *mut GateState,
    error: *mut c_char,
    error_capacity: usize,
    error_len: *mut usize,
) -> Status {
    // SAFETY (for every write_error below): the host passes a buffer of `error_capacity`
    // bytes and a writable `error_len`, or nulls (ABI contract).
    let fail = |status: Status, message: &str| unsafe {
        write_error(message, error, error_capacity, error_len);
        status
    };
    if out_state.is_null() || (config.ptr.is_null() && config.len != 0) {
        return fail(
            STATUS_INVALID_ARGUMENT,
            "create: null out_state or config pointer",
        );
    }
    let bytes: &[u8] = if config.len == 0 {
        &[]
    } else {
        // SAFETY: non-null (checked) and the host guarantees `len` readable bytes.
        unsafe { std::slice::from_raw_parts(config.ptr.cast::<u8>(), config.len) }
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return fail(
            STATUS_INVALID_ARGUMENT,
            "gate parameters are not valid UTF-8",
        );
    };
    match catch_unwind(|| G::create(text)) {
        Ok(Ok(gate)) => {
            let features = match catch_unwind(AssertUnwindSafe(|| gate.features())) {
                Ok(spec) => spec.to_string(),
                Err(payload) => {
                    return fail(
                        STATUS_PANIC,
                        &format!(
                            "panicked while listing its features: {}",
                            panic_message(payload.as_ref())
                        ),
                    );
                }
            };
            let instance = Box::new(Instance {
                gate,
                error: String::new(),
                poisoned: false,
                features,
            });
            // SAFETY: `out_state` is non-null (checked) and writable (ABI contract).
            unsafe { out_state.write(Box::into_raw(instance).cast::<GateState>()) };
            STATUS_OK
        }
        Ok(Err(e)) => fail(STATUS_ERROR, &e.to_string()),
        Err(payload) => fail(
            STATUS_PANIC,
            &format!(
                "panicked while reading its parameters: {}",
                panic_message(payload.as_ref())
            ),
        ),
    }
}

unsafe extern "C" fn destroy<G: GatePlugin>(state: *mut GateState) {
    if state.is_null() {
        return;
    }
    // SAFETY: the host passes a state from `create::<G>` exactly once (ABI contract), so
    // re-owning the box is sound.
    let boxed = unsafe { Box::from_raw(state.cast::<Instance<G>>()) };
    // A panicking Drop must not unwind into the host; the memory is lost in that case.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(boxed)));
}

unsafe extern "C" fn needs<G: GatePlugin>(state: *const GateState) -> u32 {
    // SAFETY: ABI contract (see `instance`); `needs` takes a const pointer but the host
    // never runs it concurrently with another call on the same state.
    let Some(inst) = (unsafe { instance::<G>(state.cast_mut()) }) else {
        return u32::MAX;
    };
    // u32::MAX has unknown bits set, which the host rejects with the message below.
    inst.call(|g| Ok(g.needs().bits())).unwrap_or(u32::MAX)
}

unsafe extern "C" fn reset<G: GatePlugin>(state: *mut GateState) -> Status {
    // SAFETY: ABI contract (see `instance`).
    let Some(inst) = (unsafe { instance::<G>(state) }) else {
        return STATUS_INVALID_ARGUMENT;
    };
    inst.poisoned = false;
    match inst.call(|g| {
        g.reset();
        Ok(())
    }) {
        Ok(()) => STATUS_OK,
        Err(status) => status,
    }
}

unsafe extern "C" fn observe_prompt<G: GatePlugin>(
    state: *mut GateState,
    input: *const PromptInput,
) -> Status {
    // SAFETY: ABI contract (see `instance`).
    let Some(inst) = (unsafe { instance::<G>(state) }) else {
        return STATUS_INVALID_ARGUMENT;
    };
    // SAFETY: the host passes a valid NgsdPromptInput (ABI contract); checked for null.
    let prompt = match unsafe { prompt_input(input) } {
        Ok(p) => p,
        Err(message) => {
            inst.set_error(format_args!("{message}"));
            return STATUS_INVALID_ARGUMENT;
        }
    };
    match inst.call(|g| g.observe_prompt(&prompt)) {
        Ok(()) => STATUS_OK,
        Err(status) => status,
    }
}

unsafe extern "C" fn decide<G: GatePlugin>(
    state: *mut GateState,
    input: *const StepInput,
    out: *mut Decision,
) -> Status {
    // SAFETY: ABI contract (see `instance`).
    let Some(inst) = (unsafe { instance::<G>(state) }) else {
        return STATUS_INVALID_ARGUMENT;
    };
    if out.is_null() || !out.is_aligned() {
        inst.set_error(format_args!("decide: null or misaligned output pointer"));
        return STATUS_INVALID_ARGUMENT;
    }
    // SAFETY: the host passes a valid NgsdStepInput (ABI contract); checked for null.
    let step = match unsafe { step_input(input) } {
        Ok(s) => s,
        Err(message) => {
            inst.set_error(format_args!("{message}"));
            return STATUS_INVALID_ARGUMENT;
        }
    };
    match inst.call(|g| g.decide(&step)) {
        Ok(decision) => {
            // SAFETY: non-null and aligned (checked above), writable per the ABI contract.
            unsafe { out.write(decision) };
            STATUS_OK
        }
        Err(status) => status,
    }
}

unsafe extern "C" fn features<G: GatePlugin>(state: *const GateState) -> StrRef {
    // SAFETY: ABI contract (see `instance`); only read here.
    match unsafe { instance::<G>(state.cast_mut()) } {
        Some(inst) => StrRef::new(&inst.features),
        None => StrRef::new(""),
    }
}

unsafe extern "C" fn check_answer<G: GatePlugin>(
    state: *mut GateState,
    input: *const AnswerInput,
    out: *mut Decision,
) -> Status {
    // SAFETY: ABI contract (see `instance`).
    let Some(inst) = (unsafe { instance::<G>(state) }) else {
        return STATUS_INVALID_ARGUMENT;
    };
    if out.is_null() || !out.is_aligned() {
        inst.set_error(format_args!(
            "check_answer: null or misaligned output pointer"
        ));
        return STATUS_INVALID_ARGUMENT;
    }
    // SAFETY: the host passes a valid NgsdAnswerInput (ABI contract); checked for null.
    let answer = match unsafe { answer_input(input) } {
        Ok(a) => a,
        Err(message) => {
            inst.set_error(format_args!("{message}"));
            return STATUS_INVALID_ARGUMENT;
        }
    };
    match inst.call(|g| g.check_answer(&answer)) {
        Ok(decision) => {
            // SAFETY: non-null and aligned (checked above), writable per the ABI contract.
            unsafe { out.write(decision) };
            STATUS_OK
        }
        Err(status) => status,
    }
}

unsafe extern "C" fn last_error<G: GatePlugin>(state: *const GateState) -> StrRef {
    // SAFETY: ABI contract (see `instance`); only read here.
    match unsafe { instance::<G>(state.cast_mut()) } {
        Some(inst) => StrRef::new(&inst.error),
        None => StrRef::new("null gate state"),
    }
}
