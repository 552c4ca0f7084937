//! Class-balanced, L2-regularised logistic regression on standardised features (Newton's
//! method), k-fold cross-validation, and the ranking metrics used to report it.

use ndarray::{Array1, Array2, ArrayView2, Axis, s};

/// AUROC lives with the other metric functions; training reports it too.
pub use ngsd_eval::metrics::auroc;

/// Per-feature standardisation `z = (x − mean) / std`.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    /// Feature means.
    pub mean: Array1<f32>,
    /// Feature standard deviations (floored so constant features do not divide by zero).
    pub std: Array1<f32>,
}

impl Standardizer {
    /// Fits mean and std on the rows of `x`.
    pub fn fit(x: ArrayView2<f32>) -> Standardizer {
        let n = x.nrows().max(1) as f64;
        let mut mean = Array1::<f32>::zeros(x.ncols());
        let mut std = Array1::<f32>::zeros(x.ncols());
        for (j, col) in x.axis_iter(Axis(1)).enumerate() {
            let m = col.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = col.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / n;
            mean[j] = m as f32;
            std[j] = (var.sqrt() as f32).max(1e-6);
        }
        Standardizer { mean, std }
    }

    /// Standardised copy of `x`.
    pub fn apply(&self, x: ArrayView2<f32>) -> Array2<f32> {
        (&x - &self.mean) / &self.std
    }
}

/// A fitted neuron on standardised features: `p = σ(w·z + b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logistic {
    /// Weights over standardised features.
    pub weight: Array1<f32>,
    /// Bias.
    pub bias: f32,
}

/// `σ(t)`, stable at both ends.
pub fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

impl Logistic {
    /// Fits on standardised rows `z` with labels `y` (true = positive) by Newton's method,
    /// minimising the class-balanced log loss plus `l2/2·|w|²` (the bias is not penalised).
    /// Each class carries half the total weight, so an unbalanced set does not shift the
    /// boundary toward the bigger class.
    pub fn fit(z: ArrayView2<f32>, y: &[bool], l2: f64) -> Logistic {
        let (n, d) = z.dim();
        let n_pos = y.iter().filter(|&&v| v).count().max(1) as f64;
        let n_neg = (n as f64 - n_pos).max(1.0);
        let sample_w: Vec<f64> = y
            .iter()
            .map(|&v| if v { 0.5 / n_pos } else { 0.5 / n_neg })
            .collect();
        // Design matrix with a trailing column of ones for the bias, in f64 for the solve.
        let mut x = Array2::<f64>::ones((n, d + 1));
        x.slice_mut(s![.., ..d]).assign(&z.mapv(f64::from));
        let mut theta = Array1::<f64>::zeros(d + 1);
        for _ in 0..50 {
            let t = x.dot(&theta);
            let mut g_coef = Array1::<f64>::zeros(n);
            let mut h_coef = Array1::<f64>::zeros(n);
            for i in 0..n {
                let p = sigmoid(t[i]);
                g_coef[i] = sample_w[i] * (p - if y[i] { 1.0 } else { 0.0 });
                h_coef[i] = sample_w[i] * (p * (1.0 - p)).max(1e-12);
            }
            let mut grad = x.t().dot(&g_coef);
            let xw = &x * &h_coef.view().insert_axis(Axis(1));
            let mut hess = x.t().dot(&xw);
            for j in 0..d {
                grad[j] += l2 * theta[j];
                hess[[j, j]] += l2;
            }
            hess[[d, d]] += 1e-9;
            let step = cholesky_solve(hess, &grad);
            theta -= &step;
            if step.iter().map(|v| v.abs()).fold(0.0, f64::max) < 1e-7 {
                break;
            }
        }
        Logistic {
            weight: theta.slice(s![..d]).mapv(|v| v as f32),
            bias: theta[d] as f32,
        }
    }

    /// Probabilities for standardised rows.
    pub fn predict(&self, z: ArrayView2<f32>) -> Vec<f32> {
        z.dot(&self.weight)
            .iter()
            .map(|&t| sigmoid(f64::from(t + self.bias)) as f32)
            .collect()
    }
}

