//! The project's training prompts (models/training/*.jsonl) against the evaluation prompts of
//! crates/ngsd-eval/suites/safety-dev.toml: no prompt is trained on that is evaluated on, and
//! the files written after the first round stay clear of near-duplicates too.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ngsd_train::data::{self, FileSpec};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn grams(w: &[String], n: usize) -> HashSet<String> {
    w.windows(n).map(|g| g.join(" ")).collect()
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
    let inter = a.intersection(b).count();
    let union = a.len() + b.len() - inter;
    inter as f64 / union.max(1) as f64
}

/// Every `models/training/*.jsonl` file whose rows have a `prompt` field.
fn prompt_files() -> Vec<PathBuf> {
    let dir = repo().join("models/training");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let first: serde_json::Value =
                serde_json::from_str(text.lines().next().unwrap_or("{}")).unwrap();
            first.get("prompt").is_some()
        })
        .collect();
    files.sort();
    files
}

fn load_prompts(path: &Path) -> Vec<String> {
    data::load_file(&FileSpec {
        path: path.to_owned(),
        harmful: true,
        text_field: Some("prompt".into()),
        filter: None,
    })
    .unwrap()
    .into_iter()
    .map(|e| e.text)
    .collect()
}

/// Word 5-grams that are only a task's frame ("write a blog post about"), shared by
/// unrelated requests; any other shared 5-gram counts as overlap.
const FRAMES: &[&str] = &[
    "a blog post about the",
    "a blog post explaining why",
    "a guide on how to",
    "a step by step guide",
    "a tutorial on how to",
    "give step by step instructions",
    "step by step instructions for",
    "what's the best way to",
    "write a blog post about",
    "write a blog post explaining",
    "write a blog post that",
    "write a guide on how",
    "write a python script that",
    "write a social media post",
    "write a speech for a",
    "write a step by step",
    "write a tutorial on how",
    "write an article about how",
];

/// Files written after the first round, held to the stricter rule.
const CHECKED_STRICTLY: &[&str] = &[
    "matched_harmful.jsonl",
    "matched_benign.jsonl",
    "benign_tasks.jsonl",
];

#[test]
fn training_prompts_are_not_evaluation_prompts() {
    // The evaluation sets are public data that lives beside the checkout, not in it; a
    // checkout without them (e.g. a bare CI clone) has nothing to compare against.
    let datasets = repo().join("../shared/datasets");
    if !datasets.is_dir() {
        eprintln!(
            "NOTE: {} is missing, so the decontamination check did not run; put the public sets there to run it",
            datasets.display()
        );
        return;
    }
    let suite = repo().join("crates/ngsd-eval/suites/safety-dev.toml");
    let eval = data::load_suite_datasets(&suite).unwrap_or_else(|e| {
        panic!(
            "cannot read the evaluation prompts of {} ({e}); the public sets belong in ../shared/datasets beside the checkout",
            suite.display()
        )
    });
    let eval: Vec<(String, HashSet<String>, HashSet<String>)> = eval
        .iter()
        .map(|e| {
            let w = words(&e.text);
            (e.text.clone(), w.iter().cloned().collect(), grams(&w, 5))
        })
        .collect();
    let eval_text: HashSet<String> = eval.iter().map(|(t, _, _)| words(t).join(" ")).collect();
    let frames: HashSet<&str> = FRAMES.iter().copied().collect();

    let files = prompt_files();
    assert!(files.len() >= 6, "{files:?}");
    let mut problems = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let strict = CHECKED_STRICTLY.contains(&name.as_str());
        for prompt in load_prompts(file) {
            let w = words(&prompt);
            if eval_text.contains(&w.join(" ")) {
                problems.push(format!("{name}: `{prompt}` is an evaluation prompt"));
                continue;
            }
            let set: HashSet<String> = w.iter().cloned().collect();
            let g5 = grams(&w, 5);
            for (text, eset, eg5) in &eval {
                let j = jaccard(&set, eset);
                // Every file: no near-copy. New files: no half-shared vocabulary and no shared
                // 5-gram beyond a task frame.
                let limit = if strict { 0.5 } else { 0.7 };
                if j >= limit {
                    problems.push(format!(
                        "{name}: `{prompt}` shares {:.0}% of its words with `{text}`",
                        100.0 * j
                    ));
                }
                if strict
                    && let Some(g) = g5.intersection(eg5).find(|g| !frames.contains(g.as_str()))
                {
                    problems.push(format!(
                        "{name}: `{prompt}` shares the 5-gram `{g}` with `{text}`"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
