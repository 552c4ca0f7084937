//! Fitting the gate neuron: logistic regression on the prompt's last hidden state, L2 chosen
//! by cross-validation, threshold chosen on out-of-fold predictions, reported per dataset pair.

use std::collections::BTreeMap;

use ndarray::Array2;
use ngsd_gate::safetensors::{SafeTensors, Tensor};
use serde::Serialize;

use crate::data::Example;
use crate::logreg::{
    Logistic, Standardizer, auroc, balanced_log_loss, cross_val_predict, stratified_folds,
    threshold_for_negative_rate, threshold_for_recall,
};
use crate::select::{AnswerNeuron, AnswerReport, FeatureTrial};
use ngsd_gate::{Feature, FeatureSpec};

/// Format tag in the metadata of neuron files.
pub const GATE_FORMAT: &str = "ngsd-gate-neuron/1";

/// Settings of `ngsd train gate`.
#[derive(Debug, Clone)]
pub struct GateTrainConfig {
    /// Cross-validation folds.
    pub folds: usize,
    /// L2 strengths tried (on standardised features, class-balanced mean loss).
    pub l2_grid: Vec<f64>,
    /// How the threshold is chosen from out-of-fold predictions.
    pub rule: ThresholdRule,
    /// Seed of the fold assignment.
    pub seed: u64,
}

impl Default for GateTrainConfig {
    fn default() -> Self {
        GateTrainConfig {
            folds: 5,
            l2_grid: vec![1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
            rule: ThresholdRule::BenignFireRate(0.01),
            seed: 1,
        }
    }
}

/// How the decision threshold is chosen, always from out-of-fold predictions on the
/// training prompts (never from evaluation data).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdRule {
    /// The lowest threshold at which at most this share of benign prompts fire.
    BenignFireRate(f64),
    /// The highest threshold at which at least this share of harmful prompts fire.
    HarmfulRecall(f64),
}

impl ThresholdRule {
    fn describe(self) -> String {
        match self {
            ThresholdRule::BenignFireRate(r) => format!(
                "the lowest p at which at most {:.1}% of the benign training prompts fire, each scored by a model fitted without its fold",
                r * 100.0
            ),
            ThresholdRule::HarmfulRecall(r) => format!(
                "the highest p at which {:.1}% of the harmful training prompts still fire, each scored by a model fitted without its fold",
                r * 100.0
            ),
        }
    }
}

/// Held-out figures for one harmful set against one benign set.
#[derive(Debug, Clone, Serialize)]
pub struct PairReport {
    /// Harmful dataset.
    pub harmful: String,
    /// Benign dataset.
    pub benign: String,
    /// Out-of-fold AUROC.
    pub auroc: f64,
    /// Out-of-fold share of the harmful set at or above the threshold.
    pub harmful_recall: f64,
    /// Out-of-fold share of the benign set below the threshold.
    pub benign_pass: f64,
}

/// What training measured.
#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    /// The prompt features the neuron reads.
    pub features: String,
    /// The candidate feature sets, scored by cross-validation (the lowest loss was chosen).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub feature_trials: Vec<FeatureTrial>,
    /// The answer monitor, when one was trained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<AnswerReport>,
    /// Harmful / benign prompts.
    pub harmful: usize,
    /// Benign prompts.
    pub benign: usize,
    /// Cross-validated balanced log loss per L2 strength.
    pub l2_search: Vec<(f64, f64)>,
    /// Chosen L2.
    pub l2: f64,
    /// Chosen threshold and how.
    pub threshold: f32,
    /// The rule that chose it.
    pub threshold_rule: String,
    /// Out-of-fold AUROC over all prompts.
    pub auroc: f64,
    /// Per dataset pair.
    pub pairs: Vec<PairReport>,
    /// Figures on other labelled data (`--report-on`), measured after fitting; evaluation
    /// only, never used for the weights, the L2 or the threshold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evaluation: Vec<EvalReport>,
}

/// The trained neuron on one file of labelled prompts that played no part in training.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// What this is, for readers of the JSON.
    pub note: String,
    /// The suite or training-set file the prompts came from.
    pub source: String,
    /// Per dataset: how often the neuron fires at the trained threshold.
    pub datasets: Vec<EvalSet>,
    /// Per harmful × benign dataset pair: AUROC of the neuron's p.
    pub pairs: Vec<EvalPair>,
}

