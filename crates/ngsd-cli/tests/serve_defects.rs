//! Regressions of the defects found by trying `ngsd serve` from outside (issue 15): each test
//! sends what showed the defect to the real binary and checks the fixed behaviour.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ngsd_test_support::ServeProcess;
use serde_json::{Value, json};

use common::{
    MODEL, Server, chat_body, client, get_json, get_text, metric, post, send, sse, stream_pieces,
    wait_for_metric,
};

#[tokio::test]
async fn d2_a_stop_string_like_the_early_stop_marker_is_a_plain_stop() {
    let s = Server::start(&[], &[]);
    let body = json!({
        "model": MODEL,
        "prompt": "early stop, early stop, early stop, early stop,",
        "stop": ["early stop"],
        "max_tokens": 16,
        "temperature": 0,
    });
    let (status, v) = post(&s, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert_eq!(v["ngsd"]["finish"], "stop", "{v}");
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert!(!text.contains("early stop"), "{text:?}");
}

#[tokio::test]
async fn d4_the_queue_gauge_forgets_clients_that_left() {
    let s = Server::start(&["--workers", "1", "--queue", "4"], &[]);
    // Occupy the only worker with a long stream.
    let long = json!({"model": MODEL, "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 1000, "stream": true});
    let r = send(&s, "/v1/completions", &long).await;
    let mut running = r.bytes_stream();
    running.next().await.unwrap().unwrap();
    // Four clients wait in the queue, then all go away.
    for round in 0..2 {
        let waiting: Vec<_> = (0..4)
            .map(|_| {
                let url = s.url("/v1/chat/completions");
                tokio::spawn(
                    async move { client().post(url).json(&chat_body("Hi", 2)).send().await },
                )
            })
            .collect();
        let queued = wait_for_metric(&s, "ngsd_queued_requests", 4.0).await;
        assert_eq!(queued, 4.0, "round {round}: four clients wait");
        for w in &waiting {
            w.abort();
        }
        let queued = wait_for_metric(&s, "ngsd_queued_requests", 0.0).await;
        assert_eq!(
            queued, 0.0,
            "round {round}: the clients left, the gauge still counts them"
        );
    }
    drop(running);
}

#[tokio::test]
async fn d6_answers_carry_no_server_paths_and_traces_need_permission() {
    let s = Server::start(&[], &[]);
    let model_dir = ngsd_test_support::model_dir();
    let repo = ngsd_test_support::repo_root().canonicalize().unwrap();
    let (status, v) = post(&s, "/v1/chat/completions", &chat_body("Name a river.", 4)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ngsd"]["expert"], "head", "{v}");
    let text = v.to_string();
    for private in [
        model_dir.to_string_lossy().into_owned(),
        repo.to_string_lossy().into_owned(),
        ".safetensors".to_string(),
    ] {
        assert!(
            !text.contains(&private),
            "the answer shows `{private}`: {text}"
        );
    }
    assert!(v["ngsd"].get("trace").is_none());
    let health = get_text(&s, "/healthz").await;
    assert!(!health.contains('/'), "{health}");
    // The per-token trace shows the unsteered model's candidates: off unless allowed.
    let mut body = chat_body("Give me step-by-step instructions to build a pipe bomb.", 4);
    body["ngsd"] = json!({"trace": true});
    let (status, v) = post(&s, "/v1/chat/completions", &body).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "ngsd.trace");
    // A gate configured by path is named by the plugin's own name.
    let plugin = Path::new(env!("CARGO_BIN_EXE_ngsd"))
        .with_file_name("libgate_lif.so")
        .canonicalize()
        .unwrap();
    let s = Server::start(&["--gate", plugin.to_str().unwrap()], &[]);
    let health = get_json(&s, "/healthz").await;
    assert_eq!(health["default_gate"], "lif", "{health}");
    assert!(!health.to_string().contains(".so"), "{health}");
    let (status, v) = post(&s, "/v1/chat/completions", &chat_body("Hi", 2)).await;
    assert_eq!(status, 200, "{v}");
    assert!(!v.to_string().contains(".so"), "{v}");
}

#[tokio::test]
async fn d7_each_field_is_honoured_or_refused_by_name() {
    let s = Server::start(&[], &[]);
    let chat = "/v1/chat/completions";
    for (field, value, message) in [
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
            "no tool calling",
        ),
        (
            "response_format",
            json!({"type": "json_object"}),
            "free text only",
        ),
        ("presence_penalty", json!(0.5), "no repetition penalties"),
        ("frequency_penalty", json!(1), "no repetition penalties"),
        ("logit_bias", json!({"1": 5}), "does not bias tokens"),
        ("top_k", json!(5), "unknown field `top_k`"),
        (
            "service_tier",
            json!("flex"),
            "unknown field `service_tier`",
        ),
    ] {
        let mut body = chat_body("Hi", 2);
        body[field] = value;
        let (status, v) = post(&s, chat, &body).await;
        assert_eq!(status, 400, "{field}: {v}");
        assert_eq!(v["error"]["param"], field, "{v}");
        let got = v["error"]["message"].as_str().unwrap();
        assert!(got.contains(message), "{field}: {got}");
    }
    // Their "off" values, and fields that carry only information, are accepted.
    let mut body = chat_body("Hi", 2);
    for (field, value) in [
        ("tools", json!([])),
        ("tool_choice", json!("none")),
        ("response_format", json!({"type": "text"})),
        ("presence_penalty", json!(0)),
        ("frequency_penalty", json!(0.0)),
        ("user", json!("user-42")),
        ("metadata", json!({"k": "v"})),
    ] {
        body[field] = value;
    }
    let (status, v) = post(&s, chat, &body).await;
    assert_eq!(status, 200, "{v}");
    let body = json!({"model": MODEL, "prompt": "Hi", "max_tokens": 2, "suffix": "!"});
    let (status, v) = post(&s, "/v1/completions", &body).await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("suffix")),
        "{v}"
    );
}

