//! `ngsd eval` over samples of every shape, end to end with the real model: a conversation's
//! history and a raw text reach the decoder, and each shape's answer is stored on its own,
//! the same whether the samples are decoded together (`--batch`) or one at a time.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("NGSD_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../.cache/models/smollm2-135m-instruct/fp32")
        });
    assert!(
        dir.join("ngsd-model.json").is_file(),
        "the converted default model is missing at {}: run `cargo xtask setup`",
        dir.display()
    );
    dir
}

/// (dataset, id) → (text, sample key) of every answer stored by one configuration.
type Answers = HashMap<(String, String), (String, String)>;

/// Runs the shapes suite on the default fp32 package with `--batch batch`; returns the stored
/// answers of `none`.
fn eval_shapes(batch: usize) -> Answers {
    eval_shapes_on(&model_dir(), batch)
}

/// The same on the package in `dir`.
fn eval_shapes_on(dir: &std::path::Path, batch: usize) -> Answers {
    let suite = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shapes-suite.toml");
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_ngsd"))
        .args(["eval", "--suite", suite.to_str().unwrap(), "--out"])
        .arg(out.path())
        .arg("--model")
        .arg(dir)
        .args(["--batch", &batch.to_string()])
        .env("NGSD_THREADS", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(err.contains("generated 4 answers"), "{err}");

    let stored = std::fs::read_to_string(out.path().join("runs/none.jsonl")).unwrap();
    let mut answers = Answers::new();
    for line in stored.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (
            r["dataset"].as_str().unwrap().to_owned(),
            r["id"].as_str().unwrap().to_owned(),
        );
        let value = (
            r["text"].as_str().unwrap().to_owned(),
            r["sample-key"].as_str().unwrap().to_owned(),
        );
        answers.insert(key, value);
    }
    answers
}

#[test]
fn history_and_raw_text_reach_the_model_batched_or_not() {
    let answers = eval_shapes(8);
    assert_eq!(
        eval_shapes(1),
        answers,
        "decoding samples together changed an answer"
    );
    let get = |d: &str, id: &str| answers[&(d.to_owned(), id.to_owned())].clone();
    let (memory, memory_key) = get("chats", "memory");
    let (alone, alone_key) = get("chats", "alone");
    // Same last message: only the history can make the greedy answers differ (the 135M model
    // does not reliably recall the name, so the check is that the answer changes).
    assert_ne!(memory, alone, "the history was not seen");
    assert_ne!(memory_key, alone_key);
    // Raw text is continued as text; through the chat template the model answers a message.
    let (raw, raw_key) = get("raw", "capital");
    let (chat, chat_key) = get("chat", "capital");
    assert!(raw.contains("Paris"), "{raw:?}");
    assert_ne!(raw, chat, "raw and templated prompts gave the same answer");
    assert_ne!(raw_key, chat_key);
}

#[test]
fn a_fused_package_gives_the_same_answers_in_any_batch() {
    // On the q4 graph each sample decodes in its own slot: whether its batch holds all four
    // samples or two at a time, its answer is the same.
    let q4 = model_dir().with_file_name("q4");
    let answers = eval_shapes_on(&q4, 16);
    assert_eq!(answers.len(), 4);
    assert_eq!(
        eval_shapes_on(&q4, 2),
        answers,
        "the batch changed an answer"
    );
}

#[test]
fn a_probe_reads_the_neuron_its_configuration_names_and_stores_p() {
    // The default model under another name, so that no trained files are found for it: only
    // the neuron the configuration names can drive the probe, and each answer stores its p.
    let renamed = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let path = entry.unwrap().path();
        let to = renamed.path().join(path.file_name().unwrap());
        if path.file_name().unwrap() == "ngsd-model.json" {
            let mut m: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            m["name"] = "renamed-for-a-test".into();
            std::fs::write(to, m.to_string()).unwrap();
        } else {
            std::os::unix::fs::symlink(&path, to).unwrap();
        }
    }
    let suite = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probe-suite.toml");
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_ngsd"))
        .args(["eval", "--suite", suite.to_str().unwrap(), "--out"])
        .arg(out.path())
        .arg("--model")
        .arg(renamed.path())
        .env("NGSD_THREADS", "2")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    let stored = std::fs::read_to_string(out.path().join("runs/named.jsonl")).unwrap();
    assert!(!stored.is_empty());
    for line in stored.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let p = r["prompt-p"].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&p), "no neuron p stored: {line}");
    }
    let report = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    assert!(
        report.contains("| named | sigmoid | none | probe |"),
        "{report}"
    );
}
