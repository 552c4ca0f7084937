//! Opening a plugin library (ABI checks) and wrapping its gates as [`Gate`]s.

use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use ngsd_gate::abi::{
    self, AbiVersion, AbiVersionFn, ENTRY_SYMBOL_V1, EntryV1Fn, GateState, GateVTableV1, STATUS_OK,
    STATUS_PANIC, Status, StrRef, VERSION_SYMBOL,
};
use ngsd_gate::{AnswerInput, Decision, FeatureSpec, Gate, Needs, PromptInput, StepInput};

use crate::{Error, Result};

/// What `ngsd gates list` shows about a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    /// The gate's name, as the plugin declares it.
    pub name: String,
    /// The plugin file.
    pub path: PathBuf,
    /// The ABI version the plugin speaks.
    pub abi: AbiVersion,
    /// The inputs a default-configured instance reads.
    pub needs: Needs,
    /// One line from the plugin.
    pub description: String,
}

type CreateFn =
    unsafe extern "C" fn(StrRef, *mut *mut GateState, *mut c_char, usize, *mut usize) -> Status;

/// The vtable entries, checked non-null once at load.
#[derive(Clone, Copy)]
struct Fns {
    create: CreateFn,
    destroy: unsafe extern "C" fn(*mut GateState),
    needs: unsafe extern "C" fn(*const GateState) -> u32,
    reset: unsafe extern "C" fn(*mut GateState) -> Status,
    observe_prompt: unsafe extern "C" fn(*mut GateState, *const abi::PromptInput) -> Status,
    decide: unsafe extern "C" fn(*mut GateState, *const abi::StepInput, *mut Decision) -> Status,
    last_error: unsafe extern "C" fn(*const GateState) -> StrRef,
    /// ABI 1.1, optional.
    features: Option<unsafe extern "C" fn(*const GateState) -> StrRef>,
    /// ABI 1.1, optional.
    check_answer: Option<
        unsafe extern "C" fn(*mut GateState, *const abi::AnswerInput, *mut Decision) -> Status,
    >,
}

/// Whether a plugin at `found` with a vtable of `vtable_size` bytes can be used by this host:
/// same major, minor at least ours, vtable at least our size.
pub fn check_compatible(path: &Path, found: AbiVersion, vtable_size: Option<usize>) -> Result<()> {
    let expected = AbiVersion::CURRENT;
    if found.major != expected.major || found.minor < expected.minor {
        return Err(Error::AbiMismatch {
            path: path.to_owned(),
            found,
            expected,
        });
    }
    if let Some(size) = vtable_size.filter(|&s| s < size_of::<GateVTableV1>()) {
        return Err(Error::BadPlugin {
            path: path.to_owned(),
            message: format!(
                "its vtable is {size} bytes, ABI {expected} needs at least {}",
                size_of::<GateVTableV1>()
            ),
        });
    }
    Ok(())
}

