//! Conversations inside datasets: an OpenAI-style `messages` array becomes the system prompt,
//! the earlier turns and the user message being answered.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who wrote a turn of a conversation's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The person asking.
    User,
    /// The model answering.
    Assistant,
}

impl Role {
    /// `user` or `assistant`, as chat templates spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One earlier turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// Who wrote it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

/// A `messages` array split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chat {
    /// The content of a leading `system` message, if any.
    pub system: Option<String>,
    /// The turns before the last one: user first, then alternating.
    pub history: Vec<Turn>,
    /// The last message, from the user: the one being answered.
    pub last: String,
}

/// Splits a `messages` value. The array holds objects with `role` and `content` (strings);
/// an optional first message is `system`; then `user` and `assistant` alternate, starting and
/// ending with `user`. The error says which message is wrong and why.
pub(crate) fn parse_messages(value: &Value) -> Result<Chat, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "is {}, not an array of {{\"role\", \"content\"}} objects",
            kind(value)
        ));
    };
    let mut system = None;
    let mut turns: Vec<Turn> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let (role, content) = role_and_content(item).map_err(|m| format!("message {i} {m}"))?;
        match role {
            "system" if i == 0 => system = Some(content),
            "system" => {
                return Err(format!(
                    "message {i} is a system message; only the first message may be one"
                ));
            }
            "user" | "assistant" => {
                let role = if role == "user" {
                    Role::User
                } else {
                    Role::Assistant
                };
                let expected = match turns.last() {
                    None
                    | Some(Turn {
                        role: Role::Assistant,
                        ..
                    }) => Role::User,
                    Some(_) => Role::Assistant,
                };
                if role != expected {
                    return Err(format!(
                        "message {i} is from the {}, but the {} was expected: after the optional system message, turns alternate user, assistant, user, …",
                        role.as_str(),
                        expected.as_str()
                    ));
                }
                turns.push(Turn { role, content });
            }
            other => {
                return Err(format!(
                    "message {i} has the unknown role `{other}`; roles are system, user and assistant"
                ));
            }
        }
    }
    match turns.pop() {
        Some(Turn {
            role: Role::User,
            content,
        }) => Ok(Chat {
            system,
            history: turns,
            last: content,
        }),
        Some(Turn {
            role: Role::Assistant,
            ..
        }) => Err(format!(
            "the last message (message {}) is from the assistant; a sample ends with the user message to answer",
            items.len() - 1
        )),
        None => Err("holds no user message; a sample ends with the user message to answer".into()),
    }
}

fn role_and_content(item: &Value) -> Result<(&str, String), String> {
    let Value::Object(obj) = item else {
        return Err(format!(
            "is {}, not an object with `role` and `content`",
            kind(item)
        ));
    };
    let role = match obj.get("role") {
        Some(Value::String(r)) => r.as_str(),
        Some(other) => {
            return Err(format!(
                "has a `role` that is {}, not a string",
                kind(other)
            ));
        }
        None => return Err("has no `role`".into()),
    };
    match obj.get("content") {
        Some(Value::String(c)) => Ok((role, c.clone())),
        Some(other) => Err(format!(
            "has a `content` that is {}, not a string",
            kind(other)
        )),
        None => Err("has no `content`".into()),
    }
}

/// A JSON value's kind, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
