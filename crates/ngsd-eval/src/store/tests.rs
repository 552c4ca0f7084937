//! Resume behaviour of the results store: torn last lines, corrupt middle lines.

use std::io::Write;

use super::*;

fn record(dataset: &str, id: &str) -> Record {
    Record {
        dataset: dataset.to_owned(),
        id: id.to_owned(),
        text: format!("answer to {id}\nwith a newline and \"quotes\""),
        tokens: 5,
        steered_tokens: 1,
        expert_passes: 2,
        time_ms: 12.5,
        finish: Finish::Eos,
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
    assert!(store.is_done("a", "0") && store.is_done("a", "1") && store.is_done("b", "0"));
    assert!(!store.is_done("b", "1"));
    assert!(!store.is_done("a", "2"));
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