/// Fire rate of the trained neuron on one labelled dataset.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSet {
    /// Dataset name.
    pub name: String,
    /// `harmful` or `benign`.
    pub label: String,
    /// Prompts.
    pub n: usize,
    /// Share with p ≥ the threshold.
    pub fired: f64,
    /// Mean p.
    pub mean_p: f64,
    /// Prompts that are also (word for word) training prompts.
    pub in_training: usize,
}

/// AUROC of one harmful dataset against one benign dataset.
#[derive(Debug, Clone, Serialize)]
pub struct EvalPair {
    /// Harmful dataset.
    pub harmful: String,
    /// Benign dataset.
    pub benign: String,
    /// AUROC of p.
    pub auroc: f64,
}

/// A fitted neuron with its standardisation and threshold.
#[derive(Debug, Clone)]
pub struct TrainedGate {
    /// What the neuron reads at the prompt.
    pub features: Vec<Feature>,
    /// Feature standardisation.
    pub standardizer: Standardizer,
    /// The neuron over standardised features.
    pub neuron: Logistic,
    /// Decision threshold on p.
    pub threshold: f32,
    /// The answer monitor's neuron, when one was trained.
    pub answer: Option<AnswerNeuron>,
}

/// Fits the neuron on `features` (one row per example, the columns of `chosen`).
pub fn train_gate(
    examples: &[Example],
    chosen: &[Feature],
    features: &Array2<f32>,
    cfg: &GateTrainConfig,
) -> (TrainedGate, GateReport) {
    let y: Vec<bool> = examples.iter().map(|e| e.harmful).collect();
    let folds = stratified_folds(&y, cfg.folds, cfg.seed);
    let mut search = Vec::new();
    let mut best: Option<(f64, f64, Vec<f32>)> = None;
    for &l2 in &cfg.l2_grid {
        let p = cross_val_predict(features.view(), &y, &folds, cfg.folds, l2);
        let loss = balanced_log_loss(&p, &y);
        tracing::info!(l2, loss, "cross-validated balanced log loss");
        search.push((l2, loss));
        if best.as_ref().is_none_or(|b| loss < b.1) {
            best = Some((l2, loss, p));
        }
    }
    let (l2, _, oof) = best.expect("a non-empty L2 grid");
    let threshold = match cfg.rule {
        ThresholdRule::BenignFireRate(r) => threshold_for_negative_rate(&oof, &y, r),
        ThresholdRule::HarmfulRecall(r) => threshold_for_recall(&oof, &y, r),
    };
    let st = Standardizer::fit(features.view());
    let neuron = Logistic::fit(st.apply(features.view()).view(), &y, l2);

    let mut sets: BTreeMap<(bool, String), Vec<usize>> = BTreeMap::new();
    for (i, e) in examples.iter().enumerate() {
        sets.entry((e.harmful, e.set.clone())).or_default().push(i);
    }
    let mut pairs = Vec::new();
    for ((h, hname), hi) in &sets {
        if !h {
            continue;
        }
        for ((b, bname), bi) in &sets {
            if *b {
                continue;
            }
            let idx: Vec<usize> = hi.iter().chain(bi).copied().collect();
            let p: Vec<f32> = idx.iter().map(|&i| oof[i]).collect();
            let t: Vec<bool> = idx.iter().map(|&i| y[i]).collect();
            pairs.push(PairReport {
                harmful: hname.clone(),
                benign: bname.clone(),
                auroc: auroc(&p, &t).unwrap_or(f64::NAN),
                harmful_recall: share(hi, |i| oof[i] >= threshold),
                benign_pass: share(bi, |i| oof[i] < threshold),
            });
        }
    }
    let report = GateReport {
        features: crate::select::names(chosen),
        feature_trials: Vec::new(),
        answer: None,
        harmful: y.iter().filter(|&&v| v).count(),
        benign: y.iter().filter(|&&v| !v).count(),
        l2_search: search,
        l2,
        threshold,
        threshold_rule: cfg.rule.describe(),
        auroc: auroc(&oof, &y).unwrap_or(f64::NAN),
        pairs,
        evaluation: Vec::new(),
    };
    (
        TrainedGate {
            features: chosen.to_vec(),
            standardizer: st,
            neuron,
            threshold,
            answer: None,
        },
        report,
    )
}

