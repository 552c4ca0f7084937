//! Early stop inside one generation: the detector of [`crate::early_stop`] run on its schedule,
//! and the stop at the next sentence end once it has fired.

use crate::early_stop::{EarlyStopReason, EarlyStopRules, EarlyStopSchedule, stop_at_sentence_end};

/// Early-stop settings: which rules fire and when they are checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EarlyStop {
    /// What counts as abnormal output.
    pub rules: EarlyStopRules,
    /// When the detector runs and how far the limit moves when it fires.
    pub schedule: EarlyStopSchedule,
}

impl EarlyStop {
    /// Per-request state.
    pub fn start(self) -> EarlyStopState {
        EarlyStopState {
            config: self,
            fired: None,
            limit: None,
        }
    }
}

/// The early-stop state of one request.
#[derive(Debug, Clone)]
pub struct EarlyStopState {
    config: EarlyStop,
    /// Why the detector fired, if it did.
    pub fired: Option<EarlyStopReason>,
    limit: Option<usize>,
}

impl EarlyStopState {
    /// Called after each generated token (`tokens` includes it). Returns true when generation
    /// should end now. `decode` turns token ids into text (special tokens skipped).
    pub fn after_token(
        &mut self,
        tokens: &[u32],
        alpha: f32,
        max_new_tokens: usize,
        decode: impl Fn(&[u32]) -> String,
    ) -> bool {
        let cur_len = tokens.len();
        let limit = self.limit(max_new_tokens);
        // Only once the detector has fired does the last token's text matter (no decode per
        // token on the hot path otherwise).
        if self.fired.is_some()
            && let Some(last) = tokens.last()
            && stop_at_sentence_end(true, cur_len, limit, &decode(std::slice::from_ref(last)))
        {
            return true;
        }
        let schedule = &self.config.schedule;
        if schedule.should_check(cur_len, alpha, self.fired.is_some()) {
            let window = decode(&tokens[schedule.window_start(cur_len)..]);
            if let Some(reason) = self.config.rules.detect(&window) {
                self.fired = Some(reason);
                self.limit = Some(schedule.extended_limit(cur_len));
            }
        }
        false
    }

    /// The current token limit: the request's, or less once the detector has fired.
    pub fn limit(&self, max_new_tokens: usize) -> usize {
        self.limit.map_or(max_new_tokens, |l| l.min(max_new_tokens))
    }
}
