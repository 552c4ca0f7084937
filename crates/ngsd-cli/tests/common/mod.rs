//! Shared helpers of the `ngsd serve` tests: the real binary on an ephemeral port, a real HTTP
//! client (reqwest), SSE reading and metric lookup.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use ngsd_test_support::ServeProcess;
use serde_json::{Value, json};

/// The default model's id.
pub const MODEL: &str = "smollm2-135m-instruct";

/// Starts `ngsd serve` on the default model.
pub struct Server;

impl Server {
    /// `ngsd serve --addr 127.0.0.1:0 --model <default> ARGS` with `env`.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        ServeProcess::start(
            Path::new(env!("CARGO_BIN_EXE_ngsd")),
            &ngsd_test_support::model_dir(),
            args,
            env,
        )
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

pub fn chat_body(prompt: &str, max_tokens: u32) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
    })
}

/// Sends `POST path` with a JSON body.
pub async fn send(s: &ServeProcess, path: &str, body: &Value) -> reqwest::Response {
    client().post(s.url(path)).json(body).send().await.unwrap()
}

pub async fn post(s: &ServeProcess, path: &str, body: &Value) -> (u16, Value) {
    let r = send(s, path, body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Reads an SSE body to the end: the `data:` payloads in order.
pub async fn sse(resp: reqwest::Response) -> Vec<String> {
    let mut buf = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(buf)
        .expect("the stream is UTF-8")
        .split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: ").map(str::to_string))
        })
        .collect()
}

/// The text pieces of a stream, in order (`field` is `delta` for chat, `text` otherwise).
pub fn stream_pieces(events: &[String], field: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|v| {
            let c = v["choices"].get(0)?;
            let t = if field == "delta" {
                c["delta"]["content"].as_str()
            } else {
                c["text"].as_str()
            };
            t.map(str::to_string)
        })
        .collect()
}

pub fn streamed_text(events: &[String], field: &str) -> String {
    stream_pieces(events, field).concat()
}

/// The body of `GET path`, as text.
pub async fn get_text(s: &ServeProcess, path: &str) -> String {
    client()
        .get(s.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The body of `GET path`, as JSON.
pub async fn get_json(s: &ServeProcess, path: &str) -> Value {
    serde_json::from_str(&get_text(s, path).await).unwrap()
}

/// The sum of the samples of `name` (a metric name, with labels if given).
pub async fn metric(s: &ServeProcess, name: &str) -> f64 {
    let text = get_text(s, "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Checks that a completion request was answered 504 `timeout` and counted once as a timed-out
/// generation.
pub async fn assert_completion_timed_out(s: &ServeProcess, status: u16, v: &Value) {
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["code"], "timeout", "{v}");
    let timeouts = "ngsd_generations_total{endpoint=\"completions\",outcome=\"timeout\"}";
    assert_eq!(metric(s, timeouts).await, 1.0);
}

/// Polls `metric` until it equals `want` (or 20 s pass); returns the last value read.
pub async fn wait_for_metric(s: &ServeProcess, name: &str, want: f64) -> f64 {
    let mut last = f64::NAN;
    for _ in 0..200 {
        last = metric(s, name).await;
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}
