//! decode-speed: greedy decoding forced to N tokens, timed the same way as the Python baseline
//! (xtask/py/bench_ort.py), printing one JSON line. Used by `cargo xtask bench-compare`.
//!
//! Measured: session load excluded; one untimed warm-up generation; `prefill_ms` = the prompt's
//! prefill (`Model::prefill`, chunked as in serving) plus picking token 1; `decode_tok_s` =
//! (N - 1) / time of the N - 1 following single-token steps (each: forward with the KV cache,
//! argmax of the last position). `--copy-bandwidth` instead measures memory copy bandwidth with
//! the same thread count (for the fraction of the bandwidth limit a decode step reaches).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ngsd_runtime::{ForwardOut, Model, Positions, sampling::argmax};

#[derive(Debug, Parser)]
struct Args {
    /// Model package folder.
    #[arg(long)]
    model: PathBuf,
    /// JSON list of prompt token ids (read), or written with --write-prompt-ids.
    #[arg(long)]
    prompt_ids: PathBuf,
    /// Write the chat-templated benchmark prompt's ids to --prompt-ids and exit.
    #[arg(long)]
    write_prompt_ids: bool,
    /// With --write-prompt-ids: make the prompt at least this many tokens long (notes pasted
    /// before the question), to measure decoding at a long context. 0 = the short prompt.
    #[arg(long, default_value_t = 0)]
    context_tokens: usize,
    /// Tokens to generate (EOS ignored).
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Untimed warm-up generations.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Use only the first N prompt ids (0 = all): exact prompt lengths for prefill figures.
    #[arg(long, default_value_t = 0)]
    prompt_len: usize,
    /// Measure memory copy bandwidth instead (a 512 MiB buffer copied by --threads threads).
    #[arg(long)]
    copy_bandwidth: bool,
}

/// Bytes moved per second (read + written) copying a large buffer with `threads` threads; the
/// best of 5 rounds.
fn copy_bandwidth(threads: usize) -> f64 {
    const BYTES: usize = 512 << 20;
    let src = vec![1u8; BYTES];
    let mut dst = vec![0u8; BYTES];
    let part = BYTES / threads.max(1);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        std::thread::scope(|s| {
            for (d, c) in dst.chunks_mut(part).zip(src.chunks(part)) {
                s.spawn(move || d.copy_from_slice(c));
            }
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    2.0 * BYTES as f64 / best
}

fn greedy(model: &mut Model, prompt: &[u32], n: usize) -> Result<(Vec<u32>, f64, f64)> {
    let vocab = model.vocab_size();
    let mut cache = model.new_cache()?;
    let mut out = ForwardOut::default();
    let t0 = Instant::now();
    model.prefill(&mut cache, prompt, Positions::Last, &mut out, &mut || false)?;
    let mut tok = argmax(out.last_logits(vocab));
    let mut tokens = vec![tok];
    let t1 = Instant::now();
    for _ in 1..n {
        model.forward(&mut cache, &[tok], Positions::Last, &mut out)?;
        tok = argmax(out.last_logits(vocab));
        tokens.push(tok);
    }
    let t2 = Instant::now();
    Ok((tokens, (t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.copy_bandwidth {
        let json = serde_json::json!({"copy_gb_s": copy_bandwidth(args.threads) / 1e9, "threads": args.threads});
        println!("{json}");
        return Ok(());
    }
    if args.new_tokens < 2 {
        bail!("--new-tokens must be at least 2");
    }
    let load_start = Instant::now();
    let (mut model, tokenizer, template) = ngsd_benches::load(&args.model, args.threads)?;
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    if args.write_prompt_ids {
        let mut notes = String::new();
        let mut ids =
            ngsd_benches::prompt_ids(&tokenizer, template.as_ref(), ngsd_benches::BENCH_PROMPT)?;
        while ids.len() < args.context_tokens {
            notes.push_str(ngsd_benches::NOTES_PARAGRAPH);
            let prompt = format!(
                "Here are my notes:\n\n{notes}\n{}",
                ngsd_benches::BENCH_PROMPT
            );
            ids = ngsd_benches::prompt_ids(&tokenizer, template.as_ref(), &prompt)?;
        }
        std::fs::write(&args.prompt_ids, serde_json::to_string(&ids)?)
            .with_context(|| format!("writing {}", args.prompt_ids.display()))?;
        return Ok(());
    }
    let text = std::fs::read_to_string(&args.prompt_ids)
        .with_context(|| format!("reading {}", args.prompt_ids.display()))?;
    let mut prompt: Vec<u32> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected a JSON list of token ids",
            args.prompt_ids.display()
        )
    })?;
    if args.prompt_len > 0 {
        if prompt.len() < args.prompt_len {
            bail!(
                "{} holds {} ids, fewer than --prompt-len {}",
                args.prompt_ids.display(),
                prompt.len(),
                args.prompt_len
            );
        }
        prompt.truncate(args.prompt_len);
    }
    for _ in 0..args.warmup {
        greedy(&mut model, &prompt, 2)?;
    }
    let (tokens, prefill_s, decode_s) = greedy(&mut model, &prompt, args.new_tokens)?;
    let json = serde_json::json!({
        "runner": "ngsd-rust",
        "prefill_ms": prefill_s * 1e3,
        "decode_tok_s": (args.new_tokens - 1) as f64 / decode_s,
        "new_tokens": args.new_tokens,
        "prompt_tokens": prompt.len(),
        "load_ms": load_ms,
        "tokens": tokens,
    });
    println!("{json}");
    Ok(())
}
