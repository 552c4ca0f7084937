//! Fuzz target: the chat template renderer with hostile message content and roles. Rendering
//! the default model's template must not panic, and every message's content must appear in
//! the prompt verbatim (no escaping, truncation or template injection through content).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ngsd_runtime::{ChatTemplate, Message};

/// The default model's template (SmolLM2-135M-Instruct), as the converter writes it.
const SMOLLM2: &str = include_str!("../templates/smollm2.jinja");
/// A template with the constructs other models' templates use: `raise_exception`, filters,
/// loop state, string methods through pycompat.
const CONSTRUCTS: &str = include_str!("../templates/constructs.jinja");

#[derive(Debug, Arbitrary)]
struct Input {
    messages: Vec<(u8, String)>,
    add_generation_prompt: bool,
    constructs: bool,
}

fuzz_target!(|input: Input| {
    let roles = ["system", "user", "assistant", "developer"];
    let messages: Vec<Message> = input
        .messages
        .iter()
        .take(16)
        .map(|(r, c)| Message::new(roles[usize::from(*r) % roles.len()], c))
        .collect();
    let source = if input.constructs { CONSTRUCTS } else { SMOLLM2 };
    let template = ChatTemplate::new(source, Some("<s>"), Some("</s>")).expect("the template compiles");
    match template.render(&messages, input.add_generation_prompt) {
        Ok(text) => {
            for m in &messages {
                assert!(
                    text.contains(&m.content),
                    "content {:?} is missing from the prompt {text:?}",
                    m.content
                );
            }
        }
        Err(e) => {
            // Only the template's own refusal may fail a render.
            let msg = e.to_string();
            assert!(msg.contains("roles must alternate"), "unexpected render error: {msg}");
        }
    }
});
