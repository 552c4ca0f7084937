//! The OpenAI wire format: request bodies of `/v1/chat/completions` and `/v1/completions`, their
//! validation into one [`Plan`] per request, and the response and stream-chunk bodies.

use serde::Deserialize;
use serde_json::{Value, json};

use ngsd_decode::Output;
use ngsd_runtime::{GenerateConfig, Message, SamplingConfig};

use crate::config::ServerConfig;
use crate::error::ApiError;

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single string.
    One(String),
    /// Several strings.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A message's `content`: a string, or a list of parts of which the text parts count.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts (`{"type": "text", "text": ...}`).
    Parts(Vec<Part>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub struct Part {
    /// `text` is the only kind understood.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// The content (`null` for an assistant turn is read as empty).
    #[serde(default)]
    pub content: Option<Content>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the token counts.
    #[serde(default)]
    pub include_usage: bool,
}

/// The `ngsd` extension field: per-request safety overrides.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NgsdOptions {
    /// A gate among those the server loaded.
    pub gate: Option<String>,
    /// A fixed α in [0, 1] (reflection off), when the server allows it.
    pub alpha: Option<f32>,
    /// `off` (fixed α; needs the server to allow α overrides) or the server's own mode.
    pub reflection: Option<String>,
    /// Return the per-token trace.
    pub trace: Option<bool>,
}

/// Fields shared by both generation endpoints. Fields the server does not know are ignored,
/// as OpenAI clients send many optional ones.
#[derive(Debug, Deserialize)]
pub struct Common {
    /// The model id.
    pub model: Option<String>,
    /// SSE streaming.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Token budget.
    pub max_tokens: Option<i64>,
    /// Token budget (the newer name in the chat API).
    pub max_completion_tokens: Option<i64>,
    /// Sampling temperature (0 = greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Option<OneOrMany>,
    /// Number of choices (only 1).
    pub n: Option<i64>,
    /// Log probabilities (not supported).
    pub logprobs: Option<Value>,
    /// Safety overrides.
    pub ngsd: Option<NgsdOptions>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Everything else.
    #[serde(flatten)]
    pub common: Common,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The prompt: a string or a list with one string.
    pub prompt: Option<OneOrMany>,
    /// Echo the prompt (not supported).
    #[serde(default)]
    pub echo: bool,
    /// Everything else.
    #[serde(flatten)]
    pub common: Common,
}

/// Which endpoint a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
}

impl Endpoint {
    /// The label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
        }
    }
}

/// A validated request: what the worker generates and how the answer is sent.
#[derive(Debug)]
pub struct Plan {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The message being answered.
    pub prompt: String,
    /// A system prompt from the conversation.
    pub system: Option<String>,
    /// Earlier turns.
    pub history: Vec<Message>,
    /// No chat template (`/v1/completions`).
    pub raw: bool,
    /// Token budget, sampling and stop strings.
    pub generate: GenerateConfig,
    /// SSE streaming.
    pub stream: bool,
    /// A usage chunk at the end of the stream.
    pub include_usage: bool,
    /// The gate; `None` is the server's default.
    pub gate: Option<String>,
    /// A fixed α replacing the server's reflection.
    pub alpha: Option<f32>,
    /// Return the per-token trace.
    pub trace: bool,
}

/// α when a request turns reflection off without naming one (the paper's high-risk level).
const DEFAULT_FIXED_ALPHA: f32 = 0.9;

/// Parses the body as JSON of type `T`, with an error that says where it went wrong.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "the request body is not valid JSON"
        } else {
            "the request body does not match the API"
        };
        ApiError::invalid(format!("{what}: {e}"), None)
    })
}

fn text_of(content: Option<Content>, index: usize) -> Result<String, ApiError> {
    match content {
        None => Ok(String::new()),
        Some(Content::Text(s)) => Ok(s),
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for p in parts {
                if p.kind != "text" {
                    return Err(ApiError::invalid(
                        format!(
                            "messages[{index}] has a content part of type `{}`; this server reads text only",
                            p.kind
                        ),
                        Some("messages"),
                    ));
                }
                out.push_str(&p.text.unwrap_or_default());
            }
            Ok(out)
        }
    }
}

/// The settings the server knows when validating a request.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Server configuration.
    pub config: ServerConfig,
    /// Gate names clients may choose.
    pub gates: Vec<String>,
    /// The default gate.
    pub default_gate: String,
    /// The server's reflection mode (`off`, `generative` or `probe`).
    pub reflection: &'static str,
}

