//! agreement: how faithfully a model variant (q4, int8) reproduces the fp32 reference.
//!
//! Teacher-forced: each chat transcript (user turn + assistant answer, rendered with the chat
//! template) runs through both models in one forward pass; at every position the variant's top
//! token is compared with the reference's, and KL(reference ‖ variant) of the next-token
//! distributions is averaged. Greedy: a few prompts are answered by both models
//! (`--greedy-tokens` tokens, EOS ends an answer) and the answers compared token by token.
//!
//! `--text FILE --window N` instead teacher-forces a plain text the way llama.cpp's
//! `llama-perplexity --kl-divergence` does: the text is tokenized without a template, cut into
//! consecutive windows of N tokens, each window is one forward pass, and only the positions of
//! its second half are scored. That puts ngsd and llama.cpp (each against its own fp32 run) on
//! the same token stream.
//!
//! The texts come from `--transcripts` (a JSON list of `{"text": "USER: … ASSISTANT: …"}`), the
//! first `--max-transcripts`; the greedy prompts from each `--prompts FILE[@SKIP]` (a JSON list
//! of strings or of objects with `prompt` or `goal`), `--max-prompts` of each file after the
//! first SKIP. Prints a human summary on stderr and one JSON line on stdout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ngsd_runtime::{
    ChatTemplate, ForwardOut, Message, Model, Positions, Tokenizer, sampling::argmax,
};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// The reference package (fp32).
    #[arg(long)]
    reference: PathBuf,
    /// The package compared with it (q4, int8).
    #[arg(long)]
    model: PathBuf,
    /// JSON list of `{"text": "USER: … ASSISTANT: …"}` transcripts for the teacher-forced part.
    #[arg(long, required_unless_present = "text", conflicts_with = "text")]
    transcripts: Option<PathBuf>,
    /// A plain text file teacher-forced in `--window`-token windows instead of transcripts.
    #[arg(long)]
    text: Option<PathBuf>,
    /// Tokens per window of `--text`; positions of each window's second half are scored.
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// Transcripts used (from the start of the list).
    #[arg(long, default_value_t = 24)]
    max_transcripts: usize,
    /// `FILE[@SKIP]`: a JSON list of prompts (strings, or objects with `prompt` or `goal`) for
    /// the greedy comparison, its first SKIP left out (e.g. to reach a dev split). Repeatable.
    #[arg(long)]
    prompts: Vec<String>,
    /// Prompts used from each `--prompts` file.
    #[arg(long, default_value_t = 4)]
    max_prompts: usize,
    /// Tokens of each greedy answer.
    #[arg(long, default_value_t = 48)]
    greedy_tokens: usize,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// Teacher-forced totals over every position of every transcript.
#[derive(Debug, Default)]
struct Forced {
    positions: usize,
    top1_equal: usize,
    kl_sum: f64,
    kl_max: f64,
}

/// log-softmax in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let log_z = max + sum.ln();
    logits.iter().map(|&x| x as f64 - log_z).collect()
}

/// KL(p ‖ q) from the two distributions' logits.
fn kl(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let lp = log_softmax(p_logits);
    let lq = log_softmax(q_logits);
    lp.iter()
        .zip(&lq)
        .map(|(&a, &b)| a.exp() * (a - b))
        .sum::<f64>()
        .max(0.0)
}

fn all_logits(model: &mut Model, ids: &[u32]) -> Result<ForwardOut> {
    let mut cache = model.new_cache()?;
    let mut out = ForwardOut::default();
    model.forward(&mut cache, ids, Positions::All, &mut out)?;
    Ok(out)
}

/// Scores positions `first..len - 1` of every sequence (`first` = 0 for transcripts, half the
/// window for `--text`).
fn teacher_forced(
    reference: &mut Model,
    model: &mut Model,
    seqs: &[Vec<u32>],
    first: usize,
) -> Result<Forced> {
    let vocab = reference.vocab_size();
    let mut f = Forced::default();
    for ids in seqs {
        let a = all_logits(reference, ids)?;
        let b = all_logits(model, ids)?;
        // The last position predicts past the text: not counted.
        for r in first..ids.len() - 1 {
            let (pa, pb) = (a.logits_row(r, vocab), b.logits_row(r, vocab));
            f.positions += 1;
            f.top1_equal += usize::from(argmax(pa) == argmax(pb));
            let d = kl(pa, pb);
            f.kl_sum += d;
            f.kl_max = f.kl_max.max(d);
        }
    }
    Ok(f)
}

fn greedy(model: &mut Model, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    let vocab = model.vocab_size();
    let eos = model.eos_token_ids().to_vec();
    let mut cache = model.new_cache()?;
    let mut out = ForwardOut::default();
    model.prefill(&mut cache, prompt, Positions::Last, &mut out, &mut || false)?;
    let mut tokens = Vec::new();
    loop {
        let tok = argmax(out.last_logits(vocab));
        tokens.push(tok);
        if tokens.len() == n || eos.contains(&tok) {
            return Ok(tokens);
        }
        model.forward(&mut cache, &[tok], Positions::Last, &mut out)?;
    }
}

fn read_json(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: expected a JSON list", path.display()))
}

