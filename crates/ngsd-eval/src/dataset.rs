//! Loading a dataset entry of a suite into samples: JSON, JSONL and CSV, with the id range,
//! `where` filter, conversation or raw shape, wrapper templates and limit applied.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chat::{Turn, kind, parse_messages};
use crate::error::{Error, Result};
use crate::suite::{DatasetFormat, DatasetSpec, Label};
use crate::wrap::{Wrap, WrapMode};

/// One prompt to run: a single message, the last turn of a conversation, or raw text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// The id field rendered as text, or the 0-based row index; wrapped samples append
    /// `@<template name>`.
    pub id: String,
    /// The message being answered (the last user message of a conversation), or the raw
    /// text when `raw`; wrapper templates already applied.
    pub text: String,
    /// Earlier turns of the conversation, oldest first: user, assistant, user, … (empty for
    /// a single message). The last one is the assistant's when there are any.
    pub history: Vec<Turn>,
    /// The system prompt (a conversation's leading system message, or the suite entry's
    /// `system`); `None` leaves the chat template's default.
    pub system: Option<String>,
    /// Feed `text` as is, without the chat template (`history` is empty, `system` is `None`).
    pub raw: bool,
    /// Harmful or benign (from the suite entry).
    pub label: Label,
    /// The reference answer, when the entry names an answer field.
    pub answer: Option<String>,
    /// The wrapper template applied to `text`, if any (its name).
    pub wrapper: Option<String>,
}

impl Sample {
    /// A single user message with the template's default system prompt.
    pub fn plain(id: impl Into<String>, text: impl Into<String>, label: Label) -> Sample {
        Sample {
            id: id.into(),
            text: text.into(),
            history: Vec::new(),
            system: None,
            raw: false,
            label,
            answer: None,
            wrapper: None,
        }
    }

    /// Whether this is a single chat message with the default system prompt (the only shape
    /// results stored before sample keys existed can belong to).
    pub fn is_plain(&self) -> bool {
        self.history.is_empty() && self.system.is_none() && !self.raw
    }

    /// A stable digest of everything the model is shown (system, history, raw flag, text):
    /// stored answers are matched on it, so a conversation never reuses the answer to its
    /// last message alone. 32 hex digits (128-bit FNV-1a over a canonical JSON form).
    pub fn key(&self) -> String {
        let canonical = serde_json::to_string(&(&self.system, &self.history, self.raw, &self.text))
            .expect("strings, booleans and enums always serialize");
        format!("{:032x}", fnv1a_128(canonical.as_bytes()))
    }
}

fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

type Row = Map<String, Value>;

/// Reads `spec.path` and returns its samples in file order: rows filtered by `where` and
/// `ids`, shaped (message, conversation or raw text), wrapped, then limited.
pub fn load_dataset(spec: &DatasetSpec) -> Result<Vec<Sample>> {
    let err = |message: String| Error::Dataset {
        dataset: spec.name.clone(),
        path: spec.path.clone(),
        message,
    };
    let rows = read_rows(spec.format, &spec.path).map_err(err)?;
    let mut samples = Vec::new();
    let mut kept = 0usize;
    for (index, row) in rows.iter().enumerate() {
        let Some(sample) = row_sample(spec, index, row).map_err(err)? else {
            continue;
        };
        match &spec.wrap {
            Some(w) => samples.extend(wrapped(w, sample, kept)),
            None => samples.push(sample),
        }
        kept += 1;
        if spec.limit.is_some_and(|l| samples.len() >= l) {
            break;
        }
    }
    if let Some(l) = spec.limit {
        samples.truncate(l);
    }
    Ok(samples)
}

/// The sample of one row, or `None` when the filters drop it.
fn row_sample(
    spec: &DatasetSpec,
    index: usize,
    row: &Row,
) -> std::result::Result<Option<Sample>, String> {
    if let Some(f) = &spec.filter {
        let value = row.get(&f.field).ok_or_else(|| {
            format!(
                "row {index} has no field `{}` (used by `where`); {}",
                f.field,
                fields(row)
            )
        })?;
        if render(value) != f.equals {
            return Ok(None);
        }
    }
    let id = match &spec.id_field {
        Some(field) => render(
            row.get(field)
                .ok_or_else(|| format!("row {index} has no id field `{field}`; {}", fields(row)))?,
        ),
        None => index.to_string(),
    };
    if let Some(range) = &spec.ids {
        let n: u64 = id.trim().parse().map_err(|_| {
            format!("id `{id}` of row {index} is not an integer, so `ids` cannot select it; remove `ids` or pick an integer id field")
        })?;
        if !range.contains(n) {
            return Ok(None);
        }
    }
    let answer = match &spec.answer_field {
        Some(field) => Some(render(row.get(field).ok_or_else(|| {
            format!("row {index} has no answer field `{field}`; {}", fields(row))
        })?)),
        None => None,
    };
    let mut sample = shaped(spec, index, row)?;
    sample.id = id;
    sample.answer = answer;
    Ok(Some(sample))
}

