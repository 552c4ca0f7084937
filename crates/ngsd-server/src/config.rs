//! The server's validated settings and the engine each worker owns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ngsd_decode::{DecodeConfig, Models, Reflection};
use ngsd_gate::Gate;

/// Where the server listens and what it lets clients do.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listening address (default 127.0.0.1:8080; port 0 picks a free port).
    pub addr: SocketAddr,
    /// The model id clients name in `model` (default: the package's manifest name).
    pub model_id: String,
    /// When set, `/v1/*` and `/metrics` need `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Generations that run at once (`serve-workers`).
    pub workers: usize,
    /// Most generations one engine (one ONNX Runtime session) answers together, one forward
    /// pass per token for all (`serve-batch`); the server starts as many engines as
    /// `workers` needs. An engine that cannot batch answers one at a time.
    pub batch: usize,
    /// Requests that may wait for a worker; one more gets 429.
    pub queue: usize,
    /// Longest a request may take, queueing included.
    pub timeout: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens: usize,
    /// `max_tokens` of a request that names none.
    pub default_max_tokens: usize,
    /// Whether a request may set α or turn reflection off (`ngsd.alpha`, `ngsd.reflection`).
    pub allow_alpha: bool,
    /// Whether a request may ask for the per-token trace (`ngsd.trace`). Off by default: on a
    /// refused answer the trace shows what the unsteered model would have said.
    pub allow_trace: bool,
    /// Longest a connection may take to send a request's headers; an idle kept-alive
    /// connection is closed after it too (slow clients cannot hold sockets).
    pub header_timeout: Duration,
    /// Longest a client may take to send a request's body (408 and the connection closed).
    pub body_timeout: Duration,
    /// Seconds a 429 answer tells the client to wait (`Retry-After`).
    pub retry_after_s: u64,
}

impl ServerConfig {
    /// Engines (ONNX Runtime sessions, one worker thread each) to start.
    pub fn engines(&self) -> usize {
        self.workers.div_ceil(self.batch.max(1))
    }

    /// Generations each engine answers at once: `workers` shared evenly.
    pub fn slots_per_engine(&self) -> usize {
        self.workers.div_ceil(self.engines().max(1))
    }

    /// A configuration with the documented defaults for `model_id`.
    pub fn new(model_id: impl Into<String>) -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            model_id: model_id.into(),
            api_key: None,
            workers: 16,
            batch: 16,
            queue: 16,
            timeout: Duration::from_secs(120),
            max_body_bytes: 1 << 20,
            max_tokens: 1024,
            default_max_tokens: 256,
            allow_alpha: false,
            allow_trace: false,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            retry_after_s: 1,
        }
    }

    /// Checks ranges; the message names the setting.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |name: &'static str, reason: &str| {
            Err(crate::Error::InvalidConfig {
                name,
                reason: reason.to_string(),
            })
        };
        if self.workers == 0 {
            return bad("serve-workers", "0; at least one worker must generate");
        }
        if self.batch == 0 {
            return bad(
                "serve-batch",
                "0; an engine answers at least one request at a time",
            );
        }
        if self.max_tokens == 0 {
            return bad("serve-max-tokens", "0; requests need at least 1 token");
        }
        if self.default_max_tokens == 0 || self.default_max_tokens > self.max_tokens {
            return bad(
                "max-new-tokens",
                &format!(
                    "{} as the server's default must be between 1 and serve-max-tokens ({})",
                    self.default_max_tokens, self.max_tokens
                ),
            );
        }
        if self.max_body_bytes < 256 {
            return bad(
                "serve-max-body-bytes",
                "below 256 bytes; no request would fit",
            );
        }
        if self.timeout.is_zero() {
            return bad("serve-timeout-s", "0; requests need time to run");
        }
        if self.header_timeout.is_zero() {
            return bad(
                "serve-header-timeout-s",
                "0; clients need time to send headers",
            );
        }
        if self.body_timeout.is_zero() {
            return bad(
                "serve-body-timeout-s",
                "0; clients need time to send a body",
            );
        }
        if self.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return bad(
                "serve-api-key",
                "empty; leave it unset for no key, or set a secret",
            );
        }
        Ok(())
    }
}

/// What one worker generates with: its own models, the gates clients may choose, the
/// reflection and the decoding settings. Built on the worker's thread by the factory.
pub struct Engine {
    /// Base model, tokenizer, template and expert.
    pub models: Models,
    /// Gates by name; clients choose among these with `ngsd.gate`.
    pub gates: BTreeMap<String, Box<dyn Gate>>,
    /// The gate used when a request names none (a key of `gates`).
    pub default_gate: String,
    /// How α is set when a request does not override it.
    pub reflection: Reflection,
    /// Decoding settings; a request's sampling, stop strings and token budget replace
    /// `decode.generate` for that request.
    pub decode: DecodeConfig,
}

/// Builds worker `i`'s engine (called on that worker's thread).
pub type EngineFactory =
    dyn Fn(usize) -> Result<Engine, Box<dyn std::error::Error + Send + Sync>> + Send + Sync;

#[cfg(test)]
mod tests {
    use super::*;

    fn check(edit: impl FnOnce(&mut ServerConfig), expected: &str) {
        let mut c = ServerConfig::new("m");
        edit(&mut c);
        let err = c.validate().expect_err("should be rejected").to_string();
        assert_eq!(err, expected);
    }

    #[test]
    fn defaults_are_valid() {
        ServerConfig::new("m").validate().expect("valid");
    }

    #[test]
    fn workers_are_shared_evenly_between_engines() {
        for (workers, batch, engines, slots) in [
            (16, 16, 1, 16),
            (1, 16, 1, 1),
            (20, 16, 2, 10),
            (3, 1, 3, 1),
            (32, 8, 4, 8),
        ] {
            let mut c = ServerConfig::new("m");
            (c.workers, c.batch) = (workers, batch);
            assert_eq!((c.engines(), c.slots_per_engine()), (engines, slots));
        }
    }

    #[test]
    fn bad_settings_name_the_key() {
        check(
            |c| c.workers = 0,
            "invalid serve-workers: 0; at least one worker must generate",
        );
        check(
            |c| c.batch = 0,
            "invalid serve-batch: 0; an engine answers at least one request at a time",
        );
        check(
            |c| c.default_max_tokens = 2000,
            "invalid max-new-tokens: 2000 as the server's default must be between 1 and serve-max-tokens (1024)",
        );
        check(
            |c| c.api_key = Some(" ".into()),
            "invalid serve-api-key: empty; leave it unset for no key, or set a secret",
        );
        check(
            |c| c.timeout = Duration::ZERO,
            "invalid serve-timeout-s: 0; requests need time to run",
        );
    }
}
