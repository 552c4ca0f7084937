//! Generation: greedy output is stable and matches an independent implementation (Python
//! onnxruntime on the same file), sampling with a seed is reproducible, stop rules hold.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

mod common;

use ngsd_runtime::{FinishReason, GenerateConfig, Message, SamplingConfig, generate};

const PROMPT: &str = "What are three tips for staying healthy?";

fn prompt_ids(
    tokenizer: &ngsd_runtime::Tokenizer,
    template: &ngsd_runtime::ChatTemplate,
) -> Vec<u32> {
    let text = template
        .render(&[Message::new("user", PROMPT)], true)
        .unwrap();
    tokenizer.encode(&text).unwrap()
}

#[test]
fn greedy_is_stable_and_matches_the_python_reference() {
    let (mut model, tokenizer, template) = common::load();
    let ids = prompt_ids(&tokenizer, &template);
    let cfg = GenerateConfig {
        max_new_tokens: 24,
        ..Default::default()
    };
    let a = generate(&mut model, &tokenizer, &ids, &cfg, |_| {}).unwrap();
    let b = generate(&mut model, &tokenizer, &ids, &cfg, |_| {}).unwrap();
    assert_eq!(a.tokens, b.tokens);
    // First 24 greedy tokens from xtask/py/bench_ort.py (Python onnxruntime, same ONNX file).
    assert_eq!(
        a.tokens,
        [
            33, 30, 16478, 253, 8609, 2714, 42, 330, 2458, 2714, 314, 1895, 327, 3043, 864, 284,
            876, 29, 4709, 30, 669, 2978, 253, 3175
        ]
    );
    assert!(a.text.starts_with("1. Eat a balanced diet"), "{}", a.text);
    assert_eq!(a.finish, FinishReason::MaxTokens);
}

#[test]
fn seeded_sampling_is_reproducible_and_differs_across_seeds() {
    let (mut model, tokenizer, template) = common::load();
    let ids = prompt_ids(&tokenizer, &template);
    let run = |model: &mut ngsd_runtime::Model, seed| {
        let cfg = GenerateConfig {
            max_new_tokens: 24,
            sampling: SamplingConfig {
                temperature: 1.0,
                top_k: 50,
                top_p: 0.95,
                seed,
            },
            ..Default::default()
        };
        generate(model, &tokenizer, &ids, &cfg, |_| {})
            .unwrap()
            .tokens
    };
    let a = run(&mut model, 11);
    let b = run(&mut model, 11);
    let c = run(&mut model, 12);
    assert_eq!(a, b);
    assert_ne!(a, c, "two seeds gave the same 24 sampled tokens");
}

#[test]
fn streamed_text_equals_the_final_text_and_stop_strings_cut_it() {
    let (mut model, tokenizer, template) = common::load();
    let ids = prompt_ids(&tokenizer, &template);
    let mut streamed = String::new();
    let cfg = GenerateConfig {
        max_new_tokens: 40,
        stop: vec!["diet".into()],
        ..Default::default()
    };
    let g = generate(&mut model, &tokenizer, &ids, &cfg, |p| streamed.push_str(p)).unwrap();
    assert_eq!(g.finish, FinishReason::Stop("diet".into()));
    assert_eq!(g.text, "1. Eat a balanced ");
    assert_eq!(streamed, g.text);
}

#[test]
fn eos_ends_a_generation() {
    let (mut model, tokenizer, template) = common::load();
    let text = template
        .render(
            &[Message::new("user", "Reply with the single word: yes")],
            true,
        )
        .unwrap();
    let ids = tokenizer.encode(&text).unwrap();
    let cfg = GenerateConfig {
        max_new_tokens: 64,
        ..Default::default()
    };
    let g = generate(&mut model, &tokenizer, &ids, &cfg, |_| {}).unwrap();
    assert_eq!(g.finish, FinishReason::Eos, "{:?}", g.text);
    assert_eq!(g.tokens.last(), Some(&2));
    assert!(!g.text.contains("<|im_end|>"));
}
