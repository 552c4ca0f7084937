//! `ngsd serve`: the settings turned into a `ServerConfig` and an engine factory (model, gates,
//! expert and reflection loaded per worker from the server's configuration only), then the
//! server from ngsd-server.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use ngsd_runtime::{GenerateConfig, ModelPackage};
use ngsd_server::{Engine, ServerConfig};

use crate::settings::{self, ModelSettings, RawConfig};
use crate::{ModelFlags, engine, safety};

/// Flags of `ngsd serve`; everything else comes from the config file or NGSD_* variables
/// (`serve-*` keys, listed in README.md).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]. Port 0 picks a free port; the address
    /// in use is printed on stdout once the server is ready.
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,
    /// Generations that run at once [default: 16]. They share engines (ONNX Runtime
    /// sessions) of up to `--batch` each: one engine's requests run one forward pass per
    /// token together.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Most generations one engine answers together [default: 16]. An engine that cannot
    /// batch (a fused q4 package, a `model:` expert, an in-process gate) answers one at a
    /// time: give it `--batch 1` to run `--workers` engines side by side (memory grows with
    /// each).
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Requests that may wait for a worker; one more is answered 429 [default: 16].
    #[arg(long, value_name = "N")]
    queue: Option<usize>,
    /// Longest a request may take, waiting included, in seconds [default: 120].
    #[arg(long, value_name = "S")]
    timeout_s: Option<u64>,
    /// Longest a connection may take to send a request's headers, in seconds; idle
    /// kept-alive connections are closed after it too [default: 10].
    #[arg(long, value_name = "S")]
    header_timeout_s: Option<u64>,
    /// Longest a client may take to send a request's body, in seconds (then 408 and the
    /// connection is closed) [default: 30].
    #[arg(long, value_name = "S")]
    body_timeout_s: Option<u64>,
    /// Default gate: a plugin name or path (as for `ngsd generate`).
    #[arg(long, value_name = "NAME|PATH")]
    gate: Option<String>,
    /// Extra gates clients may choose per request with `"ngsd": {"gate": NAME}` (repeatable;
    /// config key `serve-gates`).
    #[arg(long = "allow-gate", value_name = "NAME")]
    allow_gates: Vec<String>,
    /// Expert: `head`, `head:FILE`, `prompt` or `model:DIR` (as for `ngsd generate`).
    #[arg(long, value_name = "KIND")]
    expert: Option<String>,
    /// How α is set: off, generative or probe (as for `ngsd generate`).
    #[arg(long, value_name = "MODE")]
    reflection: Option<String>,
    /// Folder to search for gate plugins first (repeatable).
    #[arg(long = "gate-dir", value_name = "DIR")]
    gate_dirs: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelFlags,
}

pub fn run(args: ServeArgs, mut raw: RawConfig) -> Result<()> {
    apply_serve_flags(&args, &mut raw);
    let mut model_settings = ModelSettings::try_from(&raw)?;
    let package = ModelPackage::open(&model_settings.dir)
        .with_context(|| format!("opening the model in {}", model_settings.dir.display()))?;
    let generate = GenerateConfig::try_from(&raw)?;
    let trained = safety::Trained::find(&model_settings.dir);
    let safety = safety::SafetySettings::from_raw(&raw, generate.clone(), &trained)?;
    let dirs = settings::gate_dirs(&args.gate_dirs, &raw);
    let config = server_config(&args, &raw, &generate, &package)?;
    if !config.addr.ip().is_loopback() && config.api_key.is_none() {
        tracing::warn!(
            "listening on {}, reachable from other machines, without an API key; set serve-api-key (NGSD_SERVE_API_KEY)",
            config.addr
        );
    }
    // Each engine runs its own session: share the cores between them unless told otherwise.
    if raw.threads.is_none() && config.engines() > 1 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        model_settings.options.intra_threads = (cores / config.engines()).max(1);
    }
    let gate_names = gate_names(&safety, &raw)?;
    let factory = move |worker: usize| -> std::result::Result<
        Engine,
        Box<dyn std::error::Error + Send + Sync>,
    > {
        let engine = engine::build(&model_settings, &safety, &gate_names, &dirs, &trained)
            .with_context(|| format!("worker {worker}"))
            .map_err(|e| format!("{e:#}"))?;
        Ok(engine)
    };
    let engines = config.engines();
    eprintln!(
        "ngsd: loading {engines} engine(s) with model {} …",
        package.dir.display()
    );
    let workers = config.workers;
    let model_id = config.model_id.clone();
    let key = config.api_key.is_some();
    ngsd_server::run(config, Arc::new(factory), move |bound| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "ngsd: listening on http://{bound} (model `{model_id}`, up to {workers} generations at once in {engines} engine(s){}); Ctrl-C or SIGTERM stops after in-flight requests",
            if key { ", API key required" } else { "" }
        );
        let _ = out.flush();
    })?;
    eprintln!("ngsd: stopped");
    Ok(())
}

