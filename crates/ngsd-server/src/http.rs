//! Routes and handlers: the OpenAI endpoints, health, metrics, bearer-key check, body limit, and
//! the glue between a request and the worker pool (admission, deadline, cancel on disconnect,
//! guarded SSE streaming).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use ngsd_decode::Cancel;
use ngsd_runtime::FinishReason;

use crate::error::ApiError;
use crate::metrics::{Metrics, Outcome};
use crate::openai::{self, Endpoint, Limits, Plan};
use crate::pool::{Event, Failure, Job, Pool};

/// What every handler shares.
pub struct AppState {
    /// Validation limits and the server's settings.
    pub limits: Limits,
    /// The workers.
    pub pool: Arc<Pool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    next_id: AtomicU64,
    started: u64,
}

impl AppState {
    /// State for a started pool.
    pub fn new(limits: Limits, pool: Arc<Pool>, metrics: Arc<Metrics>) -> Self {
        AppState {
            limits,
            pool,
            metrics,
            next_id: AtomicU64::new(1),
            started: unix_now(),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

type Shared = Arc<AppState>;

/// The router with all routes and layers.
pub fn router(state: Shared) -> Router {
    let limit = state.limits.config.max_body_bytes;
    let protected = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), auth));
    Router::new()
        .merge(protected)
        .route("/healthz", get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), count))
        .with_state(state)
}

/// Counts every answer by path and status.
async fn count(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    state.metrics.request(&path, resp.status().as_u16());
    resp
}

/// Checks `Authorization: Bearer <key>` when the server has a key (constant-time compare).
async fn auth(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let Some(key) = state.limits.config.api_key.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let unauthorized = |message: &str| {
        ApiError::invalid(message, None)
            .with_status(StatusCode::UNAUTHORIZED)
            .with_code("invalid_api_key")
            .into_response()
    };
    match given {
        None => unauthorized(
            "this server needs an API key: send the header `Authorization: Bearer <key>`",
        ),
        Some(g) if !constant_time_eq(g.as_bytes(), key.as_bytes()) => {
            unauthorized("the API key is wrong")
        }
        Some(_) => next.run(req).await,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(req: Request) -> ApiError {
    ApiError::invalid(
        format!(
            "no route for {} {}; the API is POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /healthz, GET /metrics",
            req.method(),
            req.uri().path()
        ),
        None,
    )
    .with_status(StatusCode::NOT_FOUND)
    .with_code("unknown_url")
}

async fn health(State(state): State<Shared>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "model": state.limits.config.model_id,
        "workers": state.limits.config.workers,
        "gates": state.limits.gates,
        "default_gate": state.limits.default_gate,
        "reflection": state.limits.reflection,
    }))
    .into_response()
}

async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn models(State(state): State<Shared>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": state.limits.config.model_id,
            "object": "model",
            "created": state.started,
            "owned_by": "ngsd",
        }]
    }))
    .into_response()
}

fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::invalid(
                format!("the request body is larger than this server's limit of {limit} bytes (serve-max-body-bytes)"),
                None,
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            .with_code("request_too_large")
        } else {
            ApiError::invalid(format!("cannot read the request body: {e}"), None)
        }
    })
}

async fn chat(State(state): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    generation(state, body, Limits::chat).await
}

async fn completions(State(state): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    generation(state, body, Limits::completion).await
}

/// Reads and validates a generation request of type `R`, then serves it.
async fn generation<R: serde::de::DeserializeOwned>(
    state: Shared,
    body: Result<Bytes, BytesRejection>,
    validate: fn(&Limits, R) -> Result<Plan, ApiError>,
) -> Response {
    let plan = body_bytes(body, state.limits.config.max_body_bytes)
        .and_then(|b| openai::parse::<R>(&b))
        .and_then(|r| validate(&state.limits, r));
    match plan {
        Ok(plan) => serve(state, plan).await,
        Err(e) => e.into_response(),
    }
}

