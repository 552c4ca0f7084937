//! Resumable results: one JSONL file per configuration, one line per (dataset, sample id,
//! sample key), appended and flushed as each answer is made. Reopening skips what is done and
//! drops a half-written last line left by a crash.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataset::Sample;
use crate::error::{Error, Result};

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Finish {
    /// End-of-sequence token.
    Eos,
    /// `max-new-tokens` reached.
    Length,
    /// A stop string matched.
    Stop,
    /// The decoder's refusal early stop fired.
    EarlyStop,
    /// Something else (a timeout, ...).
    Other,
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Record {
    /// Dataset name.
    pub dataset: String,
    /// Sample id within the dataset.
    pub id: String,
    /// [`Sample::key`] of the prompt answered (system, history, raw flag, text). Empty in
    /// lines written before keys existed: those count as answers to plain single messages.
    #[serde(default)]
    pub sample_key: String,
    /// Generated text.
    pub text: String,
    /// Generated tokens.
    pub tokens: usize,
    /// Tokens chosen under steering (gate fired).
    pub steered_tokens: usize,
    /// Expert forward passes.
    pub expert_passes: usize,
    /// Wall time of the whole generation, in milliseconds.
    pub time_ms: f64,
    /// Why it stopped.
    pub finish: Finish,
    /// The gate neuron's p on the prompt (probe reflection only). Absent in older lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_p: Option<f32>,
}

/// The results file of one configuration, open for appending.
#[derive(Debug)]
pub struct ResultStore {
    path: PathBuf,
    file: File,
    records: Vec<Record>,
    index: AnswerIndex,
}

/// Finds the stored answer of a sample: the record with its dataset, id and key, else (for a
/// plain single message only) a record of that dataset and id written without a key. When a
/// sample was answered more than once, the latest record wins.
#[derive(Debug, Default)]
pub struct AnswerIndex {
    by_key: HashMap<(String, String, String), usize>,
}

impl AnswerIndex {
    /// Indexes `records` (positions into that slice).
    pub fn new(records: &[Record]) -> AnswerIndex {
        let mut index = AnswerIndex::default();
        for (i, r) in records.iter().enumerate() {
            index.insert(r, i);
        }
        index
    }

    fn insert(&mut self, r: &Record, at: usize) {
        self.by_key
            .insert((r.dataset.clone(), r.id.clone(), r.sample_key.clone()), at);
    }

    /// The position of `sample`'s answer in `dataset`, if stored.
    pub fn find(&self, dataset: &str, sample: &Sample) -> Option<usize> {
        let mut k = (dataset.to_owned(), sample.id.clone(), sample.key());
        if let Some(&at) = self.by_key.get(&k) {
            return Some(at);
        }
        if !sample.is_plain() {
            return None;
        }
        k.2.clear();
        self.by_key.get(&k).copied()
    }
}

impl ResultStore {
    /// `<dir>/<config>.jsonl`.
    pub fn path_for(dir: &Path, config: &str) -> PathBuf {
        dir.join(format!("{config}.jsonl"))
    }

    /// Opens (creating it and its folder if needed) a results file. A torn last line (no
    /// newline, or not valid JSON) is cut off; a corrupt line before the last is an error.
    pub fn open(path: impl Into<PathBuf>) -> Result<ResultStore> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        }
        let (records, good_len) = match std::fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), 0),
            Err(e) => return Err(Error::io("reading results", &path, e)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("opening results", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading results", &path, e))?
            .len();
        if len > good_len {
            file.set_len(good_len)
                .map_err(|e| Error::io("truncating torn line of", &path, e))?;
        }
        let index = AnswerIndex::new(&records);
        Ok(ResultStore {
            path,
            file,
            records,
            index,
        })
    }

    /// Reads a results file without opening it for writing (a torn last line is ignored).
    pub fn read(path: &Path) -> Result<Vec<Record>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(parse(path, &bytes)?.0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("reading results", path, e)),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `sample` of `dataset` already has a result (see [`AnswerIndex::find`]).
    pub fn is_done(&self, dataset: &str, sample: &Sample) -> bool {
        self.index.find(dataset, sample).is_some()
    }

    /// The stored answer of `sample` of `dataset`, if any.
    pub fn answer(&self, dataset: &str, sample: &Sample) -> Option<&Record> {
        self.index
            .find(dataset, sample)
            .and_then(|i| self.records.get(i))
    }

    /// Results so far, in file order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Appends one result as a line and flushes it.
    pub fn append(&mut self, record: Record) -> Result<()> {
        let mut line =
            serde_json::to_string(&record).expect("a record holds only strings, numbers and enums");
        line.push('\n');
        // One write call per line, so a crash leaves at most the last line torn.
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::io("appending to", &self.path, e))?;
        self.index.insert(&record, self.records.len());
        self.records.push(record);
        Ok(())
    }
}

/// Parses complete lines; returns the records and the byte length of the good prefix.
fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<Record>, u64)> {
    let mut records = Vec::new();
    let mut good = 0usize;
    let mut start = 0usize;
    let mut line_no = 0usize;
    while start < bytes.len() {
        line_no += 1;
        let Some(nl) = bytes[start..].iter().position(|&b| b == b'\n') else {
            break; // torn: no newline
        };
        let end = start + nl;
        let line = &bytes[start..end];
        let is_last = end + 1 >= bytes.len();
        if line.iter().all(u8::is_ascii_whitespace) {
            start = end + 1;
            good = start;
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => {
                records.push(r);
                start = end + 1;
                good = start;
            }
            Err(_) if is_last => break,
            Err(e) => {
                return Err(Error::Store {
                    path: path.to_owned(),
                    line: line_no,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok((records, good as u64))
}

#[cfg(test)]
mod tests;
