//! The `ngsd` command: generate text from ONNX-exported language models and inspect model packages.

mod engine;
mod eval;
mod safety;
mod serve;
mod settings;
mod train;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use ngsd_runtime::{ChatTemplate, GenerateConfig, Model, ModelPackage, Tokenizer};
use settings::{ModelSettings, RawConfig};

/// Safety-aware decoding for ONNX-exported language models.
///
/// Configuration comes from a TOML file (--config, else ./ngsd.toml when present), then NGSD_*
/// environment variables (e.g. NGSD_MODEL, NGSD_PROVIDER, NGSD_MAX_NEW_TOKENS), then flags.
/// Log verbosity: NGSD_LOG (e.g. NGSD_LOG=debug). ONNX Runtime is found through NGSD_ORT_LIB,
/// beside the executable, or in the checkout's .ort/lib (installed by `cargo xtask setup`).
#[derive(Debug, Parser)]
#[command(name = "ngsd", version, propagate_version = true)]
struct Cli {
    /// TOML configuration file: kebab-case keys named like the flags (model, provider, gate,
    /// expert, reflection, alpha, max-new-tokens, ...; all listed in README.md). Unknown keys
    /// are an error.
    #[arg(long, global = true, env = "NGSD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an answer to a prompt and stream it to stdout.
    Generate(Box<GenerateArgs>),
    /// Inspect model packages.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Gate plugins: the single-neuron gate and its alternatives, loaded from shared libraries.
    #[command(subcommand)]
    Gates(GatesCommand),
    /// Run an evaluation suite (datasets × configurations), resumable, and write results.json,
    /// results.md and the trade-off and speed plots.
    Eval(EvalArgs),
    /// Train the learned parts for a base model: the gate neuron and the head expert.
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Serve the model over an OpenAI-compatible HTTP API (chat completions, completions,
    /// models; SSE streaming; /healthz and Prometheus /metrics), with the safety gate on every
    /// token. Binds 127.0.0.1:8080 by default; `serve-*` config keys set limits and the API key.
    Serve(Box<serve::ServeArgs>),
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// The suite file (TOML: datasets and configurations).
    #[arg(long, value_name = "FILE")]
    suite: PathBuf,
    /// Output folder; answers go to OUT/runs/<config>.jsonl and a rerun skips those already there.
    #[arg(long, value_name = "DIR", default_value = "eval-out")]
    out: PathBuf,
    /// At most N samples per dataset.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Who decides whether an answer is a refusal: `keyword` (the GCG / SafeDecoding string
    /// list) or `llm` (a chat model behind an OpenAI-compatible endpoint; needs --judge-url
    /// and --judge-model).
    #[arg(long, value_name = "KIND", default_value = "keyword")]
    judge: String,
    /// The LLM judge's endpoint, e.g. http://127.0.0.1:8000/v1 (POST …/chat/completions).
    #[arg(long, value_name = "URL")]
    judge_url: Option<String>,
    /// The LLM judge's model name.
    #[arg(long, value_name = "NAME")]
    judge_model: Option<String>,
    /// Run and report only this configuration of the suite (repeatable).
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// Environment variable holding the LLM judge's API key (sent as a bearer token, if set).
    #[arg(long, value_name = "VAR", default_value = "OPENAI_API_KEY")]
    judge_key_env: String,
    /// Folder to search for gate plugins first (repeatable).
    #[arg(long = "gate-dir", value_name = "DIR")]
    gate_dirs: Vec<PathBuf>,
    /// Samples decoded at once: their decode steps share one forward pass of the base model,
    /// each keeps its own gate, expert and reflection, and the answers equal one-at-a-time
    /// decoding (fp32). On a q4 package every batch of 2 or more gives the same answers, which
    /// may differ slightly from --batch 1 (ONNX Runtime rounds a single row differently). 1
    /// decodes one at a time, as does a configuration whose expert is a second model. Each
    /// answer's stored time is its own start-to-end time inside the batch, so the reports'
    /// tok/s is per request under that load: use --batch 1 to compare speeds.
    #[arg(long, value_name = "N", default_value_t = 16)]
    batch: usize,
    #[command(flatten)]
    model: ModelFlags,
}

#[derive(Debug, Subcommand)]
enum GatesCommand {
    /// List the gate plugins found, with their ABI version and the inputs each needs.
    List {
        /// Also search this folder first (repeatable; config key `gate-dirs`).
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Print a model's inputs and outputs, sizes, EOS ids and the execution provider in use.
    Info(InfoArgs),
}

/// Flags shared by commands that load a model.
#[derive(Debug, Args)]
pub(crate) struct ModelFlags {
    /// Model package folder (or its .onnx file) [default: the embedded SmolLM2-135M-Instruct].
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Execution provider: cpu, cuda[:N], tensorrt[:N] [default: cpu].
    #[arg(long, value_name = "NAME")]
    provider: Option<String>,
    /// Fail instead of falling back to CPU when the provider is unavailable.
    #[arg(long)]
    strict_provider: bool,
    /// ONNX Runtime intra-op threads [default: one per core].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

impl ModelFlags {
    pub(crate) fn apply(&self, raw: &mut RawConfig) {
        if let Some(m) = &self.model {
            raw.model = Some(m.clone());
        }
        if let Some(p) = &self.provider {
            raw.provider = Some(p.clone());
        }
        if self.strict_provider {
            raw.strict_provider = Some(true);
        }
        if let Some(t) = self.threads {
            raw.threads = Some(t);
        }
    }
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// The user's message.
    #[arg(long, short = 'p')]
    prompt: String,
    /// System prompt [default: the chat template's own].
    #[arg(long)]
    system: Option<String>,
    /// Feed the prompt as raw text, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Most tokens to generate [default: 256].
    #[arg(long, short = 'n', value_name = "N")]
    max_new_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy [default: 0].
    #[arg(long, short = 't', value_name = "T")]
    temperature: Option<f32>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass [default: 1].
    #[arg(long, value_name = "P")]
    top_p: Option<f32>,
    /// Keep only the K most likely tokens; 0 is off [default: 0].
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Random seed for sampling [default: 0].
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Stop before this string (repeatable).
    #[arg(long, value_name = "TEXT")]
    stop: Vec<String>,
    /// Print token counts, speed and the finish reason to stderr.
    #[arg(long)]
    stats: bool,
    /// Gate: a plugin name (`sigmoid`, `lif`, `never`, ... see `ngsd gates list`) or a path to
    /// a plugin library [default: sigmoid over the model's trained neuron when it has one
    /// (models/<name>/gate.safetensors or gate.safetensors beside the model), else lif].
    #[arg(long, value_name = "NAME|PATH")]
    gate: Option<String>,
    /// The gate's parameters, `key = value` pairs separated by `;` or newlines
    /// (e.g. "tau = 8; threshold = 1.0").
    #[arg(long, value_name = "PARAMS")]
    gate_config: Option<String>,
    /// Expert: `head` (the model's trained head expert), `head:FILE` (one from `ngsd train
    /// expert`), `prompt` (the base model under a safety system prompt) or `model:DIR` (a
    /// separate ONNX decoder sharing the base tokenizer) [default: head when the model has a
    /// trained expert, else prompt].
    #[arg(long, value_name = "KIND")]
    expert: Option<String>,
    /// Fixed steering strength α in [0, 1] (implies --reflection off).
    #[arg(long, value_name = "A")]
    alpha: Option<f32>,
    /// How α is set: off (fixed --alpha, default 0.9), generative (the base model rates the
    /// request's risk), probe (a neuron's probability on the prompt) [default: probe with the
    /// model's trained neuron when it has one, else generative].
    #[arg(long, value_name = "MODE")]
    reflection: Option<String>,
    /// Write one JSON line per generated token, then a summary line, to FILE.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Print a one-line summary of what the gate did to stderr.
    #[arg(long)]
    explain: bool,
    /// Folder to search for gate plugins first (repeatable).
    #[arg(long = "gate-dir", value_name = "DIR")]
    gate_dirs: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelFlags,
}

#[derive(Debug, Args)]
struct InfoArgs {
    /// Model package folder [default: the embedded model].
    dir: Option<PathBuf>,
    /// Recompute the sha256 of every file the manifest records and compare.
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    model: ModelFlags,
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // ONNX Runtime's own log lines are forwarded under `ort`; they are noisy, so off by default.
    let filter = std::env::var("NGSD_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new("warn,ort=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}

fn run(cli: Cli) -> Result<()> {
    let mut raw = RawConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Generate(args) => cmd_generate(*args, raw),
        Command::Model(ModelCommand::Info(args)) => {
            args.model.apply(&mut raw);
            if let Some(dir) = &args.dir {
                raw.model = Some(dir.clone());
            }
            cmd_model_info(&raw, args.verify)
        }
        Command::Gates(GatesCommand::List { dirs }) => {
            cmd_gates_list(&settings::gate_dirs(&dirs, &raw))
        }
        Command::Eval(args) => {
            args.model.apply(&mut raw);
            let settings = ModelSettings::try_from(&raw)?;
            let dirs = settings::gate_dirs(&args.gate_dirs, &raw);
            let judge = eval::judge(
                &args.judge,
                args.judge_url.as_deref(),
                args.judge_model.as_deref(),
                &args.judge_key_env,
            )?;
            eval::run(
                &args.suite,
                &args.out,
                &settings,
                dirs,
                judge.as_ref(),
                &eval::Selection {
                    limit: args.limit,
                    only: &args.only,
                    batch: args.batch,
                },
            )
        }
        Command::Train(cmd) => train::run(cmd, raw),
        Command::Serve(args) => serve::run(*args, raw),
    }
}

pub(crate) fn load_model(
    settings: &ModelSettings,
) -> Result<(Model, Tokenizer, Option<ChatTemplate>)> {
    let package = ModelPackage::open(&settings.dir)?;
    let tokenizer = Tokenizer::from_package(&package)?;
    let template = ChatTemplate::from_package(&package)?;
    let model = Model::load(package, &settings.options)
        .with_context(|| format!("loading the model in {}", settings.dir.display()))?;
    Ok((model, tokenizer, template))
}

fn cmd_generate(args: GenerateArgs, mut raw: RawConfig) -> Result<()> {
    apply_generate_flags(&args, &mut raw);
    let gen_cfg = GenerateConfig::try_from(&raw)?;
    let settings = ModelSettings::try_from(&raw)?;
    let trained = safety::Trained::find(&settings.dir);
    let mut safety = safety::SafetySettings::from_raw(&raw, gen_cfg, &trained)?;
    safety.decode.trace = args.trace.is_some();
    let dirs = settings::gate_dirs(&args.gate_dirs, &raw);

    let gate_names = [safety.gate.clone()];
    let mut engine = engine::build(&settings, &safety, &gate_names, &dirs, &trained)?;
    if engine.models.template.is_none() && !args.raw {
        tracing::warn!("the model package has no chat template; feeding the prompt as raw text");
    }
    let request = ngsd_decode::Request {
        prompt: args.prompt.clone(),
        system: raw.system.clone(),
        raw: args.raw,
        ..Default::default()
    };
    let output = generate_to_stdout(&request, &mut engine)?;
    if let Some(path) = &args.trace {
        write_trace(path, &output)
            .with_context(|| format!("writing the trace to {}", path.display()))?;
    }
    if args.explain {
        eprintln!("[{}]", output.explain());
    }
    if args.stats {
        print_stats(&output, &engine.models.base.provider().to_string());
    }
    Ok(())
}

/// The `generate` flags given on the command line replace the configured values.
fn apply_generate_flags(args: &GenerateArgs, raw: &mut RawConfig) {
    args.model.apply(raw);
    macro_rules! flag {
        ($($field:ident),*) => {$(
            if let Some(v) = &args.$field {
                raw.$field = Some(v.clone());
            }
        )*};
    }
    flag!(
        max_new_tokens,
        temperature,
        top_p,
        top_k,
        seed,
        system,
        gate,
        gate_config,
        expert,
        alpha,
        reflection
    );
    if !args.stop.is_empty() {
        raw.stop = Some(args.stop.clone());
    }
}

/// Decodes with the engine's default gate, streaming the answer to stdout (a closed pipe
/// ends the writing, not the decoding), then a newline.
fn generate_to_stdout(
    request: &ngsd_decode::Request,
    engine: &mut ngsd_server::Engine,
) -> Result<ngsd_decode::Output> {
    let ngsd_server::Engine {
        models,
        gates,
        default_gate,
        reflection,
        decode,
    } = engine;
    let gate = gates
        .get_mut(default_gate.as_str())
        .context("the engine has no default gate")?;
    let mut stdout = std::io::stdout().lock();
    let mut write_err = None;
    let output = ngsd_decode::generate(
        request,
        models,
        gate.as_mut(),
        reflection,
        decode,
        |piece| {
            if write_err.is_none()
                && let Err(e) = stdout
                    .write_all(piece.as_bytes())
                    .and_then(|()| stdout.flush())
            {
                write_err = Some(e);
            }
        },
    )?;
    if let Some(e) = write_err
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing to stdout");
    }
    let _ = writeln!(stdout);
    let _ = stdout.flush();
    Ok(output)
}

/// `--stats`: token counts, speed and where the time went, on stderr.
fn print_stats(output: &ngsd_decode::Output, provider: &str) {
    let t = &output.summary.timings;
    let decode_s = (t.total_ms - t.reflection_ms) / 1e3;
    eprintln!(
        "[{} prompt tokens, {} generated in {:.2} s ({:.1} tok/s; base {:.0} ms, expert {:.0} ms, gate {:.2} ms, reflection {:.0} ms), finish: {}, provider: {}]",
        output.prompt_tokens,
        output.tokens.len(),
        decode_s,
        output.tokens.len() as f64 / decode_s.max(1e-9),
        t.base_ms,
        t.expert_ms,
        t.gate_ms,
        t.reflection_ms,
        output.summary.finish,
        provider,
    );
}

/// Writes the trace as JSON lines (tokens, then the summary), atomically.
fn write_trace(path: &std::path::Path, output: &ngsd_decode::Output) -> Result<()> {
    let mut text = String::new();
    for line in &output.trace {
        text.push_str(&serde_json::to_string(line)?);
        text.push('\n');
    }
    text.push_str(&serde_json::to_string(&output.summary)?);
    text.push('\n');
    ngsd_fs::write_atomic(path, text.as_bytes())?;
    Ok(())
}

fn cmd_model_info(raw: &RawConfig, verify: bool) -> Result<()> {
    let settings = ModelSettings::try_from(raw)?;
    let (model, tokenizer, template) = load_model(&settings)?;
    let package = model.package();
    let m = &package.manifest;
    println!("model:        {} ({})", m.name, package.dir.display());
    println!(
        "described by: {}",
        match package.source {
            ngsd_runtime::ManifestSource::Ngsd => ngsd_runtime::MANIFEST_FILE,
            ngsd_runtime::ManifestSource::HuggingFace =>
                "Hugging Face config files (no ngsd manifest)",
        }
    );
    if let Some(a) = &m.architecture {
        println!("architecture: {a}");
    }
    if let Some(d) = &m.dtype {
        println!("weights:      {d}");
    }
    println!("onnx file:    {}", model.onnx_path().display());
    println!("hidden size:  {}", m.hidden_size);
    println!(
        "vocab size:   {} (tokenizer: {})",
        m.vocab_size,
        tokenizer.vocab_size()
    );
    println!(
        "layers:       {} ({} kv heads × {} head dim)",
        m.num_layers, m.num_kv_heads, m.head_dim
    );
    println!("context:      {} tokens", m.max_context);
    let eos: Vec<String> = m
        .eos_token_ids
        .iter()
        .map(|id| format!("{id} {:?}", tokenizer.token_text(*id)))
        .collect();
    println!("eos ids:      {}", eos.join(", "));
    println!(
        "chat template: {}",
        if template.is_some() {
            "yes"
        } else {
            "none (prompts are fed raw)"
        }
    );
    println!(
        "hidden state: {}",
        if model.has_hidden_state() {
            "exported (gates can read it)"
        } else {
            "not exported (add it with `cargo xtask export-hidden <model.onnx>`)"
        }
    );
    match model.provider_fallback_reason() {
        Some(reason) => println!("provider:     {} (fell back: {reason})", model.provider()),
        None => println!("provider:     {}", model.provider()),
    }
    println!("inputs:");
    for io in model.inputs() {
        println!("  {:<32} {}", io.name, io.ty);
    }
    println!("outputs:");
    for io in model.outputs() {
        println!("  {:<32} {}", io.name, io.ty);
    }
    if let Some(p) = &m.provenance {
        println!("provenance:   {p}");
    }
    if verify {
        let reports = package.verify_checksums();
        if reports.is_empty() {
            println!("checksums:    none recorded");
        }
        let mut bad = 0;
        for r in &reports {
            let status = if r.ok() { "ok" } else { "MISMATCH" };
            if !r.ok() {
                bad += 1;
            }
            println!("  {:<24} {status}", r.file);
        }
        if bad > 0 {
            anyhow::bail!(
                "{bad} file(s) do not match their recorded sha256; re-run `cargo xtask setup`"
            );
        }
    }
    Ok(())
}

fn cmd_gates_list(dirs: &[PathBuf]) -> Result<()> {
    let found = ngsd_gate_host::list(dirs);
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    if found.is_empty() {
        anyhow::bail!(
            "no gate plugins found in: {}; build them with `cargo build --workspace`, or add a folder \
             with --dir / the `gate-dirs` setting",
            searched.join(", ")
        );
    }
    println!("{:<10} {:<5} {:<34} description", "gate", "abi", "needs");
    for entry in found {
        match entry {
            Ok(info) => {
                println!(
                    "{:<10} {:<5} {:<34} {}",
                    info.name,
                    info.abi.to_string(),
                    info.needs.to_string(),
                    info.description
                );
                println!("{:<10} {:<5} {}", "", "", info.path.display());
            }
            Err(err) => println!("(broken)   {err}"),
        }
    }
    println!("\nsearched: {}", searched.join(", "));
    Ok(())
}
