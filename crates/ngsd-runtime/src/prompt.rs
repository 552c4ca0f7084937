//! Turning a conversation into token ids so that what people wrote stays text: the chat
//! template's markup becomes control tokens, message text never does (no forged turns), and
//! the caller learns which tokens are the request's own text (the span gates pool over).

use std::ops::Range;

use crate::error::{Error, Result};
use crate::template::{ChatTemplate, Message};
use crate::tokenizer::Tokenizer;

/// A conversation waiting for the assistant's answer.
#[derive(Debug, Clone, Copy)]
pub struct Conversation<'a> {
    /// The system prompt; `None` lets the template write its default.
    pub system: Option<&'a str>,
    /// Earlier `user` / `assistant` turns, oldest first.
    pub history: &'a [Message],
    /// The message being answered (with `raw`, the whole text to continue).
    pub user: &'a str,
    /// Feed the text as it is, without the chat template (completions). History is ignored.
    pub raw: bool,
}

/// A prompt as token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPrompt {
    /// Every token of the prompt, template markup included.
    pub ids: Vec<u32>,
    /// The tokens of the message being answered (the whole text for raw prompts); never empty
    /// unless that message is empty.
    pub request: Range<usize>,
}

/// Marks where message `i` goes in a rendering; noncharacters never occur in template text.
fn sentinel(i: usize) -> String {
    format!("\u{FDD0}{i}\u{FDD1}")
}

/// One piece of a rendered conversation.
enum Piece<'a> {
    /// Template text: its markup is parsed into control tokens.
    Markup(&'a str),
    /// The text of message `i`.
    Message(usize),
}

/// Splits a rendering made with [`sentinel`]s into markup and message pieces.
fn split_rendering(rendered: &str) -> Result<Vec<Piece<'_>>> {
    let mut pieces = Vec::new();
    let mut rest = rendered;
    while let Some(start) = rest.find('\u{FDD0}') {
        pieces.push(Piece::Markup(&rest[..start]));
        let after = &rest[start + '\u{FDD0}'.len_utf8()..];
        let end = after.find('\u{FDD1}').ok_or_else(|| {
            Error::Template("the chat template cut a message marker in two".into())
        })?;
        let index = after[..end]
            .parse()
            .map_err(|_| Error::Template("the chat template altered a message marker".into()))?;
        pieces.push(Piece::Message(index));
        rest = &after[end + '\u{FDD1}'.len_utf8()..];
    }
    pieces.push(Piece::Markup(rest));
    Ok(pieces)
}

/// The message texts as the template inserts them: verbatim, or trimmed for templates that
/// trim. Anything else the template does to message text is refused, since the text could
/// then not be kept apart from markup.
fn inserted_texts<'m>(
    template: &ChatTemplate,
    messages: &'m [Message],
    pieces: &[Piece<'_>],
) -> Result<Vec<&'m str>> {
    let real = template.render(messages, true)?;
    let rebuild = |texts: &[&str]| -> String {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Markup(m) => *m,
                Piece::Message(i) => texts.get(*i).copied().unwrap_or_default(),
            })
            .collect()
    };
    let verbatim: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    if rebuild(&verbatim) == real {
        return Ok(verbatim);
    }
    let trimmed: Vec<&str> = messages.iter().map(|m| m.content.trim()).collect();
    if rebuild(&trimmed) == real {
        return Ok(trimmed);
    }
    Err(Error::Template(
        "the chat template rewrites message text (beyond trimming), so ngsd cannot keep it \
         apart from the template's markup; use a template that inserts message content as is"
            .into(),
    ))
}

