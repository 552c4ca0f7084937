//! Loading a dataset entry of a suite into samples: JSON, JSONL and CSV, with the id range,
//! `where` filter and limit applied.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::suite::{DatasetFormat, DatasetSpec, Label};

/// One prompt to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// The id field rendered as text, or the 0-based row index.
    pub id: String,
    /// The prompt.
    pub text: String,
    /// Harmful or benign (from the suite entry).
    pub label: Label,
    /// The reference answer, when the entry names an answer field.
    pub answer: Option<String>,
}

type Row = Map<String, Value>;

/// Reads `spec.path` and returns its samples in file order, filtered and limited.
pub fn load_dataset(spec: &DatasetSpec) -> Result<Vec<Sample>> {
    let err = |message: String| Error::Dataset {
        dataset: spec.name.clone(),
        path: spec.path.clone(),
        message,
    };
    let rows = read_rows(spec.format, &spec.path).map_err(err)?;
    let mut samples = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        if let Some(f) = &spec.filter {
            let value = row.get(&f.field).ok_or_else(|| {
                err(format!(
                    "row {index} has no field `{}` (used by `where`); {}",
                    f.field,
                    fields(row)
                ))
            })?;
            if render(value) != f.equals {
                continue;
            }
        }
        let id = match &spec.id_field {
            Some(field) => render(row.get(field).ok_or_else(|| {
                err(format!(
                    "row {index} has no id field `{field}`; {}",
                    fields(row)
                ))
            })?),
            None => index.to_string(),
        };
        if let Some(range) = &spec.ids {
            let n: u64 = id.trim().parse().map_err(|_| {
                err(format!("id `{id}` of row {index} is not an integer, so `ids` cannot select it; remove `ids` or pick an integer id field"))
            })?;
            if !range.contains(n) {
                continue;
            }
        }
        let text = match row.get(&spec.text_field) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(err(format!(
                    "text field `{}` of row {index} is {other}, not a string",
                    spec.text_field
                )));
            }
            None => {
                return Err(err(format!(
                    "row {index} has no text field `{}`; {}",
                    spec.text_field,
                    fields(row)
                )));
            }
        };
        let answer = match &spec.answer_field {
            Some(field) => Some(render(row.get(field).ok_or_else(|| {
                err(format!(
                    "row {index} has no answer field `{field}`; {}",
                    fields(row)
                ))
            })?)),
            None => None,
        };
        samples.push(Sample {
            id,
            text,
            label: spec.label,
            answer,
        });
        if spec.limit.is_some_and(|l| samples.len() >= l) {
            break;
        }
    }
    Ok(samples)
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
