//! Jailbreak-wrapper templates: a TOML file of `[[templates]]` (family, name, text with a
//! `{request}` placeholder, or `{part1}` … `{partN}` for payload splitting, and optional
//! history turns put before the request), validated with line/column errors, and applied to a
//! dataset's samples when it is loaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::chat::{Role, Turn};
use crate::error::{Error, Result};
use crate::suite::Locator;

/// How a dataset's wrapper templates meet its samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WrapMode {
    /// Every template on every sample: samples × templates, sample by sample (default).
    #[default]
    All,
    /// One template per sample, in turn: sample `i` gets template `i mod n`.
    Cycle,
}

/// One wrapper template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The family it belongs to (e.g. `persona`).
    pub family: String,
    /// Its name, unique in its file; wrapped sample ids end in `@<name>`.
    pub name: String,
    /// The message answered, with its placeholders.
    pub text: String,
    /// Turns put before the sample's own history (user first, alternating, ending with the
    /// assistant); their contents may hold placeholders too.
    pub history: Vec<Turn>,
    /// 0 when the template holds `{request}`; otherwise N, the template holding `{part1}` …
    /// `{partN}` (across its text and history).
    pub parts: usize,
}

/// A dataset's validated `wrap` entry: the chosen templates, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrap {
    /// The wrapper file.
    pub file: PathBuf,
    /// How templates meet samples.
    pub mode: WrapMode,
    /// The templates of the chosen families.
    pub templates: Vec<Template>,
}

impl Template {
    /// The text with the request put in: `{request}` replaced by it, or `{partK}` by the
    /// K-th of N runs of its words (split at spaces into runs as even as possible, the earlier
    /// runs one word longer when they cannot all be equal; a run is empty when the request
    /// has fewer words than parts). Text that is not a placeholder is kept as it is.
    pub fn apply(&self, request: &str) -> String {
        fill(&self.text, request, &self.split(request))
    }

    /// The template's history turns with the request put in, as [`Template::apply`] does.
    pub fn apply_history(&self, request: &str) -> Vec<Turn> {
        let parts = self.split(request);
        self.history
            .iter()
            .map(|t| Turn {
                role: t.role,
                content: fill(&t.content, request, &parts),
            })
            .collect()
    }

    fn split(&self, request: &str) -> Vec<String> {
        if self.parts > 0 {
            split_words(request, self.parts)
        } else {
            Vec::new()
        }
    }
}

