//! The LLM judge against a real HTTP server on loopback (a minimal OpenAI-style endpoint
//! written here): the request it sends, the verdicts it reads, and its errors. No network.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ngsd_eval::{Judge, LlmJudge};

/// Each request seen: request line + body, and the authorization header.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// Serves `replies` in order (status, body), one per connection; records each request body
/// and authorization header.
fn server(replies: Vec<(u16, String)>) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (status, body) in replies {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            let mut auth = String::new();
            let mut path = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if path.is_empty() {
                    path = l.to_owned();
                }
                let lower = l.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if lower.starts_with("authorization:") {
                    auth = l["authorization:".len()..].trim().to_owned();
                }
            }
            let mut req = vec![0; len];
            reader.read_exact(&mut req).unwrap();
            log.lock()
                .unwrap()
                .push((format!("{path}\n{}", String::from_utf8(req).unwrap()), auth));
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
    });
    (url, seen)
}

fn reply(content: &str) -> (u16, String) {
    (
        200,
        serde_json::json!({"choices": [{"message": {"role": "assistant", "content": content}}]})
            .to_string(),
    )
}

#[test]
fn verdicts_are_read_and_the_request_is_openai_shaped() {
    let (url, seen) = server(vec![reply("REFUSAL"), reply(" compliance.")]);
    let judge = LlmJudge::new(
        &url,
        "judge-model",
        Some("k3y".into()),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(judge.name(), "llm");
    assert!(
        judge
            .is_refusal("How do I pick a lock?", "I can't help with that.")
            .unwrap()
    );
    assert!(!judge.is_refusal("Name a river.", "The Danube.").unwrap());
    // A repeated pair is answered from the cache (the server has no third reply).
    assert!(
        judge
            .is_refusal("How do I pick a lock?", "I can't help with that.")
            .unwrap()
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let (first, auth) = &seen[0];
    assert!(first.starts_with("POST /v1/chat/completions "), "{first}");
    let body: serde_json::Value = serde_json::from_str(first.split_once('\n').unwrap().1).unwrap();
    assert_eq!(body["model"], "judge-model");
    assert_eq!(body["messages"][0]["role"], "system");
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("How do I pick a lock?") && user.contains("I can't help with that."));
    assert_eq!(auth, "Bearer k3y");
}

#[test]
fn endpoint_errors_say_what_happened() {
    let (url, _) = server(vec![
        (500, "{\"error\":\"overloaded\"}".into()),
        reply("maybe"),
        (200, "not json".into()),
    ]);
    let judge = LlmJudge::new(&url, "m", None, Duration::from_secs(10)).unwrap();
    let e = judge.is_refusal("a", "b").unwrap_err().to_string();
    assert!(e.contains("HTTP 500: {\"error\":\"overloaded\"}"), "{e}");
    let e = judge.is_refusal("a", "c").unwrap_err().to_string();
    assert!(
        e.contains("the model answered \"maybe\", expected REFUSAL or COMPLIANCE"),
        "{e}"
    );
    let e = judge.is_refusal("a", "d").unwrap_err().to_string();
    assert!(e.contains("the reply is not JSON"), "{e}");

    // Nothing listens on this port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let judge = LlmJudge::new(
        &format!("http://127.0.0.1:{port}/v1"),
        "m",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let e = judge.is_refusal("a", "b").unwrap_err().to_string();
    assert!(
        e.contains("request failed") && e.contains("is the server running?"),
        "{e}"
    );

    let e = LlmJudge::new("localhost:8000", "m", None, Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be an http:// or https:// URL"), "{e}");
    let e = LlmJudge::new("http://x/v1", " ", None, Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no model name"), "{e}");
}
