//! The `head` expert: a low-rank adapter on the base model's final hidden state, read through
//! the base model's own LM head. No second model and no second forward pass:
//!
//! ```text
//! expert logits = E·(h + B·A·h) = base logits + (E·B)·(A·h)
//! ```
//!
//! `E` [vocab, hidden] is the LM-head matrix (the package's `lm_head` file), `A` [rank, hidden]
//! and `B` [hidden, rank] come from the expert file written by `ngsd train expert`. `E·B` is
//! computed once at load, so a step costs `rank·(hidden + vocab)` multiply-adds (~1.6 M for
//! SmolLM2 at rank 32) plus one softmax.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::linalg::general_mat_vec_mul;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2};
use ngsd_gate::safetensors::SafeTensors;
use ngsd_runtime::Model;
use ngsd_runtime::sampling::softmax_into;

use crate::error::{Error, Result};
use crate::expert::Expert;

/// Format tag written into the metadata of head-expert files.
pub const HEAD_EXPERT_FORMAT: &str = "ngsd-head-expert/1";

/// The adapter matrices of a head expert.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadAdapter {
    /// Down projection `A`, [rank, hidden], row-major.
    pub a: Vec<f32>,
    /// Up projection `B`, [hidden, rank], row-major.
    pub b: Vec<f32>,
    /// Rank r.
    pub rank: usize,
    /// Hidden size H.
    pub hidden: usize,
}

impl HeadAdapter {
    /// Reads `lora_a` [r, H] and `lora_b` [H, r] from a head-expert file; checks the
    /// metadata against the base model when it names one.
    pub fn read(path: &Path, base: &Model) -> Result<(HeadAdapter, SafeTensors)> {
        let bad = |reason: String| Error::IncompatibleExpert {
            expert: format!("head:{}", path.display()),
            reason,
        };
        let st = SafeTensors::read(path).map_err(|e| bad(e.to_string()))?;
        let get = |name: &str| {
            st.tensors.get(name).ok_or_else(|| {
                bad(format!(
                    "no tensor `{name}`; a head-expert file has `lora_a` [rank, hidden] and `lora_b` [hidden, rank] (write one with `ngsd train expert`)"
                ))
            })
        };
        let (a, b) = (get("lora_a")?, get("lora_b")?);
        let [rank, hidden] = a.shape[..] else {
            return Err(bad(format!(
                "`lora_a` has shape {:?}, expected [rank, hidden]",
                a.shape
            )));
        };
        if b.shape != [hidden, rank] {
            return Err(bad(format!(
                "`lora_b` has shape {:?}, expected [{hidden}, {rank}] to match `lora_a` {:?}",
                b.shape, a.shape
            )));
        }
        if hidden != base.hidden_size() {
            return Err(bad(format!(
                "it was made for hidden size {hidden}, the base model's is {}",
                base.hidden_size()
            )));
        }
        let model_sha = base
            .package()
            .manifest
            .checksums
            .get(&base.package().manifest.files.onnx);
        if let (Some(want), Some(have)) = (st.metadata.get("model_sha256"), model_sha)
            && !want.eq_ignore_ascii_case(have)
        {
            return Err(bad(format!(
                "it was trained on another model (model_sha256 {want}, the base model's is {have}); retrain it with `ngsd train expert`"
            )));
        }
        let adapter = HeadAdapter {
            a: a.data.clone(),
            b: b.data.clone(),
            rank,
            hidden,
        };
        Ok((adapter, st))
    }
}

/// The LM-head matrix of a model package, [vocab, hidden].
#[derive(Debug, Clone)]
pub struct LmHead {
    /// Row-major [vocab, hidden].
    pub weight: Array2<f32>,
}

impl LmHead {
    /// Reads the package's `lm_head` file (the converter writes it), memory-mapped: the
    /// matrix is converted straight into place, with no copy of the file in memory.
    pub fn load(base: &Model) -> Result<LmHead> {
        let path = lm_head_path(base)?;
        let t =
            SafeTensors::read_tensor(&path, "weight").map_err(|e| Error::IncompatibleExpert {
                expert: "head".into(),
                reason: e.to_string(),
            })?;
        let want = [base.vocab_size(), base.hidden_size()];
        if t.shape != want {
            return Err(Error::IncompatibleExpert {
                expert: "head".into(),
                reason: format!(
                    "{} holds `weight` {:?}, the model needs {:?} (vocab, hidden)",
                    path.display(),
                    t.shape,
                    want
                ),
            });
        }
        let weight = Array2::from_shape_vec((want[0], want[1]), t.data).map_err(|e| {
            Error::InvalidConfig {
                name: "lm_head",
                reason: e.to_string(),
            }
        })?;
        Ok(LmHead { weight })
    }

