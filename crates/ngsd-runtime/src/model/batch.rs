//! Several sequences decoded in one forward pass.
//!
//! A decode step reads every weight to produce one token; with B sequences in one pass it reads
//! them once for B tokens. A fused graph keeps each sequence in a slot of its shared buffers
//! (model/slots.rs). An Optimum-layout graph (the fp32 reference) uses a padded batch: it keeps
//! the key/value cache of all its rows in one set of ONNX Runtime values
//! `[rows, kv_heads, width, head_dim]`, and each row its own attention mask over the `width`
//! columns:
//! - a row that joins brings the cache of its own prefill ([`Model::join`]); it is placed in the
//!   last columns and the columns before it are masked out (left padding);
//! - every step feeds one token per row, appends one column for all rows, and positions each
//!   row's token after its own history (`position_ids`), so padding never shifts a row;
//! - a row that leaves is dropped, and columns no remaining row attends to are cut
//!   ([`Model::leave`]); a row rolled back ([`Batch::truncate_row`]) masks its last columns.
//!
//! Joining and leaving copy the cache (a few MB), as every Optimum step already does when the
//! graph concatenates past and present.

use ort::value::{DynValue, Tensor};

use super::slots::Slots;
use super::{ForwardOut, Model, Positions};
use crate::error::{Error, Result};
use crate::kv::{KvCache, Store};

/// The caches of the sequences decoded together.
pub struct Batch {
    inner: Inner,
}

enum Inner {
    Padded(Padded),
    Slots(Box<Slots>),
}

/// An Optimum-layout batch: the caches side by side, each row with its mask.
struct Padded {
    /// `2 × layers` values `[rows, kv_heads, width, head_dim]`: key then value per layer.
    past: Vec<DynValue>,
    width: usize,
    rows: Vec<Row>,
    heads: usize,
    dim: usize,
}

/// One sequence of a batch.
#[derive(Debug, Clone)]
struct Row {
    /// 1 where the column holds one of the row's positions, one entry per column.
    mask: Vec<i64>,
    /// Positions the row holds (the ones in `mask`).
    len: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("rows", &self.len())
            .field("width", &self.width())
            .finish()
    }
}

impl Batch {
    /// Number of sequences in the batch.
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Padded(p) => p.rows.len(),
            Inner::Slots(s) => s.len(),
        }
    }

    /// Whether the batch holds no sequence.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions a step attends over: the padded cache's columns (the longest history, plus
    /// padding left by rows that left or rolled back), or a fused batch's longest sequence.
    pub fn width(&self) -> usize {
        match &self.inner {
            Inner::Padded(p) => p.width,
            Inner::Slots(s) => s.longest(),
        }
    }

    /// Positions row `row` holds.
    pub fn row_len(&self, row: usize) -> Option<usize> {
        match &self.inner {
            Inner::Padded(p) => p.rows.get(row).map(|r| r.len),
            Inner::Slots(s) => s.row_len(row),
        }
    }

    /// Rolls row `row` back to its first `len` positions: its next token is placed at
    /// position `len` (a padded batch masks the later columns out).
    pub fn truncate_row(&mut self, row: usize, len: usize) -> Result<()> {
        let held = self.row_len(row).ok_or_else(|| no_row(row))?;
        if len > held {
            return Err(Error::InvalidArgument {
                name: "row length",
                reason: format!("cannot truncate a row of {held} positions to {len}"),
            });
        }
        match &mut self.inner {
            Inner::Padded(p) => p.truncate_row(row, len),
            Inner::Slots(s) => s.truncate_row(row, len),
        }
        Ok(())
    }
}

impl Padded {
    fn truncate_row(&mut self, row: usize, len: usize) {
        let r = &mut self.rows[row];
        let mut kept = 0;
        for m in r.mask.iter_mut().filter(|m| **m == 1) {
            if kept == len {
                *m = 0;
            } else {
                kept += 1;
            }
        }
        r.len = len;
    }
}

