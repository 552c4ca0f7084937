//! Plain (undefended) generation: prefill, then sample token by token with the KV cache, stop on
//! EOS, a token budget, the context limit or a stop string, and stream text as it completes.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::model::{ForwardOut, Model, Positions};
use crate::sampling::{Sampler, SamplingConfig};
use crate::tokenizer::{TextStream, Tokenizer};

/// Settings of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Token selection.
    pub sampling: SamplingConfig,
    /// Generation ends before the first occurrence of any of these strings (not included).
    pub stop: Vec<String>,
    /// Ignore EOS and always produce `max_new_tokens` (benchmarks).
    pub ignore_eos: bool,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_new_tokens: 256,
            sampling: SamplingConfig::default(),
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// `max_new_tokens` were produced.
    MaxTokens,
    /// A stop string appeared (the string is given).
    Stop(String),
    /// The model's context window is full.
    ContextFull,
    /// The caller cancelled the generation (a client went away, a deadline passed).
    Cancelled,
    /// A safety rule of the caller ended the answer (ngsd-decode's early stop for steered,
    /// risky answers). Never a user's stop string.
    SafetyStop,
}

impl FinishReason {
    /// Short name, as in the OpenAI API (`stop` / `length`).
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Eos | FinishReason::Stop(_) => "stop",
            FinishReason::MaxTokens | FinishReason::ContextFull => "length",
            FinishReason::Cancelled => "cancelled",
            FinishReason::SafetyStop => "content_filter",
        }
    }
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated text (stop string excluded).
    pub text: String,
    /// The generated token ids (EOS included when it ended the generation).
    pub tokens: Vec<u32>,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Why it ended.
    pub finish: FinishReason,
    /// Time of the prompt's forward pass.
    pub prefill_time: Duration,
    /// Time of everything after the prefill.
    pub decode_time: Duration,
}

impl Generation {
    /// Decode speed over the tokens after the first (the first comes from the prefill).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let steps = self.tokens.len().saturating_sub(1);
        if steps == 0 || self.decode_time.is_zero() {
            return 0.0;
        }
        steps as f64 / self.decode_time.as_secs_f64()
    }
}

/// Releases streamed text, holding back any tail that could still become a stop string.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    text: String,
    emitted: usize,
}