/// Cancels the generation when dropped before `end` (the client went away, the handler's
/// future or the response stream was dropped), and records how the request ended.
struct Guard {
    cancel: Cancel,
    metrics: Arc<Metrics>,
    endpoint: &'static str,
    admitted: Instant,
    first_text: Option<f64>,
    outcome: Option<Outcome>,
    _permit: OwnedSemaphorePermit,
}

impl Guard {
    fn text(&mut self) {
        if self.first_text.is_none() {
            self.first_text = Some(self.admitted.elapsed().as_secs_f64());
        }
    }

    fn end(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let outcome = match self.outcome {
            Some(o) => o,
            None => {
                self.cancel.cancel();
                Outcome::Cancelled
            }
        };
        self.metrics.outcome(
            self.endpoint,
            outcome,
            self.admitted.elapsed().as_secs_f64(),
            self.first_text,
        );
    }
}

fn timeout_error(state: &AppState) -> ApiError {
    ApiError {
        status: StatusCode::GATEWAY_TIMEOUT,
        message: format!(
            "the request took longer than this server's limit of {} s (serve-timeout-s); ask for fewer tokens or retry later",
            state.limits.config.timeout.as_secs()
        ),
        kind: "server_error",
        param: None,
        code: Some("timeout"),
        retry_after: None,
    }
}

/// How a failed job ended and what the client gets. A job cancelled while still queued was
/// cancelled by its deadline (a client that went away reads no answer), so it is a timeout.
fn failure(state: &AppState, f: Failure) -> (Outcome, ApiError) {
    match f {
        Failure::BadRequest(m) => (Outcome::Failed, ApiError::invalid(m, None)),
        Failure::CancelledInQueue => (Outcome::TimedOut, timeout_error(state)),
        Failure::Internal(m) => (Outcome::Failed, ApiError::internal(m)),
    }
}

/// Admits, queues and answers one validated request.
async fn serve(state: Shared, plan: Plan) -> Response {
    let Some(permit) = state.pool.admit() else {
        state.metrics.rejected();
        let c = &state.limits.config;
        return ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "the server is busy: {} generations running and {} queued, the most it takes (serve-workers, serve-queue); retry after {} s",
                c.workers, c.queue, c.retry_after_s
            ),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
            retry_after: Some(c.retry_after_s),
        }
        .into_response();
    };
    let admitted = Instant::now();
    let cancel = Cancel::with_deadline(admitted + state.limits.config.timeout);
    let (tx, rx) = mpsc::unbounded_channel();
    let endpoint = plan.endpoint;
    let stream = plan.stream;
    let include_usage = plan.include_usage;
    let trace = plan.trace;
    let id = format!(
        "{}-{:x}{:04x}",
        match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        },
        state.started,
        state.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let guard = Guard {
        cancel: cancel.clone(),
        metrics: Arc::clone(&state.metrics),
        endpoint: endpoint.label(),
        admitted,
        first_text: None,
        outcome: None,
        _permit: permit,
    };
    let job = Job {
        plan,
        cancel: cancel.clone(),
        events: tx,
    };
    state.metrics.queued(1);
    if !state.pool.submit(job) {
        state.metrics.queued(-1);
        let mut guard = guard;
        guard.end(Outcome::Failed);
        return ApiError::internal("the server is shutting down")
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .into_response();
    }
    let ctx = Ctx {
        state,
        id,
        created: unix_now(),
        endpoint,
        include_usage,
        trace,
    };
    if stream {
        // Headers go out with the first event, so a request that fails before generating
        // (e.g. a prompt longer than the context) still gets its status code.
        let mut rx = rx;
        let first = rx.recv().await;
        if let Some(Event::Failed(f)) = first {
            let (outcome, err) = failure(&ctx.state, f);
            let mut guard = guard;
            guard.end(outcome);
            return err.into_response();
        }
        stream_response(ctx, first, rx, guard)
    } else {
        whole_response(ctx, rx, guard).await
    }
}

struct Ctx {
    state: Shared,
    id: String,
    created: u64,
    endpoint: Endpoint,
    include_usage: bool,
    trace: bool,
}

impl Ctx {
    fn model(&self) -> &str {
        &self.state.limits.config.model_id
    }

