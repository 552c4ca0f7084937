//! A batch of a fused graph: every sequence in a slot of shared buffers
//! `[slots, kv_heads, capacity, head_dim]`, its length fed as `seqlens_k`.
//!
//! - The graph runs over all slots. A free slot is fed a placeholder token at length 0: its
//!   row costs a little compute and writes only its own position 0. Rows never read each
//!   other's slots, so a sequence's numbers do not depend on who else is in the batch.
//! - There are at least [`MIN_SLOTS`] slots, a power of two: ONNX Runtime's quantized matrix
//!   product takes another kernel for a single row, whose results differ from the multi-row one
//!   (up to 0.6 logits, measured by xtask/py/fused_batch.py). With two or more rows the results
//!   are the same bit for bit whatever the number of rows, so a request gets the same answer
//!   alone in the batch as beside fifteen others.
//! - Joining copies the sequence's own cache into a free slot; leaving frees the slot, with no
//!   copy. The buffers are rebuilt (the rows copied, packed to the first slots) only to double
//!   the slots or the capacity, or to halve the slots once three quarters are free.

use super::{ForwardOut, FusedStep, Model, Positions};
use crate::error::{Error, Result};
use crate::kv::{KvCache, SharedKv, Store};

/// Fewest slots the buffers have (see the module documentation).
const MIN_SLOTS: usize = 2;

/// The sequences of a fused graph's batch, in row order.
pub(super) struct Slots {
    /// `None` until the first sequence joins.
    kv: Option<SharedKv>,
    rows: Vec<SlotRow>,
    /// A step's rows in slot order, before they are put in row order.
    scratch: ForwardOut,
}

#[derive(Debug, Clone, Copy)]
struct SlotRow {
    slot: usize,
    /// Positions the sequence holds.
    len: usize,
}

impl Slots {
    pub(super) fn new() -> Slots {
        Slots {
            kv: None,
            rows: Vec::new(),
            scratch: ForwardOut::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The longest sequence's positions.
    pub(super) fn longest(&self) -> usize {
        self.rows.iter().map(|r| r.len).max().unwrap_or(0)
    }

    pub(super) fn row_len(&self, row: usize) -> Option<usize> {
        self.rows.get(row).map(|r| r.len)
    }

    /// Sets row `row` (which exists, checked by the caller) back to `len` positions: its next
    /// token goes to position `len`, and the slot's later positions are overwritten.
    pub(super) fn truncate_row(&mut self, row: usize, len: usize) {
        self.rows[row].len = len;
    }

    /// The first slot no row uses.
    fn free_slot(&self) -> Option<usize> {
        let slots = self.kv.as_ref().map_or(0, |kv| kv.slots);
        (0..slots).find(|s| self.rows.iter().all(|r| r.slot != *s))
    }

    /// Buffers with `slots` slots of `capacity` positions, the rows copied in, packed in row
    /// order.
    fn rebuild(&mut self, model: &Model, slots: usize, capacity: usize) -> Result<()> {
        let geometry = model.geometry(slots, capacity);
        let mut fresh = SharedKv::new(
            &model.session,
            &model.shared_names(),
            geometry,
            model.max_context(),
        )?;
        if let Some(old) = &self.kv {
            for (to, r) in self.rows.iter_mut().enumerate() {
                fresh.copy_slot(to, old, r.slot, r.len);
                r.slot = to;
            }
        }
        self.kv = Some(fresh);
        Ok(())
    }

    /// Makes room for `rows` sequences of up to `positions` positions each.
    fn reserve(&mut self, model: &Model, rows: usize, positions: usize) -> Result<()> {
        let (slots, capacity) = self
            .kv
            .as_ref()
            .map_or((0, 0), |kv| (kv.slots, kv.capacity));
        if rows <= slots && positions <= capacity {
            return Ok(());
        }
        let slots = rows.next_power_of_two().max(MIN_SLOTS).max(slots);
        let capacity = if positions > capacity {
            positions.max(2 * capacity)
        } else {
            capacity
        };
        self.rebuild(model, slots, capacity)
    }

    pub(super) fn join(&mut self, model: &Model, cache: &KvCache) -> Result<usize> {
        let Store::Shared(own) = &cache.store else {
            return Err(Error::InvalidArgument {
                name: "cache",
                reason: "an Optimum-layout cache cannot join a fused graph's batch".into(),
            });
        };
        let len = cache.len();
        self.reserve(model, self.rows.len() + 1, self.longest().max(len) + 1)?;
        let slot = self.free_slot().ok_or_else(|| {
            Error::Run("a fused batch found no free slot after making room".into())
        })?;
        if let Some(kv) = self.kv.as_mut() {
            kv.copy_slot(slot, own, 0, len);
        }
        self.rows.push(SlotRow { slot, len });
        Ok(self.rows.len() - 1)
    }

    pub(super) fn leave(&mut self, model: &Model, row: usize) -> Result<bool> {
        if row >= self.rows.len() {
            return Ok(false);
        }
        self.rows.remove(row);
        if let Some(kv) = &self.kv {
            let (slots, capacity) = (kv.slots, kv.capacity);
            if slots > MIN_SLOTS && 4 * self.rows.len() <= slots {
                self.rebuild(model, slots / 2, capacity)?;
            }
        }
        Ok(true)
    }

    /// One decode step: `tokens[r]` to row `r`; `out` gets the rows in row order.
    pub(super) fn step(
        &mut self,
        model: &mut Model,
        tokens: &[u32],
        out: &mut ForwardOut,
    ) -> Result<()> {
        let longest = self.longest();
        self.reserve(model, self.rows.len(), longest + 1)?;
        let Some(kv) = self.kv.as_mut() else {
            return Err(Error::Run(
                "a fused batch stepped before any row joined".into(),
            ));
        };
        let mut ids = vec![0i64; kv.slots];
        let mut seqlens_k = vec![0i32; kv.slots];
        for (r, &t) in self.rows.iter().zip(tokens) {
            ids[r.slot] = i64::from(t);
            seqlens_k[r.slot] = r.len as i32;
        }
        let rows = kv.slots;
        let step = FusedStep {
            ids,
            rows,
            seqlens_k,
            total: longest as i32 + 1,
            keep: 1,
        };
        model.run_fused(kv, step)?;
        let outputs = model.session.run_binding(&kv.binding).map_err(Error::run)?;
        model
            .layout
            .copy(&outputs, rows, rows, Positions::All, &mut self.scratch)?;
        let order: Vec<usize> = self.rows.iter().map(|r| r.slot).collect();
        out.gather_rows(&self.scratch, &order, model.vocab, model.hidden);
        for r in &mut self.rows {
            r.len += 1;
        }
        Ok(())
    }
}
