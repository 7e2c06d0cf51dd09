//! Two-group comparisons (`clockpath compare`): bootstrap CIs of the difference of medians and
//! of the ratio of variances, per chain column, with a one-line verdict.

use serde::Serialize;

use super::{AnalyzeOptions, RunRef};
use crate::stats::{self, Interval};

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub chain: String,
    pub segment: String,
    pub a: String,
    pub b: String,
    pub a_runs: usize,
    pub b_runs: usize,
    /// median(b) − median(a), ns.
    pub median_difference: Interval,
    /// var(b) / var(a).
    pub variance_ratio: Interval,
    pub verdict: String,
}

/// Per column, the values of the runs the outlier rule keeps (runs without a reference value
/// are not judged; a partial run counts in the columns it has).
fn kept(runs: &[RunRef], opts: &AnalyzeOptions) -> Vec<Vec<f64>> {
    let ncol = runs.first().map_or(0, |r| r.values.len());
    let judged: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].values[0].is_finite()).collect();
    let reference: Vec<f64> = judged.iter().map(|&i| runs[i].values[0]).collect();
    let mut keep = vec![true; runs.len()];
    if let Ok(rej) = stats::reject_outliers(&reference, opts.sigma) {
        for (&i, &k) in judged.iter().zip(&rej.keep) {
            keep[i] = k;
        }
    }
    (0..ncol)
        .map(|c| {
            runs.iter().zip(&keep).filter(|(r, k)| **k && r.values[c].is_finite()).map(|(r, _)| r.values[c]).collect()
        })
        .collect()
}

/// The verdict line for one comparison.
pub fn verdict(a: &str, b: &str, d: &Interval, r: &Interval) -> String {
    let us = |v: f64| format!("{:.3}", v / 1e3);
    let med = if d.contains(0.0) {
        "medians equal within CI".to_string()
    } else if d.estimate > 0.0 {
        format!("median {} µs [{}, {}] higher in {b}", us(d.estimate), us(d.lower), us(d.upper))
    } else {
        format!("median {} µs [{}, {}] higher in {a}", us(-d.estimate), us(-d.upper), us(-d.lower))
    };
    let var = if !r.is_finite() {
        "variance ratio undefined (a constant group)".to_string()
    } else if r.contains(1.0) {
        "variances equal within CI".to_string()
    } else if r.estimate > 1.0 {
        format!("variance {:.2}× [{:.2}, {:.2}] higher in {b}", r.estimate, r.lower, r.upper)
    } else {
        format!("variance {:.2}× [{:.2}, {:.2}] higher in {a}", 1.0 / r.estimate, 1.0 / r.upper, 1.0 / r.lower)
    };
    format!("{med}; {var}")
}

/// Compare group `b` with group `a` on every column.
pub fn compare(
    chain: &str,
    columns: &[String],
    a: (&str, &[RunRef]),
    b: (&str, &[RunRef]),
    opts: &AnalyzeOptions,
) -> Vec<Comparison> {
    let (ka, kb) = (kept(a.1, opts), kept(b.1, opts));
    columns
        .iter()
        .enumerate()
        .filter_map(|(i, col)| {
            let (xa, xb) = (ka.get(i)?, kb.get(i)?);
            let d = stats::median_difference_ci(xb, xa, &opts.bootstrap).ok()?;
            let r = stats::variance_ratio_ci(xb, xa, &opts.bootstrap).ok()?;
            Some(Comparison {
                chain: chain.into(),
                segment: col.clone(),
                a: a.0.into(),
                b: b.0.into(),
                a_runs: xa.len(),
                b_runs: xb.len(),
                verdict: verdict(a.0, b.0, &d, &r),
                median_difference: d,
                variance_ratio: r,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(e: f64, l: f64, u: f64) -> Interval {
        Interval { estimate: e, lower: l, upper: u, level: 0.95, resamples: 500 }
    }

    #[test]
    fn verdicts_read_like_sentences() {
        assert_eq!(
            verdict("host", "vm", &iv(100.0, -50.0, 200.0), &iv(2.1, 1.6, 2.8)),
            "medians equal within CI; variance 2.10× [1.60, 2.80] higher in vm"
        );
        assert_eq!(
            verdict("host", "vm", &iv(-5000.0, -6000.0, -4000.0), &iv(1.0, 0.8, 1.2)),
            "median 5.000 µs [4.000, 6.000] higher in host; variances equal within CI"
        );
        assert!(
            verdict("a", "b", &iv(1.0, 0.5, 2.0), &iv(0.5, 0.25, 0.8))
                .ends_with("variance 2.00× [1.25, 4.00] higher in a")
        );
    }
}
