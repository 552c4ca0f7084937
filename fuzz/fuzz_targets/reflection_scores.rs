//! Fuzz target: the self-reflection score parser on arbitrary model output. It must never
//! panic, and scores it accepts must be in the rating's 0–10 range.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let outcome = ngsd_decode::reflection::parse_scores(text);
    let _ = format!("{outcome:?}");
});
