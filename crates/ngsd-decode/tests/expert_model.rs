//! The `model` expert: a separate decoder package, which must share the base tokenizer.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

mod common;

use std::path::Path;

use common::{base, model_dir};

use ngsd_decode::{Expert, ModelExpert};
use ngsd_runtime::ModelOptions;

/// A copy of the default package (files symlinked) whose tokenizer.json is edited.
fn copy_with_tokenizer(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let src = model_dir();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "tokenizer.json" {
            std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
            .unwrap();
    edit(&mut tok);
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
}

#[test]
fn an_expert_with_the_same_tokenizer_loads_and_steps() {
    let (mut base, tokenizer) = base();
    let mut expert = ModelExpert::load(
        &model_dir(),
        &ModelOptions {
            intra_threads: 2,
            ..Default::default()
        },
        &base,
        &tokenizer,
        None,
    )
    .unwrap();
    expert.begin("Hello", false).unwrap();
    let p = expert.probs(&mut base, &[], &[]).unwrap();
    assert_eq!(p.len(), 49152);
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-3);
}

#[test]
fn an_expert_with_another_tokenizer_is_refused() {
    let (base, tokenizer) = base();
    let tmp = tempfile::tempdir().unwrap();
    // Swap the ids of two ordinary tokens.
    copy_with_tokenizer(tmp.path(), |tok| {
        let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
        let a = vocab["hello"].clone();
        let b = vocab["world"].clone();
        vocab.insert("hello".into(), b);
        vocab.insert("world".into(), a);
    });
    let err = match ModelExpert::load(
        tmp.path(),
        &ModelOptions::default(),
        &base,
        &tokenizer,
        None,
    ) {
        Ok(_) => panic!("an expert with another tokenizer must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.starts_with(&format!(
            "the expert model:{} cannot steer this base model: its tokenizer differs from the base model's: token ",
            tmp.path().display()
        )),
        "{err}"
    );
    assert!(
        err.ends_with("an expert must share the base tokenizer"),
        "{err}"
    );
}

#[test]
fn a_missing_expert_folder_is_a_clear_error() {
    let (base, tokenizer) = base();
    let err = match ModelExpert::load(
        Path::new("/nonexistent/expert"),
        &ModelOptions::default(),
        &base,
        &tokenizer,
        None,
    ) {
        Ok(_) => panic!("must fail"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        err,
        "model folder not found at /nonexistent/expert; run `cargo xtask setup` to fetch the default model, or pass --model DIR"
    );
}
