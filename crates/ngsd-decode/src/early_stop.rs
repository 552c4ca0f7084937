//! Early stop for steered, risky generations (spec §3.3): the abnormal-output detector.
//!
//! Two pure pieces the decode loop combines:
//!
//! - [`EarlyStopSchedule`] says when to look (spec §3.2 step 7): every 7th token between 128
//!   and 256 generated tokens, only for requests whose α is at least 0.5, and only until the
//!   detector has fired once. Once it fires, the token limit becomes the current length + 128
//!   and generation ends at the next token that decodes to `.`, `!` or `?`
//!   ([`stop_at_sentence_end`]).
//! - [`EarlyStopRules::detect`] looks at the decoded text of the last 64 generated tokens and
//!   reports the first rule that matches: a refusal phrase, trailing spaces, an emoji, or a
//!   control character.
//!
//! # Newlines do not trigger the stop (a deliberate change)
//!
//! In the reference implementation the control-character rule covers all of U+0000–U+001F,
//! so any `\n`, `\r` or `\t` in the window ends the generation (spec §3.3 rule 4, §13 item 1).
//! Newlines are normal in lists, steps and code, so that rule ends almost every multi-line
//! answer to a risky prompt at about 133 tokens plus the rest of the sentence, whether the text
//! is abnormal or not. Our default, [`ControlChars::ExceptWhitespace`], exempts `\n`, `\r` and
//! `\t` and still fires on the other control characters, which do signal degenerate output.
//! [`ControlChars::All`] keeps the reference behaviour for fidelity runs;
//! [`EarlyStopRules::paper`] selects it.

use serde::Serialize;

/// The reference implementation's refusal phrases, matched against the lowercased window.
pub const PAPER_REFUSAL_PHRASES: [&str; 12] = [
    "i cannot",
    "i can't",
    "just an ai",
    "cannot provide",
    "cannot fulfill",
    "i am sorry",
    "i'm sorry",
    "i apologize",
    "cannot help with",
    "can't help with",
    "cannot answer",
    "can't answer",
];

/// Emoji blocks of the reference detector (inclusive ranges).
const EMOJI_RANGES: [(char, char); 7] = [
    ('\u{1f600}', '\u{1f64f}'),
    ('\u{1f300}', '\u{1f5ff}'),
    ('\u{1f680}', '\u{1f6ff}'),
    ('\u{1f1e0}', '\u{1f1ff}'),
    ('\u{2700}', '\u{27bf}'),
    ('\u{1f900}', '\u{1f9ff}'),
    ('\u{1fa70}', '\u{1faff}'),
];

/// Which characters of U+0000–U+001F count as abnormal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlChars {
    /// All of them except `\n`, `\r` and `\t`. Our default (see the module docs).
    #[default]
    ExceptWhitespace,
    /// All of them, newlines and tabs included: the reference behaviour.
    All,
}

impl ControlChars {
    /// True when `c` triggers the control-character rule under this setting.
    pub fn triggers(self, c: char) -> bool {
        c <= '\u{1f}' && !(self == Self::ExceptWhitespace && matches!(c, '\n' | '\r' | '\t'))
    }
}

/// The abnormal-output rules, checked in field order (spec §3.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EarlyStopRules {
    /// Phrases that mark a refusal; matched case-insensitively anywhere in the window.
    /// Empty phrases are ignored. Default: [`PAPER_REFUSAL_PHRASES`].
    pub refusal_phrases: Vec<String>,
    /// Fire when the window ends with at least this many ASCII spaces; 0 disables the rule.
    /// Default: 3.
    pub trailing_spaces: usize,
    /// Fire on any character of the reference's emoji blocks. Default: true.
    pub emoji: bool,
    /// Which control characters fire. Default: [`ControlChars::ExceptWhitespace`].
    pub control_chars: ControlChars,
}

impl Default for EarlyStopRules {
    /// The reference rules with our newline fix.
    fn default() -> Self {
        Self {
            refusal_phrases: PAPER_REFUSAL_PHRASES
                .iter()
                .map(|&p| p.to_owned())
                .collect(),
            trailing_spaces: 3,
            emoji: true,
            control_chars: ControlChars::ExceptWhitespace,
        }
    }
}

/// Which rule fired, for the trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum EarlyStopReason {
    /// The window contains a refusal phrase.
    Refusal {
        /// The phrase, as configured.
        phrase: String,
    },
    /// The window ends with this many ASCII spaces.
    TrailingSpaces {
        /// Number of trailing spaces.
        count: usize,
    },
    /// The window contains an emoji.
    Emoji {
        /// The first emoji found.
        ch: char,
    },
    /// The window contains a control character.
    ControlChar {
        /// The first control character found.
        ch: char,
    },
}

