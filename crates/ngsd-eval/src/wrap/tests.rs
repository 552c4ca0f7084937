//! Placeholders: finding, checking and filling them, and splitting a request into parts.

use super::*;

fn template(text: &str) -> Template {
    Template {
        family: "f".into(),
        name: "t".into(),
        text: text.into(),
        parts: check_placeholders(text).expect("valid template"),
    }
}

fn check_rejected(text: &str, expected: &str) {
    let err = check_placeholders(text).expect_err("should be rejected");
    assert!(err.contains(expected), "{err:?} lacks {expected:?}");
}

#[test]
fn request_is_put_in_every_place_and_other_braces_stay() {
    let t = template(r#"Say {"a": 1} then {request}. Again: {request}"#);
    assert_eq!(t.parts, 0);
    assert_eq!(
        t.apply("name a river"),
        r#"Say {"a": 1} then name a river. Again: name a river"#
    );
    // A request that itself holds a placeholder is not filled again.
    assert_eq!(
        template("<{request}>").apply("{request} {part1}"),
        "<{request} {part1}>"
    );
}

#[test]
fn parts_split_words_evenly_earlier_runs_longer() {
    let t = template("A={part1}; B={part2}; C={part3}; say A+B+C");
    assert_eq!(t.parts, 3);
    assert_eq!(
        t.apply("one two three four five six seven"),
        "A=one two three; B=four five; C=six seven; say A+B+C"
    );
    assert_eq!(t.apply("just two"), "A=just; B=two; C=; say A+B+C");
    assert_eq!(split_words("  a   b  ", 2), ["a", "b"]);
}

#[test]
fn bad_placeholders_are_named() {
    check_rejected("Nothing to fill.", "has no `{request}` placeholder");
    check_rejected("Please {requst} now", "unknown placeholder `{requst}`");
    check_rejected("{part0} {part1}", "unknown placeholder `{part0}`");
    check_rejected("{request} and {part1} {part2}", "holds both");
    check_rejected("only {part1}", "at least `{part1}` and `{part2}`");
    check_rejected("{part1} {part3}", "`{part2}` is missing");
}

#[test]
fn braces_that_are_not_placeholders() {
    assert_eq!(next_placeholder("fn f() { x }"), None);
    assert_eq!(next_placeholder("{Request}"), None);
    assert_eq!(
        next_placeholder("a {{request}} b"),
        Some(("a {", "request", "} b"))
    );
}
