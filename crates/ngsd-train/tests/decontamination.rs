//! The project's training prompts (models/training/) against the evaluation prompts of
//! crates/ngsd-eval/suites/safety-dev.toml: no prompt is trained on that is evaluated on, and
//! the files written after the first round stay clear of near-duplicates too. The request-shape
//! files (conversations, raw text, long prompts, wrapper templates) are held to the strict rule,
//! the training wrapper templates must not be near-copies of the held-out evaluation templates,
//! and the stress suite's held-out data must not be near-copies of training data.

#![allow(
    clippy::unwrap_used,
    reason = "a test fails loudly on any unexpected error"
)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ngsd_eval::load_wrappers;
use ngsd_train::data::{self, FileSpec};
use serde_json::Value;

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

/// The evaluation prompts, indexed for the two rules.
struct EvalPrompts {
    prompts: Vec<(String, HashSet<String>, HashSet<String>)>,
    exact: HashSet<String>,
    frames: HashSet<&'static str>,
}

impl EvalPrompts {
    /// The prompts of safety-dev.toml, or `None` (with a note) when the public sets are absent.
    fn load() -> Option<EvalPrompts> {
        // The evaluation sets are public data that lives beside the checkout, not in it; a
        // checkout without them (e.g. a bare CI clone) has nothing to compare against.
        let datasets = repo().join("../shared/datasets");
        if !datasets.is_dir() {
            eprintln!(
                "NOTE: {} is missing, so the decontamination check did not run; put the public sets there to run it",
                datasets.display()
            );
            return None;
        }
        let suite = repo().join("crates/ngsd-eval/suites/safety-dev.toml");
        let eval = data::load_suite_datasets(&suite).unwrap_or_else(|e| {
            panic!(
                "cannot read the evaluation prompts of {} ({e}); the public sets belong in ../shared/datasets beside the checkout",
                suite.display()
            )
        });
        let prompts: Vec<(String, HashSet<String>, HashSet<String>)> = eval
            .iter()
            .map(|e| {
                let w = words(&e.text);
                (e.text.clone(), w.iter().cloned().collect(), grams(&w, 5))
            })
            .collect();
        let exact = prompts.iter().map(|(t, _, _)| words(t).join(" ")).collect();
        Some(EvalPrompts {
            prompts,
            exact,
            frames: FRAMES.iter().copied().collect(),
        })
    }

    /// Problems of one training text: an evaluation prompt word for word; sharing 70 % of
    /// its words with one (strict: 50 %); strict only: a shared 5-gram beyond a task frame.
    fn check(&self, name: &str, text: &str, strict: bool, problems: &mut Vec<String>) {
        let w = words(text);
        if self.exact.contains(&w.join(" ")) {
            problems.push(format!("{name}: `{text}` is an evaluation prompt"));
            return;
        }
        let set: HashSet<String> = w.iter().cloned().collect();
        let g5 = grams(&w, 5);
        let limit = if strict { 0.5 } else { 0.7 };
        for (eval, eset, eg5) in &self.prompts {
            let j = jaccard(&set, eset);
            if j >= limit {
                problems.push(format!(
                    "{name}: `{text}` shares {:.0}% of its words with `{eval}`",
                    100.0 * j
                ));
            }
            if strict
                && let Some(g) = g5
                    .intersection(eg5)
                    .find(|g| !self.frames.contains(g.as_str()))
            {
                problems.push(format!(
                    "{name}: `{text}` shares the 5-gram `{g}` with `{eval}`"
                ));
            }
        }
    }
}

