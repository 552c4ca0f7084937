//! The `ngsd` binary on the synthetic qwen2 model (a tiny random-weight GGUF converted to fp32
//! and q4 by `cargo xtask test`; see xtask/src/synthetic.rs): package checks and a chat
//! generation with a multi-byte UTF-8 prompt. The text is gibberish, so the checks are about
//! behaviour: the run succeeds, the prompt went through the GGUF's ChatML template exactly as
//! Python renders and tokenizes it, and the streamed pieces are the answer's decoded text.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::path::{Path, PathBuf};
use std::process::Output;

use ngsd_runtime::Tokenizer;

/// The fixture folder written by `cargo xtask test` (or `NGSD_TEST_SYNTHETIC`).
fn fixture() -> PathBuf {
    let dir = std::env::var_os("NGSD_TEST_SYNTHETIC")
        .map(PathBuf::from)
        .unwrap_or_else(|| ngsd_test_support::repo_root().join("target/synthetic-qwen2"));
    assert!(
        dir.join("fp32/ngsd-model.json").is_file() && dir.join("q4/ngsd-model.json").is_file(),
        "the synthetic qwen2 model is missing at {}: run `cargo xtask test` (it writes it first)",
        dir.display()
    );
    dir
}

fn ngsd(args: &[&str]) -> Output {
    ngsd_test_support::run_ngsd(env!("CARGO_BIN_EXE_ngsd"), args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn model_info_verifies_both_synthetic_packages() {
    for variant in ["fp32", "q4"] {
        let dir = fixture().join(variant);
        let out = ngsd(&["model", "info", dir.to_str().unwrap(), "--verify"]);
        assert!(out.status.success(), "{variant}: {}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        for needle in [
            "architecture: qwen2".to_string(),
            format!("weights:      {variant}"),
            "vocab size:   303 (tokenizer: 303)".to_string(),
            "eos ids:      302 \"<|im_end|>\", 300 \"<|endoftext|>\"".to_string(),
            "chat template: yes".to_string(),
            "hidden_states.1".to_string(),
            "model.onnx               ok".to_string(),
        ] {
            assert!(
                text.contains(&needle),
                "{variant}: no {needle:?} in:\n{text}"
            );
        }
        assert!(!text.contains("MISMATCH"), "{variant}:\n{text}");
    }
}

#[test]
fn generate_streams_utf8_through_the_gguf_chat_template() {
    let fixture = fixture();
    let prompt = std::fs::read_to_string(fixture.join("prompt.txt")).unwrap();
    let ids: Vec<u32> =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("prompt-ids.json")).unwrap())
            .unwrap();
    for variant in ["fp32", "q4"] {
        let dir = fixture.join(variant);
        let tmp = ngsd_test_support::temp_dir();
        let trace = tmp.path().join("trace.jsonl");
        // the defaults of a model without trained files: lif gate, prompt expert, generative
        // reflection (a generation of its own through the same template); sampled, so that
        // random bytes form characters across tokens
        let out = ngsd(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "-p",
            &prompt,
            "-n",
            "64",
            "--temperature",
            "1",
            "--seed",
            "7",
            "--stats",
            "--trace",
            trace.to_str().unwrap(),
        ]);
        let err = stderr(&out);
        assert!(out.status.success(), "{variant}: {err}");
        assert!(!err.contains("panicked"), "{variant}: {err}");
        let text = String::from_utf8(out.stdout).expect("the streamed answer is UTF-8");
        // Python's jinja2 rendering of the GGUF's template, tokenized by Python: same length
        let prompt_tokens = format!("[{} prompt tokens, ", ids.len());
        assert!(
            err.contains(&prompt_tokens),
            "{variant}: no {prompt_tokens:?} in {err}"
        );
        let answer = text
            .strip_suffix('\n')
            .expect("the answer ends with a newline");
        assert_eq!(
            answer,
            decoded_answer(&dir, &trace),
            "{variant}: the streamed pieces differ from the decoded answer"
        );
    }
}

/// The trace's token ids decoded in one piece, without the replacement characters of a
/// character the token budget cut (the stream drops those at its end). Asserts that some
/// character of the answer spans several tokens, so the stream had to hold bytes back.
fn decoded_answer(model: &Path, trace: &Path) -> String {
    let text = std::fs::read_to_string(trace).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (summary, steps) = lines.split_last().expect("a trace has a summary line");
    assert_eq!(summary["tokens"], steps.len(), "{text}");
    let ids: Vec<u32> = steps
        .iter()
        .map(|l| u32::try_from(l["token"].as_u64().unwrap()).unwrap())
        .collect();
    let tokenizer = Tokenizer::from_file(&model.join("tokenizer.json")).unwrap();
    let decoded = tokenizer.decode(&ids).unwrap();
    let pieces: Vec<String> = ids
        .iter()
        .map(|&id| tokenizer.decode(&[id]).unwrap())
        .collect();
    let split = decoded
        .chars()
        .find(|&c| !c.is_ascii() && c != '\u{FFFD}' && !pieces.iter().any(|p| p.contains(c)));
    assert!(
        split.is_some(),
        "no character spans tokens in {decoded:?} (from {}): pick another --seed",
        model.display()
    );
    decoded.trim_end_matches('\u{FFFD}').to_string()
}
