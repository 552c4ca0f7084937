//! The host's error type: every message says what to do about it.

use std::path::{Path, PathBuf};

use ngsd_gate::abi::AbiVersion;

/// Why a gate plugin could not be found, loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No plugin file for a gate name in any search directory.
    #[error(
        "gate `{name}` not found: no {file} in {}; build the plugins (`cargo build --workspace`), \
         add the plugin's directory to the gate search path, or give the plugin file's path \
         (`ngsd gates list` shows what is found)",
        show_dirs(.searched)
    )]
    NotFound {
        /// The requested gate name.
        name: String,
        /// The file name looked for, e.g. `libgate_lif.so`.
        file: String,
        /// The directories searched, in order.
        searched: Vec<PathBuf>,
    },
    /// A gate given by path whose file does not exist.
    #[error("gate plugin {} does not exist: check the path, or give a gate name to search the plugin directories", .path.display())]
    Missing {
        /// The path as given.
        path: PathBuf,
    },
    /// A gate name with characters a file name cannot carry.
    #[error("`{name}` is not a valid gate name: use letters, digits, `-` and `_`, or give a path")]
    BadName {
        /// The name as given.
        name: String,
    },
    /// The dynamic loader refused the file.
    #[error("cannot load gate plugin {}: {source}", .path.display())]
    Open {
        /// The plugin file.
        path: PathBuf,
        /// The loader's error.
        source: libloading::Error,
    },
    /// The library lacks one of the ABI's symbols.
    #[error(
        "{} is not an ngsd gate plugin: it does not export `{symbol}` (a Rust gate needs \
         `ngsd_gate::export_gate!(YourGate);`, a C gate must define it as in ngsd_gate.h)",
        .path.display()
    )]
    NotAGate {
        /// The plugin file.
        path: PathBuf,
        /// The missing symbol.
        symbol: &'static str,
    },
    /// The plugin speaks an incompatible ABI version.
    #[error(
        "gate plugin {} speaks gate ABI {found} but this ngsd speaks {expected}: {}",
        .path.display(),
        rebuild_hint(*.found, *.expected)
    )]
    AbiMismatch {
        /// The plugin file.
        path: PathBuf,
        /// The plugin's version.
        found: AbiVersion,
        /// The host's version.
        expected: AbiVersion,
    },
    /// The plugin's vtable or static data is malformed.
    #[error("gate plugin {} is broken: {message}; rebuild it against this ngsd-gate", .path.display())]
    BadPlugin {
        /// The plugin file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The gate refused its parameters (or failed to start).
    #[error("gate `{gate}` ({}) rejected its parameters: {message}", .path.display())]
    Create {
        /// The gate's name.
        gate: String,
        /// The plugin file.
        path: PathBuf,
        /// The gate's message.
        message: String,
    },
}

fn show_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "no directories (the gate search path is empty)".to_owned();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn rebuild_hint(found: AbiVersion, expected: AbiVersion) -> String {
    if found.major != expected.major {
        format!(
            "rebuild the plugin against ngsd-gate with ABI {}.x",
            expected.major
        )
    } else {
        format!("rebuild the plugin against ngsd-gate with ABI {expected} or newer")
    }
}

impl Error {
    /// The plugin file this error is about, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::NotFound { .. } | Error::BadName { .. } => None,
            Error::Missing { path }
            | Error::Open { path, .. }
            | Error::NotAGate { path, .. }
            | Error::AbiMismatch { path, .. }
            | Error::BadPlugin { path, .. }
            | Error::Create { path, .. } => Some(path),
        }
    }
}

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
