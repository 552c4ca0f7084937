//! Shared helpers of the runtime's integration tests: where the converted default model is.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::PathBuf;

use ngsd_runtime::{ChatTemplate, Model, ModelOptions, ModelPackage, Tokenizer};

/// The fp32 default model installed by `cargo xtask setup` (or `NGSD_TEST_MODEL`).
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("NGSD_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../.cache/models/smollm2-135m-instruct/fp32")
        });
    assert!(
        dir.join("ngsd-model.json").is_file(),
        "the converted default model is missing at {}: run `cargo xtask setup` (cargo xtask test does)",
        dir.display()
    );
    dir
}

/// The q4 default-variant model (the fused graph) installed by `cargo xtask setup` (or
/// `NGSD_TEST_MODEL_Q4`).
pub fn q4_dir() -> PathBuf {
    let dir = std::env::var_os("NGSD_TEST_MODEL_Q4")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../.cache/models/smollm2-135m-instruct/q4")
        });
    assert!(
        dir.join("ngsd-model.json").is_file(),
        "the converted q4 model is missing at {}: run `cargo xtask setup` (cargo xtask test does)",
        dir.display()
    );
    dir
}

/// Loads a model folder.
pub fn load_dir(dir: &std::path::Path) -> Model {
    let package = ModelPackage::open(dir).expect("package opens");
    Model::load(package, &options()).expect("model loads")
}

pub fn options() -> ModelOptions {
    ModelOptions {
        intra_threads: 2,
        ..Default::default()
    }
}

pub fn load() -> (Model, Tokenizer, ChatTemplate) {
    let package = ModelPackage::open(&model_dir()).expect("package opens");
    let tokenizer = Tokenizer::from_package(&package).expect("tokenizer loads");
    let template = ChatTemplate::from_package(&package)
        .expect("template compiles")
        .expect("the default model has a chat template");
    let model = Model::load(package, &options()).expect("model loads");
    (model, tokenizer, template)
}

/// A folder under the system temp dir that is removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ngsd-test-")
        .tempdir()
        .expect("temp dir")
}
