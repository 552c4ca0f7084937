//! Gate features from the base model's hidden states: pooled over the request's own tokens at
//! the prompt, and over the answer so far while it is generated (see
//! [`ngsd_gate::FeatureSpec`]). The trainer computes its features with the same functions, so
//! what a neuron was trained on is exactly what it reads at run time.

use std::ops::Range;

use ngsd_gate::{Feature, HostContext, Layer, Pool};
use ngsd_runtime::{ForwardOut, Model};

use crate::error::{Error, Result};

/// What gates get to know about the base model: its hidden size and the checksum of its graph
/// (a trained neuron refuses a model other than the one it was trained on).
pub fn host_context(model: &Model) -> HostContext {
    HostContext {
        hidden_size: Some(model.hidden_size()),
        model_sha256: model
            .package()
            .manifest
            .checksums
            .get(&model.package().manifest.files.onnx)
            .cloned(),
    }
}

/// The rows of `layer` in a forward pass's output (`out.rows × hidden` floats).
pub fn layer_rows<'a>(model: &Model, out: &'a ForwardOut, layer: Layer) -> Result<&'a [f32]> {
    let rows = match layer {
        Layer::Final => &out.hidden[..],
        Layer::Index(i) => model
            .exported_layers()
            .iter()
            .position(|&l| l == usize::from(i))
            .map_or(&[][..], |k| out.layer(k)),
    };
    if rows.is_empty() {
        return Err(missing_layer(model, layer));
    }
    Ok(rows)
}

fn missing_layer(model: &Model, layer: Layer) -> Error {
    let have: Vec<String> = model
        .exported_layers()
        .iter()
        .map(usize::to_string)
        .collect();
    Error::InvalidConfig {
        name: "gate features",
        reason: match layer {
            Layer::Final => "the gate reads the final hidden state, but the base model has no \
                 `last_hidden_state` output; add it with `cargo xtask export-hidden <model.onnx>`"
                .into(),
            Layer::Index(i) => format!(
                "the gate reads layer {i}, but the base model exports {}; \
                 re-export it with `cargo xtask export-hidden --layers {i}` or pick weights \
                 trained on the layers it has",
                if have.is_empty() {
                    "no intermediate layers".to_string()
                } else {
                    format!("layers {}", have.join(", "))
                }
            ),
        },
    }
}

/// Checks that the model exports every layer `features` reads.
pub fn check_model(model: &Model, features: &[Feature]) -> Result<()> {
    for f in features {
        let ok = match f.layer {
            Layer::Final => model.has_hidden_state(),
            Layer::Index(i) => model.exported_layers().contains(&usize::from(i)),
        };
        if !ok {
            return Err(missing_layer(model, f.layer));
        }
    }
    Ok(())
}

/// Whether any of `features` pools over positions (so the prompt's forward pass must report
/// every position's hidden states, not just the last).
pub fn needs_all_positions(features: &[Feature]) -> bool {
    features.iter().any(|f| f.pool == Pool::Mean)
}

/// Appends the prompt features to `out`: `last` is the prompt's final row, `mean` the mean of
/// the `request` rows. `rows(layer)` gives the rows of that layer: every prompt position's
/// (`positions` of them) when a feature pools, else at least the last.
pub fn prompt_features<'a>(
    features: &[Feature],
    width: usize,
    positions: usize,
    request: Range<usize>,
    mut rows: impl FnMut(Layer) -> Result<&'a [f32]>,
    out: &mut Vec<f32>,
) -> Result<()> {
    for f in features {
        let all = rows(f.layer)?;
        let n = all.len() / width;
        if n == 0 || (f.pool == Pool::Mean && n != positions) {
            return Err(Error::InvalidConfig {
                name: "gate features",
                reason: format!(
                    "feature {f} needs the rows of all {positions} prompt positions, the forward \
                     pass reported {n}"
                ),
            });
        }
        match f.pool {
            Pool::Last => out.extend_from_slice(&all[(n - 1) * width..n * width]),
            Pool::Mean => {
                // An empty request (an empty message) pools the whole prompt instead.
                let span = if request.is_empty() || request.end > n {
                    0..n
                } else {
                    request.clone()
                };
                mean_rows(&all[span.start * width..span.end * width], width, out);
            }
        }
    }
    Ok(())
}

fn mean_rows(rows: &[f32], width: usize, out: &mut Vec<f32>) {
    let n = rows.len() / width;
    let start = out.len();
    out.resize(start + width, 0.0);
    let acc = &mut out[start..];
    for row in rows.chunks_exact(width) {
        for (a, x) in acc.iter_mut().zip(row) {
            *a += x;
        }
    }
    let scale = 1.0 / n.max(1) as f32;
    acc.iter_mut().for_each(|a| *a *= scale);
}

/// Running pools over the answer's positions, for answer features.
#[derive(Debug, Clone, Default)]
pub struct AnswerPool {
    features: Vec<Feature>,
    width: usize,
    /// Per feature: the running sum (mean) or the newest row (last).
    state: Vec<Vec<f32>>,
    count: usize,
}

impl AnswerPool {
    /// An empty pool over `features`, each `width` floats.
    pub fn new(features: &[Feature], width: usize) -> Self {
        AnswerPool {
            features: features.to_vec(),
            width,
            state: vec![vec![0.0; width]; features.len()],
            count: 0,
        }
    }

    /// Adds one answer position; `row(layer)` gives that position's row of a layer.
    pub fn add<'a>(&mut self, mut row: impl FnMut(Layer) -> Result<&'a [f32]>) -> Result<()> {
        for (f, state) in self.features.iter().zip(&mut self.state) {
            let r = row(f.layer)?;
            let r = &r[r.len() - self.width..];
            match f.pool {
                Pool::Last => state.copy_from_slice(r),
                Pool::Mean => state.iter_mut().zip(r).for_each(|(s, x)| *s += x),
            }
        }
        self.count += 1;
        Ok(())
    }

    /// Answer positions added so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no position was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The features over the positions added so far, concatenated into `out` (cleared first).
    pub fn features_into(&self, out: &mut Vec<f32>) {
        out.clear();
        let scale = 1.0 / self.count.max(1) as f32;
        for (f, state) in self.features.iter().zip(&self.state) {
            match f.pool {
                Pool::Last => out.extend_from_slice(state),
                Pool::Mean => out.extend(state.iter().map(|s| s * scale)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn f(text: &str) -> Feature {
        text.parse().unwrap()
    }

    #[test]
    fn prompt_features_pool_the_request_and_take_the_last_row() {
        // Three positions of width 2; the request is rows 0..2.
        let final_rows = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let layer_rows = [10.0, 0.0, 20.0, 0.0, 30.0, 0.0];
        let mut out = Vec::new();
        prompt_features(
            &[f("final.last"), f("final.mean"), f("7.mean")],
            2,
            3,
            0..2,
            |l| {
                Ok(if l == Layer::Final {
                    &final_rows
                } else {
                    &layer_rows
                })
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [5.0, 6.0, 2.0, 3.0, 15.0, 0.0]);
    }

    #[test]
    fn the_answer_pool_averages_and_keeps_the_newest_row() {
        let mut pool = AnswerPool::new(&[f("final.mean"), f("final.last")], 2);
        for row in [[1.0f32, 3.0], [3.0, 5.0]] {
            pool.add(|_| Ok(&row[..])).unwrap();
        }
        let mut out = Vec::new();
        pool.features_into(&mut out);
        assert_eq!(out, [2.0, 4.0, 3.0, 5.0]);
        assert_eq!(pool.len(), 2);
    }
}
