//! Fuzz target: the OpenAI request parser and validator of `ngsd serve` (both generation
//! endpoints), on arbitrary bodies. It must never panic; a body it accepts must ask for at
//! least one token and no more than the server's limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let chat = selector % 2 == 0;
    match ngsd_server::validate_body(chat, body) {
        Ok(tokens) => assert!((1..=ngsd_server::FUZZ_MAX_TOKENS).contains(&tokens)),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
