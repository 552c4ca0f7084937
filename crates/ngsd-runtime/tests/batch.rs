//! Batched decoding: several sequences in one forward pass must decode as each does alone,
//! whether rows join late, leave early or roll back.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

mod common;

use common::{Follow, Run, prefilled};

use ngsd_runtime::{Batch, ForwardOut, Message, Model, Positions, sampling::argmax};

/// Largest logit difference tolerated between a batched and a solo step (fp32; the batched
/// products sum in another order).
const TOLERANCE: f32 = 2e-3;

const QUESTIONS: [&str; 4] = [
    "Name three rivers in Europe.",
    "What is 12 times 7?",
    "Write one sentence about the sea, please, in a calm tone.",
    "Hi",
];

fn prompts() -> (Model, Vec<Vec<u32>>) {
    let (model, tokenizer, template) = common::load();
    let ids = QUESTIONS
        .iter()
        .map(|q| {
            let text = template.render(&[Message::new("user", q)], true).unwrap();
            tokenizer.encode(&text).unwrap()
        })
        .collect();
    (model, ids)
}

/// A sequence decoded alone, without a batch.
fn solo(model: &mut Model, prompt: &[u32], steps: usize) -> Run {
    let vocab = model.vocab_size();
    let mut cache = model.new_cache().unwrap();
    let mut out = ForwardOut::default();
    model
        .forward(&mut cache, prompt, Positions::Last, &mut out)
        .unwrap();
    let mut s = Run {
        tokens: Vec::new(),
        logits: Vec::new(),
    };
    for _ in 0..steps {
        let logits = out.last_logits(vocab).to_vec();
        let next = argmax(&logits);
        s.tokens.push(next);
        s.logits.push(logits);
        model
            .forward(&mut cache, &[next], Positions::Last, &mut out)
            .unwrap();
    }
    s
}

/// Prefills `prompt` alone and adds it to the batch.
fn join(model: &mut Model, batch: &mut Batch, prompt: &[u32]) {
    let (cache, _) = prefilled(model, prompt);
    model.join(batch, &cache).unwrap();
}

/// Batched steps checked against the solo runs, within [`TOLERANCE`].
fn step_and_check(
    model: &mut Model,
    batch: &mut Batch,
    rows: &mut [Follow],
    solos: &[Run],
    steps: usize,
) {
    common::step_and_check(model, batch, rows, solos, steps, TOLERANCE);
}

fn solos(model: &mut Model, prompts: &[Vec<u32>], steps: usize) -> Vec<Run> {
    prompts.iter().map(|p| solo(model, p, steps)).collect()
}

#[test]
fn a_batch_decodes_each_row_as_it_decodes_alone() {
    let (mut model, prompts) = prompts();
    let solos = solos(&mut model, &prompts, 13);
    let mut batch = model.new_batch().unwrap();
    for p in &prompts {
        let (cache, first) = prefilled(&mut model, p);
        assert_eq!(argmax(&first), solos[batch.len()].tokens[0]);
        model.join(&mut batch, &cache).unwrap();
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap();
    assert_eq!(
        batch.width(),
        longest,
        "shorter prompts are padded on the left"
    );
    let mut rows: Vec<Follow> = (0..4).map(|seq| Follow { seq, step: 0 }).collect();
    step_and_check(&mut model, &mut batch, &mut rows, &solos, 12);
    for (r, p) in prompts.iter().enumerate() {
        assert_eq!(batch.row_len(r), Some(p.len() + 12));
    }
}

#[test]
fn rows_join_late_and_leave_early_without_changing_the_others() {
    let (mut model, prompts) = prompts();
    let solos = solos(&mut model, &prompts, 15);
    let mut batch = model.new_batch().unwrap();
    for p in &prompts[..2] {
        join(&mut model, &mut batch, p);
    }
    let mut rows: Vec<Follow> = (0..2).map(|seq| Follow { seq, step: 0 }).collect();
    step_and_check(&mut model, &mut batch, &mut rows, &solos, 4);
    // The longest prompt joins after four steps.
    join(&mut model, &mut batch, &prompts[2]);
    rows.push(Follow { seq: 2, step: 0 });
    step_and_check(&mut model, &mut batch, &mut rows, &solos, 4);
    // The first row leaves (a finished or cancelled request); the others carry on.
    model.leave(&mut batch, 0).unwrap();
    rows.remove(0);
    let width = batch.width();
    step_and_check(&mut model, &mut batch, &mut rows, &solos, 4);
    assert_eq!(batch.width(), width + 4);
    // Leaving the longest row cuts the padding no remaining row attends to.
    model.leave(&mut batch, 1).unwrap();
    assert_eq!(batch.width(), prompts[1].len() + 12);
    rows.remove(1);
    step_and_check(&mut model, &mut batch, &mut rows, &solos, 2);
}

#[test]
fn a_row_rolled_back_continues_from_the_kept_positions() {
    let (mut model, prompts) = prompts();
    let solos = solos(&mut model, &prompts, 10);
    let mut batch = model.new_batch().unwrap();
    for p in &prompts[..2] {
        join(&mut model, &mut batch, p);
    }
    let mut rows: Vec<Follow> = (0..2).map(|seq| Follow { seq, step: 0 }).collect();
    step_and_check(&mut model, &mut batch, &mut rows, &solos, 6);
    // Row 1 drops its last three tokens and feeds them again; row 0 repeats nothing, so it is
    // fed its own next tokens meanwhile.
    batch
        .truncate_row(1, prompts[1].len() + rows[1].step - 3)
        .unwrap();
    rows[1].step -= 3;
    step_and_check(&mut model, &mut batch, &mut rows, &solos, 3);
    assert_eq!(batch.row_len(1), Some(prompts[1].len() + 6));
}

#[test]
fn bad_batch_input_is_refused_with_a_reason() {
    let (mut model, prompts) = prompts();
    let mut batch = model.new_batch().unwrap();
    let mut out = ForwardOut::default();
    let err = model.step_batch(&mut batch, &[], &mut out).unwrap_err();
    assert!(
        err.to_string().contains("0 tokens for a batch of 0 rows"),
        "{err}"
    );
    join(&mut model, &mut batch, &prompts[3]);
    let err = model.step_batch(&mut batch, &[1, 2], &mut out).unwrap_err();
    assert!(
        err.to_string().contains("2 tokens for a batch of 1 rows"),
        "{err}"
    );
    let err = model.leave(&mut batch, 3).unwrap_err();
    assert!(err.to_string().contains("no row 3"), "{err}");
    let err = batch.truncate_row(0, 1000).unwrap_err();
    assert!(err.to_string().contains("cannot truncate"), "{err}");
    let empty = model.new_cache().unwrap();
    let err = model.join(&mut batch, &empty).unwrap_err();
    assert!(
        err.to_string().contains("prefill the prompt first"),
        "{err}"
    );
    let q4 = common::load_dir(&common::q4_dir());
    let mut fused = q4.new_batch().unwrap();
    let (cache, _) = prefilled(&mut model, &prompts[3]);
    let err = q4.join(&mut fused, &cache).unwrap_err();
    assert!(
        err.to_string()
            .contains("an Optimum-layout cache cannot join a fused graph's batch"),
        "{err}"
    );
    let err = model
        .join(&mut batch, &q4.new_cache().unwrap())
        .unwrap_err();
    assert!(
        err.to_string().contains("prefill the prompt first"),
        "{err}"
    );
}
