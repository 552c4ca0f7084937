//! The fused q4 graph: shared KV buffer, logits only where asked, rollback, chunked prefill.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

mod common;

use ngsd_runtime::{ForwardOut, Model, Positions, Prefill, sampling::argmax};

use common::max_diff;

fn q4() -> Model {
    common::load_dir(&common::q4_dir())
}

/// A prompt longer than the shared buffer's first capacity (256), so that it grows.
fn long_prompt() -> Vec<u32> {
    let (_, tokenizer, _) = common::load();
    let text = "The river bends past the mill, the bridge and the old school. ".repeat(30);
    let ids = tokenizer.encode(&text).unwrap();
    assert!(ids.len() > 300, "{} tokens", ids.len());
    ids
}

fn run(model: &mut Model, ids: &[u32], positions: Positions) -> ForwardOut {
    let mut cache = model.new_cache().unwrap();
    let mut out = ForwardOut::default();
    model.forward(&mut cache, ids, positions, &mut out).unwrap();
    out
}

#[test]
fn the_q4_graph_keeps_its_cache_in_a_shared_buffer() {
    let model = q4();
    assert!(model.has_shared_cache());
    assert_eq!(model.exported_layers(), &[5, 10, 15, 20, 22, 25]);
    let cache = model.new_cache().unwrap();
    assert!(cache.is_empty() && cache.capacity() >= 256);
}

#[test]
fn q4_predicts_like_fp32() {
    // Same weights (exactly), int8-rounded activations: the next-token choices mostly agree.
    let (mut fp32, _, _) = common::load();
    let mut q4 = q4();
    let ids = long_prompt();
    let v = q4.vocab_size();
    let a = run(&mut fp32, &ids, Positions::All);
    let b = run(&mut q4, &ids, Positions::All);
    assert_eq!(b.rows, ids.len());
    let agree = (0..ids.len())
        .filter(|&r| argmax(a.logits_row(r, v)) == argmax(b.logits_row(r, v)))
        .count();
    assert!(
        agree * 10 >= ids.len() * 8,
        "top-1 agreement {agree} of {}",
        ids.len()
    );
}

/// Greedy steps after `prompt`, with each step's logits.
fn steps(
    model: &mut Model,
    cache: &mut ngsd_runtime::KvCache,
    prompt: &[u32],
    n: usize,
) -> Vec<Vec<f32>> {
    let v = model.vocab_size();
    let mut out = ForwardOut::default();
    model
        .forward(cache, prompt, Positions::Last, &mut out)
        .unwrap();
    let mut logits = vec![out.last_logits(v).to_vec()];
    for _ in 0..n {
        let t = argmax(out.last_logits(v));
        model
            .forward(cache, &[t], Positions::Last, &mut out)
            .unwrap();
        logits.push(out.last_logits(v).to_vec());
    }
    logits
}

#[test]
fn a_growing_buffer_keeps_its_rows() {
    // A cache that starts at 256 positions and grows past the prompt decodes exactly like one
    // preallocated for the whole context. (That the graph's cached steps equal a full pass is
    // checked in Python at fp32 activations, test_fused.py: with int8 activations ONNX Runtime's
    // one-row and many-row kernels round differently.)
    let mut model = q4();
    let prompt = long_prompt();
    let mut small = model.new_cache().unwrap();
    let mut big = model.cache_with_capacity(model.max_context()).unwrap();
    let a = steps(&mut model, &mut small, &prompt, 12);
    let b = steps(&mut model, &mut big, &prompt, 12);
    assert!(small.capacity() >= prompt.len() + 12 && small.capacity() < big.capacity());
    assert_eq!(small.len(), prompt.len() + 12);
    assert_eq!(a, b);
}

