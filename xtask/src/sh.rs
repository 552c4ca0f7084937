//! Small helpers: the checkout root, running commands with a visible echo, hashing, atomic copies.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The checkout's root folder.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Prints a step heading.
pub fn step(msg: &str) {
    eprintln!("\x1b[1m==>\x1b[0m {msg}");
}

/// Runs a command, inheriting stdio; fails with the command line when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    eprintln!("    $ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its stdout; stderr is inherited.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = show(cmd);
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !out.status.success() {
        bail!("`{shown}` failed ({})", out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{shown}` printed non-UTF-8"))
}

fn show(cmd: &Command) -> String {
    let root = root();
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.contains('\n') {
                return "<inline script>".to_string();
            }
            s.strip_prefix(&format!("{}/", root.display()))
                .map(str::to_owned)
                .unwrap_or_else(|| s.into_owned())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `cargo` that runs xtask.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// sha256 of a file, lowercase hex.
pub fn sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks a file's sha256 against a pin.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256(path)?;
    if actual != expected {
        bail!(
            "{} has sha256 {actual}, expected {expected}; the download is corrupt or not the pinned \
             version: delete it and re-run the same `cargo xtask setup` command",
            path.display()
        );
    }
    Ok(())
}

/// Copies a file next to its destination and renames it into place.
pub fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    ngsd_fs::copy_atomic(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}
