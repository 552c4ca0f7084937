//! gated-speed: decode speed of safety-aware generation against plain generation, in one
//! process, on the same prompts (the "plain vs gated" ratio). Models load once; every
//! configuration generates exactly N tokens per prompt (EOS ignored, early stop off, α fixed so
//! no reflection generation is timed), and configurations alternate within each round.
//!
//! Prints a markdown table and one JSON line with the raw figures.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use ngsd_decode::{DecodeConfig, Expert, ModelExpert, Models, PromptExpert, Reflection, Request};
use ngsd_gate::Gate;
use ngsd_runtime::{GenerateConfig, Message};

#[derive(Debug, Parser)]
struct Args {
    /// Base model package.
    #[arg(long)]
    model: PathBuf,
    /// A second decoder package to use as the `model` expert (e.g. a copy of the base model).
    #[arg(long)]
    expert_model: Option<PathBuf>,
    /// Tokens per prompt.
    #[arg(long, default_value_t = 48)]
    new_tokens: usize,
    /// Rounds over all configurations.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// ONNX Runtime threads per session.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// Everyday prompts: the hidden-state gate stays closed on these.
const PROMPTS: [&str; 4] = [
    "What are three tips for staying healthy?",
    "Explain how a rainbow forms.",
    "Give me a short recipe for pancakes.",
    "Why do cats purr?",
];

/// A sigmoid-gate weights file whose neuron outputs σ(bias) whatever the hidden state.
fn constant_neuron(path: &std::path::Path, hidden: usize, bias: f32) -> std::io::Result<()> {
    let st = ngsd_gate::safetensors::SafeTensors::logistic_neuron(vec![0.0; hidden], bias);
    std::fs::write(path, st.to_bytes())
}

struct Config {
    name: String,
    gate: String,
    params: String,
    expert: &'static str,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (base, tokenizer, template) = ngsd_benches::load(&args.model, args.threads)?;
    let options = ngsd_runtime::ModelOptions {
        intra_threads: args.threads,
        ..Default::default()
    };
    let tmp = std::env::temp_dir().join(format!("ngsd-gated-speed-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let closed = tmp.join("closed.safetensors");
    let open = tmp.join("open.safetensors");
    constant_neuron(&closed, base.hidden_size(), -10.0)?;
    constant_neuron(&open, base.hidden_size(), 10.0)?;

    let mut configs = vec![
        Config {
            name: "gate-never".into(),
            gate: "never".into(),
            params: String::new(),
            expert: "prompt",
        },
        Config {
            name: "gate-sigmoid, closed (prompt expert)".into(),
            gate: "sigmoid".into(),
            params: format!("weights = \"{}\"", closed.display()),
            expert: "prompt",
        },
        Config {
            name: "gate-sigmoid, firing (prompt expert)".into(),
            gate: "sigmoid".into(),
            params: format!("weights = \"{}\"", open.display()),
            expert: "prompt",
        },
        Config {
            name: "gate-lif (prompt expert)".into(),
            gate: "lif".into(),
            params: String::new(),
            expert: "prompt",
        },
    ];
    if args.expert_model.is_some() {
        configs.push(Config {
            name: "gate-sigmoid, closed (model expert)".into(),
            gate: "sigmoid".into(),
            params: format!("weights = \"{}\"", closed.display()),
            expert: "model",
        });
        configs.push(Config {
            name: "gate-lif (model expert)".into(),
            gate: "lif".into(),
            params: String::new(),
            expert: "model",
        });
    }

    let prompt_expert: Box<dyn Expert> = Box::new(PromptExpert::new(&base, None)?);
    let model_expert: Option<Box<dyn Expert>> = match &args.expert_model {
        Some(dir) => Some(Box::new(ModelExpert::load(
            dir, &options, &base, &tokenizer, None,
        )?)),
        None => None,
    };
    let mut models = Models {
        base,
        tokenizer,
        template,
        expert: prompt_expert,
    };
    let mut spare = model_expert;
    let dirs = ngsd_gate_host::default_dirs();
    let mut gates: Vec<Box<dyn Gate>> = configs
        .iter()
        .map(|c| -> Result<Box<dyn Gate>> {
            Ok(Box::new(
                ngsd_gate_host::load(&c.gate, &dirs, &c.params)
                    .with_context(|| format!("gate {}", c.gate))?,
            ))
        })
        .collect::<Result<_>>()?;

    let plain_cfg = GenerateConfig {
        max_new_tokens: args.new_tokens,
        ignore_eos: true,
        ..Default::default()
    };
    let decode = DecodeConfig {
        generate: plain_cfg.clone(),
        early_stop: None,
        ..Default::default()
    };
    let prompt_ids: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| {
            let text = models.template.as_ref().map_or(Ok(p.to_string()), |t| {
                t.render(&[Message::new("user", p)], true)
            })?;
            Ok(models.tokenizer.encode(&text)?)
        })
        .collect::<Result<_>>()?;

    // [config index 0 = plain, then configs] → (tokens, seconds) per round
    let mut per_round: Vec<Vec<f64>> = vec![Vec::new(); configs.len() + 1];
    let mut passes: Vec<usize> = vec![0; configs.len()];
    for round in 0..=args.rounds {
        // Round 0 is a warm-up.
        let mut plain_tokens = 0usize;
        let t = Instant::now();
        for ids in &prompt_ids {
            plain_tokens += ngsd_runtime::generate(
                &mut models.base,
                &models.tokenizer,
                ids,
                &plain_cfg,
                |_| {},
            )?
            .tokens
            .len();
        }
        if round > 0 {
            per_round[0].push(plain_tokens as f64 / t.elapsed().as_secs_f64());
        }
        for (i, c) in configs.iter().enumerate() {
            let want_model = c.expert == "model";
            let have_model = models.expert.describe().starts_with("model:");
            if want_model != have_model
                && let Some(other) = spare.take()
            {
                spare = Some(std::mem::replace(&mut models.expert, other));
            }
            let mut tokens = 0usize;
            let mut elapsed = 0.0f64;
            let mut expert_passes = 0usize;
            for p in PROMPTS {
                let req = Request {
                    prompt: p.to_string(),
                    ..Default::default()
                };
                let out = ngsd_decode::generate(
                    &req,
                    &mut models,
                    gates[i].as_mut(),
                    &mut Reflection::Fixed(0.9),
                    &decode,
                    |_| {},
                )?;
                tokens += out.tokens.len();
                // Everything after the prompt's prefill: the same span plain generation's tok/s covers.
                elapsed += (out.summary.timings.total_ms) / 1e3;
                expert_passes += out.summary.expert_forward_passes;
            }
            if round > 0 {
                per_round[i + 1].push(tokens as f64 / elapsed);
                passes[i] = expert_passes;
            }
        }
        eprintln!("round {round} done");
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let plain = median(&per_round[0]);
    println!(
        "| configuration | tok/s (median of {} rounds) | ÷ plain (median of per-round ratios) | expert passes per token |",
        args.rounds
    );
    println!("|---|---|---|---|");
    println!("| plain generation | {plain:.1} | 1.00 | 0 |");
    let mut json = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let ratios: Vec<f64> = per_round[i + 1]
            .iter()
            .zip(&per_round[0])
            .map(|(g, p)| g / p)
            .collect();
        let total_tokens = (args.new_tokens * PROMPTS.len()) as f64;
        println!(
            "| {} | {:.1} | {:.2} | {:.2} |",
            c.name,
            median(&per_round[i + 1]),
            median(&ratios),
            passes[i] as f64 / total_tokens
        );
        json.push(serde_json::json!({"config": c.name, "tok_s": per_round[i + 1], "ratio_median": median(&ratios)}));
    }
    println!(
        "{}",
        serde_json::json!({"plain_tok_s": per_round[0], "configs": json, "new_tokens": args.new_tokens, "prompts": PROMPTS.len()})
    );
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
