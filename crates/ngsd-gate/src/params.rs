//! The gate parameter format: `key = value` lines, parsed by each gate for itself.
//!
//! ```text
//! # comments start with '#'
//! tau = 8
//! threshold = 1.0
//! weights = "models/gate/sigmoid.safetensors"
//! ```
//!
//! - One `key = value` per line; `;` also separates items, so a command line can say
//!   `--gate-params "tau = 8; threshold = 1.2"`.
//! - Keys are kebab-case; `_` is accepted for `-` (`soft_reset` is `soft-reset`).
//! - Values are bare words/numbers or double-quoted strings (`\"` and `\\` escapes).
//! - This is a subset of TOML, so a `[gate.params]` table in a TOML config file can be
//!   passed through line by line.
//! - Unknown keys and repeated keys are errors. The only exception is the host keys in
//!   [`HOST_KEYS`], which the host may append for any gate ([`HostContext`]); a gate that
//!   does not use them ignores them.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::{Error, Result};

/// Keys the host may add to any gate's parameters; gates that do not read them ignore them.
pub const HOST_KEYS: [&str; 2] = ["model-sha256", "hidden-size"];

/// Facts about the loaded model that the host passes to every gate, as parameter lines,
/// so gates with model-specific weights can refuse weights made for another model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostContext {
    /// The base model's hidden size.
    pub hidden_size: Option<usize>,
    /// The SHA-256 (lowercase hex) of the base model file, from its manifest.
    pub model_sha256: Option<String>,
}

impl HostContext {
    /// The user's parameter text followed by the host lines (`hidden-size`, `model-sha256`).
    pub fn append_to(&self, params: &str) -> String {
        let mut out = params.to_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        if let Some(h) = self.hidden_size {
            let _ = writeln!(out, "hidden-size = {h}");
        }
        if let Some(sha) = &self.model_sha256 {
            let _ = writeln!(out, "model-sha256 = \"{}\"", escape(sha));
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[derive(Debug)]
struct Entry {
    key: String,
    value: String,
    used: bool,
}

/// Parsed gate parameters. Read each key with a typed getter, then call
/// [`finish`](Params::finish) to reject keys the gate did not ask for.
#[derive(Debug)]
pub struct Params {
    entries: Vec<Entry>,
    asked: Vec<&'static str>,
}

impl Params {
    /// Parse parameter text (see the module docs for the format).
    pub fn parse(text: &str) -> Result<Params> {
        let mut entries: Vec<Entry> = Vec::new();
        for (index, item) in split_items(text).into_iter().enumerate() {
            let line = index + 1;
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let Some((key, value)) = item.split_once('=') else {
                return Err(Error::Syntax {
                    line,
                    message: format!("`{item}` has no `=`"),
                });
            };
            let key = normalize_key(key.trim());
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(Error::Syntax {
                    line,
                    message: format!("bad key `{}`", key.trim()),
                });
            }
            let value = unquote(value.trim()).map_err(|message| Error::Syntax { line, message })?;
            if entries.iter().any(|e| e.key == key) {
                return Err(Error::Syntax {
                    line,
                    message: format!("`{key}` is given twice"),
                });
            }
            entries.push(Entry {
                key,
                value,
                used: false,
            });
        }
        Ok(Params {
            entries,
            asked: Vec::new(),
        })
    }

    fn raw(&mut self, key: &'static str) -> Option<&str> {
        if !self.asked.contains(&key) {
            self.asked.push(key);
        }
        let entry = self.entries.iter_mut().find(|e| e.key == key)?;
        entry.used = true;
        Some(entry.value.as_str())
    }

    /// A string value, if given.
    pub fn string(&mut self, key: &'static str) -> Option<String> {
        self.raw(key).map(str::to_owned)
    }

    /// A value parsed with `FromStr`, if given.
    pub fn parsed<T: FromStr>(&mut self, key: &'static str) -> Result<Option<T>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v.parse::<T>().map(Some).map_err(|_| {
                Error::invalid_param(
                    key,
                    format!("`{v}` is not a valid {}", short_type_name::<T>()),
                )
            }),
        }
    }

    /// A finite number, or `default` when absent.
    pub fn f64_or(&mut self, key: &'static str, default: f64) -> Result<f64> {
        let v = self.parsed::<f64>(key)?.unwrap_or(default);
        if v.is_finite() {
            Ok(v)
        } else {
            Err(Error::invalid_param(
                key,
                format!("{v} is not a finite number"),
            ))
        }
    }

    /// A finite number in `[lo, hi]`, or `default` when absent.
    pub fn f64_in(&mut self, key: &'static str, default: f64, lo: f64, hi: f64) -> Result<f64> {
        let v = self.f64_or(key, default)?;
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(Error::invalid_param(
                key,
                format!("{v} is outside [{lo}, {hi}]"),
            ))
        }
    }

    /// `true`/`false`, or `default` when absent.
    pub fn bool_or(&mut self, key: &'static str, default: bool) -> Result<bool> {
        Ok(self.parsed::<bool>(key)?.unwrap_or(default))
    }

    /// One of `choices`, or `default` when absent.
    pub fn choice(
        &mut self,
        key: &'static str,
        choices: &[&'static str],
        default: &'static str,
    ) -> Result<&'static str> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => choices.iter().copied().find(|c| *c == v).ok_or_else(|| {
                Error::invalid_param(key, format!("`{v}` is not one of: {}", choices.join(", ")))
            }),
        }
    }

    /// Fail on any key the gate did not read (host keys excepted).
    pub fn finish(self) -> Result<()> {
        let unused = self
            .entries
            .iter()
            .find(|e| !e.used && !HOST_KEYS.contains(&e.key.as_str()));
        match unused {
            None => Ok(()),
            Some(e) => Err(Error::UnknownParam {
                key: e.key.clone(),
                known: if self.asked.is_empty() {
                    "no parameters".to_owned()
                } else {
                    self.asked.join(", ")
                },
            }),
        }
    }
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    match full {
        "f64" | "f32" => "number",
        "bool" => "boolean (true or false)",
        "u64" | "u32" | "usize" => "non-negative integer",
        _ => full.rsplit("::").next().unwrap_or(full),
    }
}