impl Limits {
    fn common(
        &self,
        c: Common,
        endpoint: Endpoint,
        prompt: String,
        system: Option<String>,
        history: Vec<Message>,
    ) -> Result<Plan, ApiError> {
        match c.model.as_deref() {
            None => {
                return Err(ApiError::invalid(
                    format!(
                        "the request names no model; set \"model\": \"{}\"",
                        self.config.model_id
                    ),
                    Some("model"),
                ));
            }
            Some(m) if m != self.config.model_id => {
                return Err(ApiError::invalid(
                    format!(
                        "the model `{m}` does not exist on this server; it serves `{}` (GET /v1/models)",
                        self.config.model_id
                    ),
                    Some("model"),
                )
                .with_code("model_not_found")
                .with_status(axum::http::StatusCode::NOT_FOUND));
            }
            Some(_) => {}
        }
        if let Some(n) = c.n
            && n != 1
        {
            return Err(ApiError::invalid(
                format!(
                    "n = {n} is not supported: this server returns one choice per request; send {n} requests instead"
                ),
                Some("n"),
            ));
        }
        if c.logprobs
            .as_ref()
            .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
        {
            return Err(ApiError::invalid(
                "logprobs are not supported by this server; the per-token trace (\"ngsd\": {\"trace\": true}) has the top candidates",
                Some("logprobs"),
            ));
        }
        let max_tokens = c.max_completion_tokens.or(c.max_tokens);
        let max_new_tokens = match max_tokens {
            None => self.config.default_max_tokens,
            Some(n) if n < 1 => {
                return Err(ApiError::invalid(
                    format!("max_tokens = {n}; ask for at least 1 token"),
                    Some("max_tokens"),
                ));
            }
            Some(n) if n as u64 > self.config.max_tokens as u64 => {
                return Err(ApiError::invalid(
                    format!(
                        "max_tokens = {n} is above this server's limit of {} (serve-max-tokens)",
                        self.config.max_tokens
                    ),
                    Some("max_tokens"),
                ));
            }
            Some(n) => n as usize,
        };
        let sampling = SamplingConfig {
            temperature: c.temperature.unwrap_or(0.0),
            top_k: 0,
            top_p: c.top_p.unwrap_or(1.0),
            seed: c.seed.unwrap_or(0),
        };
        sampling
            .validate()
            .map_err(|e| ApiError::invalid(e.to_string(), Some("temperature")))?;
        let stop = c.stop.map(OneOrMany::into_vec).unwrap_or_default();
        if stop.len() > 4 || stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid(
                "stop takes up to 4 non-empty strings",
                Some("stop"),
            ));
        }
        let ngsd = c.ngsd.unwrap_or_default();
        if let Some(g) = &ngsd.gate
            && !self.gates.contains(g)
        {
            return Err(ApiError::invalid(
                format!(
                    "ngsd.gate `{g}` is not available on this server; choose one of: {} (the server's config lists them in serve-gates)",
                    self.gates.join(", ")
                ),
                Some("ngsd.gate"),
            ));
        }
        let wants_alpha = ngsd.alpha.is_some() || ngsd.reflection.as_deref() == Some("off");
        if wants_alpha && !self.config.allow_alpha {
            return Err(ApiError::invalid(
                "this server does not let requests set α or turn reflection off (serve-allow-alpha = false)",
                Some("ngsd.alpha"),
            ));
        }
        if let Some(a) = ngsd.alpha
            && !(0.0..=1.0).contains(&a)
        {
            return Err(ApiError::invalid(
                format!("ngsd.alpha = {a} is outside [0, 1]"),
                Some("ngsd.alpha"),
            ));
        }
        match ngsd.reflection.as_deref() {
            None | Some("off") => {}
            Some(r) if r == self.reflection => {}
            Some(r) => {
                return Err(ApiError::invalid(
                    format!(
                        "ngsd.reflection `{r}` is not available: this server reflects with `{}`; send `off` with an alpha, or leave it out",
                        self.reflection
                    ),
                    Some("ngsd.reflection"),
                ));
            }
        }
        if ngsd.alpha.is_some() && ngsd.reflection.as_deref().is_some_and(|r| r != "off") {
            return Err(ApiError::invalid(
                "ngsd.alpha sets a fixed α, so ngsd.reflection must be `off` or left out",
                Some("ngsd.alpha"),
            ));
        }
        let trace = ngsd.trace.unwrap_or(false);
        if trace && !self.config.allow_trace {
            return Err(ApiError::invalid(
                "this server does not return traces (serve-allow-trace = false)",
                Some("ngsd.trace"),
            ));
        }
        let include_usage = c.stream_options.is_some_and(|o| o.include_usage);
        Ok(Plan {
            endpoint,
            prompt,
            system,
            history,
            raw: endpoint == Endpoint::Completions,
            generate: GenerateConfig {
                max_new_tokens,
                sampling,
                stop,
                ignore_eos: false,
            },
            stream: c.stream,
            include_usage,
            gate: ngsd.gate,
            alpha: if wants_alpha {
                Some(ngsd.alpha.unwrap_or(DEFAULT_FIXED_ALPHA))
            } else {
                None
            },
            trace,
        })
    }

    /// Validates a chat request.
    pub fn chat(&self, req: ChatRequest) -> Result<Plan, ApiError> {
        let mut system: Option<String> = None;
        let mut turns: Vec<Message> = Vec::new();
        for (i, m) in req.messages.into_iter().enumerate() {
            let role = m.role.clone();
            let text = text_of(m.content, i)?;
            match role.as_str() {
                "system" | "developer" => match &mut system {
                    Some(s) => {
                        s.push_str("\n\n");
                        s.push_str(&text);
                    }
                    None => system = Some(text),
                },
                "user" | "assistant" => turns.push(Message::new(&role, &text)),
                other => {
                    return Err(ApiError::invalid(
                        format!(
                            "messages[{i}] has role `{other}`; this server understands system, developer, user and assistant"
                        ),
                        Some("messages"),
                    ));
                }
            }
        }
        let last = match turns.pop() {
            Some(m) if m.role == "user" => m,
            Some(_) => {
                return Err(ApiError::invalid(
                    "the last message must come from the user: it is the one answered",
                    Some("messages"),
                ));
            }
            None => {
                return Err(ApiError::invalid(
                    "messages has no user message; send at least [{\"role\": \"user\", \"content\": \"...\"}]",
                    Some("messages"),
                ));
            }
        };
        if last.content.trim().is_empty() {
            return Err(ApiError::invalid(
                "the last user message is empty",
                Some("messages"),
            ));
        }
        self.common(req.common, Endpoint::Chat, last.content, system, turns)
    }

    /// Validates a completions request.
    pub fn completion(&self, req: CompletionRequest) -> Result<Plan, ApiError> {
        if req.echo {
            return Err(ApiError::invalid(
                "echo is not supported by this server",
                Some("echo"),
            ));
        }
        let prompt = match req.prompt {
            Some(OneOrMany::One(s)) => s,
            Some(OneOrMany::Many(mut v)) if v.len() == 1 => v.remove(0),
            Some(OneOrMany::Many(v)) => {
                return Err(ApiError::invalid(
                    format!(
                        "prompt has {} strings; this server takes one prompt per request",
                        v.len()
                    ),
                    Some("prompt"),
                ));
            }
            None => {
                return Err(ApiError::invalid(
                    "the request has no prompt",
                    Some("prompt"),
                ));
            }
        };
        if prompt.is_empty() {
            return Err(ApiError::invalid("the prompt is empty", Some("prompt")));
        }
        self.common(req.common, Endpoint::Completions, prompt, None, Vec::new())
    }
}

