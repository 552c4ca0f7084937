//! Shared helpers of the runtime's integration tests: where the converted default model is.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use ngsd_runtime::{
    Batch, ChatTemplate, ForwardOut, KvCache, Model, ModelOptions, ModelPackage, Positions,
    Tokenizer, sampling::argmax,
};

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

/// A sequence's greedy tokens and the logits each was chosen from (index 0: the prefill's).
pub struct Run {
    pub tokens: Vec<u32>,
    pub logits: Vec<Vec<f32>>,
}

/// A row of a batch under test: which reference run it follows and how far it is.
pub struct Follow {
    pub seq: usize,
    pub step: usize,
}

/// Runs `steps` batched steps, feeding each row its reference run's tokens; each row's logits
/// must be within `tolerance` of the reference's (0: equal) and pick the same token.
pub fn step_and_check(
    model: &mut Model,
    batch: &mut Batch,
    rows: &mut [Follow],
    refs: &[Run],
    steps: usize,
    tolerance: f32,
) {
    let vocab = model.vocab_size();
    let mut out = ForwardOut::default();
    for _ in 0..steps {
        let tokens: Vec<u32> = rows.iter().map(|f| refs[f.seq].tokens[f.step]).collect();
        model.step_batch(batch, &tokens, &mut out).unwrap();
        assert_eq!(out.rows, rows.len());
        for (r, f) in rows.iter_mut().enumerate() {
            f.step += 1;
            let got = out.logits_row(r, vocab);
            let diff = max_diff(got, &refs[f.seq].logits[f.step]);
            assert!(
                diff <= tolerance,
                "row {r} (prompt {}) step {}: logits differ by {diff}",
                f.seq,
                f.step
            );
            assert_eq!(argmax(got), refs[f.seq].tokens[f.step], "row {r}");
        }
    }
}

/// The prompt's cache after its own prefill, and the logits of its first token.
pub fn prefilled(model: &mut Model, prompt: &[u32]) -> (KvCache, Vec<f32>) {
    let mut cache = model.new_cache().unwrap();
    let mut out = ForwardOut::default();
    model
        .forward(&mut cache, prompt, Positions::Last, &mut out)
        .unwrap();
    (cache, out.last_logits(model.vocab_size()).to_vec())
}
