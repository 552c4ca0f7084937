//! The OpenAI wire format: request bodies of `/v1/chat/completions` and `/v1/completions`, their
//! validation into one [`Plan`] per request, and the typed response and stream-chunk bodies.
//!
//! Every request field is decided one way or the other (the table is in README.md): honoured,
//! accepted only at its "off" value (a 400 naming the field otherwise), accepted as
//! information the server does not use (`user`, `metadata`, a message's `name`), or unknown
//! (a 400 naming it), so a client never gets a 200 that silently ignored what it asked for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use ngsd_decode::Output;
use ngsd_decode::trace::TraceLine;
use ngsd_runtime::{GenerateConfig, Message, SamplingConfig};

use crate::config::ServerConfig;
use crate::error::{ApiError, ErrorKind};

/// `stop` or `prompt`: one string or a list.
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
    /// A participant name: accepted, not used.
    #[serde(default)]
    #[allow(dead_code, reason = "accepted and not used (README.md's field table)")]
    pub name: Option<String>,
    /// Fields this server does not know (`tool_calls`, ...): refused.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Return the per-token trace (needs `serve-allow-trace`).
    pub trace: Option<bool>,
}

/// Fields shared by both generation endpoints.
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
    /// Log probabilities (only off: `false`, `0` or null).
    pub logprobs: Option<Value>,
    /// Repetition penalties (only 0).
    pub presence_penalty: Option<f32>,
    /// Repetition penalties (only 0).
    pub frequency_penalty: Option<f32>,
    /// Token biases (only empty).
    pub logit_bias: Option<Value>,
    /// End-user id: accepted, not used.
    #[allow(dead_code, reason = "accepted and not used (README.md's field table)")]
    pub user: Option<String>,
    /// Safety overrides.
    pub ngsd: Option<NgsdOptions>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Top log probabilities (only 0 or null).
    pub top_logprobs: Option<i64>,
    /// Tool definitions (only empty: this server has no tool calling).
    pub tools: Option<Value>,
    /// Tool choice (only `none` or `auto`, which without tools means a text answer).
    pub tool_choice: Option<Value>,
    /// Legacy function definitions (only empty).
    pub functions: Option<Value>,
    /// Legacy function choice (only `none` or `auto`).
    pub function_call: Option<Value>,
    /// Accepted, not used (there are no tools to call).
    #[allow(dead_code, reason = "accepted and not used (README.md's field table)")]
    pub parallel_tool_calls: Option<bool>,
    /// Output format (only `{"type": "text"}`).
    pub response_format: Option<Value>,
    /// Request metadata: accepted, not used.
    #[allow(dead_code, reason = "accepted and not used (README.md's field table)")]
    pub metadata: Option<Value>,
    /// Storing completions (only `false`: this server stores nothing).
    pub store: Option<bool>,
    /// Everything else shared with `/v1/completions`.
    #[serde(flatten)]
    pub common: Common,
    /// Fields this server does not know: refused.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The prompt: a string or a list with one string.
    pub prompt: Option<OneOrMany>,
    /// Echo the prompt (only `false`).
    #[serde(default)]
    pub echo: bool,
    /// Text after the completion (only empty).
    pub suffix: Option<String>,
    /// Server-side candidates (only 1).
    pub best_of: Option<i64>,
    /// Everything else shared with `/v1/chat/completions`.
    #[serde(flatten)]
    pub common: Common,
    /// Fields this server does not know: refused.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
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

    /// The prefix of response ids.
    fn id_prefix(self) -> &'static str {
        match self {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        }
    }

    /// A new random response id, e.g. `chatcmpl-3f9a…` (96 random bits).
    pub fn new_id(self) -> String {
        format!("{}-{}", self.id_prefix(), crate::ids::random_hex(12))
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
        ApiError::new(ErrorKind::InvalidRequest, format!("{what}: {e}"))
    })
}

