//! ngsd-benches: helpers shared by the bench targets and the `decode-speed` measurement binary.

use std::path::{Path, PathBuf};

use ngsd_runtime::{ChatTemplate, Message, Model, ModelOptions, ModelPackage, Tokenizer};

/// The prompt every speed comparison uses.
pub const BENCH_PROMPT: &str = "What are three tips for staying healthy?";

/// A paragraph repeated before the question to build long-context benchmark prompts.
pub const NOTES_PARAGRAPH: &str = "Monday: walked for forty minutes before work, slept about six \
hours, skipped breakfast and had a large lunch. Tuesday: no exercise, two coffees after four in \
the afternoon, went to bed late after reading. Wednesday: swam twenty lengths, ate vegetables \
with dinner, felt rested in the morning. ";

/// The model a benchmark runs on: `NGSD_BENCH_MODEL`, else the default fp32 package of the checkout.
pub fn bench_model_dir(variant: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("NGSD_BENCH_MODEL") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.cache/models/smollm2-135m-instruct")
        .join(variant)
}

/// Loads a model with a fixed thread count.
pub fn load(
    dir: &Path,
    threads: usize,
) -> anyhow::Result<(Model, Tokenizer, Option<ChatTemplate>)> {
    let package = ModelPackage::open(dir)?;
    let tokenizer = Tokenizer::from_package(&package)?;
    let template = ChatTemplate::from_package(&package)?;
    let model = Model::load(
        package,
        &ModelOptions {
            intra_threads: threads,
            ..Default::default()
        },
    )?;
    Ok((model, tokenizer, template))
}

/// Token ids of the chat-templated benchmark prompt.
pub fn prompt_ids(
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    prompt: &str,
) -> anyhow::Result<Vec<u32>> {
    let text = match template {
        Some(t) => t.render(&[Message::new("user", prompt)], true)?,
        None => prompt.to_string(),
    };
    Ok(tokenizer.encode(&text)?)
}
