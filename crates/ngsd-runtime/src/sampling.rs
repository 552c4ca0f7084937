//! Next-token selection: greedy, temperature, top-k and top-p, reproducible from a seed.

use crate::error::{Error, Result};

/// How to pick the next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// 0 means greedy (argmax); otherwise logits are divided by it before the softmax.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1 = off).
    pub top_p: f32,
    /// Seed of the random generator (same seed, same prompt, same output).
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::InvalidArgument {
                name: "temperature",
                reason: format!("{} is not ≥ 0 (0 = greedy)", self.temperature),
            });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidArgument {
                name: "top-p",
                reason: format!("{} is not in (0, 1]", self.top_p),
            });
        }
        Ok(())
    }

    /// Whether this picks the argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// xoshiro256** seeded through splitmix64: small, fast, and stable across versions (a dependency's
/// generator could change its stream and silently break reproducibility).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for a seed.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Index of the largest value; the lowest index wins ties. NaN never wins.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in values.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// Numerically stable softmax of `logits / temperature` into `out`.
pub fn softmax_into(logits: &[f32], temperature: f32, out: &mut Vec<f32>) {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    out.clear();
    out.extend(logits.iter().map(|&l| ((l - max) / t).exp()));
    let sum: f32 = out.iter().sum();
    if sum > 0.0 {
        let inv = 1.0 / sum;
        out.iter_mut().for_each(|p| *p *= inv);
    }
}

/// Picks tokens according to a [`SamplingConfig`].
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    rng: Rng,
    probs: Vec<f32>,
    order: Vec<u32>,
}

impl Sampler {
    /// A sampler; validates the configuration.
    pub fn new(config: SamplingConfig) -> Result<Self> {
        config.validate()?;
        Ok(Sampler {
            rng: Rng::new(config.seed),
            config,
            probs: Vec::new(),
            order: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// Picks the next token from raw logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.config.is_greedy() {
            return argmax(logits);
        }
        softmax_into(logits, self.config.temperature, &mut self.probs);
        self.sample_probs_inner()
    }

    /// Picks the next token from a probability vector (already softmaxed, need not sum to 1),
    /// applying top-k / top-p; greedy takes the argmax.
    pub fn sample_probs(&mut self, probs: &[f32]) -> u32 {
        if self.config.is_greedy() {
            return argmax(probs);
        }
        self.probs.clear();
        self.probs.extend_from_slice(probs);
        self.sample_probs_inner()
    }

    fn sample_probs_inner(&mut self) -> u32 {
        let SamplingConfig { top_k, top_p, .. } = self.config;
        let n = self.probs.len();
        if (top_k == 0 || top_k >= n) && top_p >= 1.0 {
            let total: f64 = self.probs.iter().map(|&p| f64::from(p)).sum();
            return draw(
                &mut self.rng,
                total,
                self.probs
                    .iter()
                    .copied()
                    .enumerate()
                    .map(|(i, p)| (i as u32, p)),
            )
            .unwrap_or_else(|| argmax(&self.probs));
        }
        self.order.clear();
        self.order.extend(0..n as u32);
        let probs = &self.probs;
        let by_prob_desc = |a: &u32, b: &u32| {
            probs[*b as usize]
                .total_cmp(&probs[*a as usize])
                .then(a.cmp(b))
        };
        let k = if top_k == 0 { n } else { top_k.min(n) };
        if k < n {
            self.order.select_nth_unstable_by(k - 1, by_prob_desc);
            self.order.truncate(k);
        }
        self.order.sort_unstable_by(by_prob_desc);
        let kept_total: f64 = self
            .order
            .iter()
            .map(|&i| f64::from(probs[i as usize]))
            .sum();
        if top_p < 1.0 {
            let mut acc = 0.0f64;
            let limit = f64::from(top_p) * kept_total;
            let mut keep = self.order.len();
            for (j, &i) in self.order.iter().enumerate() {
                acc += f64::from(probs[i as usize]);
                if acc >= limit {
                    keep = j + 1;
                    break;
                }
            }
            self.order.truncate(keep);
        }
        let total: f64 = self
            .order
            .iter()
            .map(|&i| f64::from(probs[i as usize]))
            .sum();
        let first = self.order[0];
        draw(
            &mut self.rng,
            total,
            self.order.iter().map(|&i| (i, probs[i as usize])),
        )
        .unwrap_or(first)
    }
}

fn draw(rng: &mut Rng, total: f64, items: impl Iterator<Item = (u32, f32)>) -> Option<u32> {
    if total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let target = rng.next_f64() * total;
    let mut acc = 0.0f64;
    let mut last = None;
    for (i, p) in items {
        if p <= 0.0 {
            continue;
        }
        acc += f64::from(p);
        last = Some(i);
        if acc > target {
            return Some(i);
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_prefers_lowest_index_on_ties() {
        assert_eq!(argmax(&[0.1, 0.5, 0.5, 0.2]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.0, -1.0]), 1);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut out = Vec::new();
        softmax_into(&[1.0, 2.0, 3.0], 1.0, &mut out);
        let sum: f32 = out.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        assert!(out[2] > out[1] && out[1] > out[0]);
    }

    #[test]
    fn same_seed_same_draws() {
        let cfg = SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 7,
        };
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let a: Vec<u32> = {
            let mut s = Sampler::new(cfg).unwrap();
            (0..50).map(|_| s.sample(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(cfg).unwrap();
            (0..50).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(a, b);
        let distinct: std::collections::BTreeSet<_> = a.iter().collect();
        assert!(
            distinct.len() > 5,
            "sampling should spread over tokens: {distinct:?}"
        );
    }

    #[test]
    fn top_k_one_is_greedy() {
        let cfg = SamplingConfig {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
            seed: 1,
        };
        let mut s = Sampler::new(cfg).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 3.0, 2.9, -1.0]), 1);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // probabilities 0.5, 0.3, 0.15, 0.05: top-p 0.75 keeps tokens 0 and 1 only.
        let probs = [0.5f32, 0.3, 0.15, 0.05];
        let cfg = SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.75,
            seed: 3,
        };
        let mut s = Sampler::new(cfg).unwrap();
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[s.sample_probs(&probs) as usize] += 1;
        }
        assert_eq!(seen[2] + seen[3], 0, "{seen:?}");
        assert!(seen[0] > seen[1] && seen[1] > 0, "{seen:?}");
    }

    #[test]
    fn bad_ranges_are_rejected_with_a_message() {
        let err = Sampler::new(SamplingConfig {
            temperature: -1.0,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert_eq!(err, "invalid temperature: -1 is not ≥ 0 (0 = greedy)");
        let err = Sampler::new(SamplingConfig {
            top_p: 0.0,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert_eq!(err, "invalid top-p: 0 is not in (0, 1]");
    }
}
