//! Shared helpers of the runtime's integration tests: where the converted default model is.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use ngsd_runtime::{ChatTemplate, Model, ModelOptions, ModelPackage, Tokenizer};

#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub use ngsd_test_support::{model_dir, temp_dir};

/// The q4 default-variant model (the fused graph) installed by `cargo xtask setup`.
pub fn q4_dir() -> std::path::PathBuf {
    ngsd_test_support::model_dir_q4()
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

/// The largest absolute difference between two equally long slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}