/// The prompts of each `FILE[@SKIP]`: at most `max` of each, after the first SKIP.
fn read_prompts(specs: &[String], max: usize) -> Result<Vec<String>> {
    let mut prompts = Vec::new();
    for spec in specs {
        let (path, skip) = match spec.rsplit_once('@') {
            Some((p, n)) => (
                p,
                n.parse()
                    .with_context(|| format!("--prompts {spec}: `{n}` is not a count"))?,
            ),
            None => (spec.as_str(), 0),
        };
        for v in read_json(Path::new(path))?.iter().skip(skip).take(max) {
            let prompt = v["prompt"]
                .as_str()
                .or(v["goal"].as_str())
                .or(v.as_str())
                .with_context(|| {
                    format!("{path}: a prompt that is neither a string nor has `prompt` or `goal`")
                })?;
            prompts.push(prompt.to_string());
        }
    }
    Ok(prompts)
}

/// `USER: … ASSISTANT: …` as the two chat messages.
fn transcript_messages(text: &str) -> Option<[Message; 2]> {
    let rest = text.trim().strip_prefix("USER:")?;
    let (user, answer) = rest.split_once("ASSISTANT:")?;
    Some([
        Message::new("user", user.trim()),
        Message::new("assistant", answer.trim()),
    ])
}

fn encode(
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    messages: &[Message],
    generation_prompt: bool,
) -> Result<Vec<u32>> {
    let template = template.context("the reference package has no chat template")?;
    Ok(tokenizer.encode(&template.render(messages, generation_prompt)?)?)
}

/// The transcripts of `--transcripts`, each rendered with the chat template and tokenized.
fn transcript_seqs(
    args: &Args,
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
) -> Result<Vec<Vec<u32>>> {
    let path = args
        .transcripts
        .as_ref()
        .context("--transcripts or --text is needed")?;
    let mut seqs = Vec::new();
    for v in read_json(path)?.iter().take(args.max_transcripts) {
        let text = v["text"].as_str().context("a transcript without `text`")?;
        let messages = transcript_messages(text)
            .with_context(|| format!("not a `USER: … ASSISTANT: …` transcript: {text:.60}"))?;
        seqs.push(encode(tokenizer, template, &messages, false)?);
    }
    if seqs.is_empty() {
        bail!("no transcripts in {}", path.display());
    }
    Ok(seqs)
}

/// `--text`: the file's tokens in consecutive `window`-token windows (a shorter tail is dropped).
fn text_windows(tokenizer: &Tokenizer, path: &Path, window: usize) -> Result<Vec<Vec<u32>>> {
    if window < 4 {
        bail!("--window {window} is too small: use at least 4 tokens (llama-perplexity uses -c)");
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ids = tokenizer.encode(&text)?;
    if ids.len() < window {
        bail!(
            "{} has {} tokens, fewer than one --window of {window}",
            path.display(),
            ids.len()
        );
    }
    Ok(ids.chunks_exact(window).map(<[u32]>::to_vec).collect())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (mut reference, tokenizer, template) = ngsd_benches::load(&args.reference, args.threads)?;
    let (mut model, _, _) = ngsd_benches::load(&args.model, args.threads)?;
    if reference.vocab_size() != model.vocab_size() {
        bail!(
            "vocabularies differ: {} in {}, {} in {}",
            reference.vocab_size(),
            args.reference.display(),
            model.vocab_size(),
            args.model.display()
        );
    }
    let (seqs, first) = match &args.text {
        Some(path) => (
            text_windows(&tokenizer, path, args.window)?,
            args.window / 2,
        ),
        None => (transcript_seqs(&args, &tokenizer, template.as_ref())?, 0),
    };
    // Read before the long teacher-forced pass, so that a bad file fails at once.
    let prompts = read_prompts(&args.prompts, args.max_prompts)?;
    let forced = teacher_forced(&mut reference, &mut model, &seqs, first)?;
    let top1 = forced.top1_equal as f64 / forced.positions as f64;
    let mean_kl = forced.kl_sum / forced.positions as f64;
    eprintln!(
        "teacher-forced: {} positions over {} sequences; top-1 agreement {top1:.4}, mean KL {mean_kl:.5}, max KL {:.4}",
        forced.positions,
        seqs.len(),
        forced.kl_max
    );
    let mut greedy_rows = Vec::new();
    for prompt in &prompts {
        let ids = encode(
            &tokenizer,
            template.as_ref(),
            &[Message::new("user", prompt)],
            true,
        )?;
        let a = greedy(&mut reference, &ids, args.greedy_tokens)?;
        let b = greedy(&mut model, &ids, args.greedy_tokens)?;
        let same_prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        let identical = a == b;
        eprintln!(
            "greedy: {} — {}",
            if identical {
                format!("identical ({} tokens)", a.len())
            } else {
                format!("first {same_prefix} of {} tokens equal", a.len())
            },
            prompt.chars().take(60).collect::<String>()
        );
        greedy_rows.push(json!({
            "prompt": prompt,
            "identical": identical,
            "equal_prefix": same_prefix,
            "reference_tokens": a.len(),
            "reference_text": tokenizer.decode(&a)?,
            "model_text": tokenizer.decode(&b)?,
        }));
    }
    let doc = json!({
        "reference": args.reference,
        "model": args.model,
        "positions": forced.positions,
        "sequences": seqs.len(),
        "scored_from": first,
        "top1_agreement": top1,
        "mean_kl": mean_kl,
        "max_kl": forced.kl_max,
        "greedy": greedy_rows,
    });
    println!("{doc}");
    Ok(())
}