/// OpenAI's finish reason: `stop`, `length`, or `content_filter` when the safety early stop
/// ended a steered answer.
pub fn finish_reason(out: &Output) -> &'static str {
    out.finish.as_str()
}

/// The `usage` object.
pub fn usage(out: &Output) -> Value {
    json!({
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.tokens.len(),
        "total_tokens": out.prompt_tokens + out.tokens.len(),
    })
}

/// An f32 as JSON with its shortest decimal form (0.9, not 0.8999999761581421); NaN is null.
fn num(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// The `ngsd` extension of a response: what the safety machinery did.
pub fn safety_summary(out: &Output, with_trace: bool) -> Value {
    let s = &out.summary;
    let r = &s.reflection;
    let mut v = json!({
        "gate": s.gate,
        "expert": s.expert,
        "reflection": r.mode,
        "risk": r.risk.map(num),
        "probability": r.probability.map(num),
        "alpha": num(r.alpha),
        "steered_tokens": s.steered_tokens,
        "tokens": s.tokens,
        "first_steered": s.first_steered,
        "expert_forward_passes": s.expert_forward_passes,
        "gate_errors": s.gate_errors,
        "finish": s.finish,
        "explain": out.explain(),
    });
    if with_trace {
        v["trace"] = serde_json::to_value(&out.trace).unwrap_or(Value::Null);
    }
    v
}

/// The full (non-streaming) response body.
pub fn response(
    endpoint: Endpoint,
    with_trace: bool,
    id: &str,
    created: u64,
    model: &str,
    out: &Output,
) -> Value {
    let choice = match endpoint {
        Endpoint::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": out.text},
            "finish_reason": finish_reason(out),
            "logprobs": null,
        }),
        Endpoint::Completions => json!({
            "index": 0,
            "text": out.text,
            "finish_reason": finish_reason(out),
            "logprobs": null,
        }),
    };
    json!({
        "id": id,
        "object": match endpoint {
            Endpoint::Chat => "chat.completion",
            Endpoint::Completions => "text_completion",
        },
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage(out),
        "ngsd": safety_summary(out, with_trace),
    })
}

/// One stream chunk: a text delta, or (with `finish`) the closing chunk.
pub fn chunk(
    endpoint: Endpoint,
    id: &str,
    created: u64,
    model: &str,
    delta: Option<&str>,
    first: bool,
    finish: Option<&str>,
) -> Value {
    let choice = match endpoint {
        Endpoint::Chat => {
            let mut d = json!({});
            if first {
                d["role"] = json!("assistant");
            }
            if let Some(t) = delta {
                d["content"] = json!(t);
            }
            json!({"index": 0, "delta": d, "finish_reason": finish, "logprobs": null})
        }
        Endpoint::Completions => {
            json!({"index": 0, "text": delta.unwrap_or(""), "finish_reason": finish, "logprobs": null})
        }
    };
    json!({
        "id": id,
        "object": match endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completions => "text_completion",
        },
        "created": created,
        "model": model,
        "choices": [choice],
    })
}
