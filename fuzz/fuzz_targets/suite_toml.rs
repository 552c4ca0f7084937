//! Fuzz target: the evaluation suite loader (`ngsd_eval::Suite::parse`) on arbitrary TOML.
//! Errors are fine; panics are not, and every error must render as a message.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ngsd_eval::Suite::parse(text, Path::new("fuzz/suite.toml"), &["sigmoid", "never"]) {
        Ok(suite) => {
            let _ = format!("{suite:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
