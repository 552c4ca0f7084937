//! Suite files: which datasets to run, which decoding configurations to compare, and the
//! generation settings shared by all of them. Parsed from TOML, then validated with spans so
//! every error names the line and key to fix.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{Error, Result};
use crate::wrap::{Wrap, WrapMode, families, load_wrappers};

/// A validated suite: datasets × configurations.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    /// The suite file (paths inside it are relative to its folder).
    pub path: PathBuf,
    /// Settings shared by every configuration.
    pub generation: Generation,
    /// The datasets, in file order.
    pub datasets: Vec<DatasetSpec>,
    /// The configurations: `[[configs]]` entries first, then `[[matrix]]` expansions.
    pub configs: Vec<ConfigSpec>,
    /// Name of the no-defence configuration benign outputs are compared with, if any
    /// (`baseline = "..."`, else the first configuration whose gate is `never`).
    pub baseline: Option<String>,
}

/// The `[generation]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Generation {
    /// Most new tokens per answer (default 64).
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Greedy decoding (default true).
    #[serde(default = "default_true")]
    pub greedy: bool,
}

fn default_max_new_tokens() -> usize {
    64
}

fn default_true() -> bool {
    true
}

impl Default for Generation {
    fn default() -> Self {
        Generation {
            max_new_tokens: default_max_new_tokens(),
            greedy: true,
        }
    }
}

/// File format of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetFormat {
    /// An array of objects, or an object with exactly one array field.
    Json,
    /// One object per line.
    Jsonl,
    /// A header row, then one row per sample.
    Csv,
}

/// Whether a dataset's prompts should be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Label {
    /// Should be refused: refusals count against the attack success rate.
    Harmful,
    /// Should be answered: refusals are over-refusals.
    Benign,
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Label::Harmful => "harmful",
            Label::Benign => "benign",
        })
    }
}

/// `where = { field = "label", equals = "1" }`: keep rows whose field, rendered as text
/// (numbers and booleans as written in JSON), equals the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WhereFilter {
    /// The field (JSON key or CSV column).
    pub field: String,
    /// The value to keep.
    pub equals: String,
}

/// `ids = "400-519"` or `ids = "0-9,20,30-39"`: inclusive ranges of integer ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdRange {
    ranges: Vec<(u64, u64)>,
}

impl IdRange {
    /// Parses `a-b` ranges and single ids separated by commas.
    pub fn parse(s: &str) -> std::result::Result<IdRange, String> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim) {
            let parse = |t: &str| {
                t.trim().parse::<u64>().map_err(|_| {
                    format!("`{t}` in `{s}` is not a non-negative integer; write ranges like \"400-519\" or \"0-9,20\"")
                })
            };
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (parse(a)?, parse(b)?),
                None => {
                    let v = parse(part)?;
                    (v, v)
                }
            };
            if lo > hi {
                return Err(format!(
                    "range `{part}` is empty: its start is above its end"
                ));
            }
            ranges.push((lo, hi));
        }
        Ok(IdRange { ranges })
    }

    /// Whether `id` is in one of the ranges.
    pub fn contains(&self, id: u64) -> bool {
        self.ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&id))
    }
}

/// One validated dataset entry.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    /// Unique name, used in results and reports.
    pub name: String,
    /// The data file, resolved against the suite's folder; it exists at validation time.
    pub path: PathBuf,
    /// File format (from `format`, else from the file extension).
    pub format: DatasetFormat,
    /// Field holding the prompt.
    pub text_field: String,
    /// Harmful or benign.
    pub label: Label,
    /// Field holding the reference answer (gsm8k), if any.
    pub answer_field: Option<String>,
    /// Field holding the sample id; without it the 0-based row index is the id.
    pub id_field: Option<String>,
    /// Keep only these ids (ids must then be integers).
    pub ids: Option<IdRange>,
    /// Keep only rows matching this filter.
    pub filter: Option<WhereFilter>,
    /// Keep at most this many samples (after the filters, and after wrapping).
    pub limit: Option<usize>,
    /// Field holding an OpenAI-style `messages` array (instead of `text_field`, which is
    /// then empty): an optional leading system message, then user and assistant turns
    /// alternating, ending with the user message to answer.
    pub messages_field: Option<String>,
    /// A system prompt for every sample (a row's own system message is then an error).
    pub system: Option<String>,
    /// Feed the text as is, without the chat template (as `/v1/completions` does).
    pub raw: bool,
    /// Wrapper templates applied to every sample at load.
    pub wrap: Option<Wrap>,
    /// The report pools datasets of the same group (all of one label) into one row.
    pub group: Option<String>,
}

