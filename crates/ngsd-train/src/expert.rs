//! Training the `head` expert: a rank-r adapter on the base model's final hidden state read
//! through the base model's LM head, `expert logits = base logits + (E·B)·(A·h)`.
//!
//! Data, all teacher-forced through the base model once:
//! - harmful prompts followed by a refusal (and the end-of-turn token): cross-entropy on each
//!   refusal token, so the expert learns to refuse and to stop;
//! - benign prompts followed by the base model's own greedy continuation: KL(base ‖ expert)
//!   at each position, so the expert stays close to the base on ordinary text.
//!
//! The benign half weighs `benign_weight` times the refusal half in the loss, whatever
//! their sizes. The optimiser is Adam on
//! mini-batches; `E·B` is kept up to date after every step, so no step multiplies by the
//! full LM head except the one `Eᵀ·∂(E·B)` that gives B's gradient.

use std::collections::BTreeMap;
use std::time::Instant;

use ndarray::{Array2, ArrayView2, Axis};
use ngsd_decode::{HEAD_EXPERT_FORMAT, LmHead};
use ngsd_gate::safetensors::{SafeTensors, Tensor};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::features::{Encoder, progress};

/// Settings of `ngsd train expert`.
#[derive(Debug, Clone)]
pub struct ExpertTrainConfig {
    /// Adapter rank r.
    pub rank: usize,
    /// Passes over the training positions.
    pub epochs: usize,
    /// Positions per optimiser step.
    pub batch: usize,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// Greedy base tokens generated per benign prompt (each gives one training position).
    pub benign_steps: usize,
    /// Refusal tokens kept per harmful prompt (longer refusals are cut, without the end token).
    pub max_response_tokens: usize,
    /// Sentences kept of each refusal before the end-of-turn token (0 = all): short refusals
    /// teach the expert to stop instead of letting the base model carry on after "Sorry".
    pub refusal_sentences: usize,
    /// Share of sequences held out to report generalisation.
    pub holdout: f64,
    /// Weight of the benign KL term against the refusal term (1 = equal halves).
    pub benign_weight: f32,
    /// Seed of initialisation, shuffling and hold-out.
    pub seed: u64,
}

impl Default for ExpertTrainConfig {
    fn default() -> Self {
        ExpertTrainConfig {
            rank: 32,
            epochs: 6,
            batch: 256,
            learning_rate: 3e-3,
            benign_steps: 6,
            max_response_tokens: 48,
            refusal_sentences: 1,
            holdout: 0.1,
            benign_weight: 3.0,
            seed: 1,
        }
    }
}

/// A harmful prompt with the refusal to teach for it.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusalPair {
    /// The user message.
    pub prompt: String,
    /// The refusal.
    pub response: String,
}

/// Teacher-forced positions: hidden state, base logits (bf16) and the training target.
#[derive(Debug, Default)]
pub struct Positions {
    hidden: Vec<f32>,
    logits: Vec<u16>,
    /// Token to predict, or `None` to match the base distribution.
    target: Vec<Option<u32>>,
    /// Which sequence each position came from.
    sequence: Vec<usize>,
    h: usize,
    v: usize,
    sequences: usize,
}

fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let round = ((bits >> 16) & 1) + 0x7fff;
    (bits.wrapping_add(round) >> 16) as u16
}

fn from_bf16(x: u16) -> f32 {
    f32::from_bits(u32::from(x) << 16)
}

impl Positions {
    fn push(&mut self, hidden: &[f32], logits: &[f32], target: Option<u32>) {
        self.hidden.extend_from_slice(hidden);
        self.logits.extend(logits.iter().map(|&v| to_bf16(v)));
        self.target.push(target);
        self.sequence.push(self.sequences);
    }

    /// Number of positions.
    pub fn len(&self) -> usize {
        self.target.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }

    /// Positions with a refusal target.
    pub fn refusal_positions(&self) -> usize {
        self.target.iter().filter(|t| t.is_some()).count()
    }
}