/// A loaded plugin library: creates gate instances. Cheap to clone.
///
/// The library is never unloaded (its code may still run from instances, and unloading
/// Rust libraries is unsound with thread-locals), so a `Plugin` is valid for the process.
#[derive(Clone)]
pub struct Plugin {
    info: PluginInfo,
    fns: Fns,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::BadPlugin {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl Plugin {
    /// Load a plugin file and check its ABI.
    ///
    /// Loading runs the library's initialisers: only load plugins you trust, as you would
    /// any program.
    pub fn open(path: &Path) -> Result<Plugin> {
        if !path.is_file() {
            return Err(Error::Missing {
                path: path.to_owned(),
            });
        }
        // SAFETY: loading a library runs its initialisers; the plugin directories and paths
        // are trusted configuration (documented on this function).
        let lib = unsafe { libloading::Library::new(path) }.map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        let not_a_gate = |symbol| Error::NotAGate {
            path: path.to_owned(),
            symbol,
        };
        // SAFETY: the ABI fixes this symbol's type as `AbiVersionFn` for every version.
        let version_fn = unsafe { lib.get::<AbiVersionFn>(VERSION_SYMBOL.as_bytes()) }
            .map_err(|_| not_a_gate(VERSION_SYMBOL))?;
        // SAFETY: calling the frozen version function, which takes nothing and returns u32.
        let found = AbiVersion::from_u32(unsafe { version_fn() });
        check_compatible(path, found, None)?;
        // SAFETY: for ABI major 1 this symbol has type `EntryV1Fn` (major checked above).
        let entry = unsafe { lib.get::<EntryV1Fn>(ENTRY_SYMBOL_V1.as_bytes()) }
            .map_err(|_| not_a_gate(ENTRY_SYMBOL_V1))?;
        // SAFETY: `EntryV1Fn` takes nothing and returns a pointer to a static vtable.
        let vt_ptr = unsafe { entry() };
        if vt_ptr.is_null() || !vt_ptr.is_aligned() {
            return Err(bad(
                path,
                format!("`{ENTRY_SYMBOL_V1}` returned a null or misaligned pointer"),
            ));
        }
        // SAFETY: non-null and aligned; every vtable version starts with `size: u32`, and the
        // library (so the static) is never unloaded.
        let size = unsafe { vt_ptr.cast::<u32>().read() } as usize;
        check_compatible(path, found, Some(size))?;
        // SAFETY: the vtable is at least as large as ours (checked), static, never unloaded.
        let vt: &'static GateVTableV1 = unsafe { &*vt_ptr };
        if vt.abi_version != found.to_u32() {
            return Err(bad(
                path,
                format!(
                    "its vtable says ABI {} but `{VERSION_SYMBOL}` says {found}",
                    AbiVersion::from_u32(vt.abi_version)
                ),
            ));
        }
        let missing = |field: &str| bad(path, format!("vtable entry `{field}` is null"));
        let fns = Fns {
            create: vt.create.ok_or_else(|| missing("create"))?,
            destroy: vt.destroy.ok_or_else(|| missing("destroy"))?,
            needs: vt.needs.ok_or_else(|| missing("needs"))?,
            reset: vt.reset.ok_or_else(|| missing("reset"))?,
            observe_prompt: vt.observe_prompt.ok_or_else(|| missing("observe_prompt"))?,
            decide: vt.decide.ok_or_else(|| missing("decide"))?,
            last_error: vt.last_error.ok_or_else(|| missing("last_error"))?,
            features: vt.features,
            check_answer: vt.check_answer,
        };
        let name_fn = vt.name.ok_or_else(|| missing("name"))?;
        let description_fn = vt.description.ok_or_else(|| missing("description"))?;
        let needs_fn = vt.default_needs.ok_or_else(|| missing("default_needs"))?;
        // SAFETY: these entries return static strings and plain bits (ABI contract); the
        // strings are copied before anything else runs.
        let (name, description, needs_bits) = unsafe {
            (
                name_fn().to_str_lossy().into_owned(),
                description_fn().to_str_lossy().into_owned(),
                needs_fn(),
            )
        };
        let needs = Needs::from_bits(needs_bits)
            .ok_or_else(|| bad(path, format!("unknown needs bits {needs_bits:#x}")))?;
        if name.is_empty() {
            return Err(bad(path, "its gate name is empty"));
        }
        // Never unload: the vtable and code must outlive every instance and `Plugin` clone.
        std::mem::forget(lib);
        Ok(Plugin {
            info: PluginInfo {
                name,
                path: path.to_owned(),
                abi: found,
                needs,
                description,
            },
            fns,
        })
    }

    /// What the plugin declares about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// A new gate instance from its parameter text (`key = value` lines; see
    /// [`ngsd_gate::Params`] and [`ngsd_gate::HostContext`]).
    pub fn create(&self, params: &str) -> Result<LoadedGate> {
        let mut state = std::ptr::null_mut();
        let mut buf = [0 as c_char; 1024];
        let mut len = 0usize;
        // SAFETY: valid UTF-8 config borrowed for the call, a writable out pointer, and a
        // buffer of `buf.len()` bytes with its length pointer (ABI contract for `create`).
        let status = unsafe {
            (self.fns.create)(
                StrRef::new(params),
                &mut state,
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        };
        let path = self.info.path.clone();
        let gate = self.info.name.clone();
        if status != STATUS_OK {
            let bytes: Vec<u8> = buf[..len.min(buf.len())].iter().map(|&c| c as u8).collect();
            let mut message = String::from_utf8_lossy(&bytes).into_owned();
            if message.is_empty() {
                message = format!("status {status} without a message");
            }
            return Err(Error::Create {
                gate,
                path,
                message,
            });
        }
        let Some(state) = NonNull::new(state) else {
            return Err(bad(&path, "`create` succeeded but returned a null state"));
        };
        // From here `gate` owns the state, so every early return destroys it.
        let mut loaded = LoadedGate {
            state,
            fns: self.fns,
            plugin: self.clone(),
            params: params.to_string(),
            name: gate,
            needs: Needs::NONE,
            features: FeatureSpec::default(),
            pending: None,
        };
        // SAFETY: live state from this plugin's `create`; no other call is running on it.
        let bits = unsafe { (self.fns.needs)(state.as_ptr()) };
        loaded.needs = Needs::from_bits(bits)
            .ok_or_else(|| bad(&path, format!("`needs` returned unknown bits {bits:#x}")))?;
        if let Some(features) = self.fns.features {
            // SAFETY: live state; the text is copied before any further call on it.
            let text = unsafe { features(state.as_ptr()).to_str_lossy().into_owned() };
            loaded.features = text
                .parse()
                .map_err(|e| bad(&path, format!("`features` returned `{text}`: {e}")))?;
        }
        if loaded.features.monitors_answer() && self.fns.check_answer.is_none() {
            return Err(bad(
                &path,
                "it lists answer features but has no `check_answer` entry",
            ));
        }
        Ok(loaded)
    }
}

/// A gate instance living in a plugin, usable as any [`Gate`].
///
/// Every decision is validated: a strength that is NaN or outside `[0, 1]` becomes
/// [`ngsd_gate::Error::InvalidDecision`] naming the gate. Plugin errors and panics come back
/// as [`ngsd_gate::Error::Plugin`] and [`ngsd_gate::Error::Panicked`].
pub struct LoadedGate {
    state: NonNull<GateState>,
    fns: Fns,
    /// The plugin and parameters it was made from, for [`Gate::fork`].
    plugin: Plugin,
    params: String,
    name: String,
    needs: Needs,
    features: FeatureSpec,
    /// An error from `reset`, reported by the next call that can fail.
    pending: Option<ngsd_gate::Error>,
}

// SAFETY: the ABI requires that a state may move between threads as long as calls on it do
// not overlap, which `&mut self` on every call guarantees (and `LoadedGate` is not `Sync`).
unsafe impl Send for LoadedGate {}

impl std::fmt::Debug for LoadedGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedGate")
            .field("name", &self.name)
            .field("needs", &self.needs)
            .finish_non_exhaustive()
    }
}

impl LoadedGate {
    fn error(&self, status: Status) -> ngsd_gate::Error {
        // SAFETY: live state; the message is copied before any further call on it.
        let message = unsafe { (self.fns.last_error)(self.state.as_ptr()).to_str_lossy() };
        let message = if message.is_empty() {
            format!("status {status} without a message")
        } else {
            message.into_owned()
        };
        let gate = self.name.clone();
        if status == STATUS_PANIC {
            ngsd_gate::Error::Panicked { gate, message }
        } else {
            ngsd_gate::Error::Plugin { gate, message }
        }
    }
}

impl Gate for LoadedGate {
    fn name(&self) -> &str {
        &self.name
    }

