//! Training prompts: read from files listed in a training-set TOML (the `[[datasets]]` schema
//! of evaluation suites, labels included) or named one by one on the command line.

use std::path::{Path, PathBuf};

use ngsd_eval::{DatasetFormat, DatasetSpec, Label, Suite, WhereFilter, load_dataset};
use ngsd_runtime::Message;

use crate::error::{Error, Result};

/// One labelled prompt, in any request shape: a single message, a turn of a longer chat
/// (with its history and system prompt), or raw text for completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The dataset it came from (names the per-pair report rows).
    pub set: String,
    /// The message being answered (the whole text when `raw`).
    pub text: String,
    /// True for harmful.
    pub harmful: bool,
    /// Earlier turns of the chat, oldest first.
    pub history: Vec<Message>,
    /// The chat's system prompt (the template's default when `None`).
    pub system: Option<String>,
    /// Raw text for completion: no chat template.
    pub raw: bool,
}

impl Example {
    /// A single-message chat example.
    pub fn new(set: &str, text: &str, harmful: bool) -> Example {
        Example {
            set: set.to_owned(),
            text: text.to_owned(),
            harmful,
            history: Vec::new(),
            system: None,
            raw: false,
        }
    }
}

/// Candidate text fields, tried in order when a file is named without `--text-field`.
pub const TEXT_FIELDS: &[&str] = &["prompt", "goal", "Goal", "text", "question", "instruction"];

/// A data file named on the command line.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// The file (JSON array, JSON Lines or CSV, by extension).
    pub path: PathBuf,
    /// Harmful or benign.
    pub harmful: bool,
    /// The text field; guessed from [`TEXT_FIELDS`] when absent.
    pub text_field: Option<String>,
    /// Keep only rows where this field equals this value.
    pub filter: Option<(String, String)>,
}

/// Reads every dataset of a training-set TOML file.
pub fn load_set_file(path: &Path) -> Result<Vec<Example>> {
    let suite = Suite::load(path, &[]).map_err(Error::Data)?;
    let mut out = Vec::new();
    for d in &suite.datasets {
        out.extend(load_spec(d)?);
    }
    Ok(out)
}

/// Reads the labelled `[[datasets]]` of a suite or training-set file, whatever its
/// configurations name (their gates are not resolved: only the prompts are wanted).
pub fn load_suite_datasets(path: &Path) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("cannot read {}: {e}", path.display())))?;
    // Every gate the file names counts as known, so its configurations validate.
    let gates = gate_names(&text);
    let known: Vec<&str> = gates.iter().map(String::as_str).collect();
    let suite = Suite::parse(&text, path, &known).map_err(Error::Data)?;
    let mut out = Vec::new();
    for d in &suite.datasets {
        out.extend(load_spec(d)?);
    }
    Ok(out)
}

/// The gate names of a suite's `[[configs]]` (`gate`) and `[[matrix]]` (`gates`) entries.
fn gate_names(text: &str) -> Vec<String> {
    let Ok(v) = text.parse::<toml::Table>() else {
        return Vec::new(); // the suite parser reports the syntax error with its position
    };
    let strings = |x: Option<&toml::Value>| -> Vec<String> {
        match x {
            Some(toml::Value::String(s)) => vec![s.clone()],
            Some(toml::Value::Array(a)) => a
                .iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut out = Vec::new();
    for (table, key) in [("configs", "gate"), ("matrix", "gates")] {
        if let Some(rows) = v.get(table).and_then(toml::Value::as_array) {
            for row in rows {
                out.extend(strings(row.get(key)));
            }
        }
    }
    out
}

/// Reads one file named on the command line.
pub fn load_file(spec: &FileSpec) -> Result<Vec<Example>> {
    let format = match spec.path.extension().and_then(|e| e.to_str()) {
        Some("json") => DatasetFormat::Json,
        Some("jsonl") => DatasetFormat::Jsonl,
        Some("csv") => DatasetFormat::Csv,
        _ => {
            return Err(Error::Input(format!(
                "{}: cannot tell the format from the extension; name a .json, .jsonl or .csv file",
                spec.path.display()
            )));
        }
    };
    if !spec.path.is_file() {
        return Err(Error::Input(format!(
            "{}: no such file",
            spec.path.display()
        )));
    }
    let name = spec
        .path
        .file_stem()
        .map_or_else(|| "data".into(), |s| s.to_string_lossy().into_owned());
    let label = if spec.harmful {
        Label::Harmful
    } else {
        Label::Benign
    };
    let mut d = DatasetSpec::new(name, spec.path.clone(), format, String::new(), label);
    d.filter = spec.filter.as_ref().map(|(field, value)| WhereFilter {
        field: field.clone(),
        equals: value.clone(),
    });
    if let Some(f) = &spec.text_field {
        d.text_field = f.clone();
        return load_spec(&d);
    }
    let mut last_err = None;
    for field in TEXT_FIELDS {
        d.text_field = (*field).to_owned();
        match load_spec(&d) {
            Ok(v) => return Ok(v),
            Err(e) => last_err = Some(e),
        }
    }
    Err(Error::Input(format!(
        "{}: none of the usual text fields ({}) works; name it with --text-field ({})",
        spec.path.display(),
        TEXT_FIELDS.join(", "),
        last_err.map(|e| e.to_string()).unwrap_or_default()
    )))
}

fn load_spec(d: &DatasetSpec) -> Result<Vec<Example>> {
    let samples = load_dataset(d).map_err(Error::Data)?;
    if samples.is_empty() {
        return Err(Error::Input(format!(
            "dataset `{}` ({}) has no rows after its filters",
            d.name,
            d.path.display()
        )));
    }
    Ok(samples
        .into_iter()
        .map(|s| Example::new(&d.name, &s.text, d.label == Label::Harmful))
        .collect())
}

/// Parses `FIELD=VALUE`.
pub fn parse_filter(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((f, v)) if !f.is_empty() => Ok((f.to_owned(), v.to_owned())),
        _ => Err(Error::Input(format!(
            "invalid --where `{s}`: expected FIELD=VALUE, e.g. label=0"
        ))),
    }
}

/// Checks that both classes are present.
pub fn check_classes(examples: &[Example]) -> Result<(usize, usize)> {
    let harmful = examples.iter().filter(|e| e.harmful).count();
    let benign = examples.len() - harmful;
    if harmful < 5 || benign < 5 {
        return Err(Error::Input(format!(
            "training needs at least 5 harmful and 5 benign prompts; got {harmful} harmful and {benign} benign"
        )));
    }
    Ok((harmful, benign))
}
