//! Resume behaviour of the results store: torn last lines, corrupt middle lines.

use std::io::Write;

use super::*;
use crate::chat::{Role, Turn};
use crate::suite::Label;

/// The plain single-message sample `id` (its prompt is made from the id).
fn plain(id: &str) -> Sample {
    Sample::plain(id, format!("prompt {id}"), Label::Harmful)
}

fn record(dataset: &str, id: &str) -> Record {
    Record {
        dataset: dataset.to_owned(),
        id: id.to_owned(),
        sample_key: plain(id).key(),
        text: format!("answer to {id}\nwith a newline and \"quotes\""),
        tokens: 5,
        steered_tokens: 1,
        expert_passes: 2,
        time_ms: 12.5,
        finish: Finish::Eos,
        prompt_p: Some(0.25),
    }
}

#[test]
fn torn_last_line_is_cut_and_rerun() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = ResultStore::path_for(dir.path(), "cfg");
    {
        let mut store = ResultStore::open(&path).expect("open");
        store.append(record("a", "0")).expect("append");
        store.append(record("a", "1")).expect("append");
        store.append(record("b", "0")).expect("append");
    }
    // Simulate a crash in the middle of writing a fourth line.
    let full = serde_json::to_string(&record("b", "1")).expect("json");
    let mut f = OpenOptions::new().append(true).open(&path).expect("reopen");
    f.write_all(&full.as_bytes()[..full.len() / 2])
        .expect("torn write");
    drop(f);
    let good_len = std::fs::metadata(&path).expect("meta").len() - (full.len() / 2) as u64;

    let mut store = ResultStore::open(&path).expect("reopen store");
    assert_eq!(store.records().len(), 3);
    assert!(
        store.is_done("a", &plain("0"))
            && store.is_done("a", &plain("1"))
            && store.is_done("b", &plain("0"))
    );
    assert!(!store.is_done("b", &plain("1")));
    assert!(!store.is_done("a", &plain("2")));
    assert_eq!(
        std::fs::metadata(&path).expect("meta").len(),
        good_len,
        "torn bytes are truncated"
    );

    store.append(record("b", "1")).expect("append after repair");
    drop(store);
    let again = ResultStore::read(&path).expect("read");
    assert_eq!(again.len(), 4);
    assert_eq!(again[3], record("b", "1"));
}

#[test]
fn garbage_last_line_with_newline_is_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("x.jsonl");
    let line = serde_json::to_string(&record("a", "0")).expect("json");
    std::fs::write(&path, format!("{line}\n{{\"dataset\": \"a\", \"id\n")).expect("write");
    let store = ResultStore::open(&path).expect("open");
    assert_eq!(store.records().len(), 1);
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        format!("{line}\n")
    );
}

#[test]
fn corrupt_middle_line_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("x.jsonl");
    let line = serde_json::to_string(&record("a", "0")).expect("json");
    std::fs::write(&path, format!("{line}\nnot json\n{line}\n")).expect("write");
    let err = ResultStore::open(&path).expect_err("corrupt").to_string();
    assert!(err.contains("x.jsonl:2: corrupt result line"), "{err}");
    assert!(err.contains("delete the line"), "{err}");
}

#[test]
fn answers_are_matched_on_the_whole_sample() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("k.jsonl");
    let mut store = ResultStore::open(&path).expect("open");
    store.append(record("a", "0")).expect("append");

    // Same dataset, id and last message, but a conversation, a system prompt or raw text:
    // not the stored answer.
    let mut chat = plain("0");
    chat.history = vec![
        Turn {
            role: Role::User,
            content: "Hi".into(),
        },
        Turn {
            role: Role::Assistant,
            content: "Hello!".into(),
        },
    ];
    let mut system = plain("0");
    system.system = Some("Be brief.".into());
    let mut raw = plain("0");
    raw.raw = true;
    let mut other_text = plain("0");
    other_text.text.push('?');
    for s in [&chat, &system, &raw, &other_text] {
        assert!(!store.is_done("a", s), "{s:?} reused a plain answer");
        assert_ne!(s.key(), plain("0").key());
    }
    assert!(store.is_done("a", &plain("0")));

    // A later answer to the conversation is found, and the plain one stays.
    let mut r = record("a", "0");
    r.sample_key = chat.key();
    r.text = "conversation answer".into();
    store.append(r).expect("append");
    assert_eq!(
        store.answer("a", &chat).map(|r| r.text.as_str()),
        Some("conversation answer")
    );
    assert_ne!(
        store.answer("a", &plain("0")).map(|r| r.text.as_str()),
        Some("conversation answer")
    );
}

#[test]
fn lines_without_a_key_count_for_plain_samples_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("old.jsonl");
    let mut old = serde_json::to_value(record("a", "0")).expect("json");
    old.as_object_mut().expect("object").remove("sample-key");
    std::fs::write(&path, format!("{old}\n")).expect("write");
    let store = ResultStore::open(&path).expect("open");
    assert_eq!(store.records()[0].sample_key, "");
    assert!(store.is_done("a", &plain("0")));
    let mut raw = plain("0");
    raw.raw = true;
    assert!(!store.is_done("a", &raw));
}

#[test]
fn sample_keys_are_stable() {
    // The digest is written into result files: it must not change between builds.
    assert_eq!(
        Sample::plain("x", "Name three rivers.", Label::Benign).key(),
        Sample::plain("y", "Name three rivers.", Label::Harmful).key(),
        "the id and label are not part of the key"
    );
    // FNV-1a 128 of `[null,[],false,"Name three rivers."]`, computed separately in Python.
    assert_eq!(
        Sample::plain("x", "Name three rivers.", Label::Benign).key(),
        "0a359a3273da0168ad99303ff78526f1"
    );
}

#[test]
fn prompt_p_round_trips_and_older_lines_have_none() {
    let with = record("a", "0");
    let line = serde_json::to_string(&with).expect("json");
    assert!(line.contains("\"prompt-p\":0.25"), "{line}");
    assert_eq!(serde_json::from_str::<Record>(&line).expect("parse"), with);
    let mut old = serde_json::to_value(&with).expect("json");
    old.as_object_mut().expect("object").remove("prompt-p");
    let read: Record = serde_json::from_value(old).expect("an older line parses");
    assert_eq!(read.prompt_p, None);
    let line = serde_json::to_string(&read).expect("json");
    assert!(!line.contains("prompt-p"), "None is left out: {line}");
}