    fn needs(&self) -> Needs {
        self.needs
    }

    fn reset(&mut self) {
        // SAFETY: live state; `&mut self` rules out overlapping calls.
        let status = unsafe { (self.fns.reset)(self.state.as_ptr()) };
        self.pending = (status != STATUS_OK).then(|| self.error(status));
    }

    fn observe_prompt(&mut self, prompt: &PromptInput<'_>) -> ngsd_gate::Result<()> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let raw = abi::PromptInput::from_rust(prompt);
        // SAFETY: live state; `raw` borrows `prompt`'s slice for the duration of the call.
        let status = unsafe { (self.fns.observe_prompt)(self.state.as_ptr(), &raw) };
        if status == STATUS_OK {
            Ok(())
        } else {
            Err(self.error(status))
        }
    }

    fn decide(&mut self, input: &StepInput<'_>) -> ngsd_gate::Result<Decision> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let raw = abi::StepInput::from_rust(input);
        let mut out = Decision::default();
        // SAFETY: live state; `raw` borrows `input`'s slices for the call; `out` is writable.
        let status = unsafe { (self.fns.decide)(self.state.as_ptr(), &raw, &mut out) };
        self.checked(status, out)
    }

    fn features(&self) -> FeatureSpec {
        self.features.clone()
    }

    fn check_answer(&mut self, input: &AnswerInput<'_>) -> ngsd_gate::Result<Decision> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let Some(check) = self.fns.check_answer else {
            return Ok(Decision::pass(f32::NAN));
        };
        let raw = abi::AnswerInput::from_rust(input);
        let mut out = Decision::default();
        // SAFETY: live state; `raw` borrows `input`'s slice for the call; `out` is writable.
        let status = unsafe { check(self.state.as_ptr(), &raw, &mut out) };
        self.checked(status, out)
    }

    /// A new instance from the same plugin and parameters (the plugin's `create` again).
    fn fork(&self) -> ngsd_gate::Result<Option<Box<dyn Gate>>> {
        let twin = self
            .plugin
            .create(&self.params)
            .map_err(|e| ngsd_gate::Error::Failed(e.to_string()))?;
        Ok(Some(Box::new(twin)))
    }
}

impl LoadedGate {
    /// A plugin call's decision, or the error its status or an invalid strength means.
    fn checked(&self, status: Status, out: Decision) -> ngsd_gate::Result<Decision> {
        if status != STATUS_OK {
            return Err(self.error(status));
        }
        if !out.is_valid() {
            return Err(ngsd_gate::Error::InvalidDecision {
                gate: self.name.clone(),
                strength: out.strength,
            });
        }
        Ok(out)
    }
}

impl Drop for LoadedGate {
    fn drop(&mut self) {
        // SAFETY: the state came from this plugin's `create` and is destroyed exactly once.
        unsafe { (self.fns.destroy)(self.state.as_ptr()) };
    }
}
