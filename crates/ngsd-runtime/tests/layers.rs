//! The residual stream after exported layers (`hidden_states.{L}`) and the output modes.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

mod common;

use ngsd_runtime::{ForwardOut, Model, Positions};

use common::max_diff;

/// Largest difference relative to the largest magnitude (the residual stream holds values in
/// the tens of thousands on the first position).
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1f32, |m, x| m.max(x.abs()));
    max_diff(a, b) / scale
}

fn run(model: &mut Model, ids: &[u32], positions: Positions) -> ForwardOut {
    let mut cache = model.new_cache().unwrap();
    let mut out = ForwardOut::default();
    model.forward(&mut cache, ids, positions, &mut out).unwrap();
    out
}

fn prompt() -> Vec<u32> {
    let (_, tokenizer, _) = common::load();
    tokenizer
        .encode("The residual stream of a transformer carries every layer's writes.")
        .unwrap()
}

#[test]
fn the_converter_exports_the_default_layers() {
    let (model, _, _) = common::load();
    assert_eq!(model.num_layers(), 30);
    // every multiple of 5 below 30, plus round(0.75 × 30) = 22
    assert_eq!(model.exported_layers(), &[5, 10, 15, 20, 22, 25]);
    let listed: Vec<usize> = model
        .package()
        .manifest
        .io
        .hidden_layers
        .keys()
        .copied()
        .collect();
    assert_eq!(listed, model.exported_layers());
}

#[test]
fn each_mode_reports_the_rows_it_promises() {
    let (mut model, _, _) = common::load();
    let (h, v, k) = (
        model.hidden_size(),
        model.vocab_size(),
        model.exported_layers().len(),
    );
    let ids = prompt();
    let n = ids.len();
    for (positions, rows, hidden_rows) in [
        (Positions::Last, 1, 1),
        (Positions::All, n, n),
        (Positions::AllHidden, 1, n),
    ] {
        let out = run(&mut model, &ids, positions);
        assert_eq!(
            (out.rows, out.hidden_rows),
            (rows, hidden_rows),
            "{positions:?}"
        );
        assert_eq!(out.logits.len(), rows * v, "{positions:?}");
        assert_eq!(out.hidden.len(), hidden_rows * h, "{positions:?}");
        assert_eq!(out.layers.len(), k, "{positions:?}");
        for layer in 0..k {
            assert_eq!(out.layer(layer).len(), hidden_rows * h, "{positions:?}");
        }
    }
}

#[test]
fn all_hidden_is_all_without_the_early_logits() {
    let (mut model, _, _) = common::load();
    let (h, v) = (model.hidden_size(), model.vocab_size());
    let ids = prompt();
    let all = run(&mut model, &ids, Positions::All);
    let cheap = run(&mut model, &ids, Positions::AllHidden);
    let last = run(&mut model, &ids, Positions::Last);
    // same graph, same input: the rows are the same values
    assert_eq!(cheap.last_logits(v), all.last_logits(v));
    assert_eq!(cheap.hidden, all.hidden);
    assert_eq!(cheap.layers, all.layers);
    assert_eq!(last.last_logits(v), all.last_logits(v));
    assert_eq!(last.last_hidden(h), all.last_hidden(h));
    for k in 0..all.layers.len() {
        assert_eq!(last.layer(k), &all.layer(k)[(ids.len() - 1) * h..]);
    }
}

#[test]
fn layer_rows_are_positions_in_order() {
    // Causality pins the row order: the rows of a prefix run equal the first rows of the full
    // run, and a cached continuation's rows equal the full run's remaining rows.
    let (mut model, _, _) = common::load();
    let h = model.hidden_size();
    let ids = prompt();
    let split = ids.len() / 2;
    let full = run(&mut model, &ids, Positions::AllHidden);
    let head = run(&mut model, &ids[..split], Positions::AllHidden);
    let mut cache = model.new_cache().unwrap();
    let mut tail = ForwardOut::default();
    model
        .forward(&mut cache, &ids[..split], Positions::Last, &mut tail)
        .unwrap();
    model
        .forward(&mut cache, &ids[split..], Positions::AllHidden, &mut tail)
        .unwrap();
    assert_eq!(tail.hidden_rows, ids.len() - split);
    for k in 0..full.layers.len() {
        let (f_head, f_tail) = full.layer(k).split_at(split * h);
        let d_head = rel_diff(head.layer(k), f_head);
        let d_tail = rel_diff(tail.layer(k), f_tail);
        assert!(
            d_head <= 1e-5,
            "layer slot {k}: prefix rows differ by {d_head}"
        );
        assert!(
            d_tail <= 1e-5,
            "layer slot {k}: cached rows differ by {d_tail}"
        );
    }
    // the layers differ from each other and from the final (normed) hidden state
    let last_row = |buf: &[f32]| buf[(ids.len() - 1) * h..].to_vec();
    let rows: Vec<Vec<f32>> = full.layers.iter().map(|l| last_row(l)).collect();
    for pair in rows.windows(2) {
        assert!(
            max_diff(&pair[0], &pair[1]) > 1e-3,
            "two layers report the same values"
        );
    }
    assert!(max_diff(&rows[rows.len() - 1], full.last_hidden(h)) > 1e-3);
}
