//! The steering arithmetic: divergences between the base and expert next-token distributions,
//! top-k candidate sets, and the paper's interpolation rule (spec §3.2 steps 3 and 5).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// How the base and expert distributions are compared (the gate's input current).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Divergence {
    /// Total variation, `½ Σ |p − q|`, in [0, 1] (the paper's default).
    #[default]
    TotalVariation,
    /// Kullback–Leibler `KL(p_base ‖ p_expert)`, natural log.
    Kl,
    /// Jensen–Shannon, natural log, in [0, ln 2].
    Js,
}

impl FromStr for Divergence {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "tv" | "total-variation" | "l1" => Ok(Divergence::TotalVariation),
            "kl" => Ok(Divergence::Kl),
            "js" | "jsd" => Ok(Divergence::Js),
            other => Err(Error::InvalidConfig {
                name: "divergence",
                reason: format!("unknown divergence `{other}`; choose tv, kl or js"),
            }),
        }
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Divergence::TotalVariation => "tv",
            Divergence::Kl => "kl",
            Divergence::Js => "js",
        })
    }
}

fn finite(x: f32) -> f32 {
    if x.is_finite() { x } else { 0.0 }
}

impl Divergence {
    /// The divergence of two probability vectors of equal length (NaN/inf entries count as 0).
    pub fn compute(self, p: &[f32], q: &[f32]) -> f32 {
        match self {
            Divergence::TotalVariation => {
                0.5 * p
                    .iter()
                    .zip(q)
                    .map(|(a, b)| (finite(*a) - finite(*b)).abs())
                    .sum::<f32>()
            }
            Divergence::Kl => kl(p, q),
            Divergence::Js => {
                let m: Vec<f32> = p
                    .iter()
                    .zip(q)
                    .map(|(a, b)| 0.5 * (finite(*a) + finite(*b)))
                    .collect();
                0.5 * kl(p, &m) + 0.5 * kl(q, &m)
            }
        }
    }
}

/// KL(p ‖ q) after renormalising both and clamping at 1e-8 (spec §5.1).
fn kl(p: &[f32], q: &[f32]) -> f32 {
    let sp: f32 = p.iter().map(|x| finite(*x)).sum::<f32>() + 1e-8;
    let sq: f32 = q.iter().map(|x| finite(*x)).sum::<f32>() + 1e-8;
    p.iter()
        .zip(q)
        .map(|(a, b)| {
            let a = (finite(*a) / sp).max(1e-8);
            let b = (finite(*b) / sq).max(1e-8);
            a * (a.ln() - b.ln())
        })
        .sum()
}

/// Indices of the `k` largest values, largest first, lowest index first on ties.
pub fn top_k(values: &[f32], k: usize, out: &mut Vec<u32>) {
    out.clear();
    let k = k.min(values.len());
    if k == 0 {
        return;
    }
    out.extend(0..values.len() as u32);
    let cmp = |a: &u32, b: &u32| {
        values[*b as usize]
            .total_cmp(&values[*a as usize])
            .then(a.cmp(b))
    };
    if k < values.len() {
        out.select_nth_unstable_by(k - 1, cmp);
        out.truncate(k);
    }
    out.sort_unstable_by(cmp);
}

/// Reusable buffers for [`steer_into`].
#[derive(Debug, Default, Clone)]
pub struct SteerScratch {
    base_top: Vec<u32>,
    expert_top: Vec<u32>,
    /// The candidate set of the last call (union of both top-k sets), sorted.
    pub candidates: Vec<u32>,
}

/// The paper's steering rule: over the union of the base and expert top-`k` candidates,
/// `score = p_b + w · (p_e − p_b)` with `w = α · strength`; every other token keeps `p_b`.
/// Writes the adjusted scores into `out` (same length as the inputs).
pub fn steer_into(
    p_base: &[f32],
    p_expert: &[f32],
    weight: f32,
    k: usize,
    scratch: &mut SteerScratch,
    out: &mut Vec<f32>,
) {
    out.clear();
    out.extend_from_slice(p_base);
    top_k(p_base, k, &mut scratch.base_top);
    top_k(p_expert, k, &mut scratch.expert_top);
    scratch.candidates.clear();
    scratch.candidates.extend_from_slice(&scratch.base_top);
    scratch.candidates.extend_from_slice(&scratch.expert_top);
    scratch.candidates.sort_unstable();
    scratch.candidates.dedup();
    for &t in &scratch.candidates {
        let t = t as usize;
        out[t] = p_base[t] + weight * (p_expert[t] - p_base[t]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ngsd_runtime::sampling::argmax;

    const PB: [f32; 6] = [0.5, 0.3, 0.1, 0.05, 0.03, 0.02];
    const PE: [f32; 6] = [0.05, 0.1, 0.8, 0.02, 0.02, 0.01];

    /// Spec §14.3: the golden token-selection vectors.
    fn check(weight: f32, k: usize, expected_token: u32, expected_scores: Option<[f32; 6]>) {
        let mut scratch = SteerScratch::default();
        let mut out = Vec::new();
        steer_into(&PB, &PE, weight, k, &mut scratch, &mut out);
        assert_eq!(
            argmax(&out),
            expected_token,
            "weight {weight}, k {k}: {out:?}"
        );
        if let Some(exp) = expected_scores {
            for (a, b) in out.iter().zip(exp) {
                assert!((a - b).abs() < 1e-6, "{out:?} vs {exp:?}");
            }
        }
    }

    #[test]
    fn golden_token_selection() {
        assert!((Divergence::TotalVariation.compute(&PB, &PE) - 0.70).abs() < 1e-6);
        check(0.9, 64, 2, Some([0.095, 0.12, 0.73, 0.023, 0.021, 0.011]));
        check(0.1, 64, 0, Some([0.455, 0.28, 0.17, 0.047, 0.029, 0.019]));
        check(0.0, 64, 0, Some(PB)); // no spike: the base distribution unchanged
        check(0.9, 2, 2, None);
        check(0.1, 2, 0, None);
    }

    #[test]
    fn candidates_are_the_union_of_both_top_k() {
        let mut scratch = SteerScratch::default();
        let mut out = Vec::new();
        steer_into(&PB, &PE, 1.0, 2, &mut scratch, &mut out);
        assert_eq!(scratch.candidates, vec![0, 1, 2]);
        // Non-candidates keep p_b.
        assert_eq!(&out[3..], &PB[3..]);
        for (a, b) in out[..3].iter().zip(&PE[..3]) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn top_k_breaks_ties_by_lowest_index() {
        let mut v = Vec::new();
        top_k(&[0.2, 0.5, 0.5, 0.1], 2, &mut v);
        assert_eq!(v, vec![1, 2]);
        top_k(&[0.2, 0.5, 0.5, 0.1], 10, &mut v);
        assert_eq!(v, vec![1, 2, 0, 3]);
    }

    #[test]
    fn divergences_behave() {
        let p = [0.5f32, 0.5];
        assert_eq!(Divergence::TotalVariation.compute(&p, &p), 0.0);
        assert!(Divergence::Kl.compute(&p, &p).abs() < 1e-6);
        assert!(Divergence::Js.compute(&p, &p).abs() < 1e-6);
        let q = [1.0f32, 0.0];
        let js = Divergence::Js.compute(&p, &q);
        assert!(js > 0.0 && js <= std::f32::consts::LN_2 + 1e-6, "{js}");
        assert!(Divergence::Kl.compute(&q, &p) > 0.6);
        assert!((Divergence::TotalVariation.compute(&[f32::NAN, 1.0], &[0.0, 1.0])).abs() < 1e-6);
    }
}
