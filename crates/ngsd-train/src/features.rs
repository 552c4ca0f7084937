//! Running the base model over training text: the prompt's last hidden state (gate features)
//! and teacher-forced hidden states and logits along a response (expert data).

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array2;
use ngsd_decode::render_prompt;
use ngsd_runtime::{ChatTemplate, ForwardOut, KvCache, Model, Positions, Tokenizer};

use crate::error::Result;

/// The base model with its tokenizer and chat template.
pub struct Encoder<'a> {
    /// The base model.
    pub model: &'a mut Model,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    out: ForwardOut,
    /// The tokens every rendered prompt starts with (the template's system part), computed
    /// once and shared by every sequence.
    prefix_ids: Vec<u32>,
    prefix: Option<KvCache>,
}

impl<'a> Encoder<'a> {
    /// Wraps a loaded model (its package provides tokenizer and template).
    pub fn new(model: &'a mut Model) -> Result<Self> {
        let tokenizer = Tokenizer::from_package(model.package())?;
        let template = ChatTemplate::from_package(model.package())?;
        let mut enc = Encoder {
            model,
            tokenizer,
            template,
            out: ForwardOut::default(),
            prefix_ids: Vec::new(),
            prefix: None,
        };
        // The shared start of two different prompts, less its last token (a merge boundary
        // could differ); every prompt is checked against it before the cache is reused.
        let a = enc.prompt_ids("alpha")?;
        let b = enc.prompt_ids("zulu")?;
        let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        if common > 1 {
            enc.prefix_ids = a[..common - 1].to_vec();
            let mut cache = enc.model.new_cache()?;
            enc.model
                .forward(&mut cache, &enc.prefix_ids, Positions::Last, &mut enc.out)?;
            enc.prefix = Some(cache);
        }
        Ok(enc)
    }

    /// Runs `ids` from the start, reusing the shared prefix when `ids` begins with it (and
    /// goes beyond it). Returns the new cache and the position of the first row in `out`'s
    /// `All` rows.
    fn run(&mut self, ids: &[u32], positions: Positions) -> Result<(KvCache, usize)> {
        let p = self.prefix_ids.len();
        if let Some(prefix) = &self.prefix
            && ids.len() > p
            && ids[..p] == self.prefix_ids[..]
        {
            let cache = self
                .model
                .forward_from(prefix, &ids[p..], positions, &mut self.out)?;
            return Ok((cache, p));
        }
        let mut cache = self.model.new_cache()?;
        self.model
            .forward(&mut cache, ids, positions, &mut self.out)?;
        Ok((cache, 0))
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of a user message rendered the way `ngsd generate` renders it (chat template,
    /// no system message, generation prompt appended).
    pub fn prompt_ids(&self, user: &str) -> Result<Vec<u32>> {
        let text = render_prompt(self.template.as_ref(), None, user, false)?;
        Ok(self.tokenizer.encode(&text)?)
    }

    /// Token ids of plain text (no specials added).
    pub fn text_ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text)?)
    }

    /// The final hidden state at the last position of `ids`.
    pub fn last_hidden(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.run(ids, Positions::Last)?;
        Ok(self.out.last_hidden(self.model.hidden_size()).to_vec())
    }

    /// Hidden states and logits of `ids`, one row per position from the returned position
    /// on (earlier positions are the shared prefix, which has no rows).
    pub fn all_positions(&mut self, ids: &[u32]) -> Result<(&ForwardOut, usize)> {
        let (_, first) = self.run(ids, Positions::All)?;
        Ok((&self.out, first))
    }

    /// Greedy continuation of `prompt` for `steps` tokens: the hidden state and logits at the
    /// last prompt position and at each generated position before the last, i.e. every
    /// position whose next token the base chose. Stops early at an end-of-sequence token.
    pub fn greedy_positions(
        &mut self,
        prompt: &[u32],
        steps: usize,
        mut each: impl FnMut(&[f32], &[f32]),
    ) -> Result<usize> {
        let vocab = self.model.vocab_size();
        let hidden = self.model.hidden_size();
        let eos = self.model.eos_token_ids().to_vec();
        let (mut cache, _) = self.run(prompt, Positions::Last)?;
        let mut n = 0;
        for step in 0..steps {
            let logits = self.out.last_logits(vocab);
            each(self.out.last_hidden(hidden), logits);
            n += 1;
            let next = ngsd_runtime::sampling::argmax(logits);
            if eos.contains(&next) || step + 1 == steps {
                break;
            }
            self.model
                .forward(&mut cache, &[next], Positions::Last, &mut self.out)?;
        }
        Ok(n)
    }

    /// Gate features for many prompts: one row per prompt, with a progress bar.
    pub fn prompt_features(&mut self, prompts: &[&str], what: &str) -> Result<Array2<f32>> {
        let h = self.model.hidden_size();
        let bar = progress(prompts.len() as u64, what);
        let mut data = Vec::with_capacity(prompts.len() * h);
        for p in prompts {
            let ids = self.prompt_ids(p)?;
            data.extend(self.last_hidden(&ids)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(Array2::from_shape_vec((prompts.len(), h), data).expect("rows × hidden"))
    }
}

/// A progress bar on stderr with an ETA (hidden when stderr is not a terminal).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>22} [{bar:30}] {pos}/{len} ({eta} left)")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}