/// The prompt of a row: its text field, or its conversation, with the entry's system prompt
/// and raw flag.
fn shaped(spec: &DatasetSpec, index: usize, row: &Row) -> std::result::Result<Sample, String> {
    let (field, what) = match &spec.messages_field {
        Some(m) => (m, "messages"),
        None => (&spec.text_field, "text"),
    };
    let value = row
        .get(field)
        .ok_or_else(|| format!("row {index} has no {what} field `{field}`; {}", fields(row)))?;
    let mut sample = Sample::plain(String::new(), String::new(), spec.label);
    if spec.messages_field.is_some() {
        let chat = parse_messages(value)
            .map_err(|m| format!("row {index}: messages field `{field}` {m}"))?;
        if chat.system.is_some() && spec.system.is_some() {
            return Err(format!(
                "row {index} has its own system message and the suite entry sets `system`; remove one"
            ));
        }
        sample.text = chat.last;
        sample.history = chat.history;
        sample.system = chat.system.or_else(|| spec.system.clone());
    } else {
        let Value::String(text) = value else {
            return Err(format!(
                "text field `{field}` of row {index} is {}, not a string",
                kind(value)
            ));
        };
        sample.text = text.clone();
        sample.system = spec.system.clone();
        sample.raw = spec.raw;
    }
    Ok(sample)
}

/// The wrapped copies of the `kept`-th sample the filters let through: one per template, or
/// one with the template whose turn it is.
fn wrapped(wrap: &Wrap, sample: Sample, kept: usize) -> Vec<Sample> {
    let chosen: Vec<_> = match wrap.mode {
        WrapMode::All => wrap.templates.iter().collect(),
        WrapMode::Cycle => wrap
            .templates
            .get(kept % wrap.templates.len().max(1))
            .into_iter()
            .collect(),
    };
    chosen
        .into_iter()
        .map(|t| {
            let mut history = t.apply_history(&sample.text);
            history.extend(sample.history.iter().cloned());
            Sample {
                id: format!("{}@{}", sample.id, t.name),
                text: t.apply(&sample.text),
                history,
                wrapper: Some(t.name.clone()),
                ..sample.clone()
            }
        })
        .collect()
}

/// Field values as text: strings as they are, numbers and booleans as JSON writes them.
fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn fields(row: &Row) -> String {
    let names: Vec<&str> = row.keys().map(String::as_str).collect();
    format!("its fields are: {}", names.join(", "))
}

fn read_rows(format: DatasetFormat, path: &Path) -> std::result::Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    match format {
        DatasetFormat::Json => {
            let v: Value = serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?;
            let items = match v {
                Value::Array(items) => items,
                Value::Object(obj) => {
                    let mut arrays: Vec<(String, Value)> =
                        obj.into_iter().filter(|(_, v)| v.is_array()).collect();
                    match arrays.pop() {
                        Some((_, Value::Array(items))) if arrays.is_empty() => items,
                        _ => {
                            return Err("expected an array of objects or an object with exactly one array field".to_owned());
                        }
                    }
                }
                _ => return Err("expected an array of objects at the top level".to_owned()),
            };
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Object(row) => Ok(row),
                    other => Err(format!("item {i} is {other}, not an object")),
                })
                .collect()
        }
        DatasetFormat::Jsonl => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| match serde_json::from_str(l) {
                Ok(Value::Object(row)) => Ok(row),
                Ok(_) => Err(format!("line {} is not a JSON object", i + 1)),
                Err(e) => Err(format!("line {}: invalid JSON: {e}", i + 1)),
            })
            .collect(),
        DatasetFormat::Csv => {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            let headers = reader
                .headers()
                .map_err(|e| format!("invalid CSV header: {e}"))?
                .clone();
            let mut rows = Vec::new();
            for (i, record) in reader.records().enumerate() {
                let record = record.map_err(|e| format!("invalid CSV: {e}"))?;
                if record.len() != headers.len() {
                    return Err(format!(
                        "CSV row {} has {} fields, the header has {}",
                        i + 1,
                        record.len(),
                        headers.len()
                    ));
                }
                let row: Row = headers
                    .iter()
                    .zip(record.iter())
                    .map(|(h, v)| (h.to_owned(), Value::String(v.to_owned())))
                    .collect();
                rows.push(row);
            }
            Ok(rows)
        }
    }
}