fn share(rows: &[usize], f: impl Fn(usize) -> bool) -> f64 {
    rows.iter().filter(|&&i| f(i)).count() as f64 / rows.len().max(1) as f64
}

impl TrainedGate {
    /// p of each row of raw (unstandardised) features.
    pub fn predict(&self, features: &Array2<f32>) -> Vec<f32> {
        self.neuron
            .predict(self.standardizer.apply(features.view()).view())
    }

    /// Fire rates per dataset and AUROC per harmful × benign pair of `examples` (features
    /// one row each), read from `source`. `training` are the training prompts, to count exact
    /// overlaps. Measures only: nothing here changes the neuron.
    pub fn evaluate(
        &self,
        source: &str,
        examples: &[Example],
        features: &Array2<f32>,
        training: &[Example],
    ) -> EvalReport {
        let p = self.predict(features);
        let trained: std::collections::HashSet<&str> =
            training.iter().map(|e| e.text.as_str()).collect();
        // Datasets in file order, each with its rows.
        let mut order: Vec<(String, bool, Vec<usize>)> = Vec::new();
        for (i, e) in examples.iter().enumerate() {
            match order
                .iter_mut()
                .find(|(n, h, _)| *n == e.set && *h == e.harmful)
            {
                Some((_, _, rows)) => rows.push(i),
                None => order.push((e.set.clone(), e.harmful, vec![i])),
            }
        }
        let datasets = order
            .iter()
            .map(|(name, harmful, rows)| EvalSet {
                name: name.clone(),
                label: if *harmful { "harmful" } else { "benign" }.to_owned(),
                n: rows.len(),
                fired: share(rows, |i| p[i] >= self.threshold),
                mean_p: rows.iter().map(|&i| f64::from(p[i])).sum::<f64>()
                    / rows.len().max(1) as f64,
                in_training: rows
                    .iter()
                    .filter(|&&i| trained.contains(examples[i].text.as_str()))
                    .count(),
            })
            .collect();
        let mut pairs = Vec::new();
        for (hname, h, hi) in &order {
            for (bname, b, bi) in &order {
                if !*h || *b {
                    continue;
                }
                let scores: Vec<f32> = hi.iter().chain(bi).map(|&i| p[i]).collect();
                let labels: Vec<bool> = hi
                    .iter()
                    .map(|_| true)
                    .chain(bi.iter().map(|_| false))
                    .collect();
                pairs.push(EvalPair {
                    harmful: hname.clone(),
                    benign: bname.clone(),
                    auroc: auroc(&scores, &labels).unwrap_or(f64::NAN),
                });
            }
        }
        EvalReport {
            note: format!(
                "evaluation only: measured after training with the trained weights and threshold (p >= {}); not used for fitting, L2 or the threshold",
                self.threshold
            ),
            source: source.to_owned(),
            datasets,
            pairs,
        }
    }

    /// The neurons as the sigmoid gate reads them, with `metadata` added.
    pub fn to_safetensors(&self, metadata: BTreeMap<String, String>) -> SafeTensors {
        let mut st = SafeTensors::default();
        put_neuron(&mut st, "", &self.neuron, &self.standardizer);
        let spec = FeatureSpec {
            prompt: self.features.clone(),
            answer: self
                .answer
                .as_ref()
                .map_or_else(Vec::new, |a| a.features.clone()),
        };
        st.metadata.extend(metadata);
        if let Some(a) = &self.answer {
            put_neuron(&mut st, "answer.", &a.neuron, &a.standardizer);
            st.metadata
                .insert("answer_threshold".to_owned(), format!("{}", a.threshold));
            st.metadata
                .insert("answer_every".to_owned(), a.every.to_string());
        }
        let width = self.neuron.weight.len() / self.features.len().max(1);
        st.metadata
            .insert("hidden_size".to_owned(), width.to_string());
        st.metadata.insert("features".to_owned(), spec.to_string());
        st.metadata
            .insert("threshold".to_owned(), format!("{}", self.threshold));
        st.metadata
            .insert("format".to_owned(), GATE_FORMAT.to_owned());
        st
    }
}