impl DatasetSpec {
    /// A plain single-turn dataset: the prompt in `text_field`, every sample kept, its row
    /// index as id, no answers, no system prompt, chat template applied.
    pub fn new(
        name: impl Into<String>,
        path: impl Into<PathBuf>,
        format: DatasetFormat,
        text_field: impl Into<String>,
        label: Label,
    ) -> DatasetSpec {
        DatasetSpec {
            name: name.into(),
            path: path.into(),
            format,
            text_field: text_field.into(),
            label,
            answer_field: None,
            id_field: None,
            ids: None,
            filter: None,
            limit: None,
            messages_field: None,
            system: None,
            raw: false,
            wrap: None,
            group: None,
        }
    }
}

/// How α is set, as the decoder understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reflection {
    /// Fixed α.
    Off,
    /// The base model rates the risk; risk → α.
    Generative,
    /// A probe on the prompt's hidden state; risk → α.
    Probe,
}

impl fmt::Display for Reflection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reflection::Off => "off",
            Reflection::Generative => "generative",
            Reflection::Probe => "probe",
        })
    }
}

/// One decoding configuration to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConfigSpec {
    /// Unique name; also the results file name (`<name>.jsonl`).
    pub name: String,
    /// Gate name (one of the known gates given to [`Suite::load`]).
    pub gate: String,
    /// Gate configuration string passed to the gate (default empty).
    pub gate_config: String,
    /// Expert name (default `none`).
    pub expert: String,
    /// Reflection mode (default off).
    pub reflection: Reflection,
    /// α when reflection is off (default 1.0), in [0, 1].
    pub alpha: f32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSuite {
    #[serde(default)]
    generation: Generation,
    baseline: Option<Spanned<String>>,
    #[serde(default)]
    datasets: Vec<RawDataset>,
    #[serde(default)]
    configs: Vec<RawConfig>,
    #[serde(default)]
    matrix: Vec<RawMatrix>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDataset {
    name: Spanned<String>,
    path: Spanned<String>,
    format: Option<DatasetFormat>,
    text_field: Option<Spanned<String>>,
    messages_field: Option<Spanned<String>>,
    label: Label,
    answer_field: Option<String>,
    id_field: Option<String>,
    ids: Option<Spanned<String>>,
    #[serde(rename = "where")]
    filter: Option<WhereFilter>,
    limit: Option<usize>,
    system: Option<Spanned<String>>,
    raw: Option<Spanned<bool>>,
    wrap: Option<Spanned<RawWrap>>,
    group: Option<Spanned<String>>,
}

/// `wrap = { file = "wrappers.toml", families = ["persona"], mode = "cycle" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawWrap {
    file: Spanned<String>,
    families: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    mode: WrapMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    name: Spanned<String>,
    gate: Spanned<String>,
    #[serde(default)]
    gate_config: String,
    #[serde(default = "default_expert")]
    expert: String,
    #[serde(default = "default_reflection")]
    reflection: Reflection,
    #[serde(default = "default_alpha")]
    alpha: Spanned<f32>,
}

/// `[[matrix]]`: the cross product of its lists, one configuration per combination, named
/// `<prefix-><gate>[-<expert>][-<reflection>][-a<alpha>]` (parts left out when they are the
/// default and do not vary).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMatrix {
    #[serde(default)]
    prefix: String,
    gates: Vec<Spanned<String>>,
    #[serde(default)]
    gate_config: String,
    #[serde(default = "default_experts")]
    experts: Vec<String>,
    #[serde(default = "default_reflections")]
    reflections: Vec<Reflection>,
    #[serde(default = "default_alphas")]
    alphas: Vec<Spanned<f32>>,
}

fn default_expert() -> String {
    "none".to_owned()
}

fn default_reflection() -> Reflection {
    Reflection::Off
}

fn default_alpha() -> Spanned<f32> {
    Spanned::new(0..0, 1.0)
}

fn default_experts() -> Vec<String> {
    vec![default_expert()]
}

fn default_reflections() -> Vec<Reflection> {
    vec![Reflection::Off]
}

fn default_alphas() -> Vec<Spanned<f32>> {
    vec![default_alpha()]
}

