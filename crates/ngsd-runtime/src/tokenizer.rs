//! Tokenizer (Hugging Face `tokenizer.json`) and streaming detokenization that never splits a
//! UTF-8 character across two pieces.

use std::path::Path;

use crate::error::{Error, Result};
use crate::package::ModelPackage;

/// A loaded tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The same tokenizer with special-token markup encoded as plain text.
    as_text: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` from a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::NotFound {
                what: "tokenizer",
                path: path.to_path_buf(),
                hint: "; the model package needs a Hugging Face tokenizer.json".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::BadFile {
            what: "tokenizer",
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut as_text = inner.clone();
        as_text.set_encode_special_tokens(true);
        Ok(Tokenizer { inner, as_text })
    }

    /// Loads the package's tokenizer.
    pub fn from_package(package: &ModelPackage) -> Result<Self> {
        Self::from_file(&package.tokenizer_path())
    }

    /// Token ids of `text`. Special-token markup in the text (e.g. `<|im_start|>`) maps to its
    /// special id; no BOS/EOS is added (chat templates write those themselves).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Token ids of `text` taken as plain text: special-token markup such as `<|im_start|>` is
    /// split into ordinary tokens and never becomes a control token. Use it for anything a
    /// user wrote.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        self.as_text
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Text of one token, special tokens included (for traces).
    pub fn token_text(&self, id: u32) -> String {
        self.inner
            .decode(&[id], false)
            .unwrap_or_else(|_| format!("<{id}>"))
    }

    /// Id of a token given by its exact text, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Checks that `other` maps every token to the same id (so token ids can be shared between
    /// two models); returns a description of the first difference.
    pub fn check_same_vocabulary(&self, other: &Tokenizer) -> std::result::Result<(), String> {
        let (a, b) = (self.inner.get_vocab(true), other.inner.get_vocab(true));
        if a.len() != b.len() {
            return Err(format!(
                "vocabulary sizes differ ({} vs {})",
                a.len(),
                b.len()
            ));
        }
        let mut tokens: Vec<(&String, &u32)> = a.iter().collect();
        tokens.sort_by_key(|(_, id)| **id);
        for (token, id) in tokens {
            match b.get(token) {
                Some(other_id) if other_id == id => {}
                Some(other_id) => {
                    return Err(format!(
                        "token {token:?} is id {id} in one and {other_id} in the other"
                    ));
                }
                None => {
                    return Err(format!(
                        "token {token:?} (id {id}) is missing from the other"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Number of entries in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Turns a stream of token ids into text pieces, holding back bytes until they form whole
/// UTF-8 characters (a character may span several byte-level tokens).
#[derive(Debug, Default, Clone)]
pub struct TextStream {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl TextStream {
    /// A stream with no tokens yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token; returns the new text it completes, if any.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let now = tokenizer.decode(&self.ids[self.prefix_offset..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            let piece = match now.get(before.len()..) {
                Some(p) if now.starts_with(&before) => p.to_string(),
                // Decoding is not prefix-stable here (rare normalisation effects): emit the
                // difference from the common prefix on.
                _ => {
                    let common = now
                        .char_indices()
                        .zip(before.chars())
                        .take_while(|((_, a), b)| a == b)
                        .last()
                        .map_or(0, |((i, a), _)| i + a.len_utf8());
                    now[common..].to_string()
                }
            };
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }

    /// Text still held back at the end of the stream. The stream may end inside a
    /// character (a token budget can cut one in half): those bytes are not text, so the
    /// replacement characters they decode to are dropped rather than shown.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<Option<String>> {
        if self.read_offset == self.ids.len() {
            return Ok(None);
        }
        let before = tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let now = tokenizer.decode(&self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(now
            .get(before.len()..)
            .map(|s| s.trim_end_matches('\u{FFFD}'))
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    }
}