    /// A stream chunk of this response (see [`openai::chunk`]).
    fn chunk(&self, delta: Option<&str>, first: bool, finish: Option<&str>) -> serde_json::Value {
        openai::chunk(
            self.endpoint,
            &self.id,
            self.created,
            self.model(),
            delta,
            first,
            finish,
        )
    }
}

async fn whole_response(
    ctx: Ctx,
    mut rx: mpsc::UnboundedReceiver<Event>,
    mut guard: Guard,
) -> Response {
    loop {
        match rx.recv().await {
            Some(Event::Text(_)) => guard.text(),
            Some(Event::Done(out)) => {
                if out.finish == FinishReason::Cancelled {
                    guard.end(Outcome::TimedOut);
                    return timeout_error(&ctx.state).into_response();
                }
                guard.end(Outcome::Completed);
                let body = openai::response(
                    ctx.endpoint,
                    ctx.trace,
                    &ctx.id,
                    ctx.created,
                    ctx.model(),
                    &out,
                );
                return axum::Json(body).into_response();
            }
            Some(Event::Failed(f)) => {
                let (outcome, err) = failure(&ctx.state, f);
                guard.end(outcome);
                return err.into_response();
            }
            None => {
                guard.end(Outcome::Failed);
                return ApiError::internal("the worker stopped without an answer").into_response();
            }
        }
    }
}

fn sse_json(v: &serde_json::Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

/// Streams the answer as server-sent events. A piece of text is sent only after the gate has
/// decided on its tokens (the worker emits it then); nothing is sent and later retracted.
fn stream_response(
    ctx: Ctx,
    first: Option<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    guard: Guard,
) -> Response {
    struct St {
        ctx: Ctx,
        peeked: Option<Option<Event>>,
        rx: mpsc::UnboundedReceiver<Event>,
        guard: Guard,
        pending: Vec<SseEvent>,
        done: bool,
    }
    let opening = ctx.chunk(Some(""), true, None);
    let st = St {
        pending: if ctx.endpoint == Endpoint::Chat {
            vec![sse_json(&opening)]
        } else {
            Vec::new()
        },
        ctx,
        peeked: Some(first),
        rx,
        guard,
        done: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if !st.pending.is_empty() {
                let ev = st.pending.remove(0);
                return Some((Ok::<_, Infallible>(ev), st));
            }
            if st.done {
                return None;
            }
            let event = match st.peeked.take() {
                Some(e) => e,
                None => st.rx.recv().await,
            };
            let ctx = &st.ctx;
            match event {
                Some(Event::Text(t)) => {
                    st.guard.text();
                    st.pending.push(sse_json(&ctx.chunk(Some(&t), false, None)));
                }
                Some(Event::Done(out)) => {
                    if out.finish == FinishReason::Cancelled {
                        st.guard.end(Outcome::TimedOut);
                        st.pending.push(sse_json(&timeout_error(&ctx.state).body()));
                    } else {
                        st.guard.end(Outcome::Completed);
                        let mut last = ctx.chunk(None, false, Some(openai::finish_reason(&out)));
                        last["ngsd"] = openai::safety_summary(&out, ctx.trace);
                        st.pending.push(sse_json(&last));
                        if ctx.include_usage {
                            let mut u = ctx.chunk(None, false, None);
                            u["choices"] = json!([]);
                            u["usage"] = openai::usage(&out);
                            st.pending.push(sse_json(&u));
                        }
                    }
                    st.pending.push(SseEvent::default().data("[DONE]"));
                    st.done = true;
                }
                Some(Event::Failed(f)) => {
                    let (outcome, err) = failure(&ctx.state, f);
                    st.guard.end(outcome);
                    st.pending.push(sse_json(&err.body()));
                    st.pending.push(SseEvent::default().data("[DONE]"));
                    st.done = true;
                }
                None => {
                    st.guard.end(Outcome::Failed);
                    st.pending.push(sse_json(
                        &ApiError::internal("the worker stopped without an answer").body(),
                    ));
                    st.done = true;
                }
            }
        }
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}
