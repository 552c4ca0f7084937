//! Routes and handlers: the OpenAI endpoints, health, metrics, bearer-key check, body limit and
//! body deadline, and the glue between a request and the worker pool (admission, deadline,
//! cancel on disconnect, guarded SSE streaming).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use ngsd_decode::Cancel;
use ngsd_runtime::FinishReason;

use crate::error::{ApiError, ErrorKind};
use crate::metrics::{Metrics, Outcome, UNMATCHED};
use crate::openai::{self, Endpoint, Head, Limits, ModelCard, ModelList, Plan, Usage};
use crate::pool::{Event, Failure, Job, Pool, QueueTicket};

/// What every handler shares.
pub struct AppState {
    /// Validation limits and the server's settings.
    pub limits: Limits,
    /// The workers.
    pub pool: Arc<Pool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    started: u64,
}

impl AppState {
    /// State for a started pool.
    pub fn new(limits: Limits, pool: Arc<Pool>, metrics: Arc<Metrics>) -> Self {
        AppState {
            limits,
            pool,
            metrics,
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

const ROUTES: &str =
    "POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /healthz, GET /metrics";

/// The router with all routes and layers.
pub fn router(state: Shared) -> Router {
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
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), count))
        .with_state(state)
}

/// Counts every answer by the route that matched (axum's `MatchedPath`) and status.
async fn count(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    state.metrics.request(&route, resp.status().as_u16());
    resp
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Checks `Authorization: Bearer <key>` when the server has a key (constant-time compare).
async fn auth(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let Some(key) = state.limits.config.api_key.as_deref() else {
        return next.run(req).await;
    };
    let unauthorized = |message: &str| {
        ApiError::new(ErrorKind::Unauthorized, message)
            .with_code("invalid_api_key")
            .into_response()
    };
    match bearer_token(req.headers()) {
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
    ApiError::new(
        ErrorKind::NotFound,
        format!(
            "no route for {} {}; the API is {ROUTES}",
            req.method(),
            req.uri().path()
        ),
    )
    .with_code("unknown_url")
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!(
            "{} is not allowed on {}; the API is {ROUTES}",
            req.method(),
            req.uri().path()
        ),
    )
    .with_code("method_not_allowed")
}

/// `GET /healthz`.
#[derive(Debug, Serialize)]
struct Health<'a> {
    status: &'static str,
    model: &'a str,
    workers: usize,
    gates: &'a [String],
    default_gate: &'a str,
    reflection: &'static str,
}

async fn health(State(state): State<Shared>) -> Response {
    let l = &state.limits;
    axum::Json(Health {
        status: "ok",
        model: &l.config.model_id,
        workers: l.config.workers,
        gates: &l.gates,
        default_gate: &l.default_gate,
        reflection: l.reflection,
    })
    .into_response()
}

async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn models(State(state): State<Shared>) -> Response {
    axum::Json(ModelList {
        object: "list",
        data: [ModelCard {
            id: &state.limits.config.model_id,
            object: "model",
            created: state.started,
            owned_by: "ngsd",
        }],
    })
    .into_response()
}

/// Reads the body within `serve-max-body-bytes` and `serve-body-timeout-s`. A body that
/// comes too slowly gets 408 and the connection is closed, so slow clients cannot hold it.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let c = &state.limits.config;
    let too_large = || {
        ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "the request body is larger than this server's limit of {} bytes (serve-max-body-bytes)",
                c.max_body_bytes
            ),
        )
        .with_code("request_too_large")
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > c.max_body_bytes as u64) {
        let mut e = too_large();
        e.close = true;
        return Err(e);
    }
    match tokio::time::timeout(c.body_timeout, axum::body::to_bytes(body, c.max_body_bytes)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_length_limit(&e) => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::new(
            ErrorKind::InvalidRequest,
            format!("cannot read the request body: {e}"),
        )),
        Err(_) => {
            let mut e = ApiError::new(
                ErrorKind::RequestTimeout,
                format!(
                    "the request body did not arrive within {} s (serve-body-timeout-s)",
                    c.body_timeout.as_secs_f64()
                ),
            )
            .with_code("request_timeout");
            e.close = true;
            Err(e)
        }
    }
}

