//! gated-speed: decode speed of safety-aware generation against plain generation, in one
//! process, on the same prompts (the issues' "gated ÷ plain" ratio). Models load once; every
//! configuration generates exactly N tokens per prompt (EOS ignored, early stop off), and
//! configurations alternate within each round. The synthetic configurations fix α so that no
//! reflection is timed; the `default` one (given `--gate-weights` and `--head-expert`) is the
//! shipped configuration: the trained neuron with its answer monitor, probe α and the head expert.
//!
//! Prints a markdown table and one JSON line with the raw figures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use ngsd_decode::reflection::AlphaMap;
use ngsd_decode::{
    DecodeConfig, Expert, HeadExpert, ModelExpert, Models, PromptExpert, Reflection, Request,
};
use ngsd_gate::Gate;
use ngsd_runtime::{GenerateConfig, Model};

#[derive(Debug, Parser)]
struct Args {
    /// Base model package.
    #[arg(long)]
    model: PathBuf,
    /// A second decoder package to use as the `model` expert (e.g. a copy of the base model).
    #[arg(long)]
    expert_model: Option<PathBuf>,
    /// The trained neuron (e.g. models/smollm2-135m-instruct/gate.safetensors); with
    /// `--head-expert` it adds the default configuration to the table.
    #[arg(long, requires = "head_expert")]
    gate_weights: Option<PathBuf>,
    /// The trained head expert (e.g. models/smollm2-135m-instruct/expert.safetensors).
    #[arg(long, requires = "gate_weights")]
    head_expert: Option<PathBuf>,
    /// Tokens per prompt.
    #[arg(long, default_value_t = 48)]
    new_tokens: usize,
    /// Rounds over all configurations (after one warm-up round).
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

/// The expert a configuration steers toward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ExpertKind {
    Prompt,
    Model,
    Head,
}

/// How a configuration sets α.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alpha {
    Fixed,
    /// The trained neuron's probability on the prompt.
    Probe,
}

struct Config {
    name: &'static str,
    gate: &'static str,
    params: String,
    expert: ExpertKind,
    alpha: Alpha,
}

impl Config {
    fn new(name: &'static str, gate: &'static str, params: String, expert: ExpertKind) -> Self {
        Config {
            name,
            gate,
            params,
            expert,
            alpha: Alpha::Fixed,
        }
    }
}

/// A sigmoid-gate weights file whose neuron outputs σ(bias) whatever the hidden state.
fn constant_neuron(path: &Path, hidden: usize, bias: f32) -> std::io::Result<()> {
    let st = ngsd_gate::safetensors::SafeTensors::logistic_neuron(vec![0.0; hidden], bias);
    std::fs::write(path, st.to_bytes())
}

fn weights(path: &Path) -> String {
    format!("weights = \"{}\"", path.display())
}

/// The configurations to time, in table order.
fn configs(args: &Args, closed: &Path, open: &Path) -> Vec<Config> {
    use ExpertKind::*;
    let mut configs = vec![
        Config::new("gate-never", "never", String::new(), Prompt),
        Config::new(
            "gate-sigmoid, closed (prompt expert)",
            "sigmoid",
            weights(closed),
            Prompt,
        ),
        Config::new(
            "gate-sigmoid, firing (prompt expert)",
            "sigmoid",
            weights(open),
            Prompt,
        ),
        Config::new("gate-lif (prompt expert)", "lif", String::new(), Prompt),
    ];
    if args.expert_model.is_some() {
        configs.push(Config::new(
            "gate-sigmoid, closed (model expert)",
            "sigmoid",
            weights(closed),
            Model,
        ));
        configs.push(Config::new(
            "gate-lif (model expert)",
            "lif",
            String::new(),
            Model,
        ));
    }
    if let Some(trained) = &args.gate_weights {
        configs.push(Config {
            alpha: Alpha::Probe,
            ..Config::new(
                "default: trained neuron + answer monitor + probe α + head expert",
                "sigmoid",
                weights(trained),
                Head,
            )
        });
    }
    configs
}

/// Loads a gate plugin with the model's hidden size and checksum, as the CLI does.
fn load_gate(name: &str, params: &str, base: &Model) -> Result<Box<dyn Gate + Send>> {
    let params = ngsd_decode::features::host_context(base).append_to(params);
    let dirs = ngsd_gate_host::default_dirs();
    let gate =
        ngsd_gate_host::load(name, &dirs, &params).with_context(|| format!("gate {name}"))?;
    Ok(Box::new(gate))
}

/// Every expert the configurations use, by kind.
fn load_experts(args: &Args, base: &Model) -> Result<BTreeMap<ExpertKind, Box<dyn Expert>>> {
    let mut experts: BTreeMap<ExpertKind, Box<dyn Expert>> = BTreeMap::new();
    experts.insert(ExpertKind::Prompt, Box::new(PromptExpert::new(base, None)?));
    if let Some(dir) = &args.expert_model {
        let options = ngsd_runtime::ModelOptions {
            intra_threads: args.threads,
            ..Default::default()
        };
        let package = ngsd_runtime::ModelPackage::open(dir)?;
        let tokenizer = ngsd_runtime::Tokenizer::from_package(&package)?;
        let expert = ModelExpert::load(dir, &options, base, &tokenizer, None)?;
        experts.insert(ExpertKind::Model, Box::new(expert));
    }
    if let Some(file) = &args.head_expert {
        let expert = HeadExpert::load(file, base)
            .with_context(|| format!("loading the head expert {}", file.display()))?;
        experts.insert(ExpertKind::Head, Box::new(expert));
    }
    Ok(experts)
}