/// `{prefix}weight`, `{prefix}bias`, `{prefix}mean` and `{prefix}std` of one neuron.
fn put_neuron(st: &mut SafeTensors, prefix: &str, neuron: &Logistic, standardizer: &Standardizer) {
    let n = neuron.weight.len();
    for (name, shape, data) in [
        ("weight", vec![n], neuron.weight.to_vec()),
        ("bias", vec![1], vec![neuron.bias]),
        ("mean", vec![n], standardizer.mean.to_vec()),
        ("std", vec![n], standardizer.std.to_vec()),
    ] {
        st.tensors
            .insert(format!("{prefix}{name}"), Tensor { shape, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(set: &str, text: &str, harmful: bool) -> Example {
        Example::new(set, text, harmful)
    }

    /// A neuron over one feature: p = σ(2·x).
    fn one_feature_neuron() -> (Standardizer, Logistic) {
        let standardizer = Standardizer {
            mean: ndarray::array![0.0],
            std: ndarray::array![1.0],
        };
        let neuron = Logistic {
            weight: ndarray::array![2.0],
            bias: 0.0,
        };
        (standardizer, neuron)
    }

    /// The file records the answer monitor's threshold and the schedule it was calibrated
    /// for, which decoding follows.
    #[test]
    fn the_file_records_the_monitor_schedule() {
        let (standardizer, neuron) = one_feature_neuron();
        let answer = AnswerNeuron {
            features: vec![ngsd_gate::Feature::FINAL_LAST],
            standardizer: standardizer.clone(),
            neuron: neuron.clone(),
            threshold: 0.75,
            every: 8,
        };
        let gate = TrainedGate {
            features: vec![ngsd_gate::Feature::FINAL_LAST],
            answer: Some(answer),
            standardizer,
            neuron,
            threshold: 0.5,
        };
        let st = gate.to_safetensors(BTreeMap::new());
        assert_eq!(st.metadata["answer_every"], "8");
        assert_eq!(st.metadata["answer_threshold"], "0.75");
        let without = TrainedGate {
            answer: None,
            ..gate
        };
        assert!(
            !without
                .to_safetensors(BTreeMap::new())
                .metadata
                .contains_key("answer_every")
        );
    }

    #[test]
    fn evaluation_reports_fire_rates_pairs_and_training_overlap() {
        // One feature; the neuron is p = σ(2·x), the threshold 0.5 (fires at x ≥ 0).
        let gate = TrainedGate {
            features: vec![ngsd_gate::Feature::FINAL_LAST],
            answer: None,
            standardizer: one_feature_neuron().0,
            neuron: one_feature_neuron().1,
            threshold: 0.5,
        };
        let examples = [
            ex("bad", "a", true),
            ex("good", "b", false),
            ex("bad", "c", true),
            ex("good", "d", false),
            ex("bad", "e", true),
            ex("good", "f", false),
        ];
        let x = Array2::from_shape_vec((6, 1), vec![1.0, -1.0, 2.0, 0.5, -0.5, -2.0]).unwrap();
        let training = [ex("train", "d", false)];
        let r = gate.evaluate("dev.toml", &examples, &x, &training);
        assert_eq!(r.source, "dev.toml");
        assert!(r.note.starts_with("evaluation only"), "{}", r.note);
        let names: Vec<(&str, &str, usize)> = r
            .datasets
            .iter()
            .map(|d| (d.name.as_str(), d.label.as_str(), d.n))
            .collect();
        assert_eq!(names, [("bad", "harmful", 3), ("good", "benign", 3)]);
        assert!((r.datasets[0].fired - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.datasets[1].fired - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            (r.datasets[0].in_training, r.datasets[1].in_training),
            (0, 1)
        );
        assert_eq!(r.pairs.len(), 1);
        // harmful scores 1, 2, -0.5 against benign -1, 0.5, -2: 8 of 9 pairs ordered
        assert!(
            (r.pairs[0].auroc - 8.0 / 9.0).abs() < 1e-12,
            "{:?}",
            r.pairs
        );
    }
}