/// Refuses the first field the server does not know (`prefix` names where it sits).
fn refuse_unknown(extra: &BTreeMap<String, Value>, prefix: &str) -> Result<(), ApiError> {
    match extra.keys().next() {
        None => Ok(()),
        Some(k) => Err(ApiError::invalid(
            format!(
                "unknown field `{prefix}{k}`: this server does not support it (README.md lists the fields it reads); leave it out"
            ),
            format!("{prefix}{k}"),
        )),
    }
}

/// Refuses `field` unless its value is one that asks for nothing (`off`).
fn only_off(
    field: &str,
    value: Option<&Value>,
    off: fn(&Value) -> bool,
    why: &str,
) -> Result<(), ApiError> {
    match value {
        Some(v) if !v.is_null() && !off(v) => Err(ApiError::invalid(
            format!("{field} = {v} is not supported: {why}"),
            field,
        )),
        _ => Ok(()),
    }
}

fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0) || v == &Value::Bool(false)
}

fn is_empty(v: &Value) -> bool {
    v.as_array().is_some_and(Vec::is_empty) || v.as_object().is_some_and(|o| o.is_empty())
}

fn is_no_tool(v: &Value) -> bool {
    matches!(v.as_str(), Some("none" | "auto"))
}

fn is_text_format(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| o.len() == 1 && o.get("type").and_then(Value::as_str) == Some("text"))
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
                        format!("messages[{index}].content"),
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

/// What the per-request safety overrides resolve to.
struct Overrides {
    gate: Option<String>,
    alpha: Option<f32>,
    trace: bool,
}

