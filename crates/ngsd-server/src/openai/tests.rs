//! Request validation: every field's decision (README's table), and the `param` each error names.

use serde_json::{Value, json};

/// Validates `extra` merged into a minimal valid request; `Ok` is the token budget,
/// `Err` is (param, message).
fn check(chat: bool, extra: Value) -> Result<usize, (Option<String>, String)> {
    let mut body = if chat {
        json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    } else {
        json!({"model": "m", "prompt": "Hi"})
    };
    for (k, v) in extra.as_object().expect("an object") {
        body[k] = v.clone();
    }
    crate::validate_body(chat, body.to_string().as_bytes()).map_err(|e| (e.param, e.message))
}

fn refused(chat: bool, extra: Value, param: &str, message: &str) {
    match check(chat, extra.clone()) {
        Err((p, m)) => {
            assert_eq!(p.as_deref(), Some(param), "{extra}: {m}");
            assert!(m.contains(message), "{extra}: `{m}` lacks `{message}`");
        }
        Ok(_) => panic!("{extra} was accepted"),
    }
}

fn accepted(chat: bool, extra: Value) {
    if let Err(e) = check(chat, extra.clone()) {
        panic!("{extra} was refused: {e:?}");
    }
}

#[test]
fn unknown_fields_are_refused_by_name() {
    refused(true, json!({"foo": 1}), "foo", "unknown field `foo`");
    refused(
        false,
        json!({"reasoning_effort": "high"}),
        "reasoning_effort",
        "unknown field",
    );
    refused(
        true,
        json!({"messages": [{"role": "user", "content": "Hi", "tool_call_id": "x"}]}),
        "messages[0].tool_call_id",
        "unknown field `messages[0].tool_call_id`",
    );
}

#[test]
fn known_fields_do_not_leak_into_the_unknown_ones() {
    accepted(
        true,
        json!({"max_tokens": 3, "temperature": 0.5, "top_p": 0.9, "seed": 1, "stop": "x",
               "n": 1, "logprobs": false, "user": "u", "metadata": {"a": "b"}, "store": false,
               "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "tools": [],
               "tool_choice": "none", "parallel_tool_calls": true, "top_logprobs": 0,
               "response_format": {"type": "text"}, "stream": true,
               "stream_options": {"include_usage": true}, "ngsd": {"gate": "never"}}),
    );
    accepted(
        false,
        json!({"max_tokens": 3, "echo": false, "suffix": "", "best_of": 1, "logprobs": 0}),
    );
    accepted(
        true,
        json!({"messages": [{"role": "user", "content": "Hi", "name": "ada"}]}),
    );
}

#[test]
fn fields_that_would_change_the_answer_are_refused_unless_off() {
    refused(
        true,
        json!({"tools": [{"type": "function"}]}),
        "tools",
        "no tool calling",
    );
    refused(
        true,
        json!({"tool_choice": "required"}),
        "tool_choice",
        "no tool calling",
    );
    refused(
        true,
        json!({"response_format": {"type": "json_object"}}),
        "response_format",
        "free text only",
    );
    refused(
        true,
        json!({"presence_penalty": 0.5}),
        "presence_penalty",
        "no repetition penalties",
    );
    refused(
        false,
        json!({"frequency_penalty": -1}),
        "frequency_penalty",
        "no repetition penalties",
    );
    refused(
        true,
        json!({"logit_bias": {"50256": -100}}),
        "logit_bias",
        "does not bias",
    );
    refused(true, json!({"logprobs": true}), "logprobs", "not supported");
    refused(
        true,
        json!({"top_logprobs": 3}),
        "top_logprobs",
        "no log probabilities",
    );
    refused(true, json!({"store": true}), "store", "stores nothing");
    refused(
        false,
        json!({"suffix": "end"}),
        "suffix",
        "does not insert text",
    );
    refused(false, json!({"best_of": 3}), "best_of", "one candidate");
    refused(
        false,
        json!({"echo": true}),
        "echo",
        "echo is not supported",
    );
    refused(true, json!({"n": 2}), "n", "n = 2 is not supported");
}

#[test]
fn errors_name_the_field_at_fault() {
    refused(
        true,
        json!({"top_p": 2}),
        "top_p",
        "top_p = 2 is not in (0, 1]",
    );
    refused(
        true,
        json!({"temperature": -1}),
        "temperature",
        "temperature = -1 is not ≥ 0",
    );
    refused(
        true,
        json!({"max_completion_tokens": 0}),
        "max_completion_tokens",
        "at least 1 token",
    );
    refused(
        true,
        json!({"max_tokens": 1000}),
        "max_tokens",
        "above this server's limit of 64",
    );
    refused(
        true,
        json!({"ngsd": {"reflection": "generative"}}),
        "ngsd.reflection",
        "this server reflects with `probe`",
    );
    refused(
        true,
        json!({"ngsd": {"alpha": 0.5, "reflection": "probe"}}),
        "ngsd.reflection",
        "must be `off` or left out",
    );
    refused(
        true,
        json!({"messages": [{"role": "tool", "content": "x"}]}),
        "messages[0].role",
        "has role `tool`",
    );
}

#[test]
fn budgets_default_and_cap() {
    assert_eq!(check(true, json!({})), Ok(16));
    assert_eq!(
        check(true, json!({"max_completion_tokens": 5, "max_tokens": 9})),
        Ok(5)
    );
    assert_eq!(check(false, json!({"max_tokens": 64})), Ok(64));
}
