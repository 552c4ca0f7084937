//! batch_speed: aggregate decode tokens per second with B sequences in one forward pass
//! ([`ngsd_runtime::Batch`]) against the same sequences decoded one after another.
//!
//! Each of the B sequences is a different chat prompt (a numbered variant of the benchmark
//! question), prefilled alone, then joined to the batch; `--new-tokens` greedy tokens are then
//! decoded for all rows together. Only the decode steps are timed (prefill is per sequence in
//! both setups). The solo figure decodes the first prompt alone, in the same run, before and
//! after the batches, so drift shows. Prints a human table on stderr and one JSON line on stdout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Parser;
use ngsd_benches::{BENCH_PROMPT, bench_model_dir, load, prompt_ids};
use ngsd_runtime::{ForwardOut, KvCache, Model, Positions, sampling::argmax};
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// Model package (default: the checkout's fp32 package, or NGSD_BENCH_MODEL).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,32")]
    batch: Vec<usize>,
    /// Tokens decoded per sequence.
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// The cache after prefilling `ids` alone, and the first greedy token.
fn prefill(model: &mut Model, ids: &[u32]) -> Result<(KvCache, u32)> {
    let mut cache = model.new_cache()?;
    let mut out = ForwardOut::default();
    model.forward(&mut cache, ids, Positions::Last, &mut out)?;
    Ok((cache, argmax(out.last_logits(model.vocab_size()))))
}

/// Decode tokens per second of one sequence alone.
fn solo(model: &mut Model, ids: &[u32], steps: usize) -> Result<f64> {
    let (mut cache, mut next) = prefill(model, ids)?;
    let mut out = ForwardOut::default();
    let start = Instant::now();
    for _ in 0..steps {
        model.forward(&mut cache, &[next], Positions::Last, &mut out)?;
        next = argmax(out.last_logits(model.vocab_size()));
    }
    Ok(steps as f64 / start.elapsed().as_secs_f64())
}

/// Aggregate decode tokens per second of `prompts` decoded together.
fn batched(model: &mut Model, prompts: &[Vec<u32>], steps: usize) -> Result<f64> {
    let mut batch = model.new_batch()?;
    let mut next = Vec::with_capacity(prompts.len());
    for ids in prompts {
        let (cache, first) = prefill(model, ids)?;
        model.join(&mut batch, &cache)?;
        next.push(first);
    }
    let vocab = model.vocab_size();
    let mut out = ForwardOut::default();
    let start = Instant::now();
    for _ in 0..steps {
        model.step_batch(&mut batch, &next, &mut out)?;
        for (r, t) in next.iter_mut().enumerate() {
            *t = argmax(out.logits_row(r, vocab));
        }
    }
    Ok((steps * prompts.len()) as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.batch.contains(&0) || args.new_tokens == 0 {
        bail!("--batch sizes and --new-tokens must be at least 1");
    }
    let dir = args
        .model
        .clone()
        .unwrap_or_else(|| bench_model_dir("fp32"));
    let (mut model, tokenizer, template) = load(&dir, args.threads)?;
    let largest = args.batch.iter().copied().max().unwrap_or(1);
    let prompts = (0..largest)
        .map(|i| {
            prompt_ids(
                &tokenizer,
                template.as_ref(),
                &format!("{BENCH_PROMPT} ({})", i + 1),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let solo_before = solo(&mut model, &prompts[0], args.new_tokens)?;
    let mut rows = Vec::new();
    for &b in &args.batch {
        let tok_s = batched(&mut model, &prompts[..b], args.new_tokens)?;
        eprintln!("batch {b:>3}: {tok_s:8.1} tok/s aggregate");
        rows.push(json!({"batch": b, "tok_s": tok_s}));
    }
    let solo_after = solo(&mut model, &prompts[0], args.new_tokens)?;
    eprintln!("solo (Model::forward): {solo_before:.1} tok/s before, {solo_after:.1} after");
    let doc = json!({
        "model": dir,
        "threads": args.threads,
        "new_tokens": args.new_tokens,
        "solo_tok_s": [solo_before, solo_after],
        "batched": rows,
    });
    println!("{doc}");
    Ok(())
}
