//! `ngsd serve` with a prompt of 6,000 tokens: the request's deadline is honoured during the
//! prefill (checked between its chunks), not only once the whole prompt has been read.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::time::{Duration, Instant};

use ngsd_runtime::{ModelPackage, Tokenizer};
use serde_json::json;

mod common;

use common::{MODEL, Server, assert_completion_timed_out, post};

/// The server's deadline for the request (`--timeout-s`).
const DEADLINE: Duration = Duration::from_secs(2);
/// How long after its deadline a timed-out request may still take to answer: the prefill
/// chunk (256 tokens, about 1 s here) under way when the deadline passes, on the fixture's one
/// thread.
const GRACE: Duration = Duration::from_secs(2);

/// Plain text (no chat markup) of at least `tokens` tokens, and its exact count.
fn long_text(tokenizer: &Tokenizer, tokens: usize) -> (String, usize) {
    let paragraph = "The river bends past the mill, the bridge and the old school. \
        Ducks rest on the bank while the ferry waits for the morning crowd. ";
    let per = tokenizer.encode(paragraph).unwrap().len();
    let mut text = paragraph.repeat(tokens / per);
    loop {
        let n = tokenizer.encode(&text).unwrap().len();
        if n >= tokens {
            return (text, n);
        }
        text.push_str(paragraph);
    }
}

#[tokio::test]
async fn a_6000_token_prompt_is_cut_off_at_its_deadline() {
    // The default model (fp32, max_context 8192) with its default gate, expert and reflection.
    let package = ModelPackage::open(&ngsd_test_support::model_dir()).unwrap();
    assert!(package.manifest.max_context > 6100, "the prompt must fit");
    let (prompt, n) = long_text(&Tokenizer::from_package(&package).unwrap(), 6000);
    assert!((6000..6100).contains(&n), "{n} tokens");
    let s = Server::start(&["--timeout-s", &DEADLINE.as_secs().to_string()], &[]);
    let body = json!({"model": MODEL, "prompt": prompt, "max_tokens": 16});

    let sent = Instant::now();
    let (status, v) = post(&s, "/v1/completions", &body).await;
    let took = sent.elapsed();

    // The 504 is sent once the worker reports the generation cancelled: the prefill stopped.
    assert_completion_timed_out(&s, status, &v).await;
    assert!(
        took >= DEADLINE,
        "answered after {took:?}, before the {DEADLINE:?} deadline"
    );
    assert!(
        took <= DEADLINE + GRACE,
        "answered {:?} after the deadline: the prefill ran on past it",
        took - DEADLINE
    );
}