/// Whether reading the body failed on the size limit (`http_body_util::Limited`'s error).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

async fn chat(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    generation(state, headers, body, Limits::chat).await
}

async fn completions(State(state): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    generation(state, headers, body, Limits::completion).await
}

/// Reads and validates a generation request of type `R`, then serves it.
async fn generation<R: serde::de::DeserializeOwned>(
    state: Shared,
    headers: HeaderMap,
    body: Body,
    validate: fn(&Limits, R) -> Result<Plan, ApiError>,
) -> Response {
    let plan = match read_body(&state, &headers, body).await {
        Ok(b) => openai::parse::<R>(&b).and_then(|r| validate(&state.limits, r)),
        Err(e) => Err(e),
    };
    match plan {
        Ok(plan) => serve(state, plan).await,
        Err(e) => e.into_response(),
    }
}

/// Cancels the generation when dropped before `end` (the client went away, the handler's
/// future or the response stream was dropped), takes the request out of the queue gauge, and
/// records how the request ended.
struct Guard {
    cancel: Cancel,
    metrics: Arc<Metrics>,
    ticket: Arc<QueueTicket>,
    endpoint: &'static str,
    admitted: Instant,
    first_text: Option<f64>,
    outcome: Option<Outcome>,
    /// Ended by the request itself before any generation (nothing to count).
    refused: bool,
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

    /// Ends the request the way a worker's failure says, and gives the client's answer.
    fn fail(&mut self, state: &AppState, f: Failure) -> ApiError {
        match f {
            Failure::BadRequest(m) => {
                // The request could not start (e.g. its prompt is longer than the context):
                // the client's error, not a failed generation.
                self.refused = true;
                ApiError::new(ErrorKind::InvalidRequest, m).with_param(match self.endpoint {
                    "chat" => "messages",
                    _ => "prompt",
                })
            }
            Failure::CancelledInQueue => {
                // A client that went away reads no answer: this is the deadline.
                self.end(Outcome::TimedOut);
                timeout_error(state)
            }
            Failure::Internal(detail) => {
                self.end(Outcome::Failed);
                ApiError::internal(&detail)
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.ticket.leave();
        if self.refused {
            return;
        }
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
    ApiError::new(
        ErrorKind::Timeout,
        format!(
            "the request took longer than this server's limit of {} s (serve-timeout-s); ask for fewer tokens or retry later",
            state.limits.config.timeout.as_secs()
        ),
    )
    .with_code("timeout")
}

fn queue_full(state: &AppState) -> ApiError {
    let c = &state.limits.config;
    let mut e = ApiError::new(
        ErrorKind::QueueFull,
        format!(
            "the server is busy: {} generations running and {} queued, the most it takes (serve-workers, serve-queue); retry after {} s",
            c.workers, c.queue, c.retry_after_s
        ),
    )
    .with_code("queue_full");
    e.retry_after = Some(c.retry_after_s);
    e
}

/// Admits, queues and answers one validated request.
async fn serve(state: Shared, plan: Plan) -> Response {
    let Some(permit) = state.pool.admit() else {
        state.metrics.rejected();
        return queue_full(&state).into_response();
    };
    let admitted = Instant::now();
    let cancel = Cancel::with_deadline(admitted + state.limits.config.timeout);
    let (tx, rx) = mpsc::unbounded_channel();
    let ticket = QueueTicket::enter(Arc::clone(&state.metrics));
    let head = Head {
        endpoint: plan.endpoint,
        id: plan.endpoint.new_id(),
        created: unix_now(),
        model: state.limits.config.model_id.clone(),
    };
    let (stream, include_usage, trace) = (plan.stream, plan.include_usage, plan.trace);
    let mut guard = Guard {
        cancel: cancel.clone(),
        metrics: Arc::clone(&state.metrics),
        ticket: Arc::clone(&ticket),
        endpoint: plan.endpoint.label(),
        admitted,
        first_text: None,
        outcome: None,
        refused: false,
        _permit: permit,
    };
    let job = Job {
        plan,
        cancel,
        events: tx,
        ticket,
    };
    if !state.pool.submit(job) {
        guard.end(Outcome::Failed);
        return ApiError::new(ErrorKind::Unavailable, "the server is shutting down")
            .into_response();
    }
    let ctx = Ctx {
        state,
        head,
        include_usage,
        trace,
    };
    if stream {
        // Headers go out with the first event, so a request that fails before generating
        // (e.g. a prompt longer than the context) still gets its status code.
        let mut rx = rx;
        let first = rx.recv().await;
        if let Some(Event::Failed(f)) = first {
            return guard.fail(&ctx.state, f).into_response();
        }
        stream_response(ctx, first, rx, guard)
    } else {
        whole_response(ctx, rx, guard).await
    }
}

struct Ctx {
    state: Shared,
    head: Head,
    include_usage: bool,
    trace: bool,
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
                return axum::Json(ctx.head.completion(&out, ctx.trace)).into_response();
            }
            Some(Event::Failed(f)) => return guard.fail(&ctx.state, f).into_response(),
            None => {
                guard.end(Outcome::Failed);
                return ApiError::internal("the worker stopped without an answer").into_response();
            }
        }
    }
}

