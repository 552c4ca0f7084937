//! ngsd-server: an OpenAI-compatible HTTP server (`ngsd serve`) over safety-aware decoding.
//!
//! - `POST /v1/chat/completions` and `POST /v1/completions`, whole or streamed (SSE), with usage
//!   counts, finish reasons and an `ngsd` extension field (safety summary, optional trace);
//!   `GET /v1/models`, `GET /healthz`, `GET /metrics` (Prometheus text).
//! - Guarded streaming: a piece of text is sent only after the gate has decided on its tokens.
//! - A pool of workers, each owning its own engine (ONNX Runtime session, gates, expert) that
//!   answers up to `serve-batch` requests at once, one forward pass per token for all; a
//!   bounded queue in front answers 429 with `Retry-After` when full; a deadline per request;
//!   a client that disconnects cancels its generation; SIGTERM / Ctrl-C drain in-flight
//!   requests before exiting.
//! - Model and plugin paths come only from the server's configuration (the factory the caller
//!   passes); a request can only choose among the gates the configuration loaded.

mod batching;
mod config;
mod error;
mod http;
mod ids;
mod metrics;
mod openai;
mod pool;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

pub use config::{Engine, EngineFactory, ServerConfig};
pub use error::{ApiError, Error, ErrorKind, Result};
pub use metrics::{Metrics, Outcome};

/// Starts the workers (each builds its engine with `factory`), binds `config.addr`, calls
/// `on_ready` with the bound address, and serves until SIGTERM or Ctrl-C; then stops taking
/// connections, lets in-flight requests finish, and returns.
pub fn run(
    config: ServerConfig,
    factory: Arc<EngineFactory>,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    run_until(config, factory, on_ready, shutdown_signal())
}

/// [`run`], stopping when `shutdown` resolves instead of on a signal (for embedding and tests).
pub fn run_until(
    config: ServerConfig,
    factory: Arc<EngineFactory>,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    config.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ngsd-http")
        .enable_all()
        .build()
        .map_err(Error::Start)?;
    let metrics = Arc::new(Metrics::new(config.workers));
    let pool = Arc::new(pool::Pool::start(
        (config.engines(), config.slots_per_engine()),
        config.queue,
        factory,
        Arc::clone(&metrics),
    )?);
    // Engines that cannot batch run fewer generations at once than serve-workers asked for.
    let mut config = config;
    config.workers = pool.slots;
    metrics.set_workers(pool.slots);
    let limits = openai::Limits {
        config: config.clone(),
        gates: pool.gates.clone(),
        default_gate: pool.default_gate.clone(),
        reflection: pool.reflection,
    };
    let state = Arc::new(http::AppState::new(
        limits,
        Arc::clone(&pool),
        Arc::clone(&metrics),
    ));
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: config.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(Error::Start)?;
        on_ready(addr);
        serve_connections(
            listener,
            http::router(state),
            config.header_timeout,
            shutdown,
        )
        .await;
        Ok(())
    });
    pool.shutdown();
    result
}

/// Accepts connections until `shutdown`, serving each with HTTP/1.1 and a header read
/// timeout (which also closes idle kept-alive connections); then waits for the open
/// connections to finish their requests.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection closed: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    graceful.shutdown().await;
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// `serve-max-tokens` of the server [`validate_body`] validates for.
#[doc(hidden)]
pub const FUZZ_MAX_TOKENS: usize = 64;

/// Parses and validates a request body as `POST /v1/chat/completions` (`chat`) or
/// `POST /v1/completions` would, on a server that allows every per-request override, and
/// returns the token budget of the accepted request. For the fuzz targets and tests: the
/// validation is pure, so this is the same code path a client's body takes.
#[doc(hidden)]
pub fn validate_body(chat: bool, body: &[u8]) -> std::result::Result<usize, ApiError> {
    let mut config = ServerConfig::new("m");
    config.max_tokens = FUZZ_MAX_TOKENS;
    config.default_max_tokens = 16;
    config.allow_alpha = true;
    config.allow_trace = true;
    let limits = openai::Limits {
        config,
        gates: vec!["never".into(), "sigmoid".into()],
        default_gate: "sigmoid".into(),
        reflection: "probe",
    };
    let plan = if chat {
        openai::parse(body).and_then(|r| limits.chat(r))
    } else {
        openai::parse(body).and_then(|r| limits.completion(r))
    }?;
    Ok(plan.generate.max_new_tokens)
}