fn no_row(row: usize) -> Error {
    Error::InvalidArgument {
        name: "batch row",
        reason: format!("the batch has no row {row}"),
    }
}

/// Copies `rows` rows of a `[rows, heads, width, dim]` cache tensor into a wider one, each row
/// right-aligned (`pad` new columns on its left).
struct Widen {
    heads: usize,
    dim: usize,
    from: usize,
    to: usize,
}

impl Widen {
    fn row(&self, src: &[f32], dst: &mut [f32]) {
        let pad = self.to - self.from;
        for h in 0..self.heads {
            let s = &src[h * self.from * self.dim..][..self.from * self.dim];
            dst[(h * self.to + pad) * self.dim..][..self.from * self.dim].copy_from_slice(s);
        }
    }
}

fn cache_tensor(shape: [usize; 4], data: Vec<f32>) -> Result<DynValue> {
    Tensor::from_array((shape, data))
        .map(|t| t.into_dyn())
        .map_err(Error::run)
}

impl Model {
    /// An empty batch for this model: slots of shared buffers for a fused graph, a padded batch
    /// for an Optimum-layout one.
    pub fn new_batch(&self) -> Result<Batch> {
        if self.io.shared_kv {
            return Ok(Batch {
                inner: Inner::Slots(Box::new(Slots::new())),
            });
        }
        let past = (0..2 * self.io.num_layers)
            .map(|_| cache_tensor([0, self.kv_heads, 0, self.head_dim], Vec::new()))
            .collect::<Result<_>>()?;
        Ok(Batch {
            inner: Inner::Padded(Padded {
                past,
                width: 0,
                rows: Vec::new(),
                heads: self.kv_heads,
                dim: self.head_dim,
            }),
        })
    }

    /// Adds the sequence whose cache is `cache` (its own prefill, from [`Model::new_cache`] and
    /// [`Model::forward`] or [`Model::prefill`]) as the batch's last row; returns its index.
    pub fn join(&self, batch: &mut Batch, cache: &KvCache) -> Result<usize> {
        if cache.is_empty() {
            return Err(Error::InvalidArgument {
                name: "cache",
                reason: "an empty cache cannot join a batch: prefill the prompt first".into(),
            });
        }
        match &mut batch.inner {
            Inner::Padded(p) => p.join(cache),
            Inner::Slots(s) => s.join(self, cache),
        }
    }

    /// Removes row `row` (the rows after it move up by one).
    pub fn leave(&self, batch: &mut Batch, row: usize) -> Result<()> {
        let left = match &mut batch.inner {
            Inner::Padded(p) => p.leave(row)?,
            Inner::Slots(s) => s.leave(self, row)?,
        };
        if left { Ok(()) } else { Err(no_row(row)) }
    }

    /// One decode step for every row: `tokens[r]` is fed to row `r`; `out` receives one row of
    /// logits and hidden states per batch row, in row order.
    pub fn step_batch(
        &mut self,
        batch: &mut Batch,
        tokens: &[u32],
        out: &mut ForwardOut,
    ) -> Result<()> {
        let b = batch.len();
        if tokens.len() != b || b == 0 {
            return Err(Error::InvalidArgument {
                name: "batch tokens",
                reason: format!("{} tokens for a batch of {b} rows", tokens.len()),
            });
        }
        let longest = (0..b).filter_map(|r| batch.row_len(r)).max().unwrap_or(0);
        if longest >= self.max_context() {
            return Err(Error::ContextOverflow {
                prompt_tokens: longest + 1,
                max_context: self.max_context(),
            });
        }
        match &mut batch.inner {
            Inner::Padded(p) => self.step_padded(p, tokens, out),
            Inner::Slots(s) => s.step(self, tokens, out),
        }
    }
}

