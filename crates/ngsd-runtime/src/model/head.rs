//! Prompt heads: the tokens of a prompt before the message being answered (the chat template's
//! markup, the system prompt, earlier turns). Most requests to one server share their head, so
//! [`Model::prefill_prompt`] keeps the key/value rows of the last head it computed and copies
//! them into the next prompt that starts with the same head: the prefill then runs only the
//! message and what follows it.
//!
//! The rows of a kept head are the ones its own prefill wrote; a prompt that reuses them gets
//! the same cache as a prefill of the whole prompt in two chunks (the head, then the rest).

use super::{Model, Positions, Prefill};
use crate::error::Result;
use crate::kv::{KvCache, Store};
use crate::model::ForwardOut;

/// Longest head kept (positions): a longer one (a long conversation) is prefilled each time.
const MAX_HEAD: usize = 4096;

/// The key/value rows of the last head prefilled through [`Model::prefill_prompt`].
pub(crate) struct Head {
    ids: Vec<u32>,
    cache: KvCache,
}

/// What [`Model::prefill_prompt`] did.
#[derive(Debug)]
pub struct PromptPrefill {
    /// The prompt's cache.
    pub cache: KvCache,
    /// Whether every token is in the cache, or a `should_stop` cut the prefill short.
    pub fed: Prefill,
    /// Positions copied from the kept head: the forward output holds the rows from this
    /// position on.
    pub reused: usize,
}

impl Model {
    /// Prefills prompt `ids` (in chunks, as [`Model::prefill`]) into a new cache, where
    /// `ids[..head]` is the prompt's head. When the head is the one kept from an earlier
    /// prompt, its rows are copied in and only `ids[head..]` runs; `out` then holds the rows of
    /// those positions (see [`PromptPrefill::reused`]). Otherwise the whole prompt runs and
    /// its head is kept for the next prompt (a head of 0 tokens, or one that is the whole
    /// prompt, is never reused).
    pub fn prefill_prompt(
        &mut self,
        ids: &[u32],
        head: usize,
        positions: Positions,
        out: &mut ForwardOut,
        should_stop: &mut dyn FnMut() -> bool,
    ) -> Result<PromptPrefill> {
        let usable = head > 0 && head < ids.len() && head <= MAX_HEAD;
        let kept = self
            .head
            .as_ref()
            .filter(|h| usable && h.ids[..] == ids[..head]);
        let (mut cache, reused) = match kept {
            Some(h) => (self.copy_cache(&h.cache, head, ids.len())?, head),
            None => (self.new_cache()?, 0),
        };
        let fed = self.prefill(&mut cache, &ids[reused..], positions, out, should_stop)?;
        if usable && reused == 0 && matches!(fed, Prefill::Done) {
            let rows = self.copy_cache(&cache, head, head)?;
            self.head = Some(Head {
                ids: ids[..head].to_vec(),
                cache: rows,
            });
        }
        Ok(PromptPrefill { cache, fed, reused })
    }

    /// Forgets the kept head (its memory is freed).
    pub fn forget_head(&mut self) {
        self.head = None;
    }

    /// A new single-sequence cache holding the first `len` positions of `cache`, with room for
    /// `capacity` (a fused graph's buffers; an Optimum graph's cache grows as it goes).
    pub fn copy_cache(&self, cache: &KvCache, len: usize, capacity: usize) -> Result<KvCache> {
        let store = match &cache.store {
            Store::Values(values) => Store::Values(
                values
                    .iter()
                    .map(|v| crate::kv::keep_rows(v, len))
                    .collect::<Result<Vec<_>>>()?,
            ),
            Store::Shared(kv) => Store::Shared(Box::new(kv.copy(
                &self.session,
                &self.shared_names(),
                len,
                capacity,
                self.max_context(),
            )?)),
        };
        Ok(KvCache { store, len })
    }
}