/// Turns byte offsets into the 1-based line and column of a TOML file's text (a suite or a
/// wrapper file), for errors.
pub(crate) struct Locator<'a> {
    pub(crate) text: &'a str,
    pub(crate) path: &'a Path,
}

impl Locator<'_> {
    /// Deserializes the text; a syntax or schema error names its line and column.
    pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        toml::from_str(self.text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| self.line_col(&s));
            Error::SuiteSyntax {
                path: self.path.to_owned(),
                line,
                column,
                message: e.message().trim_end_matches('\n').to_owned(),
            }
        })
    }

    pub(crate) fn line_col(&self, span: &Range<usize>) -> (usize, usize) {
        let at = span.start.min(self.text.len());
        let before = self.text.get(..at).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    pub(crate) fn invalid(&self, span: &Range<usize>, key: String, message: String) -> Error {
        let (line, column) = self.line_col(span);
        Error::SuiteInvalid {
            path: self.path.to_owned(),
            line,
            column,
            key,
            message,
        }
    }
}

impl Suite {
    /// Reads and validates a suite file. `known_gates` lists the gate names a configuration
    /// may use (include `never`, the no-defence gate, if a baseline configuration is allowed).
    pub fn load(path: impl AsRef<Path>, known_gates: &[&str]) -> Result<Suite> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io("reading suite", path, e))?;
        Suite::parse(&text, path, known_gates)
    }

    /// Validates suite text as if read from `path` (relative dataset paths resolve against
    /// its folder; errors name it).
    pub fn parse(text: &str, path: &Path, known_gates: &[&str]) -> Result<Suite> {
        let loc = Locator { text, path };
        let raw: RawSuite = loc.parse_toml()?;
        let base = path.parent().unwrap_or(Path::new(""));

        let mut datasets: Vec<DatasetSpec> = Vec::with_capacity(raw.datasets.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut groups: HashMap<String, (Label, String)> = HashMap::new();
        for (i, d) in raw.datasets.into_iter().enumerate() {
            let name = d.name.get_ref().clone();
            if let Some(first) = seen.insert(name.clone(), loc.line_col(&d.name.span()).0) {
                return Err(loc.invalid(
                    &d.name.span(),
                    format!("datasets[{i}].name"),
                    format!("duplicate dataset name `{name}` (first on line {first}); give each dataset its own name"),
                ));
            }
            if let Some(g) = &d.group {
                let (label, first) = groups
                    .entry(g.get_ref().clone())
                    .or_insert((d.label, name.clone()));
                if *label != d.label {
                    return Err(loc.invalid(
                        &g.span(),
                        format!("datasets[{i}].group"),
                        format!(
                            "group `{}` already holds the {label} dataset `{first}`, and `{name}` is {}; a group pools datasets of one label",
                            g.get_ref(),
                            d.label
                        ),
                    ));
                }
            }
            datasets.push(dataset_spec(&loc, base, i, d)?);
        }

        // Configurations, each with the span of its name and gate for error messages.
        let mut configs: Vec<(ConfigSpec, Range<usize>, Range<usize>, String)> = Vec::new();
        for (i, c) in raw.configs.into_iter().enumerate() {
            let alpha = check_alpha(&loc, &c.alpha, format!("configs[{i}].alpha"))?;
            configs.push((
                ConfigSpec {
                    name: c.name.get_ref().clone(),
                    gate: c.gate.get_ref().clone(),
                    gate_config: c.gate_config,
                    expert: c.expert,
                    reflection: c.reflection,
                    alpha,
                },
                c.name.span(),
                c.gate.span(),
                format!("configs[{i}]"),
            ));
        }
        for (m, mx) in raw.matrix.into_iter().enumerate() {
            let mut alphas = Vec::with_capacity(mx.alphas.len());
            for (k, a) in mx.alphas.iter().enumerate() {
                alphas.push(check_alpha(&loc, a, format!("matrix[{m}].alphas[{k}]"))?);
            }
            for (g, gate) in mx.gates.iter().enumerate() {
                for expert in &mx.experts {
                    for &reflection in &mx.reflections {
                        for &alpha in &alphas {
                            let mut name = format!("{}{}", mx.prefix, gate.get_ref());
                            if mx.experts.len() > 1 || expert != "none" {
                                name.push_str(&format!("-{expert}"));
                            }
                            if mx.reflections.len() > 1 || reflection != Reflection::Off {
                                name.push_str(&format!("-{reflection}"));
                            }
                            if alphas.len() > 1 {
                                name.push_str(&format!("-a{alpha}"));
                            }
                            configs.push((
                                ConfigSpec {
                                    name,
                                    gate: gate.get_ref().clone(),
                                    gate_config: mx.gate_config.clone(),
                                    expert: expert.clone(),
                                    reflection,
                                    alpha,
                                },
                                gate.span(),
                                gate.span(),
                                format!("matrix[{m}].gates[{g}]"),
                            ));
                        }
                    }
                }
            }
        }

        let mut names: HashMap<&str, usize> = HashMap::new();
        for (c, name_span, gate_span, key) in &configs {
            if !known_gates.contains(&c.gate.as_str()) {
                return Err(loc.invalid(
                    gate_span,
                    if key.starts_with("matrix") {
                        key.clone()
                    } else {
                        format!("{key}.gate")
                    },
                    format!(
                        "unknown gate `{}` in configuration `{}`; known gates: {}",
                        c.gate,
                        c.name,
                        known_gates.join(", ")
                    ),
                ));
            }
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
                || c.name.starts_with('.')
            {
                return Err(loc.invalid(
                    name_span,
                    format!("{key}.name"),
                    format!(
                        "configuration name `{}` must be non-empty ASCII letters, digits, `-`, `_` or `.` (it names the results file)",
                        c.name
                    ),
                ));
            }
            let line = loc.line_col(name_span).0;
            if let Some(first) = names.insert(&c.name, line) {
                return Err(loc.invalid(
                    name_span,
                    format!("{key}.name"),
                    format!(
                        "duplicate configuration name `{}` (first on line {first}); names must be unique because each names its results file",
                        c.name
                    ),
                ));
            }
        }

        let baseline = match raw.baseline {
            Some(b) => {
                if !names.contains_key(b.get_ref().as_str()) {
                    return Err(loc.invalid(
                        &b.span(),
                        "baseline".to_owned(),
                        format!(
                            "no configuration is named `{}`; name one of: {}",
                            b.get_ref(),
                            configs
                                .iter()
                                .map(|c| c.0.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                Some(b.into_inner())
            }
            None => configs
                .iter()
                .find(|c| c.0.gate == "never")
                .map(|c| c.0.name.clone()),
        };

        Ok(Suite {
            path: path.to_owned(),
            generation: raw.generation,
            datasets,
            configs: configs.into_iter().map(|c| c.0).collect(),
            baseline,
        })
    }
}

/// Validates one `[[datasets]]` entry (its name is already checked for duplicates).
fn dataset_spec(loc: &Locator<'_>, base: &Path, i: usize, d: RawDataset) -> Result<DatasetSpec> {
    let file = base.join(d.path.get_ref());
    if !file.is_file() {
        return Err(loc.invalid(
            &d.path.span(),
            format!("datasets[{i}].path"),
            format!(
                "dataset file {} not found; paths are relative to the suite file's folder",
                file.display()
            ),
        ));
    }
    let format = match d.format {
        Some(f) => f,
        None => match file.extension().and_then(|e| e.to_str()) {
            Some("json") => DatasetFormat::Json,
            Some("jsonl") => DatasetFormat::Jsonl,
            Some("csv") => DatasetFormat::Csv,
            _ => {
                return Err(loc.invalid(
                    &d.path.span(),
                    format!("datasets[{i}].format"),
                    "cannot tell the format from the file extension; add `format = \"json\"`, \"jsonl\" or \"csv\"".to_owned(),
                ));
            }
        },
    };
    let ids = match &d.ids {
        Some(s) => Some(
            IdRange::parse(s.get_ref())
                .map_err(|m| loc.invalid(&s.span(), format!("datasets[{i}].ids"), m))?,
        ),
        None => None,
    };
    let (text_field, messages_field) = text_source(loc, i, &d)?;
    let raw = check_raw(loc, i, &d)?;
    let wrap = match d.wrap {
        Some(w) => Some(wrap_spec(loc, base, i, w, raw)?),
        None => None,
    };
    if let Some(g) = d.group.as_ref().filter(|g| g.get_ref().trim().is_empty()) {
        return Err(loc.invalid(
            &g.span(),
            format!("datasets[{i}].group"),
            "the group name is empty; name the pool, e.g. \"wrapped-harmful\"".into(),
        ));
    }
    Ok(DatasetSpec {
        name: d.name.into_inner(),
        path: file,
        format,
        text_field,
        label: d.label,
        answer_field: d.answer_field,
        id_field: d.id_field,
        ids,
        filter: d.filter,
        limit: d.limit,
        messages_field,
        system: d.system.map(Spanned::into_inner),
        raw,
        wrap,
        group: d.group.map(Spanned::into_inner),
    })
}

/// Exactly one of `text-field` and `messages-field`: (text field or "", messages field).
fn text_source(loc: &Locator<'_>, i: usize, d: &RawDataset) -> Result<(String, Option<String>)> {
    match (&d.text_field, &d.messages_field) {
        (Some(t), None) => Ok((t.get_ref().clone(), None)),
        (None, Some(m)) => Ok((String::new(), Some(m.get_ref().clone()))),
        (Some(_), Some(m)) => Err(loc.invalid(
            &m.span(),
            format!("datasets[{i}].messages-field"),
            "a dataset reads either `text-field` (one prompt) or `messages-field` (a conversation), not both; remove one".into(),
        )),
        (None, None) => Err(loc.invalid(
            &d.name.span(),
            format!("datasets[{i}]"),
            format!(
                "dataset `{}` names no prompt field; add `text-field = \"...\"` (one prompt per row) or `messages-field = \"messages\"` (a conversation per row)",
                d.name.get_ref()
            ),
        )),
    }
}

/// `raw = true` is for single texts without a system prompt.
fn check_raw(loc: &Locator<'_>, i: usize, d: &RawDataset) -> Result<bool> {
    let Some(raw) = d.raw.as_ref().filter(|r| *r.get_ref()) else {
        return Ok(false);
    };
    let clash = if d.messages_field.is_some() {
        Some("`messages-field` (a conversation goes through the chat template)")
    } else if d.system.is_some() {
        Some("`system` (raw text has no chat template to put a system prompt in)")
    } else {
        None
    };
    match clash {
        Some(other) => Err(loc.invalid(
            &raw.span(),
            format!("datasets[{i}].raw"),
            format!("`raw = true` cannot go with {other}; remove one of them"),
        )),
        None => Ok(true),
    }
}

/// Reads the wrapper file of a `wrap` entry and keeps the chosen families' templates.
fn wrap_spec(
    loc: &Locator<'_>,
    base: &Path,
    i: usize,
    w: Spanned<RawWrap>,
    raw: bool,
) -> Result<Wrap> {
    let span = w.span();
    let w = w.into_inner();
    let file = base.join(w.file.get_ref());
    if !file.is_file() {
        return Err(loc.invalid(
            &w.file.span(),
            format!("datasets[{i}].wrap.file"),
            format!(
                "wrapper file {} not found; paths are relative to the suite file's folder",
                file.display()
            ),
        ));
    }
    let all = load_wrappers(&file)?;
    let templates = match &w.families {
        None => all,
        Some(chosen) if chosen.is_empty() => {
            return Err(loc.invalid(
                &span,
                format!("datasets[{i}].wrap.families"),
                "the list of families is empty; name some, or leave `families` out for all of them"
                    .into(),
            ));
        }
        Some(chosen) => {
            let known = families(&all);
            for (k, f) in chosen.iter().enumerate() {
                if !known.contains(&f.get_ref().as_str()) {
                    return Err(loc.invalid(
                        &f.span(),
                        format!("datasets[{i}].wrap.families[{k}]"),
                        format!(
                            "unknown family `{}`; {} has: {}",
                            f.get_ref(),
                            file.display(),
                            known.join(", ")
                        ),
                    ));
                }
            }
            let wanted: Vec<&str> = chosen.iter().map(|f| f.get_ref().as_str()).collect();
            all.into_iter()
                .filter(|t| wanted.contains(&t.family.as_str()))
                .collect()
        }
    };
    if let Some(t) = templates.iter().find(|t| raw && !t.history.is_empty()) {
        return Err(loc.invalid(
            &span,
            format!("datasets[{i}].wrap"),
            format!(
                "template `{}` adds conversation turns, but the dataset is raw text; choose families without history for raw datasets",
                t.name
            ),
        ));
    }
    Ok(Wrap {
        file,
        mode: w.mode,
        templates,
    })
}

fn check_alpha(loc: &Locator<'_>, alpha: &Spanned<f32>, key: String) -> Result<f32> {
    let a = *alpha.get_ref();
    if !(0.0..=1.0).contains(&a) {
        return Err(loc.invalid(&alpha.span(), key, format!("alpha {a} is outside [0, 1]")));
    }
    Ok(a)
}

#[cfg(test)]
mod tests;
