//! `gate-c-example`: an ngsd gate written in C (`gate_c_example.c`), compiled by build.rs.
//!
//! This crate exists so the workspace builds and tests the C example; the plugin itself is
//! the shared library at [`LIBRARY`]. Copy it into a plugin directory to use it as
//! `--gate c-example`. A third party builds it without cargo:
//!
//! ```text
//! cc -shared -fPIC -O2 -I crates/ngsd-gate/include gate_c_example.c -o libgate_c_example.so
//! ```

/// The path of the compiled C plugin.
pub const LIBRARY: &str = env!("GATE_C_EXAMPLE_LIBRARY");