impl StopFilter {
    /// A filter for these stop strings (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        StopFilter {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            text: String::new(),
            emitted: 0,
        }
    }

    /// Adds a piece; returns the text that is safe to show now, and the stop string if one
    /// completed (then the text is cut before it and nothing more should be pushed).
    pub fn push(&mut self, piece: &str) -> (String, Option<String>) {
        let search_from = self
            .emitted
            .saturating_sub(self.stops.iter().map(String::len).max().unwrap_or(0));
        let search_from = floor_char_boundary(&self.text, search_from);
        self.text.push_str(piece);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|at| (search_from + at, s))
            })
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = hit {
            let stop = stop.clone();
            self.text.truncate(at);
            let out = self
                .text
                .get(self.emitted..)
                .unwrap_or_default()
                .to_string();
            self.emitted = self.text.len();
            return (out, Some(stop));
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let hold = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len().min(self.text.len() + 1))
                    .rev()
                    .find(|&k| s.is_char_boundary(k) && self.text.ends_with(&s[..k]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let upto = floor_char_boundary(&self.text, self.text.len() - hold).max(self.emitted);
        let out = self.text[self.emitted..upto].to_string();
        self.emitted = upto;
        (out, None)
    }

    /// Everything not yet shown (end of stream).
    pub fn flush(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }

    /// The full text so far (stop string excluded).
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The text side of a generation: detokenizes token by token (UTF-8-safe), holds back what could
/// still become a stop string, and hands out text that is final. Shared by plain and gated
/// generation.
#[derive(Debug, Default)]
pub struct TextOutput {
    stream: TextStream,
    filter: StopFilter,
}

impl TextOutput {
    /// Output for these stop strings.
    pub fn new(stops: &[String]) -> Self {
        TextOutput {
            stream: TextStream::new(),
            filter: StopFilter::new(stops),
        }
    }

    /// Adds a generated token, passing final text to `on_text`; returns the stop string when one
    /// completed (the generation should end; text before it has been shown).
    pub fn push(
        &mut self,
        tokenizer: &Tokenizer,
        token: u32,
        on_text: &mut impl FnMut(&str),
    ) -> Result<Option<String>> {
        if let Some(piece) = self.stream.push(tokenizer, token)? {
            let (shown, stop) = self.filter.push(&piece);
            if !shown.is_empty() {
                on_text(&shown);
            }
            return Ok(stop);
        }
        Ok(None)
    }

    /// The generation ended without a stop string: shows everything still held back.
    pub fn finish(&mut self, tokenizer: &Tokenizer, on_text: &mut impl FnMut(&str)) -> Result<()> {
        if let Some(piece) = self.stream.finish(tokenizer)? {
            let (shown, _) = self.filter.push(&piece);
            if !shown.is_empty() {
                on_text(&shown);
            }
        }
        let rest = self.filter.flush();
        if !rest.is_empty() {
            on_text(&rest);
        }
        Ok(())
    }

    /// The text so far (stop string excluded).
    pub fn text(&self) -> &str {
        self.filter.text()
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Generates a continuation of `prompt_ids`, calling `on_text` with each piece of text as it
/// becomes final.
pub fn generate(
    model: &mut Model,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    config: &GenerateConfig,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    if prompt_ids.is_empty() {
        return Err(Error::InvalidArgument {
            name: "prompt",
            reason: "the prompt is empty".into(),
        });
    }
    if prompt_ids.len() >= model.max_context() {
        return Err(Error::ContextOverflow {
            prompt_tokens: prompt_ids.len(),
            max_context: model.max_context(),
        });
    }
    let mut sampler = Sampler::new(config.sampling)?;
    let vocab = model.vocab_size();
    let eos: Vec<u32> = model.eos_token_ids().to_vec();
    let mut cache = model.new_cache()?;
    let mut out = ForwardOut::default();
    let mut text = TextOutput::new(&config.stop);
    let mut tokens = Vec::new();

    let start = Instant::now();
    model.forward(&mut cache, prompt_ids, Positions::Last, &mut out)?;
    let prefill_time = start.elapsed();
    let decode_start = Instant::now();

    let finish = loop {
        let next = sampler.sample(out.last_logits(vocab));
        tokens.push(next);
        if !config.ignore_eos && eos.contains(&next) {
            break FinishReason::Eos;
        }
        if let Some(stop) = text.push(tokenizer, next, &mut on_text)? {
            break FinishReason::Stop(stop);
        }
        if tokens.len() >= config.max_new_tokens {
            break FinishReason::MaxTokens;
        }
        if cache.len() + 1 > model.max_context() {
            break FinishReason::ContextFull;
        }
        model.forward(&mut cache, &[next], Positions::Last, &mut out)?;
    };
    if !matches!(finish, FinishReason::Stop(_)) {
        text.finish(tokenizer, &mut on_text)?;
    }
    Ok(Generation {
        text: text.text().to_string(),
        tokens,
        prompt_tokens: prompt_ids.len(),
        finish,
        prefill_time,
        decode_time: decode_start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, Option<String>, String) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter::new(&stops);
        let mut shown = Vec::new();
        for p in pieces {
            let (s, stop) = f.push(p);
            shown.push(s);
            if stop.is_some() {
                return (shown, stop, f.text().to_string());
            }
        }
        shown.push(f.flush());
        (shown, None, f.text().to_string())
    }

    #[test]
    fn stop_string_split_across_pieces_is_never_shown() {
        let (shown, stop, text) = run(&["END"], &["hello E", "N", "D more"]);
        assert_eq!(stop.as_deref(), Some("END"));
        assert_eq!(text, "hello ");
        assert_eq!(shown.concat(), "hello ");
        assert!(shown.iter().all(|s| !s.contains('E')), "{shown:?}");
    }

    #[test]
    fn held_back_prefix_is_released_when_it_does_not_complete() {
        let (shown, stop, text) = run(&["END"], &["a E", "x b"]);
        assert_eq!(stop, None);
        assert_eq!(text, "a Ex b");
        assert_eq!(shown.concat(), "a Ex b");
    }

    #[test]
    fn earliest_stop_wins_and_multibyte_text_is_safe() {
        let (_, stop, text) = run(&["ß!", "!"], &["grüße ", "ß", "!"]);
        assert_eq!(stop.as_deref(), Some("ß!"));
        assert_eq!(text, "grüße ");
    }

    #[test]
    fn no_stops_passes_everything_through() {
        let (shown, stop, text) = run(&[], &["a", "b"]);
        assert_eq!(
            (shown.concat(), stop, text),
            ("ab".to_string(), None, "ab".to_string())
        );
    }
}
