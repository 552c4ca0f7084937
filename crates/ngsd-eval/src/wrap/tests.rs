//! Placeholders: finding, checking and filling them, and splitting a request into parts.

use super::*;

fn template(text: &str) -> Template {
    Template {
        family: "f".into(),
        name: "t".into(),
        text: text.into(),
        history: Vec::new(),
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

fn turn(role: Role, content: &str) -> Turn {
    Turn {
        role,
        content: content.into(),
    }
}

#[test]
fn history_turns_get_the_parts_too() {
    let t = Template {
        family: "f".into(),
        name: "t".into(),
        text: "Now join X and Y and do it.".into(),
        history: vec![
            turn(Role::User, "Remember X = \"{part1}\"."),
            turn(Role::Assistant, "Noted."),
            turn(Role::User, "And Y = \"{part2}\"."),
            turn(Role::Assistant, "Noted too."),
        ],
        parts: 2,
    };
    let h = t.apply_history("open the red door");
    assert_eq!(h[0].content, "Remember X = \"open the\".");
    assert_eq!(h[2].content, "And Y = \"red door\".");
    assert_eq!(h[1], turn(Role::Assistant, "Noted."));
    assert_eq!(t.apply("open the red door"), "Now join X and Y and do it.");
}

#[test]
fn history_must_alternate_and_end_with_the_assistant() {
    assert!(check_history(&[]).is_ok());
    assert!(check_history(&[turn(Role::User, "a"), turn(Role::Assistant, "b")]).is_ok());
    let err = check_history(&[turn(Role::Assistant, "a")]).expect_err("starts wrong");
    assert!(
        err.contains("turn 0 is from the assistant, but the user was expected"),
        "{err}"
    );
    let err = check_history(&[turn(Role::User, "a")]).expect_err("ends wrong");
    assert!(
        err.contains("the last history turn (turn 0) is from the user"),
        "{err}"
    );
}