/// The `serve` flags given on the command line replace the configured values.
fn apply_serve_flags(args: &ServeArgs, raw: &mut RawConfig) {
    args.model.apply(raw);
    if let Some(a) = &args.addr {
        raw.serve_addr = Some(a.clone());
    }
    macro_rules! flag {
        ($($field:ident => $key:ident),*) => {$(
            if let Some(v) = &args.$field {
                raw.$key = Some(v.clone());
            }
        )*};
    }
    flag!(workers => serve_workers, batch => serve_batch, queue => serve_queue, timeout_s => serve_timeout_s,
        gate => gate, expert => expert, reflection => reflection);
    if !args.allow_gates.is_empty() {
        raw.serve_gates = Some(args.allow_gates.clone());
    }
}

/// The server's settings from the configuration (`serve-*` keys) and the flags.
fn server_config(
    args: &ServeArgs,
    raw: &RawConfig,
    generate: &GenerateConfig,
    package: &ModelPackage,
) -> Result<ServerConfig> {
    let addr: SocketAddr = match raw.serve_addr.as_deref() {
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        Some(a) => a.parse().map_err(|e| {
            anyhow::anyhow!("invalid serve-addr `{a}`: {e}; write HOST:PORT, e.g. 127.0.0.1:8080")
        })?,
    };
    let mut config = ServerConfig::new(
        raw.serve_model_id
            .clone()
            .unwrap_or_else(|| package.manifest.name.clone()),
    );
    config.addr = addr;
    config.api_key = raw.serve_api_key.clone();
    config.workers = raw.serve_workers.unwrap_or(config.workers);
    config.batch = raw.serve_batch.unwrap_or(config.batch);
    config.queue = raw.serve_queue.unwrap_or(config.queue);
    if let Some(t) = raw.serve_timeout_s {
        config.timeout = Duration::from_secs(t);
    }
    config.max_body_bytes = raw.serve_max_body_bytes.unwrap_or(config.max_body_bytes);
    config.max_tokens = raw.serve_max_tokens.unwrap_or(config.max_tokens);
    config.default_max_tokens = generate.max_new_tokens.min(config.max_tokens);
    config.allow_alpha = raw.serve_allow_alpha.unwrap_or(false);
    config.allow_trace = raw.serve_allow_trace.unwrap_or(false);
    if let Some(t) = args.header_timeout_s {
        config.header_timeout = Duration::from_secs(t);
    }
    if let Some(t) = args.body_timeout_s {
        config.body_timeout = Duration::from_secs(t);
    }
    config.validate()?;
    Ok(config)
}

/// The default gate, then the other gates clients may choose (plugin names, not paths).
fn gate_names(safety: &safety::SafetySettings, raw: &RawConfig) -> Result<Vec<String>> {
    let mut gate_names = vec![safety.gate.clone()];
    for g in raw.serve_gates.clone().unwrap_or_default() {
        if !gate_names.contains(&g) {
            gate_names.push(g);
        }
    }
    for g in &gate_names[1..] {
        if g.contains('/') || g.contains('\\') || g.ends_with(".so") {
            bail!(
                "invalid serve-gates entry `{g}`: clients name gates, so give plugin names (found in the plugin folders), not paths"
            );
        }
    }
    Ok(gate_names)
}