/// Solves `a·x = b` for a symmetric positive definite `a` (Cholesky, in place). Rows are
/// walked as contiguous slices so the inner products vectorise: at a thousand features the
/// factorisation is a fraction of a Newton step.
fn cholesky_solve(a: Array2<f64>, b: &Array1<f64>) -> Array1<f64> {
    let n = a.nrows();
    let mut a = a.as_standard_layout().into_owned();
    let l = a
        .as_slice_mut()
        .expect("a standard-layout array is one slice");
    for j in 0..n {
        // Rows up to j in `done`, the rows below in `below`.
        let (done, below) = l.split_at_mut((j + 1) * n);
        let row_j = &mut done[j * n..j * n + j + 1];
        let d = (row_j[j] - dot(&row_j[..j], &row_j[..j]))
            .max(1e-300)
            .sqrt();
        row_j[j] = d;
        let row_j = &row_j[..j];
        for row_i in below.chunks_exact_mut(n) {
            row_i[j] = (row_i[j] - dot(&row_i[..j], row_j)) / d;
        }
    }
    let mut x = b.clone();
    for i in 0..n {
        let row = &l[i * n..i * n + i + 1];
        let solved = dot(
            &row[..i],
            &x.as_slice().expect("a fresh array is one slice")[..i],
        );
        x[i] = (x[i] - solved) / row[i];
    }
    for i in (0..n).rev() {
        let mut v = x[i];
        for k in i + 1..n {
            v -= l[k * n + i] * x[k];
        }
        x[i] = v / l[i * n + i];
    }
    x
}

/// Inner product with four running sums, so the compiler can use vector registers.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4
        .remainder()
        .iter()
        .zip(b4.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a4.zip(b4) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Fold index (0..k) of each of `n` rows: a seeded shuffle dealt round-robin, stratified by
/// label so each fold keeps the class balance.
pub fn stratified_folds(y: &[bool], k: usize, seed: u64) -> Vec<usize> {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut fold = vec![0; y.len()];
    for class in [true, false] {
        let mut rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] == class).collect();
        for i in (1..rows.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            rows.swap(i, j);
        }
        for (pos, &r) in rows.iter().enumerate() {
            fold[r] = pos % k;
        }
    }
    fold
}

/// Out-of-fold probabilities: each row predicted by a model fitted without its fold
/// (standardisation refitted per fold too).
pub fn cross_val_predict(
    x: ArrayView2<f32>,
    y: &[bool],
    folds: &[usize],
    k: usize,
    l2: f64,
) -> Vec<f32> {
    let mut out = vec![0.0f32; y.len()];
    for f in 0..k {
        let train: Vec<usize> = (0..y.len()).filter(|&i| folds[i] != f).collect();
        let test: Vec<usize> = (0..y.len()).filter(|&i| folds[i] == f).collect();
        if test.is_empty() {
            continue;
        }
        let xt = x.select(Axis(0), &train);
        let yt: Vec<bool> = train.iter().map(|&i| y[i]).collect();
        let st = Standardizer::fit(xt.view());
        let model = Logistic::fit(st.apply(xt.view()).view(), &yt, l2);
        let p = model.predict(st.apply(x.select(Axis(0), &test).view()).view());
        for (&i, v) in test.iter().zip(p) {
            out[i] = v;
        }
    }
    out
}

/// Balanced log loss of probabilities (each class weighs half).
pub fn balanced_log_loss(p: &[f32], y: &[bool]) -> f64 {
    let mut sum = [0.0f64; 2];
    let mut cnt = [0usize; 2];
    for (&pi, &yi) in p.iter().zip(y) {
        let q = f64::from(pi).clamp(1e-7, 1.0 - 1e-7);
        let c = usize::from(yi);
        sum[c] -= if yi { q.ln() } else { (1.0 - q).ln() };
        cnt[c] += 1;
    }
    (0..2)
        .map(|c| {
            if cnt[c] > 0 {
                sum[c] / cnt[c] as f64
            } else {
                0.0
            }
        })
        .sum::<f64>()
        / 2.0
}

/// The largest threshold at which at least `recall` of the positives still score ≥ it.
pub fn threshold_for_recall(p: &[f32], y: &[bool], recall: f64) -> f32 {
    let mut pos: Vec<f32> = p
        .iter()
        .zip(y)
        .filter(|(_, t)| **t)
        .map(|(&v, _)| v)
        .collect();
    if pos.is_empty() {
        return 0.5;
    }
    pos.sort_by(|a, b| b.total_cmp(a));
    let keep = ((recall * pos.len() as f64).ceil() as usize).clamp(1, pos.len());
    pos[keep - 1]
}

