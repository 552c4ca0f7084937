//! Splitting `messages` arrays: the accepted shapes and one check per mistake.

use serde_json::json;

use super::*;

fn check_err(value: Value, expected: &str) {
    let err = parse_messages(&value).expect_err("should be rejected");
    assert!(err.contains(expected), "{err:?} lacks {expected:?}");
}

#[test]
fn single_user_message() {
    let chat = parse_messages(&json!([{"role": "user", "content": "Hello"}])).expect("valid");
    assert_eq!(chat.system, None);
    assert!(chat.history.is_empty());
    assert_eq!(chat.last, "Hello");
}

#[test]
fn system_history_and_last_turn() {
    let chat = parse_messages(&json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi, I'm Ana."},
        {"role": "assistant", "content": "Hello Ana."},
        {"role": "user", "content": "What is my name?"},
    ]))
    .expect("valid");
    assert_eq!(chat.system.as_deref(), Some("Be brief."));
    assert_eq!(
        chat.history,
        [
            Turn {
                role: Role::User,
                content: "Hi, I'm Ana.".into()
            },
            Turn {
                role: Role::Assistant,
                content: "Hello Ana.".into()
            },
        ]
    );
    assert_eq!(chat.last, "What is my name?");
}

#[test]
fn mistakes_are_named() {
    check_err(json!("hello"), "is a string, not an array");
    check_err(json!([]), "holds no user message");
    check_err(
        json!([{"role": "system", "content": "x"}]),
        "holds no user message",
    );
    check_err(
        json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
        "the last message (message 1) is from the assistant",
    );
    check_err(
        json!([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]),
        "message 1 has the unknown role `tool`",
    );
    check_err(
        json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
        "message 1 is from the user, but the assistant was expected",
    );
    check_err(
        json!([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]),
        "message 0 is from the assistant, but the user was expected",
    );
    check_err(
        json!([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]),
        "message 1 is a system message; only the first",
    );
    check_err(json!([{"content": "a"}]), "message 0 has no `role`");
    check_err(json!([{"role": "user"}]), "message 0 has no `content`");
    check_err(
        json!([{"role": "user", "content": 3}]),
        "`content` that is a number",
    );
    check_err(json!(["hi"]), "message 0 is a string, not an object");
}
