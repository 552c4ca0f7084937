//! Pure metric functions: keyword refusal, Wilson score intervals, gsm8k answer extraction
//! and ratios that stay defined on empty input.

use crate::judge::REFUSAL_KEYWORDS;

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Whether `response` contains any GCG / SafeDecoding refusal string (case-sensitive).
pub fn keyword_refusal(response: &str) -> bool {
    REFUSAL_KEYWORDS.iter().any(|k| response.contains(k))
}

/// 95% Wilson score interval `(low, high)` for `successes` out of `n`; `(0, 1)` when `n` is 0.
pub fn wilson(successes: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n_f = n as f64;
    let p = successes.min(n) as f64 / n_f;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denom;
    let half = Z95 * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// `num / den`, or 0 when `den` is 0.
pub fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 { 0.0 } else { num / den }
}

/// The last number in `text` as written, without thousands separators: `"1,234"` → `1234`,
/// `"-3.5."` → `-3.5`, `"$12"` → `12`.
pub fn last_number(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut last = None;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // A minus sign counts when it sits right before the digits and is not a hyphen
        // between two words or numbers ("3-5", "COVID-19").
        let negative = i > 0 && b[i - 1] == b'-' && (i < 2 || !b[i - 2].is_ascii_alphanumeric());
        let mut s = String::new();
        if negative {
            s.push('-');
        }
        let mut j = i;
        loop {
            while j < b.len() && b[j].is_ascii_digit() {
                s.push(b[j] as char);
                j += 1;
            }
            // "1,234": a comma followed by exactly three digits continues the number.
            if j < b.len()
                && b[j] == b','
                && b.get(j + 1..j + 4)
                    .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
                && !b.get(j + 4).is_some_and(u8::is_ascii_digit)
            {
                j += 1;
                continue;
            }
            break;
        }
        if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
            s.push('.');
            j += 1;
            while j < b.len() && b[j].is_ascii_digit() {
                s.push(b[j] as char);
                j += 1;
            }
        }
        last = Some(s);
        i = j;
    }
    last
}

/// Whether the last number of `response` equals the last number of `reference`
/// (numerically, so `18` matches `18.00`).
pub fn answer_matches(response: &str, reference: &str) -> bool {
    let parse = |t: &str| last_number(t).and_then(|n| n.parse::<f64>().ok());
    match (parse(response), parse(reference)) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * b.abs().max(1.0),
        _ => false,
    }
}

/// Area under the ROC curve: the chance that a random positive scores above a random
/// negative (ties count half). `None` without both classes.
pub fn auroc(scores: &[f32], y: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let n_pos = y.iter().filter(|&&v| v).count() as f64;
    let n_neg = y.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    // Mann–Whitney U from mid-ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if y[k] {
                rank_sum += mid;
            }
        }
        i = j + 1;
    }
    Some((rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

#[cfg(test)]
mod tests;
