//! A generation that panics or fails inside the server, through a real server (this crate's
//! `run_until` on an ephemeral port, the real model, reqwest): the client gets a generic 500
//! with an error id and none of the internal text, and a panicked engine is rebuilt, never
//! reused. The faults come from in-process gates written here (plugins catch their own
//! panics, so the binary cannot be made to panic from outside).

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ngsd_decode::{DecodeConfig, Models, PromptExpert, Reflection};
use ngsd_gate::{Decision, FailurePolicy, Gate, Needs, StepInput};
use ngsd_runtime::{ChatTemplate, Model, ModelOptions, ModelPackage, Tokenizer};
use ngsd_server::{Engine, ServerConfig};
use serde_json::{Value, json};

const SECRET: &str = "secret detail /srv/private/weights.bin";

/// A gate that panics on its first decision if `panics`, else fails every decision.
struct FaultyGate {
    name: String,
    panics: bool,
}

impl Gate for FaultyGate {
    fn name(&self) -> &str {
        &self.name
    }
    fn needs(&self) -> Needs {
        Needs::NONE
    }
    fn reset(&mut self) {}
    fn decide(&mut self, _input: &StepInput<'_>) -> ngsd_gate::Result<Decision> {
        if self.panics {
            panic!("{SECRET}");
        }
        Err(ngsd_gate::Error::Failed(SECRET.to_string()))
    }
}

fn models() -> Models {
    let package = ModelPackage::open(&ngsd_test_support::model_dir()).unwrap();
    let tokenizer = Tokenizer::from_package(&package).unwrap();
    let template = ChatTemplate::from_package(&package).unwrap();
    let options = ModelOptions {
        intra_threads: 1,
        ..Default::default()
    };
    let base = Model::load(package, &options).unwrap();
    let expert = Box::new(PromptExpert::new(&base, None).unwrap());
    Models {
        base,
        tokenizer,
        template,
        expert,
    }
}

/// Starts a server whose engines are counted in `built`: engine number `n` (from 1) has the
/// gate `faulty`, named `faulty#n`. With `panic_first` the first engine's gate panics;
/// without it every gate fails and the failure policy aborts.
fn start(panic_first: bool, built: Arc<AtomicUsize>) -> String {
    let factory = move |_worker: usize| {
        let n = built.fetch_add(1, Ordering::SeqCst) + 1;
        let gate = FaultyGate {
            name: format!("faulty#{n}"),
            panics: panic_first && n == 1,
        };
        let mut gates: BTreeMap<String, Box<dyn Gate>> = BTreeMap::new();
        gates.insert("faulty".into(), Box::new(gate));
        let decode = DecodeConfig {
            failure_policy: if panic_first {
                FailurePolicy::FailClosed
            } else {
                FailurePolicy::Abort
            },
            ..DecodeConfig::default()
        };
        Ok(Engine {
            models: models(),
            gates,
            default_gate: "faulty".into(),
            reflection: Reflection::Fixed(0.5),
            decode,
        })
    };
    let mut config = ServerConfig::new("m");
    config.addr = "127.0.0.1:0".parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        ngsd_server::run_until(
            config,
            Arc::new(factory),
            move |addr| tx.send(addr).unwrap(),
            std::future::pending(),
        )
        .unwrap();
    });
    let addr = rx.recv_timeout(Duration::from_secs(300)).unwrap();
    format!("http://{addr}/v1/chat/completions")
}

async fn ask(url: &str) -> (u16, Value) {
    let body =
        json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn assert_generic_500(status: u16, v: &Value) {
    assert_eq!(status, 500, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("internal server error (id "),
        "{message}"
    );
    assert!(
        !v.to_string().contains("secret"),
        "internal text reached the client: {v}"
    );
    assert_eq!(v["error"]["type"], "server_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicked_engine_is_rebuilt_and_its_message_stays_in_the_log() {
    let built = Arc::new(AtomicUsize::new(0));
    let url = start(true, Arc::clone(&built));
    let (status, v) = ask(&url).await;
    assert_generic_500(status, &v);
    assert_eq!(
        built.load(Ordering::SeqCst),
        2,
        "the worker built a new engine"
    );
    let (status, v) = ask(&url).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["ngsd"]["gate"], "faulty#2",
        "the answer came from the new engine"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_generation_answers_a_generic_500() {
    let built = Arc::new(AtomicUsize::new(0));
    let url = start(false, Arc::clone(&built));
    let (status, v) = ask(&url).await;
    assert_generic_500(status, &v);
    assert_eq!(
        built.load(Ordering::SeqCst),
        1,
        "an error is not a panic: the engine is kept"
    );
}