impl EarlyStopRules {
    /// The reference rules exactly, newline quirk included ([`ControlChars::All`]).
    pub fn paper() -> Self {
        Self {
            control_chars: ControlChars::All,
            ..Self::default()
        }
    }

    /// Checks the decoded text of the last generated tokens (special tokens skipped) and returns
    /// the first rule that matches, in the order refusal, trailing spaces, emoji, control
    /// character; `None` when the text looks normal.
    ///
    /// The reference checks emoji and control characters after stripping trailing spaces; as
    /// spaces are neither, checking the whole text is the same.
    pub fn detect(&self, text: &str) -> Option<EarlyStopReason> {
        let lower = text.to_lowercase();
        if let Some(phrase) = self
            .refusal_phrases
            .iter()
            .find(|p| !p.is_empty() && lower.contains(p.to_lowercase().as_str()))
        {
            return Some(EarlyStopReason::Refusal {
                phrase: phrase.clone(),
            });
        }
        let count = text.len() - text.trim_end_matches(' ').len();
        if self.trailing_spaces > 0 && count >= self.trailing_spaces {
            return Some(EarlyStopReason::TrailingSpaces { count });
        }
        if self.emoji
            && let Some(ch) = text.chars().find(|&c| is_emoji(c))
        {
            return Some(EarlyStopReason::Emoji { ch });
        }
        text.chars()
            .find(|&c| self.control_chars.triggers(c))
            .map(|ch| EarlyStopReason::ControlChar { ch })
    }
}

/// True for a character in one of the reference detector's emoji blocks.
pub fn is_emoji(c: char) -> bool {
    EMOJI_RANGES.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// When the detector runs and what happens after it fires (spec §3.2 step 7). The defaults are
/// the reference's constants.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EarlyStopSchedule {
    /// First generated length at which a check may run. Default: 128.
    pub min_tokens: usize,
    /// Last generated length at which a check may run. Default: 256.
    pub max_tokens: usize,
    /// Checks run when the generated length is a multiple of this (0 is treated as 1).
    /// Default: 7, so checks fall at 133, 140, …, 252.
    pub every: usize,
    /// Checks run only for requests whose α is at least this. Default: 0.5.
    pub min_alpha: f32,
    /// After the detector fires, the token limit becomes the current length plus this.
    /// Default: 128.
    pub extension: usize,
    /// Number of most recent generated tokens whose decoded text goes to
    /// [`EarlyStopRules::detect`]. Default: 64.
    pub window: usize,
}

impl Default for EarlyStopSchedule {
    fn default() -> Self {
        Self {
            min_tokens: 128,
            max_tokens: 256,
            every: 7,
            min_alpha: 0.5,
            extension: 128,
            window: 64,
        }
    }
}

impl EarlyStopSchedule {
    /// Whether the detector runs after the token that brought the generated length to
    /// `cur_len`. Never once it has fired for this request.
    pub fn should_check(&self, cur_len: usize, alpha: f32, already_triggered: bool) -> bool {
        !already_triggered
            && alpha >= self.min_alpha
            && (self.min_tokens..=self.max_tokens).contains(&cur_len)
            && cur_len.is_multiple_of(self.every.max(1))
    }

    /// The new token limit once the detector fires at `cur_len`.
    pub fn extended_limit(&self, cur_len: usize) -> usize {
        cur_len.saturating_add(self.extension)
    }

    /// Index of the first generated token of the detector window, given `generated` tokens.
    pub fn window_start(&self, generated: usize) -> usize {
        generated.saturating_sub(self.window)
    }
}

/// True when a token's decoded text is exactly `.`, `!` or `?`, the tokens that end a
/// generation after the detector fired. No trimming: a token that decodes to `" ."` does not
/// count, as in the reference.
pub fn is_sentence_end(token_text: &str) -> bool {
    matches!(token_text, "." | "!" | "?")
}

/// The reference's post-trigger stop (spec §3.2 step 6, third check): stop after the token just
/// appended when the detector has fired, `cur_len ≥ limit / 2`, and the token is a sentence end.
/// `limit` is the current token limit (after [`EarlyStopSchedule::extended_limit`]).
pub fn stop_at_sentence_end(
    triggered: bool,
    cur_len: usize,
    limit: usize,
    token_text: &str,
) -> bool {
    triggered && cur_len.saturating_mul(2) >= limit && is_sentence_end(token_text)
}
