//! Chat templates: the model's own Jinja template, rendered with minijinja the way Hugging Face
//! `apply_chat_template` does (trim_blocks, lstrip_blocks, Python string methods).

use serde::Serialize;

use crate::error::{Error, Result};
use crate::package::{ModelPackage, read_text, template_from_tokenizer_config};

/// One chat message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with the given role.
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

const NAME: &str = "chat";

impl ChatTemplate {
    /// Compiles a template from its source text.
    pub fn new(source: &str, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned(NAME.to_string(), source.to_string())
            .map_err(|e| Error::Template(format!("{e:#}")))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.unwrap_or_default().to_string(),
            eos_token: eos_token.unwrap_or_default().to_string(),
        })
    }

    /// The package's template (its template file, else `tokenizer_config.json`), if it has one.
    pub fn from_package(package: &ModelPackage) -> Result<Option<Self>> {
        let m = &package.manifest;
        let source = match package.chat_template_path() {
            Some(path) => Some(read_text(&path, "chat template")?),
            None => template_from_tokenizer_config(&package.dir)?,
        };
        source
            .map(|s| Self::new(&s, m.bos_token.as_deref(), m.eos_token.as_deref()))
            .transpose()
    }

    /// Renders a conversation, ending with the assistant's turn opened when `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| Error::Template(format!("{e:#}")))
    }
}
