//! Answer-time monitoring: the gate re-checks the answer every few tokens, and text reaches
//! the caller only once a check has cleared the tokens that make it.
//!
//! The hold is bounded: at most `every` tokens wait for the next check (and the text they
//! make; a character or stop string straddling the boundary may wait a few tokens more).
//! When a check steers, the uncleared tokens are dropped and generated again under steering,
//! so nothing shown is ever taken back.

use crate::features::AnswerPool;

/// What the monitor holds between checks.
#[derive(Debug, Clone)]
pub struct Monitor {
    /// Tokens between checks.
    every: usize,
    /// Answer tokens cleared by a check (their text has been released).
    cleared: usize,
    /// Text made by uncleared tokens, not yet shown.
    held: String,
    /// The answer pool at the last clear, restored when a check fires.
    pool_at_clear: AnswerPool,
    /// Checks made.
    pub checks: usize,
    /// Whether a check has fired (monitoring stops then: the answer is steered).
    pub fired: Option<MonitorFire>,
}

/// When and why a check fired.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MonitorFire {
    /// Answer tokens when the check fired.
    pub at_tokens: usize,
    /// Answer tokens kept (cleared earlier); the rest were generated again, steered.
    pub kept_tokens: usize,
    /// The gate's explanation value (the answer neuron's probability).
    pub value: f32,
}

impl Monitor {
    /// A monitor checking every `every` tokens, starting from an empty answer pool.
    pub fn new(every: usize, pool: AnswerPool) -> Self {
        Monitor {
            every: every.max(1),
            cleared: 0,
            held: String::new(),
            pool_at_clear: pool,
            checks: 0,
            fired: None,
        }
    }

    /// Holds a piece of text until the next clearing check.
    pub fn hold(&mut self, piece: &str) {
        self.held.push_str(piece);
    }

    /// Whether a check is due after `tokens` answer tokens (never once a check fired).
    pub fn due(&self, tokens: usize) -> bool {
        self.fired.is_none() && tokens >= self.cleared + self.every
    }

    /// Whether tokens wait for a check.
    pub fn pending(&self, tokens: usize) -> bool {
        self.fired.is_none() && tokens > self.cleared
    }

    /// A check cleared the first `tokens` answer tokens: releases the held text.
    pub fn clear(&mut self, tokens: usize, pool: &AnswerPool, on_text: &mut impl FnMut(&str)) {
        self.checks += 1;
        self.cleared = tokens;
        self.pool_at_clear = pool.clone();
        if !self.held.is_empty() {
            on_text(&self.held);
            self.held.clear();
        }
    }

    /// A check fired after `tokens` answer tokens: drops the held text and returns how many
    /// tokens to keep and the answer pool as it was then.
    pub fn fire(&mut self, tokens: usize, value: f32) -> (usize, AnswerPool) {
        self.checks += 1;
        self.held.clear();
        self.fired = Some(MonitorFire {
            at_tokens: tokens,
            kept_tokens: self.cleared,
            value,
        });
        (self.cleared, self.pool_at_clear.clone())
    }

    /// After a fire, the answer is steered and no longer held: text passes straight on.
    pub fn passes_through(&self) -> bool {
        self.fired.is_some()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    #[test]
    fn text_waits_for_a_clearing_check() {
        let mut m = Monitor::new(2, AnswerPool::default());
        let mut shown = String::new();
        m.hold("Hello");
        assert!(!m.due(1) && m.pending(1));
        m.hold(" there");
        assert!(m.due(2));
        m.clear(2, &AnswerPool::default(), &mut |t| shown.push_str(t));
        assert_eq!(shown, "Hello there");
        assert!(!m.pending(2) && !m.due(3) && m.due(4));
    }

    #[test]
    fn a_fire_drops_the_held_text_and_keeps_the_cleared_tokens() {
        let mut m = Monitor::new(4, AnswerPool::default());
        let mut shown = String::new();
        m.hold("Fine so far.");
        m.clear(4, &AnswerPool::default(), &mut |t| shown.push_str(t));
        m.hold(" Now the bad part");
        let (keep, _) = m.fire(8, 0.97);
        assert_eq!(keep, 4);
        assert_eq!(shown, "Fine so far.");
        assert!(m.passes_through() && !m.due(100) && !m.pending(100));
        assert_eq!(
            m.fired,
            Some(MonitorFire {
                at_tokens: 8,
                kept_tokens: 4,
                value: 0.97
            })
        );
    }
}