/// Runs the base model over the training data.
pub fn collect(
    enc: &mut Encoder<'_>,
    pairs: &[RefusalPair],
    benign: &[String],
    cfg: &ExpertTrainConfig,
) -> Result<Positions> {
    let h = enc.model.hidden_size();
    let v = enc.model.vocab_size();
    let end = *enc.model.eos_token_ids().first().ok_or_else(|| {
        Error::Input(
            "the base model declares no end-of-sequence token; a refusal needs one to end".into(),
        )
    })?;
    let mut pos = Positions {
        h,
        v,
        ..Positions::default()
    };
    let bar = progress(pairs.len() as u64, "refusals");
    for pair in pairs {
        let prompt = enc.prompt_ids(&pair.prompt)?;
        let text = first_sentences(pair.response.trim(), cfg.refusal_sentences);
        let mut response = enc.text_ids(text)?;
        if response.len() >= cfg.max_response_tokens {
            response.truncate(cfg.max_response_tokens);
        } else {
            response.push(end);
        }
        if prompt.len() + response.len() >= enc.model.max_context() {
            continue;
        }
        let mut ids = prompt.clone();
        ids.extend_from_slice(&response);
        let (out, first) = enc.all_positions(&ids)?;
        if first >= prompt.len() {
            return Err(Error::Input(format!(
                "the prompt {:?} is no longer than the chat template's shared start",
                pair.prompt
            )));
        }
        for (k, &target) in response.iter().enumerate() {
            let row = prompt.len() - 1 + k - first;
            pos.push(
                &out.hidden[row * h..(row + 1) * h],
                out.logits_row(row, v),
                Some(target),
            );
        }
        pos.sequences += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let bar = progress(benign.len() as u64, "benign continuations");
    for prompt in benign {
        let ids = enc.prompt_ids(prompt)?;
        if ids.len() + cfg.benign_steps >= enc.model.max_context() {
            continue;
        }
        enc.greedy_positions(&ids, cfg.benign_steps, |hid, lg| pos.push(hid, lg, None))?;
        pos.sequences += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(pos)
}

/// The first `n` sentences of `text` (all of it when `n` is 0 or it has fewer): a sentence
/// ends at `.`, `!` or `?` followed by whitespace or the end.
pub fn first_sentences(text: &str, n: usize) -> &str {
    if n == 0 {
        return text;
    }
    let mut seen = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if matches!(c, '.' | '!' | '?') && chars.peek().is_none_or(|(_, next)| next.is_whitespace())
        {
            seen += 1;
            if seen == n {
                return &text[..i + c.len_utf8()];
            }
        }
    }
    text
}

/// What training measured.
#[derive(Debug, Clone, Serialize)]
pub struct ExpertReport {
    /// Adapter rank.
    pub rank: usize,
    /// Trainable parameters.
    pub parameters: usize,
    /// Training positions (refusal tokens, benign positions).
    pub train_positions: (usize, usize),
    /// Held-out positions (refusal tokens, benign positions).
    pub heldout_positions: (usize, usize),
    /// Mean training loss per epoch (refusal cross-entropy, benign KL).
    pub epoch_loss: Vec<(f64, f64)>,
    /// Held-out refusal tokens the expert predicts as its top token.
    pub heldout_refusal_accuracy: f64,
    /// Held-out benign positions where the expert's top token equals the base's.
    pub heldout_benign_agreement: f64,
    /// Held-out mean KL(base ‖ expert) on benign positions.
    pub heldout_benign_kl: f64,
    /// Seconds spent optimising.
    pub seconds: f64,
}

/// The trained adapter.
#[derive(Debug, Clone)]
pub struct TrainedExpert {
    /// `A` [r, H].
    pub a: Array2<f32>,
    /// `B` [H, r].
    pub b: Array2<f32>,
}

/// A tiny seeded generator for initialisation and shuffling (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Adam state for one parameter matrix.
struct Adam {
    m: Array2<f32>,
    v: Array2<f32>,
}

impl Adam {
    fn new(shape: (usize, usize)) -> Adam {
        Adam {
            m: Array2::zeros(shape),
            v: Array2::zeros(shape),
        }
    }
    fn step(&mut self, p: &mut Array2<f32>, g: &Array2<f32>, lr: f32, t: i32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let c1 = 1.0 - b1.powi(t);
        let c2 = 1.0 - b2.powi(t);
        ndarray::Zip::from(p)
            .and(&mut self.m)
            .and(&mut self.v)
            .and(g)
            .for_each(|p, m, v, &g| {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
            });
    }
}

/// Per-row loss and gradient of the logits, in place: `d` holds the adapter's logit deltas on
/// entry and `weight·∂loss/∂logits` on return. Returns (loss, top-1 hit) per row.
fn rows_loss_grad(
    d: &mut Array2<f32>,
    pos: &Positions,
    rows: &[usize],
    weights: &[f32],
) -> Vec<(f64, bool)> {
    let v = pos.v;
    let work = |mut d_chunk: ndarray::ArrayViewMut2<f32>, rows: &[usize], weights: &[f32]| {
        let mut out = Vec::with_capacity(rows.len());
        let mut base = vec![0.0f32; v];
        for ((mut z, &r), &w) in d_chunk.axis_iter_mut(Axis(0)).zip(rows).zip(weights) {
            let lg = &pos.logits[r * v..(r + 1) * v];
            for (b, &x) in base.iter_mut().zip(lg) {
                *b = from_bf16(x);
            }
            let z = z.as_slice_mut().expect("standard layout");
            for (zi, &bi) in z.iter_mut().zip(&base) {
                *zi += bi;
            }
            let top = argmax(z);
            let lse = log_sum_exp(z);
            match pos.target[r] {
                Some(t) => {
                    let loss = f64::from(lse - z[t as usize]);
                    for zi in z.iter_mut() {
                        *zi = w * (*zi - lse).exp();
                    }
                    z[t as usize] -= w;
                    out.push((loss, top == t as usize));
                }
                None => {
                    let base_top = argmax(&base);
                    let blse = log_sum_exp(&base);
                    let mut kl = 0.0f64;
                    for (zi, &bi) in z.iter_mut().zip(&base) {
                        let lq = bi - blse;
                        let q = lq.exp();
                        let lp = *zi - lse;
                        kl += f64::from(q * (lq - lp));
                        *zi = w * (lp.exp() - q);
                    }
                    out.push((kl, top == base_top));
                }
            }
        }
        out
    };
    let half = rows.len() / 2;
    if half == 0 {
        return work(d.view_mut(), rows, weights);
    }
    let (top, bottom) = d.view_mut().split_at(Axis(0), half);
    std::thread::scope(|sc| {
        let first = sc.spawn(|| work(top, &rows[..half], &weights[..half]));
        let mut second = work(bottom, &rows[half..], &weights[half..]);
        let mut all = first.join().expect("loss worker");
        all.append(&mut second);
        all
    })
}

fn argmax(z: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in z.iter().enumerate() {
        if x > z[best] {
            best = i;
        }
    }
    best
}

fn log_sum_exp(z: &[f32]) -> f32 {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m + z.iter().map(|&x| (x - m).exp()).sum::<f32>().ln()
}

/// Trains the adapter on collected positions.
pub fn train_expert(
    pos: &Positions,
    head: &LmHead,
    cfg: &ExpertTrainConfig,
) -> Result<(TrainedExpert, ExpertReport)> {
    let n_refusal = pos.refusal_positions();
    if n_refusal == 0 || n_refusal == pos.len() {
        return Err(Error::Input(format!(
            "the expert needs both refusal and benign positions; got {n_refusal} refusal and {} benign",
            pos.len() - n_refusal
        )));
    }
    let mut rng = Rng(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (mut train, hold) = split_holdout(pos, cfg.holdout, &mut rng);
    let n_train_ref = train.iter().filter(|&&i| pos.target[i].is_some()).count();
    let n_train_ben = train.len() - n_train_ref;
    if n_train_ref == 0 || n_train_ben == 0 {
        return Err(Error::Input(
            "too little data: after the hold-out, one side has no training positions".into(),
        ));
    }
    let start = Instant::now();
    let (expert, epoch_loss) = fit(
        pos,
        head,
        cfg,
        &mut train,
        (n_train_ref, n_train_ben),
        &mut rng,
    );
    let seconds = start.elapsed().as_secs_f64();
    let held = heldout_figures(pos, head, cfg, &expert, &hold);
    let (r, h) = (cfg.rank, pos.h);
    let report = ExpertReport {
        rank: r,
        parameters: 2 * r * h,
        train_positions: (n_train_ref, n_train_ben),
        heldout_positions: (held.counts[0], held.counts[1]),
        epoch_loss,
        heldout_refusal_accuracy: held.hits[0] as f64 / held.counts[0].max(1) as f64,
        heldout_benign_agreement: held.hits[1] as f64 / held.counts[1].max(1) as f64,
        heldout_benign_kl: held.kl / held.counts[1].max(1) as f64,
        seconds,
    };
    Ok((expert, report))
}

/// Holds out whole sequences (a share `holdout` of them): (training rows, held-out rows).
fn split_holdout(pos: &Positions, holdout: f64, rng: &mut Rng) -> (Vec<usize>, Vec<usize>) {
    let mut seqs: Vec<usize> = (0..pos.sequences).collect();
    rng.shuffle(&mut seqs);
    let n_hold = ((pos.sequences as f64) * holdout).round() as usize;
    let mut held = vec![false; pos.sequences];
    for &s in &seqs[..n_hold] {
        held[s] = true;
    }
    (0..pos.len()).partition(|&i| !held[pos.sequence[i]])
}

/// Adam over the training rows, class-balanced (benign rows weighted by `benign_weight`);
/// returns the adapter and each epoch's (refusal cross-entropy, benign KL).
fn fit(
    pos: &Positions,
    head: &LmHead,
    cfg: &ExpertTrainConfig,
    train: &mut [usize],
    (n_ref, n_ben): (usize, usize),
    rng: &mut Rng,
) -> (TrainedExpert, Vec<(f64, f64)>) {
    let (h, r) = (pos.h, cfg.rank);
    let w_ref = train.len() as f32 / (2.0 * n_ref as f32);
    let w_ben = cfg.benign_weight * train.len() as f32 / (2.0 * n_ben as f32);
    let row_weight = |i: usize| {
        if pos.target[i].is_some() {
            w_ref
        } else {
            w_ben
        }
    };
    let hidden = ArrayView2::from_shape((pos.len(), h), &pos.hidden).expect("rows × hidden");
    let e = &head.weight;
    let scale = 1.0 / (h as f64).sqrt();
    let mut a = Array2::from_shape_fn((r, h), |_| (rng.normal() * scale) as f32);
    let mut b = Array2::<f32>::zeros((h, r));
    let mut eb = e.dot(&b);
    let (mut adam_a, mut adam_b) = (Adam::new((r, h)), Adam::new((h, r)));
    let mut epoch_loss = Vec::new();
    let mut t = 0;
    let steps_per_epoch = train.len().div_ceil(cfg.batch);
    let bar = progress((steps_per_epoch * cfg.epochs) as u64, "training the expert");
    for _ in 0..cfg.epochs {
        rng.shuffle(train);
        let mut sums = [0.0f64; 2];
        let mut counts = [0usize; 2];
        for batch in train.chunks(cfg.batch) {
            t += 1;
            let hb = hidden.select(Axis(0), batch);
            let u = hb.dot(&a.t());
            let mut d = u.dot(&eb.t());
            let n = batch.len() as f32;
            let weights: Vec<f32> = batch.iter().map(|&i| row_weight(i) / n).collect();
            let losses = rows_loss_grad(&mut d, pos, batch, &weights);
            for (&i, (l, _)) in batch.iter().zip(&losses) {
                let k = usize::from(pos.target[i].is_none());
                sums[k] += l;
                counts[k] += 1;
            }
            let du = d.dot(&eb);
            let deb = d.t().dot(&u);
            let grad_b = e.t().dot(&deb);
            let grad_a = du.t().dot(&hb);
            adam_a.step(&mut a, &grad_a, cfg.learning_rate, t);
            adam_b.step(&mut b, &grad_b, cfg.learning_rate, t);
            eb = e.dot(&b);
            bar.inc(1);
        }
        let epoch = (
            sums[0] / counts[0].max(1) as f64,
            sums[1] / counts[1].max(1) as f64,
        );
        tracing::info!(refusal_ce = epoch.0, benign_kl = epoch.1, "epoch done");
        epoch_loss.push(epoch);
    }
    bar.finish_and_clear();
    (TrainedExpert { a, b }, epoch_loss)
}

/// Figures on the held-out rows: per class (refusal, benign) the rows and the top-1 hits, and
/// the benign rows' summed KL.
struct Heldout {
    counts: [usize; 2],
    hits: [usize; 2],
    kl: f64,
}

fn heldout_figures(
    pos: &Positions,
    head: &LmHead,
    cfg: &ExpertTrainConfig,
    expert: &TrainedExpert,
    hold: &[usize],
) -> Heldout {
    let hidden = ArrayView2::from_shape((pos.len(), pos.h), &pos.hidden).expect("rows × hidden");
    let eb = head.weight.dot(&expert.b);
    let mut out = Heldout {
        counts: [0; 2],
        hits: [0; 2],
        kl: 0.0,
    };
    for batch in hold.chunks(cfg.batch) {
        let hb = hidden.select(Axis(0), batch);
        let mut d = hb.dot(&expert.a.t()).dot(&eb.t());
        let weights = vec![0.0; batch.len()];
        for (&i, (l, hit)) in batch
            .iter()
            .zip(rows_loss_grad(&mut d, pos, batch, &weights))
        {
            let k = usize::from(pos.target[i].is_none());
            out.counts[k] += 1;
            out.hits[k] += usize::from(hit);
            if k == 1 {
                out.kl += l;
            }
        }
    }
    out
}

impl TrainedExpert {
    /// The adapter as `HeadExpert` reads it, with `metadata` added.
    pub fn to_safetensors(&self, metadata: BTreeMap<String, String>) -> SafeTensors {
        let mut st = SafeTensors::default();
        for (name, m) in [("lora_a", &self.a), ("lora_b", &self.b)] {
            st.tensors.insert(
                name.to_owned(),
                Tensor {
                    shape: m.shape().to_vec(),
                    data: m.iter().copied().collect(),
                },
            );
        }
        st.metadata = metadata;
        st.metadata
            .insert("format".to_owned(), HEAD_EXPERT_FORMAT.to_owned());
        st.metadata
            .insert("rank".to_owned(), self.a.nrows().to_string());
        st.metadata
            .insert("hidden_size".to_owned(), self.a.ncols().to_string());
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sentences_cuts_at_sentence_ends() {
        let t = "I'm sorry, but no. It could hurt people! Ask me something else?";
        assert_eq!(first_sentences(t, 1), "I'm sorry, but no.");
        assert_eq!(
            first_sentences(t, 2),
            "I'm sorry, but no. It could hurt people!"
        );
        assert_eq!(first_sentences(t, 5), t);
        assert_eq!(first_sentences(t, 0), t);
        assert_eq!(
            first_sentences("Version 2.5 is out. Yes.", 1),
            "Version 2.5 is out."
        );
    }

    #[test]
    fn bf16_round_trips_within_its_precision() {
        for x in [0.0f32, 1.0, -3.25, 17.71, -42.123, 1e-3] {
            let y = from_bf16(to_bf16(x));
            assert!((x - y).abs() <= x.abs() / 128.0, "{x} -> {y}");
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        // Two rows over a vocabulary of 5: one refusal target, one KL row.
        let v = 5;
        let mut pos = Positions {
            h: 1,
            v,
            ..Positions::default()
        };
        pos.push(&[0.0], &[0.5, -1.0, 2.0, 0.0, 1.0], Some(3));
        pos.push(&[0.0], &[1.0, 0.25, -0.5, 2.0, 0.0], None);
        let delta = [0.3f32, -0.2, 0.1, 0.4, -0.6, 0.2, 0.0, -0.3, 0.5, 0.1];
        let loss_at = |dl: &[f32]| {
            let mut d = Array2::from_shape_vec((2, v), dl.to_vec()).unwrap();
            rows_loss_grad(&mut d, &pos, &[0, 1], &[1.0, 1.0])
                .iter()
                .map(|x| x.0)
                .sum::<f64>()
        };
        let mut d = Array2::from_shape_vec((2, v), delta.to_vec()).unwrap();
        rows_loss_grad(&mut d, &pos, &[0, 1], &[1.0, 1.0]);
        for k in 0..delta.len() {
            let mut plus = delta;
            let mut minus = delta;
            plus[k] += 1e-2;
            minus[k] -= 1e-2;
            let numeric = (loss_at(&plus) - loss_at(&minus)) / 2e-2;
            let analytic = f64::from(d.as_slice().unwrap()[k]);
            assert!(
                (numeric - analytic).abs() < 2e-3,
                "logit {k}: {numeric} vs {analytic}"
            );
        }
    }
}