impl Limits {
    fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            None => Err(ApiError::invalid(
                format!(
                    "the request names no model; set \"model\": \"{}\"",
                    self.config.model_id
                ),
                "model",
            )),
            Some(m) if m != self.config.model_id => Err(ApiError::new(
                ErrorKind::NotFound,
                format!(
                    "the model `{m}` does not exist on this server; it serves `{}` (GET /v1/models)",
                    self.config.model_id
                ),
            )
            .with_param("model")
            .with_code("model_not_found")),
            Some(_) => Ok(()),
        }
    }

    /// Fields both endpoints accept only at their "off" value.
    fn check_unsupported(c: &Common) -> Result<(), ApiError> {
        if let Some(n) = c.n
            && n != 1
        {
            return Err(ApiError::invalid(
                format!(
                    "n = {n} is not supported: this server returns one choice per request; send {n} requests instead"
                ),
                "n",
            ));
        }
        only_off(
            "logprobs",
            c.logprobs.as_ref(),
            is_zero,
            "the per-token trace (\"ngsd\": {\"trace\": true}) has the top candidates",
        )?;
        let penalty = "this server applies no repetition penalties; leave it out or send 0";
        for (field, v) in [
            ("presence_penalty", c.presence_penalty),
            ("frequency_penalty", c.frequency_penalty),
        ] {
            only_off(field, v.map(Value::from).as_ref(), is_zero, penalty)?;
        }
        only_off(
            "logit_bias",
            c.logit_bias.as_ref(),
            is_empty,
            "this server does not bias tokens",
        )
    }

    fn token_budget(&self, c: &Common) -> Result<usize, ApiError> {
        let (param, asked) = match (c.max_completion_tokens, c.max_tokens) {
            (Some(n), _) => ("max_completion_tokens", n),
            (None, Some(n)) => ("max_tokens", n),
            (None, None) => return Ok(self.config.default_max_tokens),
        };
        if asked < 1 {
            return Err(ApiError::invalid(
                format!("{param} = {asked}; ask for at least 1 token"),
                param,
            ));
        }
        if asked as u64 > self.config.max_tokens as u64 {
            return Err(ApiError::invalid(
                format!(
                    "{param} = {asked} is above this server's limit of {} (serve-max-tokens)",
                    self.config.max_tokens
                ),
                param,
            ));
        }
        Ok(asked as usize)
    }

    fn sampling(c: &Common) -> Result<SamplingConfig, ApiError> {
        let temperature = c.temperature.unwrap_or(0.0);
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(ApiError::invalid(
                format!("temperature = {temperature} is not ≥ 0 (0 = greedy)"),
                "temperature",
            ));
        }
        let top_p = c.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid(
                format!("top_p = {top_p} is not in (0, 1]"),
                "top_p",
            ));
        }
        Ok(SamplingConfig {
            temperature,
            top_k: 0,
            top_p,
            seed: c.seed.unwrap_or(0),
        })
    }

    fn overrides(&self, ngsd: NgsdOptions) -> Result<Overrides, ApiError> {
        if let Some(g) = &ngsd.gate
            && !self.gates.contains(g)
        {
            return Err(ApiError::invalid(
                format!(
                    "ngsd.gate `{g}` is not available on this server; choose one of: {} (the server's config lists them in serve-gates)",
                    self.gates.join(", ")
                ),
                "ngsd.gate",
            ));
        }
        let turns_off = ngsd.reflection.as_deref() == Some("off");
        if (ngsd.alpha.is_some() || turns_off) && !self.config.allow_alpha {
            return Err(ApiError::invalid(
                "this server does not let requests set α or turn reflection off (serve-allow-alpha = false)",
                if ngsd.alpha.is_some() {
                    "ngsd.alpha"
                } else {
                    "ngsd.reflection"
                },
            ));
        }
        if let Some(a) = ngsd.alpha
            && !(0.0..=1.0).contains(&a)
        {
            return Err(ApiError::invalid(
                format!("ngsd.alpha = {a} is outside [0, 1]"),
                "ngsd.alpha",
            ));
        }
        match ngsd.reflection.as_deref() {
            None | Some("off") => {}
            Some(r) if r == self.reflection && ngsd.alpha.is_none() => {}
            Some(_) if ngsd.alpha.is_some() => {
                return Err(ApiError::invalid(
                    "ngsd.alpha sets a fixed α, so ngsd.reflection must be `off` or left out",
                    "ngsd.reflection",
                ));
            }
            Some(r) => {
                return Err(ApiError::invalid(
                    format!(
                        "ngsd.reflection `{r}` is not available: this server reflects with `{}`; send `off` with an alpha, or leave it out",
                        self.reflection
                    ),
                    "ngsd.reflection",
                ));
            }
        }
        let trace = ngsd.trace.unwrap_or(false);
        if trace && !self.config.allow_trace {
            return Err(ApiError::invalid(
                "this server does not return traces (serve-allow-trace = false)",
                "ngsd.trace",
            ));
        }
        let alpha =
            (ngsd.alpha.is_some() || turns_off).then(|| ngsd.alpha.unwrap_or(DEFAULT_FIXED_ALPHA));
        Ok(Overrides {
            gate: ngsd.gate,
            alpha,
            trace,
        })
    }

    fn common(
        &self,
        c: Common,
        endpoint: Endpoint,
        prompt: String,
        system: Option<String>,
        history: Vec<Message>,
    ) -> Result<Plan, ApiError> {
        let max_new_tokens = self.token_budget(&c)?;
        let sampling = Self::sampling(&c)?;
        let stop = c.stop.map(OneOrMany::into_vec).unwrap_or_default();
        if stop.len() > 4 || stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid(
                "stop takes up to 4 non-empty strings",
                "stop",
            ));
        }
        let o = self.overrides(c.ngsd.unwrap_or_default())?;
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
            include_usage: c.stream_options.is_some_and(|o| o.include_usage),
            gate: o.gate,
            alpha: o.alpha,
            trace: o.trace,
        })
    }

    /// Chat-only fields that are accepted only at their "off" value.
    fn check_chat_fields(req: &ChatRequest) -> Result<(), ApiError> {
        let no_tools = "this server has no tool calling; leave it out";
        only_off("tools", req.tools.as_ref(), is_empty, no_tools)?;
        only_off("functions", req.functions.as_ref(), is_empty, no_tools)?;
        only_off(
            "tool_choice",
            req.tool_choice.as_ref(),
            is_no_tool,
            no_tools,
        )?;
        only_off(
            "function_call",
            req.function_call.as_ref(),
            is_no_tool,
            no_tools,
        )?;
        only_off(
            "top_logprobs",
            req.top_logprobs.map(Value::from).as_ref(),
            is_zero,
            "this server returns no log probabilities",
        )?;
        only_off(
            "response_format",
            req.response_format.as_ref(),
            is_text_format,
            "this server answers in free text only ({\"type\": \"text\"})",
        )?;
        only_off(
            "store",
            req.store.map(Value::from).as_ref(),
            is_zero,
            "this server stores nothing",
        )
    }

    /// Splits the conversation into a system prompt, earlier turns and the message answered.
    fn conversation(
        messages: Vec<ChatMessage>,
    ) -> Result<(Option<String>, Vec<Message>, Message), ApiError> {
        let mut system: Option<String> = None;
        let mut turns: Vec<Message> = Vec::new();
        for (i, m) in messages.into_iter().enumerate() {
            refuse_unknown(&m.extra, &format!("messages[{i}]."))?;
            let text = text_of(m.content, i)?;
            match m.role.as_str() {
                "system" | "developer" => match &mut system {
                    Some(s) => {
                        s.push_str("\n\n");
                        s.push_str(&text);
                    }
                    None => system = Some(text),
                },
                "user" | "assistant" => turns.push(Message::new(&m.role, &text)),
                other => {
                    return Err(ApiError::invalid(
                        format!(
                            "messages[{i}] has role `{other}`; this server understands system, developer, user and assistant"
                        ),
                        format!("messages[{i}].role"),
                    ));
                }
            }
        }
        let last = match turns.pop() {
            Some(m) if m.role == "user" => m,
            Some(_) => {
                return Err(ApiError::invalid(
                    "the last message must come from the user: it is the one answered",
                    "messages",
                ));
            }
            None => {
                return Err(ApiError::invalid(
                    "messages has no user message; send at least [{\"role\": \"user\", \"content\": \"...\"}]",
                    "messages",
                ));
            }
        };
        if last.content.trim().is_empty() {
            return Err(ApiError::invalid(
                "the last user message is empty",
                "messages",
            ));
        }
        Ok((system, turns, last))
    }

    /// Validates a chat request.
    pub fn chat(&self, req: ChatRequest) -> Result<Plan, ApiError> {
        refuse_unknown(&req.extra, "")?;
        self.check_model(req.common.model.as_deref())?;
        Self::check_unsupported(&req.common)?;
        Self::check_chat_fields(&req)?;
        let (system, turns, last) = Self::conversation(req.messages)?;
        self.common(req.common, Endpoint::Chat, last.content, system, turns)
    }

    /// Validates a completions request.
    pub fn completion(&self, req: CompletionRequest) -> Result<Plan, ApiError> {
        refuse_unknown(&req.extra, "")?;
        self.check_model(req.common.model.as_deref())?;
        Self::check_unsupported(&req.common)?;
        if req.echo {
            return Err(ApiError::invalid(
                "echo is not supported by this server",
                "echo",
            ));
        }
        only_off(
            "suffix",
            req.suffix.map(Value::from).as_ref(),
            |v| v.as_str() == Some(""),
            "this server does not insert text",
        )?;
        only_off(
            "best_of",
            req.best_of.map(Value::from).as_ref(),
            |v| v.as_i64() == Some(1),
            "this server generates one candidate per request",
        )?;
        let prompt = match req.prompt {
            Some(OneOrMany::One(s)) => s,
            Some(OneOrMany::Many(mut v)) if v.len() == 1 => v.remove(0),
            Some(OneOrMany::Many(v)) => {
                return Err(ApiError::invalid(
                    format!(
                        "prompt has {} strings; this server takes one prompt per request",
                        v.len()
                    ),
                    "prompt",
                ));
            }
            None => return Err(ApiError::invalid("the request has no prompt", "prompt")),
        };
        if prompt.is_empty() {
            return Err(ApiError::invalid("the prompt is empty", "prompt"));
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Both.
    pub total_tokens: usize,
}

impl Usage {
    /// The counts of a generation.
    pub fn of(out: &Output) -> Usage {
        Usage {
            prompt_tokens: out.prompt_tokens,
            completion_tokens: out.tokens.len(),
            total_tokens: out.prompt_tokens + out.tokens.len(),
        }
    }
}

/// An f32 with its shortest decimal form (0.9, not 0.8999999761581421); NaN is null.
fn short_f32<S: Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
    match x.to_string().parse::<f64>() {
        Ok(v) if v.is_finite() => s.serialize_f64(v),
        _ => s.serialize_none(),
    }
}

