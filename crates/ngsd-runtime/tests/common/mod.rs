//! Shared helpers of the runtime's integration tests: where the converted default model is.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use ngsd_runtime::{ChatTemplate, Model, ModelOptions, ModelPackage, Tokenizer};

#[allow(unused_imports, reason = "each test binary uses a different subset")]
pub use ngsd_test_support::{model_dir, temp_dir};

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
