//! Shared helpers of the decoder's integration tests: the converted default model and a
//! `Models` bundle with the prompt expert.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use ngsd_decode::{Expert, Models, PromptExpert};
use ngsd_runtime::{ChatTemplate, Model, ModelOptions, ModelPackage, Tokenizer};

pub use ngsd_test_support::model_dir;

pub fn options() -> ModelOptions {
    ModelOptions {
        intra_threads: 2,
        ..Default::default()
    }
}

/// The base model, its tokenizer and loaded model.
pub fn base() -> (Model, Tokenizer) {
    let package = ModelPackage::open(&model_dir()).unwrap();
    let tokenizer = Tokenizer::from_package(&package).unwrap();
    (Model::load(package, &options()).unwrap(), tokenizer)
}

/// The base model with the prompt expert.
pub fn models() -> Models {
    let package = ModelPackage::open(&model_dir()).unwrap();
    let tokenizer = Tokenizer::from_package(&package).unwrap();
    let template = ChatTemplate::from_package(&package).unwrap();
    let base = Model::load(package, &options()).unwrap();
    let expert: Box<dyn Expert> = Box::new(PromptExpert::new(&base, None).unwrap());
    Models {
        base,
        tokenizer,
        template,
        expert,
    }
}
