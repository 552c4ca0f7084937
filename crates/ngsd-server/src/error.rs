//! Errors: [`Error`] for starting and running the server, [`ApiError`] for what a client gets
//! back. Every answer that is not a success has an [`ErrorKind`], which alone decides the HTTP
//! status and the OpenAI error `type`; the body is OpenAI's `{"error": {...}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of range.
    #[error("invalid {name}: {reason}")]
    InvalidConfig {
        /// The setting's key.
        name: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// The listening address cannot be bound.
    #[error(
        "cannot listen on {addr}: {source}; pick another address with --addr (port 0 picks a free one)"
    )]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },

    /// A worker could not build its engine (model, gates, expert), or the engine it built
    /// cannot serve (e.g. a gate that reads a hidden state the model does not export).
    #[error("worker {worker} could not load its engine: {reason}")]
    Engine {
        /// The worker's index.
        worker: usize,
        /// The factory's error with its causes, or what is wrong with the engine.
        reason: String,
    },

    /// The async runtime or a worker thread could not start.
    #[error("cannot start the server: {0}")]
    Start(std::io::Error),
}

/// The kinds of error answers. Each decides the HTTP status and the OpenAI error `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 400: the request cannot be served as sent.
    InvalidRequest,
    /// 401: no API key, or the wrong one.
    Unauthorized,
    /// 404: no such route or model.
    NotFound,
    /// 405: the route exists, not with this method.
    MethodNotAllowed,
    /// 408: the client sent its body too slowly.
    RequestTimeout,
    /// 413: the body is over `serve-max-body-bytes`.
    PayloadTooLarge,
    /// 429: every worker busy and the queue full.
    QueueFull,
    /// 500: something broke in the server (the details are in its log, under the error id).
    Internal,
    /// 503: the server is shutting down.
    Unavailable,
    /// 504: the request ran past `serve-timeout-s`.
    Timeout,
}

impl ErrorKind {
    /// The HTTP status of this kind.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// OpenAI's error `type` for this kind.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::QueueFull => "rate_limit_error",
            ErrorKind::Internal | ErrorKind::Unavailable | ErrorKind::Timeout => "server_error",
            _ => "invalid_request_error",
        }
    }
}

/// An error answer in the OpenAI wire format.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// What kind of error (decides the status).
    pub kind: ErrorKind,
    /// What is wrong and how to fix it.
    pub message: String,
    /// The request field at fault (`top_p`, `messages[2].tool_calls`, ...).
    pub param: Option<String>,
    /// A machine-readable code, e.g. `model_not_found`.
    pub code: Option<&'static str>,
    /// Seconds for `Retry-After` (429).
    pub retry_after: Option<u64>,
    /// Close the connection after answering (the client's body was not read to its end).
    pub close: bool,
}

/// `{"error": {...}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error.
    pub error: ErrorDetail<'a>,
}

/// The fields of an OpenAI error.
#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    /// What is wrong and how to fix it.
    pub message: &'a str,
    /// `invalid_request_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<&'a str>,
    /// A machine-readable code.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            close: false,
        }
    }

    /// 400 naming the request field at fault.
    pub fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message).with_param(param)
    }

    /// A 500 that tells the client only an id; the details go to the server's log under it.
    pub fn internal(detail: &str) -> Self {
        let id = crate::ids::random_hex(12);
        tracing::error!(error_id = %id, "internal error: {detail}");
        Self::new(
            ErrorKind::Internal,
            format!(
                "internal server error (id {id}); the server's log has the details under this id"
            ),
        )
        .with_code("internal_error")
    }

    /// Sets the field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Sets the code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind.openai_type(),
                param: self.param.as_deref(),
                code: self.code,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), Json(self.body())).into_response();
        let headers = resp.headers_mut();
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.kind == ErrorKind::Unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ", self.status().as_u16())?;
        if let Some(p) = &self.param {
            write!(f, "({p}) ")?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_detail() {
        let e = ApiError::internal("secret /srv/models/x.onnx");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message.contains("secret"), "{}", e.message);
        assert!(e.message.starts_with("internal server error (id "));
    }

    #[test]
    fn the_kind_decides_status_and_type() {
        let check = |k: ErrorKind, status: u16, kind: &str| {
            assert_eq!((k.status().as_u16(), k.openai_type()), (status, kind));
        };
        check(ErrorKind::InvalidRequest, 400, "invalid_request_error");
        check(ErrorKind::MethodNotAllowed, 405, "invalid_request_error");
        check(ErrorKind::QueueFull, 429, "rate_limit_error");
        check(ErrorKind::Timeout, 504, "server_error");
    }
}