#[test]
fn logits_only_for_the_positions_asked_for() {
    let mut model = q4();
    let (h, v) = (model.hidden_size(), model.vocab_size());
    let ids = long_prompt();
    let n = ids.len();
    let all = run(&mut model, &ids, Positions::All);
    let last = run(&mut model, &ids, Positions::Last);
    let cheap = run(&mut model, &ids, Positions::AllHidden);
    assert_eq!((all.rows, all.hidden_rows, all.logits.len()), (n, n, n * v));
    assert_eq!((last.rows, last.logits.len()), (1, v));
    assert_eq!((cheap.rows, cheap.hidden_rows), (1, n));
    assert_eq!(cheap.hidden.len(), n * h);
    assert!(max_diff(all.last_logits(v), last.last_logits(v)) <= 1e-4);
    assert!(max_diff(&all.hidden, &cheap.hidden) <= 1e-4);
    for k in 0..all.layers.len() {
        assert_eq!(cheap.layer(k).len(), n * h);
        assert!(max_diff(all.layer(k), cheap.layer(k)) <= 1e-3);
    }
}

#[test]
fn truncating_rolls_the_sequence_back() {
    // Decode 6 tokens, roll back to 2 of them, feed the third again: the same logits as the
    // first time, on both cache layouts; and the continuation is the same.
    let (fp32, _, _) = common::load();
    for mut model in [q4(), fp32] {
        let v = model.vocab_size();
        let prompt = long_prompt();
        let mut cache = model.new_cache().unwrap();
        let first = steps(&mut model, &mut cache, &prompt, 6);
        let tokens: Vec<u32> = first[..6].iter().map(|l| argmax(l)).collect();
        cache.truncate(prompt.len() + 2).unwrap();
        assert_eq!(cache.len(), prompt.len() + 2);
        let mut out = ForwardOut::default();
        for (k, &t) in tokens[2..].iter().enumerate() {
            model
                .forward(&mut cache, &[t], Positions::Last, &mut out)
                .unwrap();
            let d = max_diff(out.last_logits(v), &first[k + 3]);
            assert!(d <= 1e-5, "step {}: max |Δ logits| = {d}", k + 3);
        }
        assert!(cache.truncate(cache.len() + 1).is_err());
    }
}

#[test]
fn chunked_prefill_matches_one_pass_and_stops_between_chunks() {
    let mut model = q4();
    let (h, v) = (model.hidden_size(), model.vocab_size());
    let ids = long_prompt();
    let whole = run(&mut model, &ids, Positions::AllHidden);
    model.set_prefill_chunk(64);
    for positions in [Positions::Last, Positions::AllHidden, Positions::All] {
        let mut cache = model.new_cache().unwrap();
        let mut out = ForwardOut::default();
        let done = model
            .prefill(&mut cache, &ids, positions, &mut out, &mut || false)
            .unwrap();
        assert_eq!(done, Prefill::Done);
        assert_eq!(cache.len(), ids.len());
        assert!(
            max_diff(out.last_logits(v), whole.last_logits(v)) <= 2e-2,
            "{positions:?}"
        );
        if positions != Positions::Last {
            assert_eq!(out.hidden_rows, ids.len());
            assert!(
                max_diff(&out.hidden, &whole.hidden) <= 2e-2,
                "{positions:?}"
            );
            assert_eq!(out.layer(0).len(), ids.len() * h);
        }
        if positions == Positions::All {
            assert_eq!(out.rows, ids.len());
        }
    }
    // asked before each chunk after the first: stopping at the third ask leaves 3 chunks fed
    let mut asks = 0;
    let mut cache = model.new_cache().unwrap();
    let mut out = ForwardOut::default();
    let stopped = model
        .prefill(&mut cache, &ids, Positions::Last, &mut out, &mut || {
            asks += 1;
            asks == 3
        })
        .unwrap();
    assert_eq!(stopped, Prefill::Stopped { fed: 192 });
    assert_eq!(cache.len(), 192);
}

#[test]
fn a_shared_prefix_is_copied_not_changed() {
    let mut model = q4();
    let v = model.vocab_size();
    let ids = long_prompt();
    let (head, tail) = ids.split_at(280);
    let mut prefix = model.new_cache().unwrap();
    let mut out = ForwardOut::default();
    model
        .forward(&mut prefix, head, Positions::Last, &mut out)
        .unwrap();
    let whole = run(&mut model, &ids, Positions::Last);
    for _ in 0..2 {
        let cache = model
            .forward_from(&prefix, tail, Positions::Last, &mut out)
            .unwrap();
        assert_eq!(cache.len(), ids.len());
        assert_eq!(prefix.len(), head.len());
        assert!(max_diff(out.last_logits(v), whole.last_logits(v)) <= 2e-2);
    }
}
