//! Golden cases for the abnormal-output detector (spec §14.4) and its schedule (spec §3.2).

use ngsd_decode::early_stop::{
    ControlChars, EarlyStopReason, EarlyStopRules, EarlyStopSchedule, PAPER_REFUSAL_PHRASES,
    is_emoji, is_sentence_end, stop_at_sentence_end,
};

fn check(rules: &EarlyStopRules, text: &str, expected: Option<EarlyStopReason>) {
    assert_eq!(rules.detect(text), expected, "{text:?}");
}

fn refusal(phrase: &str) -> Option<EarlyStopReason> {
    Some(EarlyStopReason::Refusal {
        phrase: phrase.to_owned(),
    })
}

#[test]
fn spec_14_4_table_with_paper_rules() {
    let paper = EarlyStopRules::paper();
    assert_eq!(paper.control_chars, ControlChars::All);
    check(&paper, "I'm sorry, but", refusal("i'm sorry"));
    check(
        &paper,
        "Step 1: buy   ",
        Some(EarlyStopReason::TrailingSpaces { count: 3 }),
    );
    check(
        &paper,
        "Here it is 😀",
        Some(EarlyStopReason::Emoji { ch: '😀' }),
    );
    check(
        &paper,
        "Line one\nLine two",
        Some(EarlyStopReason::ControlChar { ch: '\n' }),
    );
    check(&paper, "Plain sentence without newline.", None);
}

#[test]
fn default_rules_let_newlines_and_tabs_through() {
    let rules = EarlyStopRules::default();
    assert_eq!(rules.control_chars, ControlChars::ExceptWhitespace);
    check(&rules, "Line one\nLine two", None);
    check(&rules, "1. Mix\r\n2. Bake\n\tserve", None);
    check(
        &rules,
        "garbled\u{0}\u{7}",
        Some(EarlyStopReason::ControlChar { ch: '\u{0}' }),
    );
    check(
        &rules,
        "form\u{c}feed",
        Some(EarlyStopReason::ControlChar { ch: '\u{c}' }),
    );
    // The other rules are the paper's.
    check(&rules, "I'm sorry, but", refusal("i'm sorry"));
    check(
        &rules,
        "Step 1: buy   ",
        Some(EarlyStopReason::TrailingSpaces { count: 3 }),
    );
    check(
        &rules,
        "Here it is 😀",
        Some(EarlyStopReason::Emoji { ch: '😀' }),
    );
    check(&rules, "Plain sentence without newline.", None);
}

#[test]
fn rule_details() {
    let rules = EarlyStopRules::default();
    // Case-insensitive; the first phrase of the list that matches is reported.
    check(
        &rules,
        "AS AN AI, I CANNOT PROVIDE THAT",
        refusal("i cannot"),
    );
    check(&rules, "This is just an AI talking", refusal("just an ai"));
    // A typographic apostrophe is not the ASCII one (reference behaviour).
    check(&rules, "I’m sorry", None);
    // Two spaces are not enough; other trailing whitespace does not count.
    check(&rules, "almost  ", None);
    check(
        &rules,
        "tab \t   ",
        Some(EarlyStopReason::TrailingSpaces { count: 3 }),
    );
    check(&rules, "nbsp\u{a0}\u{a0}\u{a0}", None);
    // Refusal is checked before trailing spaces, emoji before control characters.
    check(&rules, "i apologize    ", refusal("i apologize"));
    check(&rules, "😀\u{1}", Some(EarlyStopReason::Emoji { ch: '😀' }));
    // Block edges.
    assert!(is_emoji('\u{2700}') && is_emoji('\u{27bf}') && is_emoji('\u{1faff}'));
    assert!(!is_emoji('\u{2600}') && !is_emoji('\u{1fa6f}') && !is_emoji('a'));
    assert_eq!(PAPER_REFUSAL_PHRASES.len(), 12);
}

#[test]
fn rules_can_be_switched_off() {
    let rules = EarlyStopRules {
        refusal_phrases: vec![String::new(), "Stop Here".to_owned()],
        trailing_spaces: 0,
        emoji: false,
        control_chars: ControlChars::ExceptWhitespace,
    };
    check(&rules, "text     ", None);
    check(&rules, "😀", None);
    check(&rules, "please stop here", refusal("Stop Here"));
    check(&rules, "", None);
}

#[test]
fn schedule_checks_every_seventh_token_from_133_to_252() {
    let schedule = EarlyStopSchedule::default();
    let points: Vec<usize> = (0..400)
        .filter(|&n| schedule.should_check(n, 0.5, false))
        .collect();
    let expected: Vec<usize> = (133..=252).step_by(7).collect();
    assert_eq!(points, expected);
    assert!(schedule.should_check(140, 0.9, false));
    assert!(!schedule.should_check(140, 0.1, false));
    assert!(!schedule.should_check(140, 0.9, true));
    assert_eq!(schedule.extended_limit(140), 268);
    assert_eq!(schedule.window_start(140), 76);
    assert_eq!(schedule.window_start(10), 0);
    let every_token = EarlyStopSchedule {
        every: 0,
        ..schedule
    };
    assert!(every_token.should_check(129, 0.5, false));
}

#[test]
fn sentence_end_stop() {
    for (token, expected) in [
        (".", true),
        ("!", true),
        ("?", true),
        (" .", false),
        ("...", false),
        ("", false),
    ] {
        assert_eq!(is_sentence_end(token), expected, "{token:?}");
    }
    // After a trigger at 140 the limit is 268: any later length satisfies cur_len ≥ limit / 2.
    assert!(stop_at_sentence_end(true, 141, 268, "."));
    assert!(!stop_at_sentence_end(true, 141, 268, ","));
    assert!(!stop_at_sentence_end(false, 141, 268, "."));
    assert!(!stop_at_sentence_end(true, 133, 268, "?"));
    assert!(stop_at_sentence_end(true, 134, 268, "?"));
}
