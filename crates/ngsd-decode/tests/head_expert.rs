//! The `head` expert on the real default model: the LM-head file reproduces the model's own
//! logits, a zero adapter is the base model, a non-zero adapter adds exactly E·B·A·h, and a
//! fork computes the same.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

mod common;

use std::path::Path;

use common::base;
use ngsd_decode::{Expert, HeadAdapter, HeadExpert, LmHead};
use ngsd_runtime::sampling::softmax_into;
use ngsd_runtime::{ForwardOut, Positions};

#[test]
fn the_lm_head_file_reproduces_the_logits_and_the_adapter_adds_its_delta() {
    let (mut model, tokenizer) = base();
    let (h, v) = (model.hidden_size(), model.vocab_size());
    let head = LmHead::load(&model).unwrap();
    let ids = tokenizer.encode("The capital of France is").unwrap();
    let mut cache = model.new_cache().unwrap();
    let mut out = ForwardOut::default();
    model
        .forward(&mut cache, &ids, Positions::Last, &mut out)
        .unwrap();
    let hidden = out.last_hidden(h).to_vec();
    let logits = out.last_logits(v).to_vec();
    // E·h equals the graph's own logits (the file is the matrix the graph uses).
    let eh = head.weight.dot(&ndarray::ArrayView1::from(&hidden));
    let worst = eh
        .iter()
        .zip(&logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "E·h differs from the logits by {worst}");

    // A zero adapter is the base distribution.
    let rank = 3;
    let zero = HeadAdapter {
        a: vec![0.01; rank * h],
        b: vec![0.0; h * rank],
        rank,
        hidden: h,
    };
    let mut expert = HeadExpert::from_parts(Path::new("zero"), &zero, &head);
    expert.begin("ignored", false).unwrap();
    let p = expert.probs(&mut model, &hidden, &logits).unwrap().to_vec();
    let mut p_base = Vec::new();
    softmax_into(&logits, 1.0, &mut p_base);
    let worst = p
        .iter()
        .zip(&p_base)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-7, "zero adapter moved p by {worst}");
    assert_eq!(expert.forward_passes(), 0, "the head expert runs no model");

    // A non-zero adapter: logits = E·(h + B·A·h), checked against a direct computation.
    let a: Vec<f32> = (0..rank * h)
        .map(|i| ((i % 7) as f32 - 3.0) * 2e-2)
        .collect();
    let b: Vec<f32> = (0..h * rank)
        .map(|i| ((i % 5) as f32 - 2.0) * 1e-1)
        .collect();
    let adapter = HeadAdapter {
        a: a.clone(),
        b: b.clone(),
        rank,
        hidden: h,
    };
    let mut expert = HeadExpert::from_parts(Path::new("small"), &adapter, &head);
    let p = expert.probs(&mut model, &hidden, &logits).unwrap().to_vec();
    let u: Vec<f32> = (0..rank)
        .map(|r| (0..h).map(|k| a[r * h + k] * hidden[k]).sum())
        .collect();
    let shifted: Vec<f32> = (0..h)
        .map(|k| hidden[k] + (0..rank).map(|r| b[k * rank + r] * u[r]).sum::<f32>())
        .collect();
    let direct = head.weight.dot(&ndarray::ArrayView1::from(&shifted));
    let mut p_direct = Vec::new();
    softmax_into(direct.as_slice().unwrap(), 1.0, &mut p_direct);
    let worst = p
        .iter()
        .zip(&p_direct)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst < 1e-4,
        "adapter probabilities differ from E·(h+BAh) by {worst}"
    );
    let moved = p
        .iter()
        .zip(&p_base)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>();
    assert!(
        moved > 1e-3,
        "the adapter changes the distribution ({moved})"
    );

    // A fork (one per request decoded in a batch) shares the matrices: same distribution.
    let mut twin = expert.fork(&model).unwrap().expect("a head expert forks");
    assert_eq!(twin.describe(), expert.describe());
    let q = twin.probs(&mut model, &hidden, &logits).unwrap();
    assert_eq!(q, &p[..], "the fork computes what the original does");
}
