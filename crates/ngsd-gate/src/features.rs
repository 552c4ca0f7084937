//! Which hidden-state features a gate reads: layers of the base model, pooled over positions.
//!
//! A gate declares a [`FeatureSpec`]; the decoder computes exactly those vectors and hands
//! them over concatenated, in the declared order, each `hidden size` floats long:
//! - at the prompt ([`crate::PromptInput::hidden`]), `last` is the prompt's final position
//!   (the one that predicts the answer's first token) and `mean` the mean over the tokens of
//!   the request's own text (the last user message, or the whole raw text);
//! - while answering ([`crate::AnswerInput::features`], only when `answer` is not empty),
//!   `last` is the newest answer position and `mean` the mean over the answer so far.
//!
//! Text form, as it crosses the plugin ABI and appears in weight files:
//! `prompt = final.last, 22.mean; answer = 22.mean`. A layer is `final` (the normed state
//! that feeds the LM head) or a decoder layer's index (its residual-stream output).

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Where a feature is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// The residual stream after decoder layer `i` (0-based).
    Index(u16),
    /// The final normed hidden state (`last_hidden_state`).
    Final,
}

/// How positions are pooled into one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pool {
    /// The last position.
    Last,
    /// The mean over the span (the request at the prompt, the answer while answering).
    Mean,
}

/// One feature vector: a layer pooled one way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Feature {
    /// The layer.
    pub layer: Layer,
    /// The pooling.
    pub pool: Pool,
}

impl Feature {
    /// The final hidden state at the last position: what gates read before features existed.
    pub const FINAL_LAST: Feature = Feature {
        layer: Layer::Final,
        pool: Pool::Last,
    };
}

/// What a gate reads at the prompt and, if anything, while the answer is generated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FeatureSpec {
    /// Features given to `observe_prompt`, in order. Never empty.
    pub prompt: Vec<Feature>,
    /// Features given to `check_answer`; empty means the gate does not monitor answers.
    pub answer: Vec<Feature>,
}

impl Default for FeatureSpec {
    /// `prompt = final.last`, no answer monitoring.
    fn default() -> Self {
        FeatureSpec {
            prompt: vec![Feature::FINAL_LAST],
            answer: Vec::new(),
        }
    }
}

impl FeatureSpec {
    /// Whether the gate re-checks the answer while it is generated.
    pub fn monitors_answer(&self) -> bool {
        !self.answer.is_empty()
    }

    /// Every layer either list reads, each once, intermediate layers first in index order.
    pub fn layers(&self) -> Vec<Layer> {
        let mut layers: Vec<Layer> = self
            .prompt
            .iter()
            .chain(&self.answer)
            .map(|f| f.layer)
            .collect();
        layers.sort();
        layers.dedup();
        layers
    }
}

fn bad(text: &str, why: impl fmt::Display) -> Error {
    Error::InvalidParam {
        key: "features".into(),
        message: format!(
            "`{text}`: {why}; write e.g. `prompt = final.last, 22.mean; answer = 22.mean`"
        ),
    }
}

impl FromStr for Feature {
    type Err = Error;
    fn from_str(s: &str) -> Result<Feature> {
        let s = s.trim();
        let (layer, pool) = s
            .split_once('.')
            .ok_or_else(|| bad(s, "a feature is LAYER.POOL"))?;
        let layer = match layer.trim() {
            "final" => Layer::Final,
            n => Layer::Index(n.parse().map_err(|_| {
                bad(
                    s,
                    format!("layer `{n}` is neither `final` nor a layer number"),
                )
            })?),
        };
        let pool = match pool.trim() {
            "last" => Pool::Last,
            "mean" => Pool::Mean,
            p => {
                return Err(bad(
                    s,
                    format!("pooling `{p}` is neither `last` nor `mean`"),
                ));
            }
        };
        Ok(Feature { layer, pool })
    }
}

fn feature_list(s: &str) -> Result<Vec<Feature>> {
    s.split(',')
        .filter(|f| !f.trim().is_empty())
        .map(str::parse)
        .collect()
}

impl FromStr for FeatureSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<FeatureSpec> {
        let mut spec = FeatureSpec {
            prompt: Vec::new(),
            answer: Vec::new(),
        };
        for part in s.split(';').filter(|p| !p.trim().is_empty()) {
            let (key, list) = part
                .split_once('=')
                .ok_or_else(|| bad(part.trim(), "expected `prompt = …` or `answer = …`"))?;
            match key.trim() {
                "prompt" => spec.prompt = feature_list(list)?,
                "answer" => spec.answer = feature_list(list)?,
                other => {
                    return Err(bad(
                        part.trim(),
                        format!("unknown list `{other}` (prompt or answer)"),
                    ));
                }
            }
        }
        if spec.prompt.is_empty() {
            return Err(bad(s.trim(), "the prompt list is empty"));
        }
        Ok(spec)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Final => f.write_str("final"),
            Layer::Index(i) => write!(f, "{i}"),
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pool = match self.pool {
            Pool::Last => "last",
            Pool::Mean => "mean",
        };
        write!(f, "{}.{pool}", self.layer)
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, list: &[Feature]) -> fmt::Result {
    for (i, feature) in list.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{feature}")?;
    }
    Ok(())
}

impl fmt::Display for FeatureSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("prompt = ")?;
        write_list(f, &self.prompt)?;
        if !self.answer.is_empty() {
            f.write_str("; answer = ")?;
            write_list(f, &self.answer)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn check(text: &str, canonical: &str) {
        let spec: FeatureSpec = text.parse().unwrap();
        assert_eq!(spec.to_string(), canonical);
        assert_eq!(canonical.parse::<FeatureSpec>().unwrap(), spec);
    }

    fn check_err(text: &str, needle: &str) {
        let err = text.parse::<FeatureSpec>().unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }

    #[test]
    fn parses_and_prints() {
        check("prompt = final.last", "prompt = final.last");
        check(
            " prompt=final.last ,22.mean ; answer = 22.mean,final.last ",
            "prompt = final.last, 22.mean; answer = 22.mean, final.last",
        );
        assert_eq!(
            FeatureSpec::default().to_string(),
            "prompt = final.last",
            "the default is what gates read before features existed"
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        check_err("answer = 3.mean", "the prompt list is empty");
        check_err("prompt = final", "a feature is LAYER.POOL");
        check_err("prompt = top.last", "layer `top` is neither");
        check_err("prompt = 3.max", "pooling `max` is neither");
        check_err("prompt = 3.last; during = 3.last", "unknown list `during`");
        check_err("final.last", "expected `prompt = …`");
    }

    #[test]
    fn layers_are_listed_once_in_order() {
        let spec: FeatureSpec = "prompt = final.last, 22.mean, 5.last; answer = 22.mean"
            .parse()
            .unwrap();
        assert_eq!(
            spec.layers(),
            [Layer::Index(5), Layer::Index(22), Layer::Final]
        );
        assert!(spec.monitors_answer());
    }
}
