//! Prompt heads: the tokens of a prompt before the message being answered (the chat template's
//! markup, the system prompt, earlier turns). Most requests to one server share their head, so
//! [`Model::prefill_prompt`] keeps the key/value rows of the last head it computed and copies
//! them into the next prompt whose head starts with it: the prefill then runs only the rest
//! (the message and what follows, or the later turns of a conversation too). The kept head is
//! replaced only by a prompt that could not use it, so the head every request shares stays
//! kept while conversations that go on from it come and go.
//!
//! The rows of a kept head are the ones its own prefill wrote; a prompt that reuses them gets
//! the same cache as a prefill of the whole prompt in two chunks (the head, then the rest).

use super::{Model, Positions, Prefill};
use crate::error::Result;
use crate::kv::{KvCache, SharedKv, Store};
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
    /// Whether every token is in the cache, or a `should_stop` cut the prefill short (its
    /// `fed` counts from [`PromptPrefill::reused`]).
    pub fed: Prefill,
    /// Positions copied from the kept head: the forward output holds the rows from this
    /// position on.
    pub reused: usize,
}

impl Model {
    /// Prefills prompt `ids` (in chunks, as [`Model::prefill`]) into a new cache, where
    /// `ids[..head]` is the prompt's head. When the head kept from an earlier prompt begins
    /// this head (it is the same, or this one goes on with earlier turns), its rows are copied
    /// in and only the rest runs; `out` then holds the rows of those positions (see
    /// [`PromptPrefill::reused`]). Otherwise the whole prompt runs and its head is kept in
    /// place of the old one. A head of 0 tokens, one that is the whole prompt, or one longer
    /// than 4,096 tokens is never kept.
    pub fn prefill_prompt(
        &mut self,
        ids: &[u32],
        head: usize,
        positions: Positions,
        out: &mut ForwardOut,
        should_stop: &mut dyn FnMut() -> bool,
    ) -> Result<PromptPrefill> {
        let head = head.min(ids.len());
        let kept = self
            .head
            .as_ref()
            .filter(|h| h.ids.len() <= head && h.ids.len() < ids.len())
            .filter(|h| h.ids[..] == ids[..h.ids.len()]);
        let (mut cache, reused) = match kept {
            Some(h) => (
                self.copy_cache(&h.cache, h.ids.len(), ids.len())?,
                h.ids.len(),
            ),
            None => (self.new_cache()?, 0),
        };
        let fed = self.prefill(&mut cache, &ids[reused..], positions, out, should_stop)?;
        let keep = head > 0 && head < ids.len() && head <= MAX_HEAD;
        if keep && reused == 0 && matches!(fed, Prefill::Done) {
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
            Store::Shared(kv) => Store::Shared(Box::new(self.copy_shared(kv, len, capacity)?)),
        };
        Ok(KvCache { store, len })
    }

    /// A new single-sequence fused cache holding the first `len` positions of `kv`'s slot 0,
    /// with room for `capacity`.
    pub(crate) fn copy_shared(
        &self,
        kv: &SharedKv,
        len: usize,
        capacity: usize,
    ) -> Result<SharedKv> {
        kv.copy(
            &self.session,
            &self.shared_names(),
            len,
            capacity,
            self.max_context(),
        )
    }
}
