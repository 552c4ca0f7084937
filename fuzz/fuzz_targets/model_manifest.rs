//! Fuzz target: the model manifest loader (`ngsd_runtime::Manifest::parse`). It must not
//! panic, and a manifest it accepts names only files inside the package folder.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = ngsd_runtime::Manifest::parse(text) else {
        return;
    };
    let f = &manifest.files;
    for name in [Some(&f.onnx), Some(&f.tokenizer), f.chat_template.as_ref(), f.lm_head.as_ref()]
        .into_iter()
        .flatten()
    {
        assert!(
            Path::new(name)
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
            "accepted a file name outside the package: {name:?}"
        );
    }
});