/// The lowest threshold at which at most `rate` of the negatives score ≥ it.
pub fn threshold_for_negative_rate(p: &[f32], y: &[bool], rate: f64) -> f32 {
    let mut neg: Vec<f32> = p
        .iter()
        .zip(y)
        .filter(|(_, t)| !**t)
        .map(|(&v, _)| v)
        .collect();
    if neg.is_empty() {
        return 0.5;
    }
    neg.sort_by(|a, b| b.total_cmp(a));
    // At most `allowed` negatives may fire: the threshold sits just above the next one.
    let allowed = (rate * neg.len() as f64).floor() as usize;
    if allowed >= neg.len() {
        return 0.0;
    }
    let above = neg[allowed];
    let next = f32::from_bits(above.to_bits() + 1);
    next.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn auroc_counts_ties_half_and_orders() {
        assert_eq!(
            auroc(&[0.1, 0.2, 0.3, 0.4], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            auroc(&[0.4, 0.3, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(auroc(&[0.5, 0.5], &[true, false]), Some(0.5));
        // one positive above 2 of 3 negatives
        let a = auroc(&[0.1, 0.2, 0.5, 0.3], &[false, false, false, true]).unwrap();
        assert!((a - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(auroc(&[0.1], &[true]), None);
    }

    #[test]
    fn cholesky_solves_a_small_system() {
        let a = array![[4.0, 2.0, 0.6], [2.0, 5.0, 1.0], [0.6, 1.0, 3.0]];
        let x_true = array![1.0, -2.0, 0.5];
        let b = a.dot(&x_true);
        let x = cholesky_solve(a, &b);
        for (u, v) in x.iter().zip(x_true.iter()) {
            assert!((u - v).abs() < 1e-10, "{x:?}");
        }
    }

    #[test]
    fn logistic_separates_and_balances_classes() {
        // Feature 0 carries the label, feature 1 is noise; 3 negatives per positive.
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for i in 0..200 {
            let pos = i % 4 == 0;
            let noise = ((i * 37) % 11) as f32 / 11.0 - 0.5;
            rows.extend_from_slice(&[if pos { 1.0 } else { -1.0 } + 0.3 * noise, noise]);
            y.push(pos);
        }
        let x = Array2::from_shape_vec((200, 2), rows).unwrap();
        let st = Standardizer::fit(x.view());
        let z = st.apply(x.view());
        let m = Logistic::fit(z.view(), &y, 1e-3);
        assert!(
            m.weight[0] > 1.0 && m.weight[0].abs() > 5.0 * m.weight[1].abs(),
            "{m:?}"
        );
        let p = m.predict(z.view());
        assert_eq!(auroc(&p, &y), Some(1.0));
        // balanced: the boundary sits between the class means, so p ≈ 0.5 at x0 = 0
        let mid = st.apply(array![[0.0f32, 0.0]].view());
        let p0 = m.predict(mid.view())[0];
        assert!((p0 - 0.5).abs() < 0.15, "p at the midpoint {p0}");
        // strong L2 shrinks the weights
        let strong = Logistic::fit(z.view(), &y, 10.0);
        assert!(strong.weight[0].abs() < m.weight[0].abs());
    }

    #[test]
    fn folds_are_stratified_and_cover_every_row() {
        let y: Vec<bool> = (0..50).map(|i| i < 10).collect();
        let f = stratified_folds(&y, 5, 7);
        for k in 0..5 {
            let pos = (0..50).filter(|&i| f[i] == k && y[i]).count();
            let all = (0..50).filter(|&i| f[i] == k).count();
            assert_eq!((pos, all), (2, 10));
        }
        assert_ne!(f, stratified_folds(&y, 5, 8), "the seed shuffles");
    }

    #[test]
    fn threshold_keeps_the_requested_recall() {
        let p = [0.9, 0.8, 0.7, 0.6, 0.1, 0.2];
        let y = [true, true, true, true, false, false];
        assert_eq!(threshold_for_recall(&p, &y, 1.0), 0.6);
        assert_eq!(threshold_for_recall(&p, &y, 0.75), 0.7);
        assert_eq!(threshold_for_recall(&p, &y, 0.5), 0.8);
    }

    #[test]
    fn threshold_caps_the_negative_fire_rate() {
        let p = [0.9, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.95, 0.1];
        let y = [
            true, false, false, false, false, false, false, false, false, false, false,
        ];
        // ten negatives: 10% may fire → only the 0.95 one; the threshold sits just above 0.85
        let t = threshold_for_negative_rate(&p, &y, 0.1);
        assert!(t > 0.85 && t < 0.851, "{t}");
        let t0 = threshold_for_negative_rate(&p, &y, 0.0);
        assert!(t0 > 0.95, "{t0}");
    }

    #[test]
    fn log_loss_weighs_classes_equally() {
        let l = balanced_log_loss(&[0.5, 0.5, 0.5], &[true, false, false]);
        assert!((l - std::f64::consts::LN_2).abs() < 1e-9);
    }
}
