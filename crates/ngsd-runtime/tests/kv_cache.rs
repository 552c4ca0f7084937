//! Incremental decoding with the KV cache must match recomputing the whole sequence each step.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

mod common;

use ngsd_runtime::{ForwardOut, Message, Positions, sampling::argmax};

#[test]
fn cached_steps_match_full_recompute_for_32_steps() {
    let (mut model, tokenizer, template) = common::load();
    let vocab = model.vocab_size();
    let hidden = model.hidden_size();
    let text = template
        .render(
            &[Message::new("user", "Name three rivers in Europe.")],
            true,
        )
        .unwrap();
    let mut seq = tokenizer.encode(&text).unwrap();

    let mut cache = model.new_cache().unwrap();
    let mut inc = ForwardOut::default();
    let mut full = ForwardOut::default();
    model
        .forward(&mut cache, &seq, Positions::Last, &mut inc)
        .unwrap();

    let mut worst_logit = 0f32;
    let mut worst_hidden = 0f32;
    for step in 0..32 {
        // Reference: the whole sequence from scratch, no cache.
        let mut fresh = model.new_cache().unwrap();
        model
            .forward(&mut fresh, &seq, Positions::Last, &mut full)
            .unwrap();
        let a = inc.last_logits(vocab);
        let b = full.last_logits(vocab);
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        worst_logit = worst_logit.max(d);
        let dh = inc
            .last_hidden(hidden)
            .iter()
            .zip(full.last_hidden(hidden))
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        worst_hidden = worst_hidden.max(dh);
        let (ta, tb) = (argmax(a), argmax(b));
        assert_eq!(ta, tb, "greedy tokens differ at step {step}");
        assert!(d <= 1e-3, "step {step}: max |Δ logits| = {d}");
        seq.push(ta);
        model
            .forward(&mut cache, &[ta], Positions::Last, &mut inc)
            .unwrap();
        assert_eq!(cache.len(), seq.len());
    }
    assert!(worst_hidden <= 1e-3, "max |Δ hidden| = {worst_hidden}");
    eprintln!("max |Δ logits| {worst_logit:e}, max |Δ hidden| {worst_hidden:e} over 32 steps");
}

#[test]
fn all_positions_of_a_chunk_match_single_steps() {
    // Feeding several tokens at once after a cached prefix (the expert's lazy catch-up relies on
    // this) gives the same per-position logits as feeding them one by one.
    let (mut model, tokenizer, _) = common::load();
    let vocab = model.vocab_size();
    let prefix = tokenizer.encode("The quick brown fox").unwrap();
    let chunk = tokenizer.encode(" jumps over the lazy dog").unwrap();

    let mut a = model.new_cache().unwrap();
    let mut out_a = ForwardOut::default();
    model
        .forward(&mut a, &prefix, Positions::Last, &mut out_a)
        .unwrap();
    model
        .forward(&mut a, &chunk, Positions::All, &mut out_a)
        .unwrap();
    assert_eq!(out_a.rows, chunk.len());
    assert_eq!(out_a.hidden.len(), chunk.len() * model.hidden_size());

    let mut b = model.new_cache().unwrap();
    let mut out_b = ForwardOut::default();
    model
        .forward(&mut b, &prefix, Positions::Last, &mut out_b)
        .unwrap();
    for (i, &t) in chunk.iter().enumerate() {
        model
            .forward(&mut b, &[t], Positions::Last, &mut out_b)
            .unwrap();
        let d = out_a
            .logits_row(i, vocab)
            .iter()
            .zip(out_b.last_logits(vocab))
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-3, "position {i}: max |Δ logits| = {d}");
    }
}

#[test]
fn a_shared_prefix_serves_several_sequences_unchanged() {
    // `forward_from` leaves the prefix cache as it is: two continuations of one prefix give the
    // same logits as running each whole sequence from scratch, and the prefix still serves.
    let (mut model, tokenizer, _) = common::load();
    let vocab = model.vocab_size();
    let prefix = tokenizer
        .encode("You are a helpful assistant.\nUser:")
        .unwrap();
    let mut shared = model.new_cache().unwrap();
    let mut out = ForwardOut::default();
    model
        .forward(&mut shared, &prefix, Positions::Last, &mut out)
        .unwrap();
    for rest in [
        " Name a colour.",
        " What is two plus two?",
        " Name a colour.",
    ] {
        let rest = tokenizer.encode(rest).unwrap();
        let mut via_prefix = ForwardOut::default();
        let mut cache = model
            .forward_from(&shared, &rest, Positions::Last, &mut via_prefix)
            .unwrap();
        assert_eq!(cache.len(), prefix.len() + rest.len());
        assert_eq!(shared.len(), prefix.len(), "the prefix is left as it was");

        let mut whole: Vec<u32> = prefix.clone();
        whole.extend_from_slice(&rest);
        let mut fresh = model.new_cache().unwrap();
        let mut direct = ForwardOut::default();
        model
            .forward(&mut fresh, &whole, Positions::Last, &mut direct)
            .unwrap();
        let d = via_prefix
            .last_logits(vocab)
            .iter()
            .zip(direct.last_logits(vocab))
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-3, "max |Δ logits| = {d}");
        // The returned cache continues like any other.
        let next = argmax(via_prefix.last_logits(vocab));
        model
            .forward(&mut cache, &[next], Positions::Last, &mut via_prefix)
            .unwrap();
        assert_eq!(cache.len(), whole.len() + 1);
    }
}
