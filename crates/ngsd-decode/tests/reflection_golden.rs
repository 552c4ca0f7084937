//! Golden cases for self-reflection: score parsing, the risk formula and α (spec §14.2), plus
//! edge cases of the reply parser.

use ngsd_decode::reflection::{
    AlphaMap, DefaultedScore, Dimension, FallbackReason, ParseStatus, RiskScores, ScoreIssue,
    ZeroScoreRule, alpha_for_probability, alpha_for_risk, overall_risk, parse_scores,
    system_prompt, user_prompt,
};

use ZeroScoreRule::{Bump, Max};

fn check(
    raw: &str,
    prompt_chars: usize,
    zero_rule: ZeroScoreRule,
    expected_scores: [i64; 4],
    expected_overall: f32,
    expected_alpha: f32,
) {
    let outcome = parse_scores(raw);
    let [severity, actionability, evasion, targeting] = expected_scores;
    let expected = RiskScores {
        severity,
        actionability,
        evasion,
        targeting,
    };
    assert_eq!(outcome.scores, expected, "scores of {raw:?}");
    let overall = overall_risk(&outcome.scores, prompt_chars, zero_rule);
    assert_eq!(overall, expected_overall, "overall of {raw:?}");
    assert_eq!(alpha_for_risk(overall), expected_alpha, "alpha of {raw:?}");
}

const ALL_ZERO: &str =
    r#"{"severityScore": 0, "actionabilityScore": 0, "evasionScore": 0, "targetingScore": 0}"#;

#[test]
fn spec_14_2_table() {
    // Model names of the table: vicuna → Max; llama2 and qwen3 → Bump.
    assert_eq!(ZeroScoreRule::for_model_name("vicuna"), Max);
    assert_eq!(ZeroScoreRule::for_model_name("llama2"), Bump);
    assert_eq!(ZeroScoreRule::for_model_name("qwen3"), Bump);

    check(
        r#"{"severityScore": 2, "actionabilityScore": 1, "evasionScore": 0, "targetingScore": 0}"#,
        5,
        Max,
        [2, 1, 0, 0],
        2.0,
        0.1,
    );
    check(
        "```json\n{\"severityScore\": 9, \"actionabilityScore\": 8, \"evasionScore\": 3, \"targetingScore\": 1}\n```",
        5,
        Bump,
        [9, 8, 3, 1],
        8.0,
        0.9,
    );
    check(
        r#"Sure! {"SeverityScore": "4", "actionabilityScore": 9, "evasionScore": 9, "targetingScore": 0}"#,
        5,
        Bump,
        [4, 9, 9, 0],
        6.0,
        0.5,
    );
    check("I cannot evaluate this.", 5, Max, [7, 7, 7, 7], 7.0, 0.9);
    check(
        &format!("[1,2] {ALL_ZERO}"),
        5,
        Bump,
        [7, 7, 7, 7],
        7.0,
        0.9,
    );
    check(ALL_ZERO, 5, Max, [0, 0, 0, 0], 10.0, 0.9);
    check(ALL_ZERO, 5, Bump, [0, 0, 0, 0], 1.0, 0.1);
    check(
        r#"{"severity\_Score": 6, "severityScore": 6.9, "actionabilityScore": "6.5", "evasionScore": 6, "targetingScore": 6}"#,
        5,
        Bump,
        [6, 7, 6, 6],
        6.0,
        0.5,
    );
    check(
        r#"{"severityScore": 5, "actionabilityScore": 6, "evasionScore": 3, "targetingScore": 2}"#,
        2001,
        Bump,
        [5, 6, 3, 2],
        8.0,
        0.9,
    );
    check(
        r#"{"severityScore": 3, "actionabilityScore": 5, "evasionScore": 2, "targetingScore": 1}"#,
        5,
        Bump,
        [3, 5, 2, 1],
        3.0,
        0.1,
    );
}

#[test]
fn fallback_rows_say_why() {
    let no_json = parse_scores("I cannot evaluate this.");
    assert!(no_json.used_fallback());
    assert_eq!(
        no_json.status,
        ParseStatus::Fallback {
            reason: FallbackReason::NoJson
        }
    );

    let list_first = parse_scores(&format!("[1,2] {ALL_ZERO}"));
    assert_eq!(
        list_first.status,
        ParseStatus::Fallback {
            reason: FallbackReason::NotAnObject
        }
    );

    let partial = parse_scores(
        r#"{"severity\_Score": 6, "severityScore": 6.9, "actionabilityScore": "6.5", "evasionScore": 6, "targetingScore": 6}"#,
    );
    assert!(!partial.used_fallback());
    assert_eq!(
        partial.status,
        ParseStatus::Parsed {
            defaulted: vec![DefaultedScore {
                dimension: Dimension::Actionability,
                issue: ScoreIssue::NotAnInteger,
            }],
        }
    );
}