#[test]
fn training_prompts_are_not_evaluation_prompts() {
    let Some(eval) = EvalPrompts::load() else {
        return;
    };
    let files = prompt_files();
    assert!(files.len() >= 6, "{files:?}");
    let mut problems = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let strict = CHECKED_STRICTLY.contains(&name.as_str());
        for prompt in load_prompts(file) {
            eval.check(&name, &prompt, strict, &mut problems);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The rows of a JSON Lines file.
fn rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The texts a row of a request-shape file shows the model: every message of a conversation,
/// a raw text, or a long prompt's embedded request (its pasted text is checked by 5-grams with
/// the whole prompt).
fn shape_texts(row: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(Value::Array(messages)) = row.get("messages") {
        for m in messages {
            out.push(m["content"].as_str().unwrap().to_owned());
        }
    }
    for field in ["text", "request", "prompt"] {
        if let Some(Value::String(s)) = row.get(field) {
            out.push(s.clone());
        }
    }
    out
}

/// Template texts with their placeholders taken out, history turns included.
fn template_texts(path: &Path) -> Vec<(String, String)> {
    load_wrappers(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|t| {
            let mut text: Vec<String> = t.history.iter().map(|h| h.content.clone()).collect();
            text.push(t.text.clone());
            let text = text.join("\n");
            let mut bare = text.replace("{request}", " ");
            for k in 1..=t.parts {
                bare = bare.replace(&format!("{{part{k}}}"), " ");
            }
            (t.name, bare)
        })
        .collect()
}

#[test]
fn request_shape_files_are_clear_of_evaluation_prompts() {
    let Some(eval) = EvalPrompts::load() else {
        return;
    };
    let dir = repo().join("models/training");
    let mut problems = Vec::new();
    let mut count = 0;
    for name in ["multiturn.jsonl", "raw.jsonl", "long.jsonl"] {
        for row in rows(&dir.join(name)) {
            for text in shape_texts(&row) {
                eval.check(name, &text, true, &mut problems);
                count += 1;
            }
        }
    }
    for (name, text) in template_texts(&dir.join("wrappers.toml")) {
        eval.check(
            &format!("wrappers.toml `{name}`"),
            &text,
            true,
            &mut problems,
        );
        count += 1;
    }
    assert!(count > 2000, "only {count} texts checked");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Whether two texts are near-duplicates: half or more of their distinct words shared, or a
/// shared word 6-gram.
fn near_duplicate(a: &str, b: &str) -> Option<String> {
    let (wa, wb) = (words(a), words(b));
    let (sa, sb): (HashSet<String>, HashSet<String>) =
        (wa.iter().cloned().collect(), wb.iter().cloned().collect());
    let j = jaccard(&sa, &sb);
    if j >= 0.5 {
        return Some(format!("{:.0}% of words shared", 100.0 * j));
    }
    grams(&wa, 6)
        .intersection(&grams(&wb, 6))
        .next()
        .map(|g| format!("6-gram `{g}` shared"))
}

#[test]
fn training_wrappers_are_not_the_held_out_ones() {
    let suites = repo().join("crates/ngsd-eval/suites");
    let training = template_texts(&repo().join("models/training/wrappers.toml"));
    let mut held_out = Vec::new();
    for file in [
        "stress-wrappers.toml",
        "stress-openers.toml",
        "stress-raw-forms.toml",
    ] {
        held_out.extend(template_texts(&suites.join(file)));
    }
    assert!(training.len() >= 36 && held_out.len() >= 18);
    let mut problems = Vec::new();
    for (t, text) in &training {
        for (h, eval_text) in &held_out {
            if let Some(why) = near_duplicate(text, eval_text) {
                problems.push(format!("training `{t}` and held-out `{h}`: {why}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What a person typed in a row: user messages, a raw text, a prompt or a long prompt's
/// request (system prompts and assistant turns are context, and refusals look alike).
fn user_texts(row: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(Value::Array(messages)) = row.get("messages") {
        for m in messages.iter().filter(|m| m["role"] == "user") {
            out.push(m["content"].as_str().unwrap().to_owned());
        }
    }
    for field in ["text", "request", "prompt"] {
        if let Some(Value::String(s)) = row.get(field) {
            out.push(s.clone());
        }
    }
    out
}

/// A text, its words, their set and their 8-grams.
type Indexed = (String, Vec<String>, HashSet<String>, HashSet<String>);

#[test]
fn stress_data_is_not_training_data() {
    let suites = repo().join("crates/ngsd-eval/suites");
    let dir = repo().join("models/training");
    let mut training = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            training.extend(rows(&path).iter().flat_map(user_texts));
        }
    }
    let index: Vec<Indexed> = training
        .into_iter()
        .map(|t| {
            let w = words(&t);
            let (set, g8) = (w.iter().cloned().collect(), grams(&w, 8));
            (t, w, set, g8)
        })
        .collect();
    let mut problems = Vec::new();
    for file in [
        "stress-benign.jsonl",
        "stress-multiturn.jsonl",
        "stress-raw.jsonl",
    ] {
        for text in rows(&suites.join(file)).iter().flat_map(user_texts) {
            let w = words(&text);
            let (set, g8): (HashSet<String>, _) = (w.iter().cloned().collect(), grams(&w, 8));
            for (t, tw, tset, tg8) in &index {
                // The same words, or (for texts of six words or more) 70 % of the vocabulary
                // or a word 8-gram in common.
                let close = w.len() >= 6 && (jaccard(&set, tset) >= 0.7 || !g8.is_disjoint(tg8));
                if *tw == w || close {
                    problems.push(format!("{file}: `{text}` is close to training text `{t}`"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