impl Conversation<'_> {
    /// The messages to render: system (if any), history, then the user's message.
    fn messages(&self) -> Vec<Message> {
        let mut messages = Vec::with_capacity(self.history.len() + 2);
        if let Some(s) = self.system {
            messages.push(Message::new("system", s));
        }
        messages.extend(self.history.iter().cloned());
        messages.push(Message::new("user", self.user));
        messages
    }

    /// Encodes the conversation for `tokenizer`, through `template` unless raw (or absent).
    ///
    /// Template markup is parsed into control tokens; every message's text is encoded as plain
    /// text, so `"<|im_start|>"` typed by a user is a few ordinary tokens. Without a template
    /// (or raw), the prompt is the system prompt and the text separated by a blank line.
    pub fn encode(
        &self,
        tokenizer: &Tokenizer,
        template: Option<&ChatTemplate>,
    ) -> Result<EncodedPrompt> {
        match template {
            Some(t) if !self.raw => self.encode_chat(tokenizer, t),
            _ => self.encode_plain(tokenizer),
        }
    }

    fn encode_plain(&self, tokenizer: &Tokenizer) -> Result<EncodedPrompt> {
        let mut ids = match self.system {
            Some(s) => tokenizer.encode_text(&format!("{s}\n\n"))?,
            None => Vec::new(),
        };
        let start = ids.len();
        ids.extend(tokenizer.encode_text(self.user)?);
        let request = start..ids.len();
        Ok(EncodedPrompt { ids, request })
    }

    fn encode_chat(&self, tokenizer: &Tokenizer, template: &ChatTemplate) -> Result<EncodedPrompt> {
        let messages = self.messages();
        let marked: Vec<Message> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Message::new(&m.role, &sentinel(i)))
            .collect();
        let rendered = template.render(&marked, true)?;
        let pieces = split_rendering(&rendered)?;
        let texts = inserted_texts(template, &messages, &pieces)?;
        let last = messages.len() - 1;
        let mut ids = Vec::new();
        let mut request = None;
        for piece in &pieces {
            match piece {
                Piece::Markup(m) if !m.is_empty() => ids.extend(tokenizer.encode(m)?),
                Piece::Markup(_) => {}
                Piece::Message(i) => {
                    let start = ids.len();
                    ids.extend(tokenizer.encode_text(texts[*i])?);
                    if *i == last {
                        request = Some(start..ids.len());
                    }
                }
            }
        }
        let request = request.ok_or_else(|| {
            Error::Template("the chat template left out the user's message".into())
        })?;
        Ok(EncodedPrompt { ids, request })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    #[test]
    fn rendering_splits_into_markup_and_messages() {
        let text = format!("<s>{}</s><u>{}</u>", sentinel(0), sentinel(1));
        let pieces = split_rendering(&text).unwrap();
        let shape: Vec<String> = pieces
            .iter()
            .map(|p| match p {
                Piece::Markup(m) => format!("m:{m}"),
                Piece::Message(i) => format!("#{i}"),
            })
            .collect();
        assert_eq!(shape, ["m:<s>", "#0", "m:</s><u>", "#1", "m:</u>"]);
    }

    #[test]
    fn a_cut_marker_is_an_error() {
        let err = split_rendering("a\u{FDD0}0 b").err().unwrap().to_string();
        assert!(err.contains("cut a message marker"), "{err}");
    }

    #[test]
    fn templates_that_rewrite_text_are_refused() {
        let t = ChatTemplate::new(
            "{% for m in messages %}[{{ m.content | upper }}]{% endfor %}",
            None,
            None,
        )
        .unwrap();
        let messages = [Message::new("user", "hi")];
        let marked = [Message::new("user", &sentinel(0))];
        let rendered = t.render(&marked, true).unwrap();
        let pieces = split_rendering(&rendered);
        // Upper-casing the marker keeps it (digits and noncharacters have no case), but the
        // real rendering differs from the rebuilt one.
        let err = inserted_texts(&t, &messages, &pieces.unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("rewrites message text"), "{err}");
    }

    #[test]
    fn trimming_templates_are_followed() {
        let t = ChatTemplate::new(
            "{% for m in messages %}[{{ m.content | trim }}]{% endfor %}",
            None,
            None,
        )
        .unwrap();
        let messages = [Message::new("user", "  hi  ")];
        let marked = [Message::new("user", &sentinel(0))];
        let rendered = t.render(&marked, true).unwrap();
        let pieces = split_rendering(&rendered).unwrap();
        assert_eq!(inserted_texts(&t, &messages, &pieces).unwrap(), ["hi"]);
    }
}
