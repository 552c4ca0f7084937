//! Bad model packages and prompts: each gives a clear error message, never a panic.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

mod common;

use std::path::Path;

use ngsd_runtime::{GenerateConfig, Model, ModelPackage, Tokenizer, generate};

/// A package folder whose files are symlinks to the real model, with a rewritten manifest.
fn package_copy(dir: &Path, edit: impl FnOnce(&mut serde_json::Value), skip: &[&str]) {
    let src = common::model_dir();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) || name == "ngsd-model.json" {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), dir.join(&name)).unwrap();
    }
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("ngsd-model.json")).unwrap())
            .unwrap();
    edit(&mut manifest);
    std::fs::write(dir.join("ngsd-model.json"), manifest.to_string()).unwrap();
}

fn load_err(dir: &Path) -> String {
    let err = ModelPackage::open(dir)
        .and_then(|p| Model::load(p, &common::options()))
        .expect_err("loading should fail");
    err.to_string()
}

#[test]
fn missing_model_folder() {
    let err = ModelPackage::open(Path::new("/nonexistent/model"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "model folder not found at /nonexistent/model; run `cargo xtask setup` to fetch the default model, or pass --model DIR"
    );
}

#[test]
fn missing_onnx_file() {
    let tmp = common::temp_dir();
    package_copy(tmp.path(), |_| {}, &["model.onnx"]);
    let err = load_err(tmp.path());
    assert_eq!(
        err,
        format!(
            "ONNX file not found at {}/model.onnx; the package is incomplete: re-run `cargo xtask setup` (or re-export the model)",
            tmp.path().display()
        )
    );
}

#[test]
fn corrupt_onnx_file() {
    let tmp = common::temp_dir();
    package_copy(tmp.path(), |_| {}, &["model.onnx"]);
    std::fs::write(
        tmp.path().join("model.onnx"),
        b"this is not a protobuf model",
    )
    .unwrap();
    let err = load_err(tmp.path());
    assert!(
        err.starts_with(&format!(
            "ONNX Runtime cannot load {}/model.onnx: ",
            tmp.path().display()
        )),
        "{err}"
    );
    assert!(err.ends_with("the file may be truncated or not an ONNX model (re-run `cargo xtask setup`, or re-export it)"), "{err}");
}

#[test]
fn missing_tokenizer() {
    let tmp = common::temp_dir();
    package_copy(tmp.path(), |_| {}, &["tokenizer.json"]);
    let err = ModelPackage::open(tmp.path()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "tokenizer not found at {}/tokenizer.json; the package is incomplete: re-run `cargo xtask setup` (or re-export the model)",
            tmp.path().display()
        )
    );
    let err = Tokenizer::from_file(&tmp.path().join("tokenizer.json"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("tokenizer not found at"), "{err}");
}

#[test]
fn corrupt_tokenizer() {
    let tmp = common::temp_dir();
    package_copy(tmp.path(), |_| {}, &["tokenizer.json"]);
    std::fs::write(tmp.path().join("tokenizer.json"), "{\"version\": 1").unwrap();
    let err = Tokenizer::from_file(&tmp.path().join("tokenizer.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "cannot read tokenizer {}/tokenizer.json: ",
            tmp.path().display()
        )),
        "{err}"
    );
}

#[test]
fn manifest_names_an_output_the_model_lacks() {
    let tmp = common::temp_dir();
    package_copy(
        tmp.path(),
        |m| m["io"]["hidden"] = "final_hidden".into(),
        &[],
    );
    let err = load_err(tmp.path());
    assert!(
        err.starts_with(&format!(
            "model {}/model.onnx has no output named `final_hidden` (it has: logits, ",
            tmp.path().display()
        )),
        "{err}"
    );
    assert!(
        err.ends_with("; the manifest names it: add it with `cargo xtask export-hidden <model.onnx>`, or fix `io.hidden` in the manifest"),
        "{err}"
    );
}

#[test]
fn manifest_lists_a_layer_output_the_model_lacks() {
    let tmp = common::temp_dir();
    package_copy(
        tmp.path(),
        |m| m["io"]["hidden_layers"]["7"] = "hidden_states.7".into(),
        &[],
    );
    let err = load_err(tmp.path());
    assert!(
        err.starts_with(&format!(
            "model {}/model.onnx has no output named `hidden_states.7` (it has: logits, ",
            tmp.path().display()
        )),
        "{err}"
    );
    assert!(
        err.ends_with(
            "; the manifest lists it for layer 7 of 30: reconvert with `cargo xtask setup --force`, \
             add it with `cargo xtask export-hidden --layers`, or fix `io.hidden_layers` in the manifest"
        ),
        "{err}"
    );
}

#[test]
fn manifest_with_an_unknown_key_or_format() {
    let tmp = common::temp_dir();
    package_copy(tmp.path(), |m| m["colour"] = "blue".into(), &[]);
    let err = ModelPackage::open(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("unknown field `colour`"), "{err}");
    let tmp = common::temp_dir();
    package_copy(tmp.path(), |m| m["format"] = "ngsd-model/9".into(), &[]);
    let err = ModelPackage::open(tmp.path()).unwrap_err().to_string();
    assert!(
        err.ends_with("format is `ngsd-model/9`, this ngsd reads `ngsd-model/1`"),
        "{err}"
    );
}

#[test]
fn prompt_longer_than_the_context() {
    let tmp = common::temp_dir();
    package_copy(tmp.path(), |m| m["max_context"] = 16.into(), &[]);
    let package = ModelPackage::open(tmp.path()).unwrap();
    let tokenizer = Tokenizer::from_package(&package).unwrap();
    let mut model = Model::load(package, &common::options()).unwrap();
    let ids = tokenizer
        .encode("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen")
        .unwrap();
    let err = generate(
        &mut model,
        &tokenizer,
        &ids,
        &GenerateConfig::default(),
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        format!(
            "the prompt is {} tokens but the model's context is 16 tokens; shorten the prompt (leave room for the answer too)",
            ids.len()
        )
    );
    // A prompt that fits ends with `length` when the context fills up.
    let short = &ids[..10];
    let g = generate(
        &mut model,
        &tokenizer,
        short,
        &GenerateConfig::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(g.finish, ngsd_runtime::FinishReason::ContextFull);
    assert_eq!(g.prompt_tokens + g.tokens.len(), 17);
}
