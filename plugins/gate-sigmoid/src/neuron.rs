//! One logistic neuron read from a safetensors file, standardisation folded into its weights.

use std::path::Path;

use ngsd_gate::safetensors::SafeTensors;
use ngsd_gate::{Error, Result};

/// `p = σ(w·x + b)`, with its decision threshold.
#[derive(Clone, Debug)]
pub struct Neuron {
    weight: Vec<f32>,
    bias: f32,
    /// p at or above which the neuron fires.
    pub threshold: f32,
}

/// `Σ a·b` with eight independent accumulators, so the compiler can vectorise it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    for (x, y) in a8.iter().zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// A 1-D tensor of `len` values, or a clear error.
fn vector(st: &SafeTensors, path: &Path, name: &str, len: Option<usize>) -> Result<Vec<f32>> {
    let t = st.tensors.get(name).ok_or_else(|| {
        Error::Failed(format!(
            "weights file {}: no tensor `{name}`",
            path.display()
        ))
    })?;
    let flat = t.shape.iter().filter(|&&d| d != 1).count() <= 1;
    if !flat || len.is_some_and(|n| t.data.len() != n) {
        return Err(Error::Failed(format!(
            "weights file {}: tensor `{name}` has shape {:?}, expected [{}]",
            path.display(),
            t.shape,
            len.map_or("H".to_owned(), |n| n.to_string()),
        )));
    }
    Ok(t.data.clone())
}

/// Folds `(x − mean) / std` into `weight` and `bias` when the file has both.
fn fold_standardisation(
    st: &SafeTensors,
    path: &Path,
    prefix: &str,
    weight: &mut [f32],
    bias: &mut f64,
) -> Result<()> {
    let fail = |m: String| Error::Failed(format!("weights file {}: {m}", path.display()));
    let (mean_key, std_key) = (format!("{prefix}mean"), format!("{prefix}std"));
    match (
        st.tensors.contains_key(&mean_key),
        st.tensors.contains_key(&std_key),
    ) {
        (false, false) => Ok(()),
        (true, true) => {
            let mean = vector(st, path, &mean_key, Some(weight.len()))?;
            let std = vector(st, path, &std_key, Some(weight.len()))?;
            if let Some(i) = std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(fail(format!(
                    "{std_key}[{i}] is {}, expected a positive number",
                    std[i]
                )));
            }
            // σ(w·(x − μ)/s + b) = σ((w/s)·x + b − Σ w·μ/s)
            for ((w, m), s) in weight.iter_mut().zip(&mean).zip(&std) {
                *w /= s;
                *bias -= f64::from(*w) * f64::from(*m);
            }
            Ok(())
        }
        _ => Err(fail(format!(
            "has only one of `{mean_key}` and `{std_key}`; give both or neither"
        ))),
    }
}

/// The threshold: the parameter, else the file's metadata `key`, else 0.5; in [0, 1].
fn threshold(st: &SafeTensors, path: &Path, key: &str, param: Option<f64>) -> Result<f32> {
    let t = match param {
        Some(t) => t,
        None => match st.metadata.get(key) {
            Some(t) => t.parse::<f64>().map_err(|_| {
                Error::Failed(format!(
                    "weights file {}: metadata {key} `{t}` is not a number",
                    path.display()
                ))
            })?,
            None => 0.5,
        },
    };
    if !(0.0..=1.0).contains(&t) {
        let name = if key == "threshold" {
            "threshold"
        } else {
            "answer-threshold"
        };
        return Err(Error::invalid_param(name, format!("{t} is outside [0, 1]")));
    }
    Ok(t as f32)
}

impl Neuron {
    /// Reads `{prefix}weight`, `{prefix}bias` (and `{prefix}mean` / `{prefix}std`) for a
    /// neuron over `features` feature vectors; the threshold comes from `param`, else the
    /// metadata (`threshold`, or `answer_threshold` for the `answer.` neuron).
    pub fn load(
        st: &SafeTensors,
        path: &Path,
        prefix: &str,
        features: usize,
        param: Option<f64>,
    ) -> Result<Neuron> {
        let fail = |m: String| Error::Failed(format!("weights file {}: {m}", path.display()));
        if features == 0 {
            return Err(fail(format!(
                "has a `{prefix}weight` neuron but its `features` metadata lists no {} features",
                if prefix.is_empty() {
                    "prompt"
                } else {
                    "answer"
                }
            )));
        }
        let mut weight = vector(st, path, &format!("{prefix}weight"), None)?;
        if weight.is_empty() {
            return Err(fail(format!("`{prefix}weight` is empty")));
        }
        if weight.len() % features != 0 {
            return Err(fail(format!(
                "`{prefix}weight` has {} values, not a multiple of its {features} features",
                weight.len()
            )));
        }
        let hidden = weight.len() / features;
        if let Some(meta_h) = st.metadata.get("hidden_size")
            && meta_h.parse::<usize>().ok() != Some(hidden)
        {
            return Err(fail(format!(
                "metadata hidden_size `{meta_h}` disagrees with `{prefix}weight` [{}] over {features} features",
                weight.len()
            )));
        }
        let mut bias = f64::from(vector(st, path, &format!("{prefix}bias"), Some(1))?[0]);
        fold_standardisation(st, path, prefix, &mut weight, &mut bias)?;
        if let Some(i) = weight.iter().position(|w| !w.is_finite()) {
            return Err(fail(format!(
                "{prefix}weight[{i}] is not finite after standardisation"
            )));
        }
        let key = if prefix.is_empty() {
            "threshold"
        } else {
            "answer_threshold"
        };
        Ok(Neuron {
            weight,
            bias: bias as f32,
            threshold: threshold(st, path, key, param)?,
        })
    }

    /// Number of inputs.
    pub fn width(&self) -> usize {
        self.weight.len()
    }

    /// σ(w·x + b).
    pub fn probability(&self, x: &[f32]) -> Result<f32> {
        if x.len() != self.weight.len() {
            return Err(Error::Failed(format!(
                "hidden state has {} values but the gate weights expect {}: \
                 the weights belong to another model or read other features",
                x.len(),
                self.weight.len()
            )));
        }
        let z = dot(&self.weight, x) + self.bias;
        Ok(1.0 / (1.0 + (-z).exp()))
    }
}