fn short_opt_f32<S: Serializer>(x: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
    match x {
        Some(v) => short_f32(v, s),
        None => s.serialize_none(),
    }
}

/// The `ngsd` extension of a response: what the safety machinery did.
#[derive(Debug, Serialize)]
pub struct SafetySummary<'a> {
    /// The gate's name.
    pub gate: &'a str,
    /// The expert's public label (kind only; no server paths).
    pub expert: &'a str,
    /// `off`, `generative` or `probe`.
    pub reflection: &'static str,
    /// The assessed risk (0–10).
    #[serde(serialize_with = "short_opt_f32")]
    pub risk: Option<f32>,
    /// The probe's probability.
    #[serde(serialize_with = "short_opt_f32")]
    pub probability: Option<f32>,
    /// The steering strength.
    #[serde(serialize_with = "short_f32")]
    pub alpha: f32,
    /// Tokens the gate steered.
    pub steered_tokens: usize,
    /// Tokens generated.
    pub tokens: usize,
    /// Index of the first steered token.
    pub first_steered: Option<usize>,
    /// Expert forward passes.
    pub expert_forward_passes: usize,
    /// Gate errors handled by the failure policy.
    pub gate_errors: usize,
    /// How the generation ended.
    pub finish: &'a str,
    /// One line for humans.
    pub explain: String,
    /// The per-token trace, when asked for and allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<&'a [TraceLine]>,
}