impl Padded {
    /// [`Model::join`] for a padded batch.
    fn join(&mut self, cache: &KvCache) -> Result<usize> {
        let batch = self;
        let Store::Values(values) = &cache.store else {
            return Err(Error::InvalidArgument {
                name: "cache",
                reason: "a fused graph's cache cannot join a padded batch".into(),
            });
        };
        let (len, old_rows) = (cache.len(), batch.rows.len());
        let width = batch.width.max(len);
        let (heads, dim) = (batch.heads, batch.dim);
        let mut past = Vec::with_capacity(batch.past.len());
        for (old, new) in batch.past.iter().zip(values) {
            let mut data = vec![0f32; (old_rows + 1) * heads * width * dim];
            let per_row = heads * width * dim;
            let widen_old = Widen {
                heads,
                dim,
                from: batch.width,
                to: width,
            };
            if old_rows > 0 {
                let src = old.try_extract_tensor::<f32>().map_err(Error::run)?.1;
                for r in 0..old_rows {
                    let s = &src[r * heads * batch.width * dim..][..heads * batch.width * dim];
                    widen_old.row(s, &mut data[r * per_row..][..per_row]);
                }
            }
            let src = new.try_extract_tensor::<f32>().map_err(Error::run)?.1;
            let widen_new = Widen {
                heads,
                dim,
                from: len,
                to: width,
            };
            widen_new.row(src, &mut data[old_rows * per_row..]);
            past.push(cache_tensor([old_rows + 1, heads, width, dim], data)?);
        }
        let pad = width - batch.width;
        for row in &mut batch.rows {
            row.mask.splice(0..0, std::iter::repeat_n(0, pad));
        }
        let mut mask = vec![0; width - len];
        mask.resize(width, 1);
        batch.rows.push(Row { mask, len });
        batch.past = past;
        batch.width = width;
        Ok(old_rows)
    }

    /// Removes row `row` (the rows after it move up by one), then cuts the columns that no
    /// remaining row attends to; false when there is no such row.
    fn leave(&mut self, row: usize) -> Result<bool> {
        let batch = self;
        if row >= batch.rows.len() {
            return Ok(false);
        }
        batch.rows.remove(row);
        let cut = (0..batch.width)
            .take_while(|&c| batch.rows.iter().all(|r| r.mask[c] == 0))
            .count();
        let keep: Vec<usize> = (0..=batch.rows.len()).filter(|&r| r != row).collect();
        let (heads, dim, width) = (batch.heads, batch.dim, batch.width - cut);
        let mut past = Vec::with_capacity(batch.past.len());
        for old in &batch.past {
            let src = old.try_extract_tensor::<f32>().map_err(Error::run)?.1;
            let mut data = Vec::with_capacity(keep.len() * heads * width * dim);
            for &r in &keep {
                for h in 0..heads {
                    let start = ((r * heads + h) * batch.width + cut) * dim;
                    data.extend_from_slice(&src[start..][..width * dim]);
                }
            }
            past.push(cache_tensor([keep.len(), heads, width, dim], data)?);
        }
        for r in &mut batch.rows {
            r.mask.drain(..cut);
        }
        batch.past = past;
        batch.width = width;
        Ok(true)
    }
}

impl Model {
    /// [`Model::step_batch`] for a padded batch.
    fn step_padded(
        &mut self,
        batch: &mut Padded,
        tokens: &[u32],
        out: &mut ForwardOut,
    ) -> Result<()> {
        let b = batch.rows.len();
        let total = batch.width + 1;
        self.ids_buf.clear();
        self.ids_buf.extend(tokens.iter().map(|&t| i64::from(t)));
        self.pos_buf.clear();
        self.pos_buf.extend(batch.rows.iter().map(|r| r.len as i64));
        self.mask_buf.clear();
        for r in &batch.rows {
            self.mask_buf.extend_from_slice(&r.mask);
            self.mask_buf.push(1);
        }
        let presents = self.run_optimum(&batch.past, b, 1, total, Positions::All, out)?;
        batch.past = presents;
        batch.width = total;
        for r in &mut batch.rows {
            r.mask.push(1);
            r.len += 1;
        }
        Ok(())
    }
}