fn sse_json(v: &impl Serialize) -> SseEvent {
    match serde_json::to_string(v) {
        Ok(s) => SseEvent::default().data(s),
        Err(e) => sse_json(&ApiError::internal(&format!("cannot encode a chunk: {e}")).body()),
    }
}

/// The events that close a stream after the generation ended.
fn closing_events(ctx: &Ctx, out: &ngsd_decode::Output, guard: &mut Guard) -> Vec<SseEvent> {
    let mut events = Vec::new();
    if out.finish == FinishReason::Cancelled {
        guard.end(Outcome::TimedOut);
        events.push(sse_json(&timeout_error(&ctx.state).body()));
    } else {
        guard.end(Outcome::Completed);
        let mut last = ctx
            .head
            .chunk(None, false, Some(openai::finish_reason(out)));
        last.ngsd = Some(openai::SafetySummary::of(out, ctx.trace));
        events.push(sse_json(&last));
        if ctx.include_usage {
            let mut u = ctx.head.chunk(None, false, None);
            u.choices.clear();
            u.usage = Some(Usage::of(out));
            events.push(sse_json(&u));
        }
    }
    events.push(SseEvent::default().data("[DONE]"));
    events
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
        pending: std::collections::VecDeque<SseEvent>,
        done: bool,
    }
    let mut pending = std::collections::VecDeque::new();
    if ctx.head.endpoint == Endpoint::Chat {
        pending.push_back(sse_json(&ctx.head.chunk(Some(""), true, None)));
    }
    let st = St {
        ctx,
        peeked: Some(first),
        rx,
        guard,
        pending,
        done: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(ev), st));
            }
            if st.done {
                return None;
            }
            let event = match st.peeked.take() {
                Some(e) => e,
                None => st.rx.recv().await,
            };
            let events = match event {
                Some(Event::Text(t)) => {
                    st.guard.text();
                    vec![sse_json(&st.ctx.head.chunk(Some(&t), false, None))]
                }
                Some(Event::Done(out)) => {
                    st.done = true;
                    closing_events(&st.ctx, &out, &mut st.guard)
                }
                Some(Event::Failed(f)) => {
                    st.done = true;
                    let err = st.guard.fail(&st.ctx.state, f);
                    vec![sse_json(&err.body()), SseEvent::default().data("[DONE]")]
                }
                None => {
                    st.done = true;
                    st.guard.end(Outcome::Failed);
                    let err = ApiError::internal("the worker stopped without an answer");
                    vec![sse_json(&err.body())]
                }
            };
            st.pending.extend(events);
        }
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let check = |value: &str, token: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(value).expect("ascii"),
            );
            assert_eq!(bearer_token(&h), token, "{value}");
        };
        check("Bearer k1", Some("k1"));
        check("bearer k1", Some("k1"));
        check("BEARER  k1 ", Some("k1"));
        check("Basic k1", None);
        check("Bearerk1", None);
    }
}
