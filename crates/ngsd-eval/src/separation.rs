//! How well the gate neuron's p at the prompt (stored with each answer under probe reflection)
//! separates harmful prompts from benign ones: AUROC over all harmful × all benign prompts,
//! and per topic-matched pair of datasets or groups.
//!
//! A harmful and a benign set are a pair when their names agree up to the last `-`:
//! `jbb-harmful` / `jbb-benign`, `xstest-unsafe` / `xstest-safe`, `wrapped-harmful` /
//! `wrapped-benign`. Such pairs share topics or a wrapper by construction, so their AUROC
//! measures the neuron on the hard cases rather than on topic alone.

use serde::Serialize;

use crate::metrics::auroc;
use crate::suite::Label;

/// The neuron's AUROC on one harmful set against one benign set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairAuroc {
    /// The harmful set (a dataset, a group, or `harmful` for all of them).
    pub harmful: String,
    /// The benign set.
    pub benign: String,
    /// Harmful prompts with a stored p.
    pub n_harmful: usize,
    /// Benign prompts with a stored p.
    pub n_benign: usize,
    /// Chance that a random harmful prompt scores above a random benign one (ties half).
    pub auroc: f64,
}

/// A named set of prompts with the p stored for each (prompts without one are left out).
pub struct Scored<'a> {
    /// Dataset or group name.
    pub name: &'a str,
    /// Its label.
    pub label: Label,
    /// p of each prompt that has one.
    pub p: Vec<f32>,
}

/// AUROC of all harmful against all benign scored prompts, named `harmful` × `benign`; `None`
/// when no prompt has a p (the configuration does not reflect by probe) or a class is missing.
pub(crate) fn pooled_auroc(sets: &[Scored<'_>]) -> Option<PairAuroc> {
    let pooled = |label: Label| -> Vec<f32> {
        sets.iter()
            .filter(|s| s.label == label)
            .flat_map(|s| s.p.iter().copied())
            .collect()
    };
    pair(
        "harmful",
        &pooled(Label::Harmful),
        "benign",
        &pooled(Label::Benign),
    )
}

/// AUROC of each topic-matched harmful × benign pair among `sets`, in order (pairs without
/// scores on both sides are left out).
pub(crate) fn matched_aurocs(sets: &[Scored<'_>]) -> Vec<PairAuroc> {
    let mut out = Vec::new();
    for h in sets.iter().filter(|s| s.label == Label::Harmful) {
        for b in sets.iter().filter(|s| s.label == Label::Benign) {
            if stem(h.name).is_some() && stem(h.name) == stem(b.name) {
                out.extend(pair(h.name, &h.p, b.name, &b.p));
            }
        }
    }
    out
}

/// The name up to its last `-`, if it has one.
fn stem(name: &str) -> Option<&str> {
    name.rsplit_once('-').map(|(s, _)| s)
}

fn pair(harmful: &str, hp: &[f32], benign: &str, bp: &[f32]) -> Option<PairAuroc> {
    let scores: Vec<f32> = hp.iter().chain(bp).copied().collect();
    let labels: Vec<bool> = hp
        .iter()
        .map(|_| true)
        .chain(bp.iter().map(|_| false))
        .collect();
    Some(PairAuroc {
        harmful: harmful.to_owned(),
        benign: benign.to_owned(),
        n_harmful: hp.len(),
        n_benign: bp.len(),
        auroc: auroc(&scores, &labels)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &'static str, label: Label, p: &[f32]) -> Scored<'static> {
        Scored {
            name,
            label,
            p: p.to_vec(),
        }
    }

    #[test]
    fn pools_then_pairs_by_name_stem() {
        let sets = [
            set("advbench-dev", Label::Harmful, &[0.9, 0.95]),
            set("jbb-harmful", Label::Harmful, &[0.8, 0.3]),
            set("jbb-benign", Label::Benign, &[0.5, 0.1]),
            set("xstest-unsafe", Label::Harmful, &[0.6]),
            set("xstest-safe", Label::Benign, &[0.7, 0.2]),
            set("gsm8k-dev", Label::Benign, &[0.0]),
        ];
        let got: Vec<(String, String, usize, usize, f64)> = pooled_auroc(&sets)
            .into_iter()
            .chain(matched_aurocs(&sets))
            .map(|p| (p.harmful, p.benign, p.n_harmful, p.n_benign, p.auroc))
            .collect();
        // jbb: 0.8 beats both benign, 0.3 beats 0.1 only → 3 of 4.
        // xstest: 0.6 beats 0.2, loses to 0.7 → 1 of 2.
        // all: harmful {0.9,0.95,0.8,0.3,0.6} × benign {0.5,0.1,0.7,0.2,0.0}: 25 pairs,
        // 0.3 wins 3, 0.6 wins 4, the other three win 5 each → 22 of 25.
        assert_eq!(
            got,
            [
                ("harmful".into(), "benign".into(), 5, 5, 22.0 / 25.0),
                ("jbb-harmful".into(), "jbb-benign".into(), 2, 2, 0.75),
                ("xstest-unsafe".into(), "xstest-safe".into(), 1, 2, 0.5),
            ]
        );
    }

    #[test]
    fn nothing_without_scores_or_without_a_class() {
        let none = [
            set("jbb-harmful", Label::Harmful, &[]),
            set("jbb-benign", Label::Benign, &[]),
        ];
        assert_eq!(pooled_auroc(&none), None);
        assert!(matched_aurocs(&none).is_empty());
        let one_class = [
            set("a-harmful", Label::Harmful, &[0.5]),
            set("b-benign", Label::Benign, &[0.4]),
        ];
        assert!(
            matched_aurocs(&one_class).is_empty(),
            "a and b are not a pair"
        );
        assert_eq!(pooled_auroc(&one_class[..1]), None);
    }
}
