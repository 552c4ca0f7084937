//! ngsd-server: an OpenAI-compatible HTTP server (`ngsd serve`) over safety-aware decoding.
//!
//! - `POST /v1/chat/completions` and `POST /v1/completions`, whole or streamed (SSE), with usage
//!   counts, finish reasons and an `ngsd` extension field (safety summary, optional trace);
//!   `GET /v1/models`, `GET /healthz`, `GET /metrics` (Prometheus text).
//! - Guarded streaming: a piece of text is sent only after the gate has decided on its tokens.
//! - A pool of workers, each owning its own engine (ONNX Runtime session, gates, expert); a
//!   bounded queue in front answers 429 with `Retry-After` when full; a deadline per request;
//!   a client that disconnects cancels its generation; SIGTERM / Ctrl-C drain in-flight
//!   requests before exiting.
//! - Model and plugin paths come only from the server's configuration (the factory the caller
//!   passes); a request can only choose among the gates the configuration loaded.

mod config;
mod error;
mod http;
mod metrics;
mod openai;
mod pool;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{Engine, EngineFactory, ServerConfig};
pub use error::{ApiError, Error, Result};
pub use metrics::{Metrics, Outcome};

/// Starts the workers (each builds its engine with `factory`), binds `config.addr`, calls
/// `on_ready` with the bound address, and serves until SIGTERM or Ctrl-C; then stops taking
/// connections, lets in-flight requests finish, and returns.
pub fn run(
    config: ServerConfig,
    factory: Arc<EngineFactory>,
    on_ready: impl FnOnce(SocketAddr),
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
        config.workers,
        config.queue,
        factory,
        Arc::clone(&metrics),
    )?);
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
        axum::serve(listener, http::router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(Error::Start)
    });
    pool.shutdown();
    result
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
    tracing::info!("shutting down: finishing in-flight requests");
}
