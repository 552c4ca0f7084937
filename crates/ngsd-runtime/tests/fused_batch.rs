//! Batched decoding on the fused (q4) graph: each sequence sits in its own slot of the shared
//! buffers, so its logits must not depend on the other rows at all. The reference is the same
//! sequence alone in a batch, and the rows must equal it bit for bit while others join, leave,
//! roll back, and the buffers grow and shrink. Against plain single-sequence decoding (another
//! ONNX Runtime kernel for one row) the test bounds the difference instead.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

mod common;

use common::{Follow, Run, prefilled};

use ngsd_runtime::{Batch, ForwardOut, KvCache, Message, Model, Positions, sampling::argmax};

const QUESTIONS: [&str; 4] = [
    "Name three rivers in Europe.",
    "What is 12 times 7?",
    "Write one sentence about the sea, please, in a calm tone.",
    "Hi",
];

/// Largest logit difference tolerated between a sequence alone in a batch and the same
/// sequence decoded without one (ONNX Runtime's single-row quantized kernel rounds
/// differently; xtask/py/fused_batch.py measured up to 0.64 on this model).
const SOLO_TOLERANCE: f32 = 1.5;

/// The q4 model and the chat-templated prompts: the four questions, then one long prompt
/// (more positions than a slot starts with, so joining it grows the buffers).
fn prompts() -> (Model, Vec<Vec<u32>>) {
    let (_, tokenizer, template) = common::load();
    let model = common::load_dir(&common::q4_dir());
    let long = format!(
        "Summarise these notes. {}",
        "The river rose after three days of rain and the bridge was closed. ".repeat(22)
    );
    let ids: Vec<Vec<u32>> = QUESTIONS
        .iter()
        .copied()
        .chain([long.as_str()])
        .map(|q| {
            let text = template.render(&[Message::new("user", q)], true).unwrap();
            tokenizer.encode(&text).unwrap()
        })
        .collect();
    assert!(
        ids[4].len() > 256,
        "the long prompt has {} tokens",
        ids[4].len()
    );
    (model, ids)
}

/// `prompt` decoded for `steps` greedy tokens, the first from its prefill, each later one by
/// `step(model, token)`, which returns the next logits.
fn decode(
    model: &mut Model,
    prompt: &[u32],
    steps: usize,
    mut step: impl FnMut(&mut Model, &mut KvCache, u32) -> Vec<f32>,
) -> Run {
    let (mut cache, first) = prefilled(model, prompt);
    let mut run = Run {
        tokens: vec![argmax(&first)],
        logits: vec![first],
    };
    for _ in 1..steps {
        let logits = step(model, &mut cache, *run.tokens.last().unwrap());
        run.tokens.push(argmax(&logits));
        run.logits.push(logits);
    }
    run
}

/// `prompt` decoded alone in a batch.
fn alone(model: &mut Model, prompt: &[u32], steps: usize) -> Run {
    let vocab = model.vocab_size();
    let mut batch = model.new_batch().unwrap();
    let mut out = ForwardOut::default();
    decode(model, prompt, steps, |model, cache, next| {
        if batch.is_empty() {
            model.join(&mut batch, cache).unwrap();
        }
        model.step_batch(&mut batch, &[next], &mut out).unwrap();
        out.logits_row(0, vocab).to_vec()
    })
}

/// `prompt` decoded without a batch.
fn solo(model: &mut Model, prompt: &[u32], steps: usize) -> Run {
    let vocab = model.vocab_size();
    let mut out = ForwardOut::default();
    decode(model, prompt, steps, |model, cache, next| {
        model
            .forward(cache, &[next], Positions::Last, &mut out)
            .unwrap();
        out.last_logits(vocab).to_vec()
    })
}

/// Prefills prompt `seq` alone and adds it to the batch as the last row.
fn join(
    model: &mut Model,
    batch: &mut Batch,
    rows: &mut Vec<Follow>,
    prompts: &[Vec<u32>],
    seq: usize,
) {
    let (cache, _) = prefilled(model, &prompts[seq]);
    assert_eq!(model.join(batch, &cache).unwrap(), rows.len());
    rows.push(Follow { seq, step: 0 });
}

/// `steps` batched steps; every row's logits must equal its reference's exactly.
fn step_exact(
    model: &mut Model,
    batch: &mut Batch,
    rows: &mut [Follow],
    refs: &[Run],
    steps: usize,
) {
    common::step_and_check(model, batch, rows, refs, steps, 0.0);
}

#[test]
fn fused_rows_equal_their_alone_runs_bit_for_bit_through_joins_leaves_and_rollbacks() {
    let (mut model, prompts) = prompts();
    let refs: Vec<Run> = prompts.iter().map(|p| alone(&mut model, p, 16)).collect();
    let mut batch = model.new_batch().unwrap();
    let mut rows = Vec::new();
    for seq in 0..2 {
        join(&mut model, &mut batch, &mut rows, &prompts, seq);
    }
    step_exact(&mut model, &mut batch, &mut rows, &refs, 3);
    // Two more rows: the slots double; then the long prompt grows every slot's capacity.
    for seq in 2..4 {
        join(&mut model, &mut batch, &mut rows, &prompts, seq);
    }
    step_exact(&mut model, &mut batch, &mut rows, &refs, 3);
    join(&mut model, &mut batch, &mut rows, &prompts, 4);
    assert_eq!(batch.width(), prompts[4].len());
    step_exact(&mut model, &mut batch, &mut rows, &refs, 3);
    // Rows leave from the middle and the front; the others carry on.
    model.leave(&mut batch, 2).unwrap();
    rows.remove(2);
    model.leave(&mut batch, 0).unwrap();
    rows.remove(0);
    step_exact(&mut model, &mut batch, &mut rows, &refs, 2);
    // A rollback: row 0 drops its last three tokens and is fed them again.
    let kept = batch.row_len(0).unwrap() - 3;
    batch.truncate_row(0, kept).unwrap();
    rows[0].step -= 3;
    step_exact(&mut model, &mut batch, &mut rows, &refs, 3);
    // Down to one row: the buffers shrink; the row is still exact.
    model.leave(&mut batch, 2).unwrap();
    rows.remove(2);
    model.leave(&mut batch, 0).unwrap();
    rows.remove(0);
    assert_eq!(batch.len(), 1);
    step_exact(&mut model, &mut batch, &mut rows, &refs, 2);
}

#[test]
fn a_fused_batch_stays_close_to_decoding_without_one() {
    let (mut model, prompts) = prompts();
    for p in &prompts[..2] {
        let (a, s) = (alone(&mut model, p, 8), solo(&mut model, p, 8));
        for (step, (x, y)) in a.logits.iter().zip(&s.logits).enumerate() {
            if a.tokens[..step] != s.tokens[..step] {
                break; // compare only while both were fed the same tokens
            }
            let diff = common::max_diff(x, y);
            assert!(diff < SOLO_TOLERANCE, "step {step}: {diff}");
        }
    }
}