impl<'a> SafetySummary<'a> {
    /// The summary of a generation (with its trace when `with_trace`).
    pub fn of(out: &'a Output, with_trace: bool) -> Self {
        let s = &out.summary;
        let r = &s.reflection;
        SafetySummary {
            gate: &s.gate,
            expert: &s.expert,
            reflection: r.mode,
            risk: r.risk,
            probability: r.probability,
            alpha: r.alpha,
            steered_tokens: s.steered_tokens,
            tokens: s.tokens,
            first_steered: s.first_steered,
            expert_forward_passes: s.expert_forward_passes,
            gate_errors: s.gate_errors,
            finish: &s.finish,
            explain: out.explain(),
            trace: with_trace.then_some(out.trace.as_slice()),
        }
    }
}

/// The assistant's message in a chat answer.
#[derive(Debug, Serialize)]
pub struct AssistantMessage<'a> {
    /// Always `assistant`.
    pub role: &'static str,
    /// The answer.
    pub content: &'a str,
}

/// The one choice of an answer.
#[derive(Debug, Serialize)]
pub struct Choice<'a> {
    /// Always 0.
    pub index: u32,
    /// The answer (chat).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<AssistantMessage<'a>>,
    /// The answer (completions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    /// `stop`, `length` or `content_filter`.
    pub finish_reason: &'static str,
    /// Always null.
    pub logprobs: Option<()>,
}

