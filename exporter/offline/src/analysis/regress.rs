//! `clockpath regress`: bootstrap (pairs) regression of a chain's total delta on its segment
//! components and, when the traces carry them, the interference charged to each source.

use clockpath_common::interference::NAMES;

use super::{AnalyzeOptions, Collected, column_names};
use crate::stats::{self, Regression};

/// Regress `chain`'s total on its components (runs of every session, outliers rejected).
pub fn regress(c: &Collected, chain: &str, opts: &AnalyzeOptions) -> Result<Regression, String> {
    let data = c.chains.get(chain).ok_or_else(|| format!("no complete run of chain `{chain}` in the input"))?;
    let shape = data.shape.as_ref().ok_or("chain has no shape")?;
    let cols = column_names(shape);
    let nseg = shape.segments();
    if nseg < 1 {
        return Err("the chain has no segment".into());
    }
    let runs: Vec<super::RunRef> = data.sessions.values().flat_map(|s| s.iter()).collect();
    let reference: Vec<f64> = runs.iter().map(|r| r.values[0]).collect();
    let rej = stats::reject_outliers(&reference, opts.sigma).map_err(|e| e.to_string())?;
    let runs: Vec<super::RunRef> = rej.kept(&runs).collect();
    let total_idx = if nseg > 1 { nseg } else { 0 };
    let y: Vec<f64> = runs.iter().map(|r| r.values[total_idx]).collect();
    let mut names: Vec<String> = cols[..nseg].to_vec();
    let mut x: Vec<Vec<f64>> = (0..nseg).map(|i| runs.iter().map(|r| r.values[i]).collect()).collect();
    // Interference, summed over the chain's segments, when every run has it and it varies.
    if runs.iter().all(|r| r.interference.is_some()) {
        for (k, name) in NAMES.iter().enumerate() {
            let col: Vec<f64> = runs
                .iter()
                .map(|r| r.interference.as_ref().map_or(0.0, |v| v.iter().map(|s| s[k] as f64).sum()))
                .collect();
            if col.iter().any(|v| *v != col[0]) {
                names.push(format!("interference_{name}"));
                x.push(col);
            }
        }
    }
    stats::bootstrap_regression(&y, &x, &names, &opts.bootstrap).map_err(|e| e.to_string())
}