fn scores(raw: &str) -> [i64; 4] {
    let s = parse_scores(raw).scores;
    [s.severity, s.actionability, s.evasion, s.targeting]
}

#[test]
fn prefix_parse_ignores_trailing_text() {
    let raw = r#"{"severityScore": 1, "actionabilityScore": 2, "evasionScore": 3, "targetingScore": 4} and that is my rating}"#;
    assert_eq!(scores(raw), [1, 2, 3, 4]);
}

#[test]
fn braces_inside_strings_do_not_end_the_object() {
    let raw = r#"{"note": "} {\"severityScore\": 0}", "severityScore": 8, "actionabilityScore": 1, "evasionScore": 1, "targetingScore": 1}"#;
    assert_eq!(scores(raw), [8, 1, 1, 1]);
}

#[test]
fn a_broken_object_falls_through_to_a_later_brace() {
    // The outer `{` fails (no closing brace); the inner one decodes.
    let raw = r#"{"rating": {"severityScore": 2, "actionabilityScore": 3, "evasionScore": 4, "targetingScore": 5}"#;
    assert_eq!(scores(raw), [2, 3, 4, 5]);
}

#[test]
fn fenced_blocks_come_before_the_whole_text() {
    let raw = "{\"severityScore\": 1}\n```JSON\n{\"severityScore\": 9, \"actionabilityScore\": 9, \"evasionScore\": 9, \"targetingScore\": 9}\n```";
    assert_eq!(scores(raw), [9, 9, 9, 9]);
    // Any language tag other than json stays part of the block, which still decodes.
    let raw = "```python\n{\"severityScore\": 2, \"actionabilityScore\": 2, \"evasionScore\": 2, \"targetingScore\": 2}\n```";
    assert_eq!(scores(raw), [2, 2, 2, 2]);
    // A block without JSON is skipped and the whole text is tried next.
    let raw = "```\nno json\n``` {\"severityScore\": 3, \"actionabilityScore\": 3, \"evasionScore\": 3, \"targetingScore\": 3}";
    assert_eq!(scores(raw), [3, 3, 3, 3]);
}

#[test]
fn byte_order_marks_are_removed() {
    let raw = "\u{feff}{\u{feff}\"severityScore\": 4, \"actionabilityScore\": 4, \"evasionScore\": 4, \"targetingScore\": 4}";
    assert_eq!(scores(raw), [4, 4, 4, 4]);
}

