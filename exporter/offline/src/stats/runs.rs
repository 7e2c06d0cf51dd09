//! Analysis of a set of runs (chain instances): reject outlier runs on a reference column,
//! then describe every column of the runs that are kept and bootstrap its median.

use serde::Serialize;

use super::{Bootstrap, Interval, OutlierRule, RELIABLE_MIN_SAMPLES, Rejection, StatsError, median_ci_owned, std_dev};

/// One column (a segment, or the total) of the kept runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ColumnStats {
    pub n: usize,
    pub median: f64,
    pub std_dev: f64,
    /// The bootstrap CI of the median; None when it is not finite.
    pub ci: Option<Interval>,
    /// n ≥ RELIABLE_MIN_SAMPLES: below it the CI is shown but flagged unreliable.
    pub reliable: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunsAnalysis {
    /// Runs given.
    pub runs: usize,
    pub rejection: Rejection,
    pub columns: Vec<ColumnStats>,
}

/// `columns[c][r]`: value of column `c` in run `r` (all columns equally long), NaN where run
/// `r` has no value for `c` (a partial chain). Runs whose `columns[reference]` lies beyond the
/// outlier rule (±k σ from its median; a bare `f64` is k sample SDs) are dropped from every
/// column; runs without a reference value are not judged. A column with no value gets `n = 0`
/// and no statistics.
pub fn analyze_runs(
    columns: &[Vec<f64>],
    reference: usize,
    rule: impl Into<OutlierRule>,
    boot: &Bootstrap,
) -> Result<RunsAnalysis, StatsError> {
    let rule = rule.into();
    boot.validate()?;
    let reference_col = columns.get(reference).ok_or(StatsError::Empty)?;
    let rejection = rule.judge_runs(reference_col)?;
    let mut out = Vec::with_capacity(columns.len());
    for col in columns {
        let kept: Vec<f64> = rejection.kept(col).filter(|v| !v.is_nan()).collect();
        if kept.is_empty() {
            out.push(ColumnStats { n: 0, median: f64::NAN, std_dev: f64::NAN, ci: None, reliable: false });
            continue;
        }
        let (n, sd) = (kept.len(), std_dev(&kept));
        let ci = median_ci_owned(kept, boot)?;
        out.push(ColumnStats {
            n,
            median: ci.estimate,
            std_dev: sd,
            ci: ci.is_finite().then_some(ci),
            reliable: n >= RELIABLE_MIN_SAMPLES,
        });
    }
    Ok(RunsAnalysis { runs: reference_col.len(), rejection, columns: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_run_drops_all_its_segments() {
        let mut a: Vec<f64> = (0..200).map(|i| 1000.0 + (i % 13) as f64).collect();
        let mut b: Vec<f64> = (0..200).map(|i| 50.0 + (i % 7) as f64).collect();
        a.push(1e9);
        b.push(50.0);
        let r = analyze_runs(&[a, b], 0, 3.0, &Bootstrap::default()).unwrap();
        assert_eq!(r.runs, 201);
        assert_eq!(r.rejection.rejected, 1);
        assert_eq!(r.columns[0].n, 200);
        assert_eq!(r.columns[1].n, 200, "the outlier run's other segment goes too");
        assert!(r.columns.iter().all(|c| c.reliable && c.ci.is_some()));
    }

    #[test]
    fn partial_runs_count_where_they_have_values() {
        let nan = f64::NAN;
        let a = vec![10.0, 11.0, 12.0, nan, 10.5];
        let b = vec![5.0, nan, 6.0, 7.0, 5.5];
        let r = analyze_runs(&[a, b], 0, 3.0, &Bootstrap::default()).unwrap();
        assert_eq!((r.columns[0].n, r.columns[1].n), (4, 4), "NaN is no value; a run without the reference is kept");
        assert_eq!(r.columns[1].median, 5.75);
        let none = analyze_runs(&[vec![nan, nan], vec![1.0, 2.0]], 0, 3.0, &Bootstrap::default()).unwrap();
        assert_eq!((none.columns[0].n, none.columns[1].n), (0, 2));
        assert!(none.columns[0].ci.is_none());
    }

    #[test]
    fn few_runs_are_flagged_unreliable() {
        let a: Vec<f64> = (0..50).map(|i| i as f64).collect();
        let r = analyze_runs(&[a], 0, 3.0, &Bootstrap::default()).unwrap();
        assert!(!r.columns[0].reliable);
    }
}
