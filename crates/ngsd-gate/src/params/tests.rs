//! Tests for the gate parameter format.

use super::*;

#[test]
fn parses_lines_semicolons_comments_and_quotes() {
    let mut p = Params::parse(
        "# LIF\ntau = 8 # decay\nsoft_reset = 0.6; threshold=1.5\nweights = \"a;b # c \\\"q\\\"\"\n",
    )
    .unwrap();
    assert_eq!(p.f64_or("tau", 1.0).unwrap(), 8.0);
    assert_eq!(p.f64_or("soft-reset", 1.0).unwrap(), 0.6);
    assert_eq!(p.f64_or("threshold", 1.0).unwrap(), 1.5);
    assert_eq!(p.string("weights").unwrap(), "a;b # c \"q\"");
    assert_eq!(p.f64_or("absent", 2.5).unwrap(), 2.5);
    p.finish().unwrap();
}

#[test]
fn empty_text_is_no_parameters() {
    let mut p = Params::parse("").unwrap();
    assert!(p.string("x").is_none());
    p.finish().unwrap();
}

fn check_err(text: &str, read: impl FnOnce(&mut Params) -> Result<()>, expected: &str) {
    let err = match Params::parse(text) {
        Err(e) => e,
        Ok(mut p) => match read(&mut p).and_then(|()| p.finish()) {
            Err(e) => e,
            Ok(()) => panic!("`{text}` was accepted, expected error containing `{expected}`"),
        },
    };
    let msg = err.to_string();
    assert!(
        msg.contains(expected),
        "`{text}`: message `{msg}` lacks `{expected}`"
    );
}

#[test]
fn errors_name_what_is_wrong() {
    check_err("tau 8", |_| Ok(()), "line 1: `tau 8` has no `=`");
    check_err("tau = 1\ntau = 2", |_| Ok(()), "`tau` is given twice");
    check_err("tau = ", |_| Ok(()), "empty value");
    check_err("w = \"abc", |_| Ok(()), "unterminated string");
    check_err("w = \"a\" b", |_| Ok(()), "unexpected `b`");
    check_err(
        "tau = 8\ntua = 9",
        |p| p.f64_or("tau", 8.0).map(drop),
        "unknown gate parameter `tua` (this gate knows: tau)",
    );
    check_err("x = 1", |_| Ok(()), "this gate knows: no parameters");
    check_err(
        "tau = fast",
        |p| p.f64_or("tau", 8.0).map(drop),
        "`fast` is not a valid number",
    );
    check_err(
        "tau = inf",
        |p| p.f64_or("tau", 8.0).map(drop),
        "not a finite number",
    );
    check_err(
        "threshold = -1",
        |p| p.f64_in("threshold", 1.0, 0.0, 10.0).map(drop),
        "gate parameter `threshold`: -1 is outside [0, 10]",
    );
    check_err(
        "mode = medium",
        |p| p.choice("mode", &["hard", "soft"], "hard").map(drop),
        "`medium` is not one of: hard, soft",
    );
    check_err(
        "on = yes",
        |p| p.bool_or("on", false).map(drop),
        "boolean (true or false)",
    );
}

#[test]
fn host_keys_are_ignored_unless_read() {
    let ctx = HostContext {
        hidden_size: Some(576),
        model_sha256: Some("ab\"c".to_owned()),
    };
    let text = ctx.append_to("tau = 8");
    assert_eq!(
        text,
        "tau = 8\nhidden-size = 576\nmodel-sha256 = \"ab\\\"c\"\n"
    );
    let mut p = Params::parse(&text).unwrap();
    p.f64_or("tau", 1.0).unwrap();
    p.finish().unwrap();
    let mut p = Params::parse(&text).unwrap();
    assert_eq!(p.parsed::<usize>("hidden-size").unwrap(), Some(576));
    assert_eq!(p.string("model-sha256").unwrap(), "ab\"c");
}