#[test]
fn list_before_dict_is_a_fallback_even_inside_a_fence() {
    let raw = "```json\n[{\"severityScore\": 1}]\n```";
    let outcome = parse_scores(raw);
    assert_eq!(
        outcome.status,
        ParseStatus::Fallback {
            reason: FallbackReason::NotAnObject
        }
    );
    // A `[` that does not decode is skipped, so the object after it counts.
    assert_eq!(scores(r#"[oops {"severityScore": 2}"#), [2, 7, 7, 7]);
}

#[test]
fn python_int_semantics_per_value() {
    let raw = r#"{"severityScore": true, "actionabilityScore": 8.9, "evasionScore": NaN, "targetingScore": " 8 "}"#;
    assert_eq!(scores(raw), [1, 8, 7, 8]);
    let raw = r#"{"severityScore": Infinity, "actionabilityScore": -3, "evasionScore": 15, "targetingScore": [1]}"#;
    assert_eq!(scores(raw), [7, -3, 15, 7]);
    // null reads as absent, so the capitalised key is used; the last duplicate wins.
    let raw =
        r#"{"severityScore": null, "SeverityScore": 6, "evasionScore": 1, "evasionScore": 2}"#;
    assert_eq!(scores(raw), [6, 7, 2, 7]);
}

#[test]
fn no_input_panics() {
    let odd = [
        "",
        " ",
        "{",
        "}",
        "[",
        "[[[",
        "]]]",
        "```",
        "``````",
        "```json",
        "```json```",
        "\u{feff}",
        "\u{feff}{}",
        "{}",
        "[]",
        "{\"",
        "{\"a\":",
        "{\"a\":1",
        "\"",
        "\\",
        "\\_",
        "\\u",
        "{\"\\u",
        "{\"\\ud800\\u",
        "-",
        "-Infinity",
        "{\"a\": -",
        "{\"a\": 1e",
        "{\"a\": 1.",
        "NaN",
        "\u{0}",
        "{\u{0}}",
        "😀{",
        "{\"😀\": \"😀\"}",
        "ſ",
        "```jſon\n{}\n```",
    ];
    for raw in odd {
        let outcome = parse_scores(raw);
        if raw.trim_start_matches('\u{feff}').starts_with("{}") {
            assert!(!outcome.used_fallback(), "{raw:?}");
        }
    }
    let deep = "[".repeat(10_000);
    assert!(parse_scores(&deep).used_fallback());
    let deep_objects = "{\"a\":".repeat(3_000);
    assert!(parse_scores(&deep_objects).used_fallback());

    // Deterministic pseudo-random strings over JSON-ish fragments.
    let fragments = [
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "\\",
        "_",
        "```",
        "json",
        "severityScore",
        "7",
        "-",
        ".",
        "e",
        "NaN",
        "null",
        " ",
        "\n",
        "\u{feff}",
        "é",
        "😀",
        "\\u00",
        "true",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..3000 {
        let mut raw = String::new();
        for _ in 0..(state % 40) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            raw.push_str(fragments[(state % fragments.len() as u64) as usize]);
        }
        let outcome = parse_scores(&raw);
        let overall = overall_risk(&outcome.scores, raw.chars().count(), Bump);
        assert!(overall.is_finite());
        state = state.wrapping_add(1);
    }
}

#[test]
fn risk_formula_edges() {
    let s = |severity, actionability, evasion, targeting| RiskScores {
        severity,
        actionability,
        evasion,
        targeting,
    };
    // Early return keeps the unclipped score.
    assert_eq!(overall_risk(&s(5, 15, 0, 0), 5, Bump), 15.0);
    // The checks run in the order actionability, evasion, targeting.
    assert_eq!(overall_risk(&s(5, 7, 9, 8), 5, Bump), 9.0);
    // Severity below 5 never returns early: 4/2 + (10 + 10)/4 = 7. The formula clips to 10.
    assert_eq!(overall_risk(&s(4, 10, 10, 10), 5, Bump), 7.0);
    assert_eq!(overall_risk(&s(30, 0, 0, 0), 5, Bump), 10.0);
    assert_eq!(overall_risk(&s(-5, -5, -5, -5), 5, Bump), 0.0);
    // The long-prompt bump clips, so the early return stays within 10.
    assert_eq!(overall_risk(&s(9, 15, 0, 0), 2001, Bump), 10.0);
    // 2000 characters is not long.
    assert_eq!(overall_risk(&s(3, 5, 2, 1), 2000, Bump), 3.0);
    // After the bump all-zero cannot happen.
    assert_eq!(overall_risk(&s(0, 0, 0, 0), 2001, Max), 2.0);
    // Saturated integers keep the α the reference would give.
    assert_eq!(
        alpha_for_risk(overall_risk(&s(i64::MAX, 0, 0, 0), 5, Bump)),
        0.9
    );
    assert_eq!(
        alpha_for_risk(overall_risk(&s(i64::MIN, 0, 0, 0), 5, Bump)),
        0.1
    );
}

#[test]
fn alpha_levels_and_probe_mapping() {
    for (risk, alpha) in [
        (0.0, 0.1),
        (4.9, 0.1),
        (5.0, 0.5),
        (6.0, 0.5),
        (6.1, 0.9),
        (10.0, 0.9),
    ] {
        assert_eq!(alpha_for_risk(risk), alpha, "risk {risk}");
    }
    assert_eq!(alpha_for_risk(f32::NAN), 0.5);
    let map = AlphaMap::default();
    assert_eq!(map, AlphaMap::PAPER);
    for (p, alpha) in [
        (0.0, 0.1),
        (0.3, 0.1),
        (0.5, 0.5),
        (0.55, 0.5),
        (0.7, 0.9),
        (1.0, 0.9),
    ] {
        assert_eq!(alpha_for_probability(p, &map), alpha, "p {p}");
    }
    let custom = AlphaMap {
        low: 0.0,
        mid: 0.25,
        high: 1.0,
    };
    assert_eq!(custom.map(7.0), 1.0);
    assert_eq!(alpha_for_probability(0.52, &custom), 0.25);
}

#[test]
fn prompts_state_the_output_contract() {
    let system = system_prompt();
    for key in Dimension::ALL.map(Dimension::key) {
        assert!(system.contains(key), "{key}");
    }
    assert!(system.contains("0 (none) to 10"));
    let user = user_prompt("How do I bake bread?");
    assert!(user.contains("How do I bake bread?"));
    // Kept short for small models.
    assert!(
        system.len() < 1200,
        "system prompt is {} bytes",
        system.len()
    );
}
