//! Experts: what a safe continuation looks like. Each kind keeps its own sequence and KV cache
//! and is computed lazily: tokens are recorded as they are generated, and the expert's
//! distribution is only computed when asked for, catching up on every missed token in one
//! batched forward pass.

use std::path::Path;

use ngsd_runtime::sampling::softmax_into;
use ngsd_runtime::{
    ChatTemplate, Conversation, ForwardOut, KvCache, Model, ModelOptions, ModelPackage, Positions,
    Tokenizer,
};

use crate::error::{Error, Result};

/// The default safety system prompt of the `prompt` expert (and of a `model` expert without
/// one of its own).
pub const DEFAULT_SAFETY_PROMPT: &str = "You are a careful assistant. Help with ordinary \
requests. If a request could help someone cause harm (weapons, violence, crime, abuse, \
dangerous substances, hacking), refuse briefly and do not give any details.";

/// A source of the expert next-token distribution.
pub trait Expert {
    /// Kind and location, e.g. `prompt` or `model:/path/to/dir`.
    fn describe(&self) -> String;

    /// Starts a request: renders the expert's own prompt for this user message. No model work.
    fn begin(&mut self, user: &str, raw: bool) -> Result<()>;

    /// Records a generated token (no model work until [`Expert::probs`]).
    fn push(&mut self, token: u32);

    /// The expert's next-token distribution after every token pushed so far.
    ///
    /// `base` is the base model (the `prompt` expert runs on it); `base_hidden` and
    /// `base_logits` are the base model's current final hidden state and logits (for experts
    /// that read them, like `head`).
    fn probs(
        &mut self,
        base: &mut Model,
        base_hidden: &[f32],
        base_logits: &[f32],
    ) -> Result<&[f32]>;

    /// Forward passes made since [`Expert::begin`].
    fn forward_passes(&self) -> usize;

    /// Another instance with the same configuration, for a request decoded at the same time
    /// (see [`crate::generate_batch`]), sharing what can be shared. `None` when the expert
    /// cannot have a second instance cheaply (a model expert holds its own session).
    fn fork(&self, _base: &Model) -> Result<Option<Box<dyn Expert>>> {
        Ok(None)
    }
}

/// One sequence fed lazily to some model: the prompt, then pushed tokens.
#[derive(Debug, Default)]
struct LazySequence {
    prompt: Vec<u32>,
    pending: Vec<u32>,
    cache: Option<KvCache>,
    out: ForwardOut,
    probs: Vec<f32>,
    passes: usize,
    /// Feed every token at once instead of lazily (tests compare both).
    eager: bool,
}

impl LazySequence {
    fn begin(&mut self, prompt: Vec<u32>) {
        self.prompt = prompt;
        self.pending.clear();
        self.cache = None;
        self.passes = 0;
    }

    fn probs(&mut self, model: &mut Model) -> Result<&[f32]> {
        let fresh = self.cache.is_none();
        if fresh || !self.pending.is_empty() {
            let mut cache = match self.cache.take() {
                Some(c) => c,
                None => model.new_cache()?,
            };
            // A fresh sequence feeds its prompt and every token pushed so far in one pass.
            let mut ids = if fresh {
                std::mem::take(&mut self.prompt)
            } else {
                Vec::new()
            };
            if self.eager && !self.pending.is_empty() {
                if !ids.is_empty() {
                    model.forward(&mut cache, &ids, Positions::Last, &mut self.out)?;
                    self.passes += 1;
                }
                for &t in &self.pending {
                    model.forward(&mut cache, &[t], Positions::Last, &mut self.out)?;
                    self.passes += 1;
                }
            } else {
                ids.extend_from_slice(&self.pending);
                model.forward(&mut cache, &ids, Positions::Last, &mut self.out)?;
                self.passes += 1;
            }
            self.pending.clear();
            self.cache = Some(cache);
            softmax_into(
                self.out.last_logits(model.vocab_size()),
                1.0,
                &mut self.probs,
            );
        }
        Ok(&self.probs)
    }
}

/// Token ids of one user message under `system`, through the chat template unless raw (message
/// text is encoded as text: markup in it never becomes a control token).
pub fn encode_message(
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    system: Option<&str>,
    user: &str,
    raw: bool,
) -> Result<Vec<u32>> {
    let conversation = Conversation {
        system,
        history: &[],
        user,
        raw,
    };
    Ok(conversation.encode(tokenizer, template)?.ids)
}