    /// `E·B` for an adapter, [vocab, rank].
    pub fn project(&self, adapter: &HeadAdapter) -> Array2<f32> {
        let b = ArrayView2::from_shape((adapter.hidden, adapter.rank), &adapter.b)
            .expect("HeadAdapter shapes are checked at read");
        self.weight.dot(&b)
    }
}

fn lm_head_path(base: &Model) -> Result<PathBuf> {
    base.package()
        .lm_head_path()
        .ok_or_else(|| Error::IncompatibleExpert {
            expert: "head".into(),
            reason: format!(
                "the base model package {} has no LM-head file (manifest `files.lm_head`); re-run `cargo xtask setup` for the default model",
                base.dir().display()
            ),
        })
}

/// The `head` expert.
pub struct HeadExpert {
    path: PathBuf,
    /// `A`, [rank, hidden] (shared by forks).
    a: Arc<Array2<f32>>,
    /// `E·B`, [vocab, rank] (shared by forks).
    eb: Arc<Array2<f32>>,
    u: Array1<f32>,
    logits: Array1<f32>,
    probs: Vec<f32>,
}

impl HeadExpert {
    /// Loads an expert file for `base` (which must have an LM-head file).
    pub fn load(path: &Path, base: &Model) -> Result<HeadExpert> {
        let (adapter, _) = HeadAdapter::read(path, base)?;
        let head = LmHead::load(base)?;
        Ok(Self::from_parts(path, &adapter, &head))
    }

    /// Builds the expert from an adapter and an LM head already in memory.
    pub fn from_parts(path: &Path, adapter: &HeadAdapter, head: &LmHead) -> HeadExpert {
        let eb = head.project(adapter);
        let a = Array2::from_shape_vec((adapter.rank, adapter.hidden), adapter.a.clone())
            .expect("HeadAdapter shapes are checked at read");
        HeadExpert {
            path: path.to_path_buf(),
            a: Arc::new(a),
            u: Array1::zeros(adapter.rank),
            logits: Array1::zeros(eb.nrows()),
            eb: Arc::new(eb),
            probs: Vec::new(),
        }
    }

    /// Expert logits for one position: `base_logits + (E·B)·(A·h)`.
    fn logits_into(&mut self, base_hidden: &[f32], base_logits: &[f32]) {
        let h = ArrayView1::from(base_hidden);
        general_mat_vec_mul(1.0, &*self.a, &h, 0.0, &mut self.u);
        self.logits.assign(&ArrayView1::from(base_logits));
        general_mat_vec_mul(1.0, &*self.eb, &self.u, 1.0, &mut self.logits);
    }
}

impl Expert for HeadExpert {
    fn describe(&self) -> String {
        format!("head:{}", self.path.display())
    }

    fn begin(&mut self, _user: &str, _raw: bool) -> Result<()> {
        Ok(())
    }

    fn push(&mut self, _token: u32) {}

    fn probs(
        &mut self,
        _base: &mut Model,
        base_hidden: &[f32],
        base_logits: &[f32],
    ) -> Result<&[f32]> {
        if base_hidden.len() != self.a.ncols() || base_logits.len() != self.eb.nrows() {
            return Err(Error::InvalidConfig {
                name: "expert",
                reason: format!(
                    "the head expert needs the base model's hidden state and logits ({} and {} values, got {} and {}); the base model must export `last_hidden_state`",
                    self.a.ncols(),
                    self.eb.nrows(),
                    base_hidden.len(),
                    base_logits.len()
                ),
            });
        }
        self.logits_into(base_hidden, base_logits);
        softmax_into(
            self.logits.as_slice().expect("a fresh array is contiguous"),
            1.0,
            &mut self.probs,
        );
        Ok(&self.probs)
    }

    fn forward_passes(&self) -> usize {
        0
    }

    fn fork(&self, _base: &Model) -> Result<Option<Box<dyn Expert>>> {
        Ok(Some(Box::new(HeadExpert {
            path: self.path.clone(),
            a: Arc::clone(&self.a),
            eb: Arc::clone(&self.eb),
            u: Array1::zeros(self.a.nrows()),
            logits: Array1::zeros(self.eb.nrows()),
            probs: Vec::new(),
        })))
    }
}
