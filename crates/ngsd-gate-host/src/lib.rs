//! Loads ngsd gate plugins: finds them by name or path, checks their ABI, and wraps each
//! gate instance as a validated [`ngsd_gate::Gate`].
//!
//! ```no_run
//! use ngsd_gate::{Gate, HostContext};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut dirs = vec![/* configured and environment dirs first */];
//! dirs.extend(ngsd_gate_host::default_dirs());
//! let params = HostContext { hidden_size: Some(576), model_sha256: None }
//!     .append_to("weights = \"models/gate/sigmoid.safetensors\"");
//! let mut gate = ngsd_gate_host::load("sigmoid", &dirs, &params)?;
//! assert!(gate.needs().contains(ngsd_gate::Needs::HIDDEN));
//! for entry in ngsd_gate_host::list(&dirs) {
//!     match entry {
//!         Ok(info) => println!("{} {} {} {}", info.name, info.abi, info.needs, info.path.display()),
//!         Err(e) => println!("broken: {e}"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Libraries are never unloaded. Loading a library runs its code: plugin directories are
//! trusted configuration.

mod discovery;
mod error;
mod plugin;

pub use discovery::{default_dirs, file_name, find, is_path, list, load};
pub use error::{Error, Result};
pub use ngsd_gate::abi::AbiVersion;
pub use plugin::{LoadedGate, Plugin, PluginInfo, check_compatible};