/// `text` with its placeholders replaced in one pass (so a request holding `{part1}` is not
/// filled again).
fn fill(text: &str, request: &str, parts: &[String]) -> String {
    let mut out = String::with_capacity(text.len() + request.len());
    let mut rest = text;
    while let Some((before, name, after)) = next_placeholder(rest) {
        out.push_str(before);
        match placeholder(name) {
            Some(Placeholder::Request) => out.push_str(request),
            Some(Placeholder::Part(k)) if k >= 1 && k <= parts.len() => {
                out.push_str(&parts[k - 1]);
            }
            _ => {
                out.push('{');
                out.push_str(name);
                out.push('}');
            }
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `request` split into `n` runs of whole words.
fn split_words(request: &str, n: usize) -> Vec<String> {
    let words: Vec<&str> = request.split_whitespace().collect();
    let (base, extra) = (words.len() / n, words.len() % n);
    let mut at = 0;
    (0..n)
        .map(|k| {
            let len = base + usize::from(k < extra);
            let run = words[at..at + len].join(" ");
            at += len;
            run
        })
        .collect()
}

enum Placeholder {
    Request,
    Part(usize),
}

fn placeholder(name: &str) -> Option<Placeholder> {
    if name == "request" {
        return Some(Placeholder::Request);
    }
    let k = name.strip_prefix("part")?;
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_digit()) || k.starts_with('0') {
        return None;
    }
    k.parse().ok().map(Placeholder::Part)
}

/// The next `{name}` in `text` whose name is lowercase ASCII letters, digits or `_` (other
/// braces, as in code or JSON, are text): (text before, name, text after).
fn next_placeholder(text: &str) -> Option<(&str, &str, &str)> {
    let mut from = 0;
    while let Some(open) = text[from..].find('{').map(|i| i + from) {
        let inner = &text[open + 1..];
        let end = inner
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(inner.len());
        if end > 0 && inner[end..].starts_with('}') {
            return Some((&text[..open], &inner[..end], &inner[end + 1..]));
        }
        from = open + 1;
    }
    None
}

/// Checks a template's placeholders; returns its part count (0 for `{request}`).
fn check_placeholders(text: &str) -> std::result::Result<usize, String> {
    let (mut request, mut parts) = (false, Vec::new());
    let mut rest = text;
    while let Some((_, name, after)) = next_placeholder(rest) {
        match placeholder(name) {
            Some(Placeholder::Request) => request = true,
            Some(Placeholder::Part(k)) => parts.push(k),
            None => {
                return Err(format!(
                    "unknown placeholder `{{{name}}}`; the placeholders are {{request}}, or {{part1}} … {{partN}} for a request split into N parts"
                ));
            }
        }
        rest = after;
    }
    parts.sort_unstable();
    parts.dedup();
    match (request, parts.len()) {
        (false, 0) => Err("the template has no `{request}` placeholder (nor `{part1}` … `{partN}`); put `{request}` where the request goes".into()),
        (true, 0) => Ok(0),
        (true, _) => Err("the template holds both `{request}` and `{partK}` placeholders; use `{request}` alone, or only parts for a split request".into()),
        (false, 1) => Err("a split request needs at least `{part1}` and `{part2}`; use `{request}` for an unsplit one".into()),
        (false, n) => match (1..=n).find(|k| !parts.contains(k)) {
            Some(k) => Err(format!(
                "the parts must run from `{{part1}}` to `{{part{n}}}` with none missing, but `{{part{k}}}` is missing"
            )),
            None => Ok(n),
        },
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    #[serde(default)]
    templates: Vec<RawTemplate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTemplate {
    family: Spanned<String>,
    name: Spanned<String>,
    text: Spanned<String>,
    history: Option<Spanned<Vec<Turn>>>,
}

/// Reads and validates a wrapper file: TOML with `[[templates]]` entries of
/// - `family`: the family's name (ASCII letters, digits, `-`, `_`, `.`);
/// - `name`: the template's name, unique in the file (same characters); wrapped sample ids
///   end in `@<name>`;
/// - `text`: the wrapper, with `{request}` where the request goes (once or more), or, for a
///   request split into N parts (payload splitting), `{part1}` … `{partN}` (N ≥ 2, none
///   missing, no `{request}`): the request's words are cut into N runs, in order, as even as
///   possible (see [`Template::apply`]). Any other `{name}` of lowercase letters, digits and
///   `_` is an error (a misspelt placeholder); other braces (code, JSON) are plain text;
/// - `history` (optional): turns put before the sample's own history, e.g.
///   `[{ role = "user", content = "..." }, { role = "assistant", content = "..." }]`: user
///   first, alternating, ending with the assistant (the wrapped text is the next user
///   message). Their contents may hold the placeholders too (a request split across turns);
///   the placeholder rules apply to the text and history together.
///
/// Errors name the file's line and column.
pub fn load_wrappers(path: &Path) -> Result<Vec<Template>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io("reading wrapper file", path, e))?;
    let loc = Locator { text: &text, path };
    let raw: RawFile = loc.parse_toml()?;
    if raw.templates.is_empty() {
        return Err(loc.invalid(
            &(0..0),
            "templates".into(),
            "the file holds no `[[templates]]` entries; add some with `family`, `name` and `text`"
                .into(),
        ));
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.templates.len());
    for (i, t) in raw.templates.into_iter().enumerate() {
        for (key, value) in [("family", &t.family), ("name", &t.name)] {
            let v = value.get_ref();
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(loc.invalid(
                    &value.span(),
                    format!("templates[{i}].{key}"),
                    format!("`{v}` must be non-empty ASCII letters, digits, `-`, `_` or `.` (it goes into sample ids)"),
                ));
            }
        }
        let line = loc.line_col(&t.name.span()).0;
        if let Some(first) = names.insert(t.name.get_ref().clone(), line) {
            return Err(loc.invalid(
                &t.name.span(),
                format!("templates[{i}].name"),
                format!(
                    "duplicate template name `{}` (first on line {first}); names must be unique in the file",
                    t.name.get_ref()
                ),
            ));
        }
        let history = match t.history {
            Some(h) => {
                check_history(h.get_ref())
                    .map_err(|m| loc.invalid(&h.span(), format!("templates[{i}].history"), m))?;
                h.into_inner()
            }
            None => Vec::new(),
        };
        let all_text = history
            .iter()
            .map(|turn| turn.content.as_str())
            .chain([t.text.get_ref().as_str()])
            .collect::<Vec<_>>()
            .join("\n");
        let parts = check_placeholders(&all_text)
            .map_err(|m| loc.invalid(&t.text.span(), format!("templates[{i}].text"), m))?;
        out.push(Template {
            family: t.family.into_inner(),
            name: t.name.into_inner(),
            text: t.text.into_inner(),
            history,
            parts,
        });
    }
    Ok(out)
}

/// A template's history runs user, assistant, user, …, assistant (the wrapped text is the
/// next user message).
fn check_history(history: &[Turn]) -> std::result::Result<(), String> {
    for (k, turn) in history.iter().enumerate() {
        let expected = if k % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        if turn.role != expected {
            return Err(format!(
                "turn {k} is from the {}, but the {} was expected: history turns alternate user, assistant, …",
                turn.role.as_str(),
                expected.as_str()
            ));
        }
    }
    if history.len() % 2 == 1 {
        return Err(format!(
            "the last history turn (turn {}) is from the user; end the history with the assistant's turn, the wrapped text is the next user message",
            history.len() - 1
        ));
    }
    Ok(())
}

/// The family names of `templates`, in first-seen order.
pub(crate) fn families(templates: &[Template]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for t in templates {
        if !out.contains(&t.family.as_str()) {
            out.push(&t.family);
        }
    }
    out
}

#[cfg(test)]
mod tests;
