//! Several sequences decoded in one forward pass: a padded batch of Optimum-layout caches.
//!
//! A decode step reads every weight to produce one token; with B sequences in one pass it reads
//! them once for B tokens. The batch keeps the key/value cache of all its rows in one set of
//! ONNX Runtime values `[rows, kv_heads, width, head_dim]`, and each row its own attention mask
//! over the `width` columns:
//! - a row that joins brings the cache of its own prefill ([`Model::join`]); it is placed in the
//!   last columns and the columns before it are masked out (left padding);
//! - every step feeds one token per row, appends one column for all rows, and positions each
//!   row's token after its own history (`position_ids`), so padding never shifts a row;
//! - a row that leaves is dropped, and columns no remaining row attends to are cut
//!   ([`Model::leave`]); a row rolled back ([`Batch::truncate_row`]) masks its last columns.
//!
//! Joining and leaving copy the cache (a few MB), as every Optimum step already does when the
//! graph concatenates past and present. Fused graphs (shared buffers) are not batched yet.

use ort::value::{DynValue, Tensor};

use super::{ForwardOut, Model, Positions};
use crate::error::{Error, Result};
use crate::kv::{KvCache, Store};

/// The caches of the sequences decoded together, and each one's mask.
pub struct Batch {
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
            .field("rows", &self.rows.len())
            .field("width", &self.width)
            .finish()
    }
}

impl Batch {
    /// Number of sequences in the batch.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the batch holds no sequence.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Columns of the cache (the longest history, plus padding left by rows that left or rolled
    /// back).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Positions row `row` holds.
    pub fn row_len(&self, row: usize) -> Option<usize> {
        self.rows.get(row).map(|r| r.len)
    }

    /// Rolls row `row` back to its first `len` positions: its later columns are masked out and
    /// its next token is placed at position `len`.
    pub fn truncate_row(&mut self, row: usize, len: usize) -> Result<()> {
        let r = self.rows.get_mut(row).ok_or_else(|| no_row(row))?;
        if len > r.len {
            return Err(Error::InvalidArgument {
                name: "row length",
                reason: format!("cannot truncate a row of {} positions to {len}", r.len),
            });
        }
        let mut kept = 0;
        for m in r.mask.iter_mut().filter(|m| **m == 1) {
            if kept == len {
                *m = 0;
            } else {
                kept += 1;
            }
        }
        r.len = len;
        Ok(())
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
    /// An empty batch for this model. Batching needs an Optimum-layout graph (the fp32
    /// reference); a fused graph is refused.
    pub fn new_batch(&self) -> Result<Batch> {
        if self.io.shared_kv {
            return Err(Error::Unsupported {
                path: self.onnx_path(),
                reason: "batched decoding of fused graphs (shared key/value buffers) is not \
                         implemented yet; use the fp32 package"
                    .into(),
            });
        }
        let past = (0..2 * self.io.num_layers)
            .map(|_| cache_tensor([0, self.kv_heads, 0, self.head_dim], Vec::new()))
            .collect::<Result<_>>()?;
        Ok(Batch {
            past,
            width: 0,
            rows: Vec::new(),
            heads: self.kv_heads,
            dim: self.head_dim,
        })
    }

    /// Adds the sequence whose cache is `cache` (its own prefill, from [`Model::new_cache`] and
    /// [`Model::forward`] or [`Model::prefill`]) as the batch's last row; returns its index.
    pub fn join(&self, batch: &mut Batch, cache: &KvCache) -> Result<usize> {
        let Store::Values(values) = &cache.store else {
            return Err(Error::InvalidArgument {
                name: "cache",
                reason: "a fused graph's cache cannot join a batch".into(),
            });
        };
        if cache.is_empty() {
            return Err(Error::InvalidArgument {
                name: "cache",
                reason: "an empty cache cannot join a batch: prefill the prompt first".into(),
            });
        }
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
    /// remaining row attends to.
    pub fn leave(&self, batch: &mut Batch, row: usize) -> Result<()> {
        if row >= batch.rows.len() {
            return Err(no_row(row));
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
        Ok(())
    }

    /// One decode step for every row: `tokens[r]` is fed to row `r`; `out` receives one row of
    /// logits and hidden states per batch row, in row order.
    pub fn step_batch(
        &mut self,
        batch: &mut Batch,
        tokens: &[u32],
        out: &mut ForwardOut,
    ) -> Result<()> {
        let b = batch.rows.len();
        if tokens.len() != b || b == 0 {
            return Err(Error::InvalidArgument {
                name: "batch tokens",
                reason: format!("{} tokens for a batch of {b} rows", tokens.len()),
            });
        }
        if let Some(r) = batch.rows.iter().find(|r| r.len >= self.max_context()) {
            return Err(Error::ContextOverflow {
                prompt_tokens: r.len + 1,
                max_context: self.max_context(),
            });
        }
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
