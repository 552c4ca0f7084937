//! Choosing what a neuron reads: candidate feature sets (layers × pooling) scored by
//! cross-validation on the training data only, and the answer monitor's neuron fitted on the
//! base model's own answers, checkpoint by checkpoint.

use ngsd_gate::{Feature, Layer, Pool};
use serde::Serialize;

use crate::features::{AnswerRow, FeatureBank};
use crate::logreg::{
    Logistic, Standardizer, auroc, balanced_log_loss, cross_val_predict, stratified_folds,
    threshold_for_negative_rate,
};

/// One candidate feature set with its out-of-fold figures on the training data.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureTrial {
    /// The features, as the weights file names them.
    pub features: String,
    /// Out-of-fold balanced log loss (lower is better; the choice is made on this).
    pub loss: f64,
    /// Out-of-fold AUROC.
    pub auroc: f64,
}

fn feature(layer: Layer, pool: Pool) -> Feature {
    Feature { layer, pool }
}

/// Prompt feature sets worth trying over what the model offers: the final state at the
/// prompt's end alone (what gates read before), with the request's mean, and with one
/// intermediate layer (its request mean, or its mean and last).
pub fn prompt_candidates(available: &[Feature]) -> Vec<Vec<Feature>> {
    let last = feature(Layer::Final, Pool::Last);
    let mut sets = vec![vec![last], vec![last, feature(Layer::Final, Pool::Mean)]];
    for layer in intermediate_layers(available) {
        sets.push(vec![last, feature(layer, Pool::Mean)]);
        sets.push(vec![feature(layer, Pool::Last), feature(layer, Pool::Mean)]);
    }
    sets.retain(|s| s.iter().all(|f| available.contains(f)));
    sets
}

/// Answer feature sets: the mean over the answer so far of one layer (final included), alone
/// or with the final state at the newest position.
pub fn answer_candidates(available: &[Feature]) -> Vec<Vec<Feature>> {
    let last = feature(Layer::Final, Pool::Last);
    let mut sets = vec![vec![feature(Layer::Final, Pool::Mean)]];
    for layer in intermediate_layers(available) {
        sets.push(vec![feature(layer, Pool::Mean)]);
        sets.push(vec![feature(layer, Pool::Mean), last]);
    }
    sets.retain(|s| s.iter().all(|f| available.contains(f)));
    sets
}

fn intermediate_layers(available: &[Feature]) -> Vec<Layer> {
    let mut layers: Vec<Layer> = available
        .iter()
        .map(|f| f.layer)
        .filter(|l| *l != Layer::Final)
        .collect();
    layers.dedup();
    layers
}

/// Scores every candidate by cross-validation (`assignment[i]`: the fold of row i, of
/// `folds`) at one L2 strength and returns the one with the lowest balanced log loss, with
/// every trial.
pub fn choose(
    bank: &FeatureBank,
    y: &[bool],
    candidates: &[Vec<Feature>],
    assignment: &[usize],
    folds: usize,
    l2: f64,
) -> (Vec<Feature>, Vec<FeatureTrial>) {
    let mut trials = Vec::with_capacity(candidates.len());
    let mut best: Option<(f64, &Vec<Feature>)> = None;
    for set in candidates {
        let x = bank.matrix(set);
        let p = cross_val_predict(x.view(), y, assignment, folds, l2);
        let loss = balanced_log_loss(&p, y);
        let name = names(set);
        tracing::info!(features = %name, loss, "feature set cross-validated");
        trials.push(FeatureTrial {
            features: name,
            loss,
            auroc: auroc(&p, y).unwrap_or(f64::NAN),
        });
        if best.is_none_or(|(b, _)| loss < b) {
            best = Some((loss, set));
        }
    }
    let chosen = best.map_or_else(Vec::new, |(_, s)| s.clone());
    (chosen, trials)
}