fn normalize_key(key: &str) -> String {
    key.replace('_', "-")
}

/// Split on newlines and on `;` outside double quotes; strip `#` comments outside quotes.
fn split_items(text: &str) -> Vec<String> {
    let mut items = vec![String::new()];
    let mut in_quotes = false;
    let mut escaped = false;
    let mut in_comment = false;
    for c in text.chars() {
        let current = items
            .last_mut()
            .expect("items starts non-empty and only grows");
        if in_comment {
            if c == '\n' {
                in_comment = false;
                items.push(String::new());
            }
            continue;
        }
        if in_quotes {
            current.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            } else if c == '\n' {
                // An unterminated string; unquote() reports it.
                in_quotes = false;
                items.push(String::new());
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                current.push(c);
            }
            '#' => in_comment = true,
            '\n' | ';' => items.push(String::new()),
            _ => current.push(c),
        }
    }
    items
}

fn unquote(value: &str) -> std::result::Result<String, String> {
    let Some(inner) = value.strip_prefix('"') else {
        if value.is_empty() {
            return Err("empty value (write \"\" for an empty string)".to_owned());
        }
        return Ok(value.to_owned());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                other => {
                    return Err(format!("unsupported escape `\\{}`", other.unwrap_or(' ')));
                }
            },
            '"' => {
                let rest = chars.as_str().trim();
                return if rest.is_empty() {
                    Ok(out)
                } else {
                    Err(format!("unexpected `{rest}` after the closing quote"))
                };
            }
            c => out.push(c),
        }
    }
    Err("unterminated string".to_owned())
}

#[cfg(test)]
mod tests;