/// The base model itself, run as a second sequence under a safety system prompt.
pub struct PromptExpert {
    system: String,
    template: Option<ChatTemplate>,
    tokenizer: Tokenizer,
    seq: LazySequence,
}

impl PromptExpert {
    /// A prompt expert over the base model's package.
    pub fn new(base: &Model, system: Option<String>) -> Result<Self> {
        let package = base.package();
        Ok(PromptExpert {
            system: system.unwrap_or_else(|| DEFAULT_SAFETY_PROMPT.to_string()),
            template: ChatTemplate::from_package(package)?,
            tokenizer: Tokenizer::from_package(package)?,
            seq: LazySequence::default(),
        })
    }

    /// Feed every token as it comes instead of catching up lazily (for comparisons).
    pub fn set_eager(&mut self, eager: bool) {
        self.seq.eager = eager;
    }
}

impl Expert for PromptExpert {
    fn fork(&self, base: &Model) -> Result<Option<Box<dyn Expert>>> {
        let mut twin = PromptExpert::new(base, Some(self.system.clone()))?;
        twin.set_eager(self.seq.eager);
        Ok(Some(Box::new(twin)))
    }

    fn describe(&self) -> String {
        "prompt".into()
    }

    fn begin(&mut self, user: &str, raw: bool) -> Result<()> {
        let ids = encode_message(
            &self.tokenizer,
            self.template.as_ref(),
            Some(&self.system),
            user,
            raw,
        )?;
        self.seq.begin(ids);
        Ok(())
    }

    fn push(&mut self, token: u32) {
        self.seq.pending.push(token);
    }

    fn probs(&mut self, base: &mut Model, _hidden: &[f32], _logits: &[f32]) -> Result<&[f32]> {
        self.seq.probs(base)
    }

    fn forward_passes(&self) -> usize {
        self.seq.passes
    }
}

/// A separate ONNX decoder sharing the base tokenizer (the paper's setting).
pub struct ModelExpert {
    model: Model,
    dir: std::path::PathBuf,
    system: Option<String>,
    template: Option<ChatTemplate>,
    tokenizer: Tokenizer,
    seq: LazySequence,
}

impl ModelExpert {
    /// Loads the expert package and checks that it shares the base tokenizer.
    pub fn load(
        dir: &Path,
        options: &ModelOptions,
        base: &Model,
        base_tokenizer: &Tokenizer,
        system: Option<String>,
    ) -> Result<Self> {
        let describe = format!("model:{}", dir.display());
        let package = ModelPackage::open(dir)?;
        let tokenizer = Tokenizer::from_package(&package)?;
        if let Err(reason) = base_tokenizer.check_same_vocabulary(&tokenizer) {
            return Err(Error::IncompatibleExpert {
                expert: describe,
                reason: format!(
                    "its tokenizer differs from the base model's: {reason}; an expert must share the base tokenizer"
                ),
            });
        }
        if package.manifest.vocab_size != base.vocab_size() {
            return Err(Error::IncompatibleExpert {
                expert: describe,
                reason: format!(
                    "its vocabulary has {} logits, the base model's {}",
                    package.manifest.vocab_size,
                    base.vocab_size()
                ),
            });
        }
        let template = ChatTemplate::from_package(&package)?;
        let model = Model::load(package, options)?;
        Ok(ModelExpert {
            model,
            dir: dir.to_path_buf(),
            system: Some(system.unwrap_or_else(|| DEFAULT_SAFETY_PROMPT.to_string())),
            template,
            tokenizer,
            seq: LazySequence::default(),
        })
    }

    /// Feed every token as it comes instead of catching up lazily (for comparisons).
    pub fn set_eager(&mut self, eager: bool) {
        self.seq.eager = eager;
    }
}

impl Expert for ModelExpert {
    fn describe(&self) -> String {
        format!("model:{}", self.dir.display())
    }

    fn begin(&mut self, user: &str, raw: bool) -> Result<()> {
        let ids = encode_message(
            &self.tokenizer,
            self.template.as_ref(),
            self.system.as_deref(),
            user,
            raw,
        )?;
        self.seq.begin(ids);
        Ok(())
    }

    fn push(&mut self, token: u32) {
        self.seq.pending.push(token);
    }

    fn probs(&mut self, _base: &mut Model, _hidden: &[f32], _logits: &[f32]) -> Result<&[f32]> {
        self.seq.probs(&mut self.model)
    }

    fn forward_passes(&self) -> usize {
        self.seq.passes
    }
}