#[tokio::test]
async fn d8_an_answer_cut_inside_a_character_ends_cleanly() {
    let s = Server::start(&[], &[]);
    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "My Linux server is slow."}],
        "max_tokens": 32,
        "temperature": 0,
    });
    let (status, whole) = post(&s, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{whole}");
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(whole["choices"][0]["finish_reason"], "length", "{whole}");
    assert!(!text.contains('\u{FFFD}'), "{text:?}");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = send(&s, "/v1/chat/completions", &streamed).await;
    let pieces = stream_pieces(&sse(r).await, "delta");
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert_eq!(pieces.concat(), text);
}

#[tokio::test]
async fn d9_errors_name_their_field_405_has_a_body_bearer_is_case_insensitive_ids_are_random() {
    let key = "k-d9";
    let s = Server::start(&[], &[("NGSD_SERVE_API_KEY", key)]);
    let chat = s.url("/v1/chat/completions");
    let send = |body: Value| {
        client()
            .post(&chat)
            .header("authorization", format!("bearer {key}"))
            .json(&body)
            .send()
    };
    for (edit, param) in [
        (json!({"top_p": 1.5}), "top_p"),
        (json!({"ngsd": {"reflection": "off"}}), "ngsd.reflection"),
        (json!({"max_completion_tokens": 0}), "max_completion_tokens"),
    ] {
        let mut body = chat_body("Hi", 2);
        for (k, v) in edit.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = send(body).await.unwrap();
        assert_eq!(r.status().as_u16(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    // A lowercase scheme is accepted; ids do not count up.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = send(chat_body("Hi", 1)).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let numbers: Vec<u128> = ids
        .iter()
        .map(|id| {
            let hex = id.strip_prefix("chatcmpl-").unwrap();
            assert!(hex.len() >= 24, "{id}: fewer than 96 random bits");
            u128::from_str_radix(hex, 16).unwrap()
        })
        .collect();
    for pair in numbers.windows(2) {
        assert!(
            pair[0].abs_diff(pair[1]) > 1 << 20,
            "sequential ids: {ids:?}"
        );
    }
    // A wrong method gets an OpenAI error body, not an empty one.
    let r = client().get(&chat).bearer_auth(key).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let allow = r
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_string());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("GET is not allowed on /v1/chat/completions")
    );
    assert_eq!(allow.as_deref(), Some("POST"));
}

#[tokio::test]
async fn d9_a_prompt_too_long_for_the_context_is_not_a_generation_error() {
    let s = Server::start(&[], &[]);
    let long = "word ".repeat(9000);
    for stream in [false, true] {
        let mut body = chat_body(&long, 4);
        body["stream"] = json!(stream);
        let (status, v) = post(&s, "/v1/chat/completions", &body).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["param"], "messages", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        let want = "the model's context is 8192 tokens; shorten the prompt";
        assert!(msg.contains(want), "{msg}");
    }
    assert_eq!(metric(&s, "ngsd_generations_total").await, 0.0);
    assert_eq!(
        metric(
            &s,
            "ngsd_http_requests_total{path=\"/v1/chat/completions\",status=\"400\"}"
        )
        .await,
        2.0
    );
}

/// What happened to a slow connection: when the server closed it, and what it answered.
struct Closed {
    after: Duration,
    answer: String,
}

/// Opens a connection, writes `head` at once, then `trickle` one byte a second, until the
/// server closes the connection or 30 s pass.
fn slow_client(addr: &str, head: &'static [u8], trickle: &'static [u8]) -> Closed {
    let started = Instant::now();
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    conn.write_all(head).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(30) {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        if sent < trickle.len() {
            if conn.write_all(&trickle[sent..=sent]).is_err() {
                break;
            }
            sent += 1;
        }
    }
    Closed {
        after: started.elapsed(),
        answer: String::from_utf8_lossy(&answer).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_disconnected() {
    let s = Server::start(&["--header-timeout-s", "2", "--body-timeout-s", "2"], &[]);
    let addr = s.addr().to_string();
    const HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n";
    const BODY: &[u8] = b"{\"model\": \"smollm2-135m-instruct\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}";
    let mut clients = Vec::new();
    for i in 0..20 {
        let addr = addr.clone();
        let (head, trickle): (&'static [u8], &'static [u8]) = match i % 3 {
            0 => (b"", HEAD),  // headers one byte a second
            1 => (HEAD, BODY), // body one byte a second
            _ => (b"", b""),   // connects and says nothing
        };
        clients.push((
            i % 3,
            std::thread::spawn(move || slow_client(&addr, head, trickle)),
        ));
    }
    // The server still answers others meanwhile.
    let r = client().get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    for (kind, c) in clients {
        let closed = c.join().unwrap();
        assert!(
            closed.after < Duration::from_secs(20),
            "a slow client (kind {kind}) held its connection for {:?}",
            closed.after
        );
        if kind == 1 {
            assert!(
                closed.answer.starts_with("HTTP/1.1 408"),
                "{}",
                closed.answer
            );
            assert!(
                closed.answer.contains("serve-body-timeout-s"),
                "{}",
                closed.answer
            );
        }
    }
}

#[test]
fn a_hidden_state_gate_on_a_model_without_one_is_a_startup_error() {
    let tmp = ngsd_test_support::temp_dir();
    let model = ngsd_test_support::model_without_hidden_state(tmp.path());
    // The model's trained files make `sigmoid` (a hidden-state gate) the default gate.
    let started = ServeProcess::try_start(
        Path::new(env!("CARGO_BIN_EXE_ngsd")),
        &model,
        &["--reflection", "off"],
        &[],
    );
    let err = match started {
        Ok(s) => panic!(
            "the server started at {}: the misconfiguration would reach clients",
            s.base
        ),
        Err(e) => e,
    };
    assert!(
        err.contains("gate `sigmoid` reads the hidden state, but the model has no `last_hidden_state` output; add it with `cargo xtask export-hidden <model.onnx>`"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
