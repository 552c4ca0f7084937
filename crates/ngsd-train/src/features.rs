//! Running the base model over training data: gate features of prompts (every layer the
//! model exports, pooled the ways a gate can read them), answer features along the base
//! model's own greedy answers (for the answer monitor), and teacher-forced hidden states and
//! logits along a response (expert data). Prompts are encoded and features pooled by the same
//! code the decoder uses, so a neuron reads at run time exactly what it was trained on.

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array2;
use ngsd_decode::features::{AnswerPool, layer_rows, prompt_features};
use ngsd_gate::{Feature, Layer, Pool};
use ngsd_runtime::{
    ChatTemplate, Conversation, EncodedPrompt, ForwardOut, KvCache, Model, Positions, Tokenizer,
};

use crate::data::Example;
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

/// Feature rows of many examples: for each candidate feature, one row per example.
#[derive(Debug, Clone, Default)]
pub struct FeatureBank {
    /// Per feature, `examples × hidden`.
    pub rows: BTreeMap<Feature, Array2<f32>>,
}

impl FeatureBank {
    /// Every feature the bank holds, in order.
    pub fn features(&self) -> Vec<Feature> {
        self.rows.keys().copied().collect()
    }

    /// The columns of `features` side by side: `examples × (features · hidden)`.
    pub fn matrix(&self, features: &[Feature]) -> Array2<f32> {
        let views: Vec<_> = features.iter().map(|f| self.rows[f].view()).collect();
        ndarray::concatenate(ndarray::Axis(1), &views).expect("rows of equal count")
    }

    /// Only the rows in `keep` (indices into the examples), in that order.
    pub fn select(&self, keep: &[usize]) -> FeatureBank {
        FeatureBank {
            rows: self
                .rows
                .iter()
                .map(|(f, m)| (*f, m.select(ndarray::Axis(0), keep)))
                .collect(),
        }
    }
}

/// Every feature a gate could read from `model`: each exported layer and the final hidden
/// state, pooled both ways.
pub fn candidate_features(model: &Model) -> Vec<Feature> {
    let layers = model
        .exported_layers()
        .iter()
        .map(|&l| Layer::Index(l as u16))
        .chain(model.has_hidden_state().then_some(Layer::Final));
    layers
        .flat_map(|layer| [Pool::Last, Pool::Mean].map(|pool| Feature { layer, pool }))
        .collect()
}

/// Answer features of one greedy answer at one checkpoint.
#[derive(Debug, Clone)]
pub struct AnswerRow {
    /// Index of the example.
    pub example: usize,
    /// Answer tokens covered.
    pub tokens: usize,
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
    /// `All` / `AllHidden` rows.
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
        Ok(self.encode(&Example::new("", user, false))?.ids)
    }

    /// An example as the decoder encodes it: its history, system prompt and raw flag
    /// respected, message text never read as markup.
    pub fn encode(&self, example: &Example) -> Result<EncodedPrompt> {
        let conversation = Conversation {
            system: example.system.as_deref(),
            history: &example.history,
            user: &example.text,
            raw: example.raw,
        };
        Ok(conversation.encode(&self.tokenizer, self.template.as_ref())?)
    }

    /// Token ids of plain text (no specials added; markup in it stays text).
    pub fn text_ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode_text(text)?)
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

    /// Prompt features of `features` for every example, with a progress bar.
    pub fn prompt_bank(
        &mut self,
        examples: &[Example],
        features: &[Feature],
        what: &str,
    ) -> Result<FeatureBank> {
        let h = self.model.hidden_size();
        let bar = progress(examples.len() as u64, what);
        let mut data: Vec<Vec<f32>> = vec![Vec::with_capacity(examples.len() * h); features.len()];
        let mut row = Vec::with_capacity(h);
        for ex in examples {
            let prompt = self.encode(ex)?;
            let (_, first) = self.run(&prompt.ids, Positions::AllHidden)?;
            let request = prompt.request.start.saturating_sub(first)..prompt.request.end - first;
            let positions = prompt.ids.len() - first;
            for (f, column) in features.iter().zip(&mut data) {
                row.clear();
                let (model, out) = (&*self.model, &self.out);
                prompt_features(
                    std::slice::from_ref(f),
                    h,
                    positions,
                    request.clone(),
                    |layer| layer_rows(model, out, layer),
                    &mut row,
                )?;
                column.extend_from_slice(&row);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(bank(features, data, examples.len(), h))
    }

    /// The base model's greedy answer to every example, with answer features of `features`
    /// at every `every` tokens (up to `max_tokens`): one row per (example, checkpoint).
    /// Returns the rows, the bank and each example's answer text.
    pub fn answer_bank(
        &mut self,
        examples: &[Example],
        features: &[Feature],
        every: usize,
        max_tokens: usize,
        what: &str,
    ) -> Result<(Vec<AnswerRow>, FeatureBank, Vec<String>)> {
        let h = self.model.hidden_size();
        let vocab = self.model.vocab_size();
        let eos = self.model.eos_token_ids().to_vec();
        let bar = progress(examples.len() as u64, what);
        let mut rows = Vec::new();
        let mut data: Vec<Vec<f32>> = vec![Vec::new(); features.len()];
        let mut answers = Vec::with_capacity(examples.len());
        let mut buf = Vec::new();
        for (i, ex) in examples.iter().enumerate() {
            let prompt = self.encode(ex)?;
            let (mut cache, _) = self.run(&prompt.ids, Positions::Last)?;
            let mut pool = AnswerPool::new(features, h);
            let mut tokens = Vec::new();
            while tokens.len() < max_tokens {
                let next = ngsd_runtime::sampling::argmax(self.out.last_logits(vocab));
                if eos.contains(&next) {
                    break;
                }
                tokens.push(next);
                self.model
                    .forward(&mut cache, &[next], Positions::Last, &mut self.out)?;
                let (model, out) = (&*self.model, &self.out);
                pool.add(|layer| layer_rows(model, out, layer))?;
                if tokens.len() % every == 0 {
                    pool.features_into(&mut buf);
                    for (k, column) in data.iter_mut().enumerate() {
                        column.extend_from_slice(&buf[k * h..(k + 1) * h]);
                    }
                    rows.push(AnswerRow {
                        example: i,
                        tokens: tokens.len(),
                    });
                }
            }
            answers.push(self.tokenizer.decode(&tokens)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let n = rows.len();
        Ok((rows, bank(features, data, n, h), answers))
    }
}

fn bank(features: &[Feature], data: Vec<Vec<f32>>, n: usize, h: usize) -> FeatureBank {
    FeatureBank {
        rows: features
            .iter()
            .zip(data)
            .map(|(f, d)| (*f, Array2::from_shape_vec((n, h), d).expect("n × hidden")))
            .collect(),
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
