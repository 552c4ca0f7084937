//! Finding plugin files: by gate name in a list of directories, or by path.

use std::collections::HashSet;
use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::path::{Path, PathBuf};

use crate::{Error, LoadedGate, Plugin, PluginInfo, Result};

/// The file name of gate `name`'s plugin on this platform: `libgate_<name>.so` on Linux
/// (`-` in the name becomes `_`, as cargo names libraries).
pub fn file_name(name: &str) -> String {
    format!("{DLL_PREFIX}gate_{}{DLL_SUFFIX}", name.replace('-', "_"))
}

/// The directories searched when configuration adds none: the running executable's
/// directory and, when that is cargo's `deps/` (tests, benches), its parent. For the `ngsd`
/// binary built by cargo that is `target/<profile>/`, where the plugins are built too.
///
/// The CLI puts its configured and environment directories before these.
pub fn default_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        let parent = (dir.file_name() == Some("deps".as_ref()))
            .then(|| dir.parent().map(Path::to_owned))
            .flatten();
        dirs.push(dir);
        dirs.extend(parent);
    }
    dirs
}

/// Whether a gate spec is a path (contains a path separator or ends with the library
/// suffix) rather than a gate name.
pub fn is_path(spec: &str) -> bool {
    spec.contains('/') || spec.contains(std::path::MAIN_SEPARATOR) || spec.ends_with(DLL_SUFFIX)
}

/// The plugin file for `spec`: a path (which must exist) or a gate name looked up as
/// [`file_name`] in `dirs`, first match wins.
pub fn find(spec: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    if is_path(spec) {
        let path = PathBuf::from(spec);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::Missing { path })
        };
    }
    if spec.is_empty()
        || !spec
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::BadName {
            name: spec.to_owned(),
        });
    }
    let file = file_name(spec);
    dirs.iter()
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::NotFound {
            name: spec.to_owned(),
            file,
            searched: dirs.to_vec(),
        })
}

/// Find, load and create a gate: `spec` is a gate name or a path, `params` its parameter
/// text.
pub fn load(spec: &str, dirs: &[PathBuf], params: &str) -> Result<LoadedGate> {
    Plugin::open(&find(spec, dirs)?)?.create(params)
}

/// Every plugin file (`libgate_*.so`) in `dirs`, in search order and by file name within a
/// directory. A file name already found in an earlier directory is shadowed and skipped,
/// as `find` would never pick it. Files that fail to load are listed as errors, so
/// `ngsd gates list` can show why. Unreadable or missing directories are skipped.
pub fn list(dirs: &[PathBuf]) -> Vec<Result<PluginInfo>> {
    let prefix = format!("{DLL_PREFIX}gate_");
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<(String, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let is_plugin = name.starts_with(&prefix)
                    && name.ends_with(DLL_SUFFIX)
                    && name.len() > prefix.len() + DLL_SUFFIX.len();
                (is_plugin && e.path().is_file()).then(|| (name, e.path()))
            })
            .collect();
        files.sort();
        for (name, path) in files {
            if seen.insert(name) {
                out.push(Plugin::open(&path).map(|p| p.info().clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