/// A whole (non-streaming) answer.
#[derive(Debug, Serialize)]
pub struct Completion<'a> {
    /// Response id.
    pub id: &'a str,
    /// `chat.completion` or `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model id.
    pub model: &'a str,
    /// The one choice.
    pub choices: [Choice<'a>; 1],
    /// Token counts.
    pub usage: Usage,
    /// What the safety machinery did.
    pub ngsd: SafetySummary<'a>,
}

/// What every answer and chunk of one request shares.
#[derive(Debug, Clone)]
pub struct Head {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Response id.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model id.
    pub model: String,
}

impl Head {
    /// The whole answer for `out`.
    pub fn completion<'a>(&'a self, out: &'a Output, with_trace: bool) -> Completion<'a> {
        let chat = self.endpoint == Endpoint::Chat;
        Completion {
            id: &self.id,
            object: if chat {
                "chat.completion"
            } else {
                "text_completion"
            },
            created: self.created,
            model: &self.model,
            choices: [Choice {
                index: 0,
                message: chat.then_some(AssistantMessage {
                    role: "assistant",
                    content: &out.text,
                }),
                text: (!chat).then_some(out.text.as_str()),
                finish_reason: finish_reason(out),
                logprobs: None,
            }],
            usage: Usage::of(out),
            ngsd: SafetySummary::of(out, with_trace),
        }
    }

    /// A stream chunk: a text delta (`first` adds the chat role), or with `finish` the
    /// closing chunk.
    pub fn chunk<'a>(
        &'a self,
        delta: Option<&'a str>,
        first: bool,
        finish: Option<&'static str>,
    ) -> Chunk<'a> {
        let chat = self.endpoint == Endpoint::Chat;
        Chunk {
            id: &self.id,
            object: if chat {
                "chat.completion.chunk"
            } else {
                "text_completion"
            },
            created: self.created,
            model: &self.model,
            choices: vec![ChunkChoice {
                index: 0,
                delta: chat.then_some(Delta {
                    role: first.then_some("assistant"),
                    content: delta,
                }),
                text: (!chat).then_some(delta.unwrap_or("")),
                finish_reason: finish,
                logprobs: None,
            }],
            usage: None,
            ngsd: None,
        }
    }
}

/// What a chat chunk adds to the answer.
#[derive(Debug, Serialize)]
pub struct Delta<'a> {
    /// `assistant` on the first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
}

/// The choice of a stream chunk.
#[derive(Debug, Serialize)]
pub struct ChunkChoice<'a> {
    /// Always 0.
    pub index: u32,
    /// New text (chat).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta<'a>>,
    /// New text (completions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<&'a str>,
    /// Set on the closing chunk.
    pub finish_reason: Option<&'static str>,
    /// Always null.
    pub logprobs: Option<()>,
}

/// One server-sent event of a streamed answer.
#[derive(Debug, Serialize)]
pub struct Chunk<'a> {
    /// Response id.
    pub id: &'a str,
    /// `chat.completion.chunk` or `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model id.
    pub model: &'a str,
    /// One choice, or none in the usage chunk.
    pub choices: Vec<ChunkChoice<'a>>,
    /// Token counts (the usage chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What the safety machinery did (the closing chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ngsd: Option<SafetySummary<'a>>,
}

/// `GET /v1/models`.
#[derive(Debug, Serialize)]
pub struct ModelList<'a> {
    /// Always `list`.
    pub object: &'static str,
    /// The one model.
    pub data: [ModelCard<'a>; 1],
}

/// One model of `GET /v1/models`.
#[derive(Debug, Serialize)]
pub struct ModelCard<'a> {
    /// The model id.
    pub id: &'a str,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds when the server started.
    pub created: u64,
    /// Always `ngsd`.
    pub owned_by: &'static str,
}

#[cfg(test)]
mod tests;
