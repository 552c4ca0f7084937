//! Fuzz target: gate parameter text (`ngsd_gate::Params::parse`) and its typed getters.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut params) = ngsd_gate::Params::parse(text) else {
        return;
    };
    let _ = params.parsed::<f32>("threshold");
    let _ = params.parsed::<usize>("hidden-size");
    let _ = params.parsed::<bool>("soft");
    let _ = params.finish();
});