/// The engine under test: the models with one expert in place, the others waiting.
struct Bench {
    models: Models,
    current: ExpertKind,
    spare: BTreeMap<ExpertKind, Box<dyn Expert>>,
}

impl Bench {
    /// Puts the expert of `kind` into the models.
    fn use_expert(&mut self, kind: ExpertKind) {
        if kind == self.current {
            return;
        }
        let next = self
            .spare
            .remove(&kind)
            .expect("every configured expert is loaded");
        let previous = std::mem::replace(&mut self.models.expert, next);
        self.spare.insert(self.current, previous);
        self.current = kind;
    }

    /// Plain generation over every prompt: tokens per second.
    fn plain(&mut self, prompt_ids: &[Vec<u32>], cfg: &GenerateConfig) -> Result<f64> {
        let (mut tokens, t) = (0usize, Instant::now());
        for ids in prompt_ids {
            let m = &mut self.models;
            tokens += ngsd_runtime::generate(&mut m.base, &m.tokenizer, ids, cfg, |_| {})?
                .tokens
                .len();
        }
        Ok(tokens as f64 / t.elapsed().as_secs_f64())
    }

    /// Safety-aware generation over every prompt: tokens per second and expert passes.
    fn gated(
        &mut self,
        gate: &mut dyn Gate,
        reflection: &mut Reflection,
        decode: &DecodeConfig,
    ) -> Result<(f64, usize)> {
        let (mut tokens, mut seconds, mut passes) = (0usize, 0.0f64, 0usize);
        for p in PROMPTS {
            let req = Request {
                prompt: p.to_string(),
                ..Default::default()
            };
            let out =
                ngsd_decode::generate(&req, &mut self.models, gate, reflection, decode, |_| {})?;
            tokens += out.tokens.len();
            // The whole request, prefill and reflection included, as plain generation's
            // wall time includes its prefill.
            seconds += out.summary.timings.total_ms / 1e3;
            passes += out.summary.expert_forward_passes;
        }
        Ok((tokens as f64 / seconds, passes))
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints the markdown table and the JSON line.
fn report(args: &Args, configs: &[Config], plain: &[f64], gated: &[Vec<f64>], passes: &[usize]) {
    println!(
        "| configuration | tok/s (median of {} rounds) | ÷ plain (median of per-round ratios) | expert passes per token |",
        args.rounds
    );
    println!("|---|---|---|---|");
    println!("| plain generation | {:.1} | 1.00 | 0 |", median(plain));
    let total_tokens = (args.new_tokens * PROMPTS.len()) as f64;
    let mut json = Vec::new();
    for ((c, tok_s), &passes) in configs.iter().zip(gated).zip(passes) {
        let ratios: Vec<f64> = tok_s.iter().zip(plain).map(|(g, p)| g / p).collect();
        let ratio = median(&ratios);
        println!(
            "| {} | {:.1} | {ratio:.2} | {:.2} |",
            c.name,
            median(tok_s),
            passes as f64 / total_tokens
        );
        json.push(serde_json::json!({"config": c.name, "tok_s": tok_s, "ratio_median": ratio}));
    }
    println!(
        "{}",
        serde_json::json!({"plain_tok_s": plain, "configs": json, "new_tokens": args.new_tokens, "prompts": PROMPTS.len()})
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (base, tokenizer, template) = ngsd_benches::load(&args.model, args.threads)?;
    let tmp = tempfile::tempdir()?;
    let (closed, open) = (tmp.path().join("closed.st"), tmp.path().join("open.st"));
    constant_neuron(&closed, base.hidden_size(), -10.0)?;
    constant_neuron(&open, base.hidden_size(), 10.0)?;
    let configs = configs(&args, &closed, &open);
    let mut gates = Vec::new();
    let mut reflections = Vec::new();
    for c in &configs {
        gates.push(load_gate(c.gate, &c.params, &base)?);
        reflections.push(match c.alpha {
            Alpha::Fixed => Reflection::Fixed(0.9),
            Alpha::Probe => Reflection::Probe {
                gate: load_gate(c.gate, &c.params, &base)?,
                map: AlphaMap::default(),
            },
        });
    }
    let prompt_ids = PROMPTS
        .iter()
        .map(|p| ngsd_benches::prompt_ids(&tokenizer, template.as_ref(), p))
        .collect::<Result<Vec<_>>>()?;
    let mut spare = load_experts(&args, &base)?;
    let expert = spare.remove(&ExpertKind::Prompt).expect("always loaded");
    let models = Models {
        base,
        tokenizer,
        template,
        expert,
    };
    let mut bench = Bench {
        models,
        current: ExpertKind::Prompt,
        spare,
    };

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
    let mut plain = Vec::new();
    let mut gated = vec![Vec::new(); configs.len()];
    let mut passes = vec![0; configs.len()];
    for round in 0..=args.rounds {
        // Round 0 is a warm-up.
        let tok_s = bench.plain(&prompt_ids, &plain_cfg)?;
        if round > 0 {
            plain.push(tok_s);
        }
        for (i, c) in configs.iter().enumerate() {
            bench.use_expert(c.expert);
            let (tok_s, n) = bench.gated(gates[i].as_mut(), &mut reflections[i], &decode)?;
            if round > 0 {
                gated[i].push(tok_s);
                passes[i] = n;
            }
        }
        eprintln!("round {round} done");
    }
    report(&args, &configs, &plain, &gated, &passes);
    Ok(())
}