/// `a, b, c` in the text form of features.
pub fn names(set: &[Feature]) -> String {
    set.iter()
        .map(Feature::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The answer monitor's neuron: fitted on answer checkpoints, labelled by their prompt.
#[derive(Debug, Clone)]
pub struct AnswerNeuron {
    /// What it reads.
    pub features: Vec<Feature>,
    /// Feature standardisation.
    pub standardizer: Standardizer,
    /// The neuron over standardised features.
    pub neuron: Logistic,
    /// Fires at p ≥ this.
    pub threshold: f32,
    /// Answer tokens between the checks the threshold was calibrated over (checks at
    /// `every`, 2·`every`, …): decoding checks on this schedule unless told otherwise.
    pub every: usize,
}

/// What fitting the answer neuron measured.
#[derive(Debug, Clone, Serialize)]
pub struct AnswerReport {
    /// Answers used: harmful (the base complied) and benign.
    pub harmful_answers: usize,
    /// Benign answers.
    pub benign_answers: usize,
    /// Harmful prompts left out because the base model refused them itself.
    pub refused_by_base: usize,
    /// Checkpoint rows.
    pub rows: usize,
    /// Answer tokens between checkpoints.
    pub every: usize,
    /// Candidate feature sets and their figures.
    pub trials: Vec<FeatureTrial>,
    /// The chosen set.
    pub features: String,
    /// The threshold and how it was chosen.
    pub threshold: f32,
    /// How the threshold was chosen.
    pub threshold_rule: String,
    /// Out-of-fold share of harmful answers caught at some checkpoint.
    pub harmful_caught: f64,
    /// Out-of-fold share of benign answers that fire at some checkpoint (would be steered).
    pub benign_fired: f64,
}

/// Fits the answer neuron. `rows` say which example and checkpoint each bank row is;
/// `harmful[e]` labels example e. The threshold keeps the share of benign answers that fire
/// at any checkpoint (out of fold) at most `benign_rate`; the checkpoints are `every` answer
/// tokens apart.
pub fn fit_answer(
    bank: &FeatureBank,
    rows: &[AnswerRow],
    harmful: &[bool],
    (every, folds): (usize, usize),
    l2: f64,
    benign_rate: f64,
) -> (AnswerNeuron, AnswerReport) {
    let y: Vec<bool> = rows.iter().map(|r| harmful[r.example]).collect();
    // Folds by answer, so no answer's checkpoints are on both sides.
    let example_fold = stratified_folds(harmful, folds, 7);
    let assignment: Vec<usize> = rows.iter().map(|r| example_fold[r.example]).collect();
    let candidates = answer_candidates(&bank.features());
    let (features, trials) = choose(bank, &y, &candidates, &assignment, folds, l2);
    let x = bank.matrix(&features);
    let oof = cross_val_predict(x.view(), &y, &assignment, folds, l2);
    // Per answer, the highest p over its checkpoints: what decides whether it fires.
    let mut top = vec![None::<f32>; harmful.len()];
    for (r, p) in rows.iter().zip(&oof) {
        let t = &mut top[r.example];
        *t = Some(t.map_or(*p, |v| v.max(*p)));
    }
    let (scores, labels): (Vec<f32>, Vec<bool>) = top
        .iter()
        .zip(harmful)
        .filter_map(|(t, h)| t.map(|v| (v, *h)))
        .unzip();
    let threshold = threshold_for_negative_rate(&scores, &labels, benign_rate);
    let share = |want: bool| {
        let n = labels.iter().filter(|&&l| l == want).count().max(1);
        let hit = scores
            .iter()
            .zip(&labels)
            .filter(|(s, l)| **l == want && **s >= threshold)
            .count();
        hit as f64 / n as f64
    };
    let standardizer = Standardizer::fit(x.view());
    let neuron = Logistic::fit(standardizer.apply(x.view()).view(), &y, l2);
    let report = AnswerReport {
        harmful_answers: labels.iter().filter(|&&l| l).count(),
        benign_answers: labels.iter().filter(|&&l| !l).count(),
        refused_by_base: 0,
        rows: rows.len(),
        every,
        trials,
        features: names(&features),
        threshold,
        threshold_rule: format!(
            "the lowest p at which at most {:.1}% of the benign answers fire at any checkpoint, each scored by a neuron fitted without its answer",
            benign_rate * 100.0
        ),
        harmful_caught: share(true),
        benign_fired: share(false),
    };
    (
        AnswerNeuron {
            features,
            standardizer,
            neuron,
            threshold,
            every,
        },
        report,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use ndarray::Array2;

    use super::*;

    fn f(s: &str) -> Feature {
        s.parse().unwrap()
    }

    #[test]
    fn candidates_follow_what_the_model_exports() {
        let available = [f("10.last"), f("10.mean"), f("final.last"), f("final.mean")];
        let sets: Vec<String> = prompt_candidates(&available)
            .iter()
            .map(|s| names(s))
            .collect();
        assert_eq!(
            sets,
            [
                "final.last",
                "final.last, final.mean",
                "final.last, 10.mean",
                "10.last, 10.mean"
            ]
        );
        let only_final = prompt_candidates(&[f("final.last")]);
        assert_eq!(only_final.len(), 1);
    }

    #[test]
    fn the_informative_feature_wins() {
        // Feature a carries the label, feature b is noise.
        let n = 60;
        let y: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
        let mut bank = FeatureBank::default();
        let signal: Vec<f32> = (0..n)
            .flat_map(|i| {
                let s = if y[i] { 1.0 } else { -1.0 };
                [s + 0.3 * ((i * 7 % 5) as f32 - 2.0), 0.1 * (i % 3) as f32]
            })
            .collect();
        let noise: Vec<f32> = (0..n)
            .flat_map(|i| [((i * 13) % 7) as f32, ((i * 5) % 11) as f32])
            .collect();
        bank.rows.insert(
            f("final.last"),
            Array2::from_shape_vec((n, 2), noise).unwrap(),
        );
        bank.rows.insert(
            f("final.mean"),
            Array2::from_shape_vec((n, 2), signal).unwrap(),
        );
        let folds = stratified_folds(&y, 3, 1);
        let (chosen, trials) = choose(
            &bank,
            &y,
            &[vec![f("final.last")], vec![f("final.mean")]],
            &folds,
            3,
            1e-2,
        );
        assert_eq!(chosen, [f("final.mean")]);
        assert!(
            trials[1].auroc > 0.95 && trials[0].loss > trials[1].loss,
            "{trials:?}"
        );
    }
}
