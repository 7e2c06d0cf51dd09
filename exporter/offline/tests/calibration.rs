//! Calibration: every interval procedure of `compare`, `analyze`'s groups, `regress` and the
//! fleet comparison, on data sets simulated with a known truth, covers the truth as often as its level says, and declares a difference
//! where there is none no more often than 1 − level allows.
//!
//! 1 000 data sets per case (with and without a planted effect). At a 95 % level the coverage
//! of a calibrated procedure falls within 3 binomial SDs of 95 % ([93.0 %, 97.0 %]) and its
//! false verdicts under the null at most 3 SDs above 5 % (7.1 %), each with probability
//! ≈ 0.999: a procedure that fails is off, not unlucky. On tied data (values on a 1 µs grid)
//! a median interval cannot be exact; it must not cover less than the level (conservative is
//! allowed). Power (verdicts where a difference was planted) is reported, not asserted.
//!
//! One known shortfall is asserted as what it is: the run-level variance ratio (one session
//! each side) on strongly skewed data (log-normal, σ 0.35 against 0.49) covers 92.7 %; the
//! percentile bootstrap, a bootstrap-t of the log ratio and the kurtosis-adjusted normal
//! interval (Layard, Bonett) all gave 92.7–92.8 % on these data sets. It must stay ≥ 91 %, and
//! the documentation says so.
//! The table it prints is the one in docs/src/statistics.md:
//!
//!   cargo test --release -p clockpath-offline --test calibration -- --nocapture

use clockpath_offline::{
    analysis::{
        AnalyzeOptions, RunRef,
        compare::{SamplingUnit, SessionInput, Side, compare},
    },
    stats::{self, Bootstrap, Interval},
};
use rand::SeedableRng as _;
use rand_distr::{Distribution as _, LogNormal, Normal, StudentT};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

const REPS: u64 = 1_000;
const LEVEL: f64 = 0.95;

/// Three binomial SDs of a rate `p` over `REPS` data sets.
fn three_sd(p: f64) -> f64 {
    3.0 * (p * (1.0 - p) / REPS as f64).sqrt()
}

fn coverage_ok(c: f64, conservative_allowed: bool) -> bool {
    c >= LEVEL - three_sd(LEVEL) && (conservative_allowed || c <= LEVEL + three_sd(LEVEL))
}

/// The documented shortfall (see the module's note): the least coverage it may have.
const SKEWED_RUN_VARIANCE_RATIO_MIN: f64 = 0.91;

fn known_shortfall(r: &Row) -> bool {
    r.procedure == "variance ratio, 1 vs 1 session" && r.data.starts_with("log-normal")
}

fn max_false() -> f64 {
    (1.0 - LEVEL) + three_sd(1.0 - LEVEL)
}

/// Within-session run distributions, each with a known median (ns).
#[derive(Clone, Copy, Debug)]
enum Shape {
    Normal,
    LogNormal,
    /// Student's t with 3 degrees of freedom: heavy tails.
    HeavyTailed,
    /// Log-normal rounded to 1 µs: many ties.
    Tied,
}

const MEDIAN: f64 = 20_000.0;

impl Shape {
    fn draw(self, rng: &mut Xoshiro256PlusPlus, shift: f64, spread: f64) -> f64 {
        match self {
            Shape::Normal => shift + MEDIAN + spread * 3_000.0 * Normal::new(0.0, 1.0).unwrap().sample(rng),
            Shape::LogNormal => shift + LogNormal::new(MEDIAN.ln(), 0.35 * spread).unwrap().sample(rng),
            Shape::HeavyTailed => shift + MEDIAN + spread * 2_000.0 * StudentT::new(3.0).unwrap().sample(rng),
            Shape::Tied => {
                shift + (LogNormal::new(MEDIAN.ln(), 0.35 * spread).unwrap().sample(rng) / 1_000.0).round() * 1_000.0
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Normal => "normal",
            Shape::LogNormal => "log-normal",
            Shape::HeavyTailed => "heavy-tailed (t₃)",
            Shape::Tied => "tied (1 µs grid)",
        }
    }
}

const SHAPES: [Shape; 4] = [Shape::Normal, Shape::LogNormal, Shape::HeavyTailed, Shape::Tied];

fn rng(case: u64, rep: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(case.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ rep)
}

fn boot(rep: u64) -> Bootstrap {
    Bootstrap { seed: rep ^ 0x5eed, ..Bootstrap::default() }
}

fn opts(rep: u64) -> AnalyzeOptions {
    AnalyzeOptions {
        read: Default::default(),
        reservoir: 100_000,
        // The outlier rule is its own subject (statistics.md): calibrated here without it.
        sigma: 1e9,
        spread: Default::default(),
        bootstrap: boot(rep),
        progress: false,
        sort_memory: 1 << 20,
        align: Default::default(),
        mixed_clocks: false,
    }
}

/// One row of the table.
struct Row {
    procedure: &'static str,
    data: String,
    coverage: Option<f64>,
    false_verdicts: Option<f64>,
    power: Option<f64>,
}

fn share(hits: impl Iterator<Item = bool>) -> f64 {
    let v: Vec<bool> = hits.collect();
    v.iter().filter(|h| **h).count() as f64 / v.len() as f64
}

fn pct(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{:.1} %", 100.0 * v))
}

/// Sessions of `runs` runs: each shifted by its own N(0, session_sd) effect plus `shift`.
fn sessions(
    rng: &mut Xoshiro256PlusPlus,
    shape: Shape,
    count: usize,
    runs: usize,
    session_sd: f64,
    shift: f64,
    spread: f64,
) -> Vec<Vec<Vec<f64>>> {
    (0..count)
        .map(|_| {
            let effect = if session_sd > 0.0 { Normal::new(0.0, session_sd).unwrap().sample(rng) } else { 0.0 };
            (0..runs).map(|_| vec![shape.draw(rng, shift + effect, spread)]).collect()
        })
        .collect()
}

fn side<'a>(name: &str, data: &'a [Vec<Vec<f64>>], strata: &[&str]) -> Side<'a> {
    Side {
        name: name.into(),
        sessions: data
            .iter()
            .enumerate()
            .map(|(i, runs)| SessionInput {
                name: format!("{name}{i}"),
                factors: strata
                    .get(i % strata.len().max(1))
                    .map(|s| [("cstate".to_string(), s.to_string())].into())
                    .unwrap_or_default(),
                runs: runs.iter().map(|v| RunRef { values: v, interference: None, labels: 0, start_ns: 0 }).collect(),
            })
            .collect(),
    }
}

/// The median CI of one sample of 300 runs.
fn median_ci(shape: Shape) -> Row {
    let covered: Vec<bool> = (0..REPS)
        .into_par_iter()
        .map(|rep| {
            let mut r = rng(1, rep);
            let xs: Vec<f64> = (0..300).map(|_| shape.draw(&mut r, 0.0, 1.0)).collect();
            stats::median_ci(&xs, &boot(rep)).unwrap().contains(MEDIAN)
        })
        .collect();
    Row {
        procedure: "median CI (300 runs)",
        data: format!("{}, 300 runs", shape.name()),
        coverage: Some(share(covered.into_iter())),
        false_verdicts: None,
        power: None,
    }
}

/// One comparison of group b with group a; `f` picks the interval.
fn compared(
    rep: u64,
    a: &[Vec<Vec<f64>>],
    b: &[Vec<Vec<f64>>],
    strata: &[&str],
) -> clockpath_offline::analysis::compare::Comparison {
    let (sa, sb) = (side("a", a, strata), side("b", b, strata));
    compare("c", &["seg".into()], &sa, &sb, &opts(rep)).remove(0)
}

struct Case {
    procedure: &'static str,
    data: String,
    /// Sessions per group, runs per session, session-effect sd (ns).
    sessions: usize,
    runs: usize,
    session_sd: f64,
    strata: &'static [&'static str],
    shape: Shape,
    /// Planted median shift of b (ns) and spread factor of b's runs.
    shift: f64,
    spread: f64,
    /// Which interval, and its truth under the planted effect.
    pick: fn(&clockpath_offline::analysis::compare::Comparison) -> Option<Interval>,
    truth: f64,
    null: f64,
    unit: SamplingUnit,
}

impl Case {
    /// 300 runs per session; one session each side is the run-level comparison, several are
    /// compared over sessions with session effects N(0, 2 µs); no effect planted yet.
    fn base(
        procedure: &'static str,
        shape: Shape,
        sessions: usize,
        pick: fn(&clockpath_offline::analysis::compare::Comparison) -> Option<Interval>,
    ) -> Case {
        let one = sessions == 1;
        Case {
            procedure,
            data: if one {
                format!("{}, 300 runs", shape.name())
            } else {
                format!("{}, 300 runs, session sd 2 µs", shape.name())
            },
            sessions,
            runs: 300,
            session_sd: if one { 0.0 } else { 2_000.0 },
            strata: &[],
            shape,
            shift: 0.0,
            spread: 1.0,
            pick,
            truth: 0.0,
            null: 0.0,
            unit: if one { SamplingUnit::Run } else { SamplingUnit::Session },
        }
    }
}

fn run_case(id: u64, c: &Case) -> Row {
    let one = |rep: u64, planted: bool| -> Option<Interval> {
        let mut r = rng(id, rep * 2 + u64::from(planted));
        let a = sessions(&mut r, c.shape, c.sessions, c.runs, c.session_sd, 0.0, 1.0);
        let (shift, spread) = if planted { (c.shift, c.spread) } else { (0.0, 1.0) };
        let mut b = sessions(&mut r, c.shape, c.sessions, c.runs, c.session_sd, shift, spread);
        let mut a = a;
        // The second stratum's sessions (odd positions, see `side`) are 8 µs slower.
        if !c.strata.is_empty() {
            for group in [&mut a, &mut b] {
                for s in group.iter_mut().skip(1).step_by(2) {
                    s.iter_mut().for_each(|run| run[0] += 8_000.0);
                }
            }
        }
        let cmp = compared(rep, &a, &b, c.strata);
        assert_eq!(cmp.unit, c.unit, "{}: {}", c.procedure, cmp.verdict);
        (c.pick)(&cmp)
    };
    let null: Vec<Option<Interval>> = (0..REPS).into_par_iter().map(|rep| one(rep, false)).collect();
    let planted: Vec<Option<Interval>> = (0..REPS).into_par_iter().map(|rep| one(rep, true)).collect();
    let estimated = |v: &[Option<Interval>]| v.iter().flatten().copied().collect::<Vec<_>>();
    let (null, planted) = (estimated(&null), estimated(&planted));
    assert!(
        null.len() as u64 == REPS && planted.len() as u64 == REPS,
        "{}: some comparisons gave no interval",
        c.procedure
    );
    Row {
        procedure: c.procedure,
        data: c.data.clone(),
        coverage: Some(share(planted.iter().map(|i| i.contains(c.truth)))),
        false_verdicts: Some(share(null.iter().map(|i| !i.contains(c.null)))),
        power: Some(share(planted.iter().map(|i| !i.contains(c.null)))),
    }
}

fn median_difference(c: &clockpath_offline::analysis::compare::Comparison) -> Option<Interval> {
    c.median_difference
}

fn variance_ratio(c: &clockpath_offline::analysis::compare::Comparison) -> Option<Interval> {
    c.variance_ratio
}

#[test]
fn every_interval_covers_its_truth_at_its_level() {
    let mut rows: Vec<Row> = SHAPES.iter().map(|s| median_ci(*s)).collect();
    let mut cases = Vec::new();
    for shape in SHAPES {
        // One session each: the runs are the unit, the truth the two sessions' difference.
        // Several: sessions are the unit, with session effects N(0, 2 µs) (the audit's case).
        for (procedure, sessions, shift) in [
            ("difference of medians, 1 vs 1 session", 1, 2_000.0),
            ("difference of medians, 3 vs 3 sessions", 3, 5_000.0),
        ] {
            cases.push(Case { shift, truth: shift, ..Case::base(procedure, shape, sessions, median_difference) });
        }
    }
    for shape in [Shape::Normal, Shape::LogNormal] {
        // b's runs spread √2 wider. Normal: sd × √2 doubles the variance. Log-normal: σ × √2
        // with σ = 0.35, and a variance of m²(e^σ² − 1)e^σ².
        let truth = match shape {
            Shape::Normal => 2.0,
            _ => {
                let v = |s: f64| ((s * s).exp() - 1.0) * (s * s).exp();
                v(0.35 * 2f64.sqrt()) / v(0.35)
            }
        };
        for (procedure, sessions) in [("variance ratio, 1 vs 1 session", 1), ("variance ratio, 4 vs 4 sessions", 4)] {
            cases.push(Case {
                spread: 2f64.sqrt(),
                truth,
                null: 1.0,
                ..Case::base(procedure, shape, sessions, variance_ratio)
            });
        }
    }
    // Strata: another factor (two C-state policies, 8 µs apart) inside both groups.
    cases.push(Case {
        strata: &["default", "max_cstate=1"],
        shift: 5_000.0,
        truth: 5_000.0,
        ..Case::base("difference of medians, 4 vs 4 sessions in 2 strata", Shape::LogNormal, 4, median_difference)
    });
    rows.extend(cases.iter().enumerate().map(|(i, c)| run_case(10 + i as u64, c)));
    rows.extend(group_median_rows());
    rows.extend(regression_rows());
    rows.extend(attribution_and_mean_rows());
    rows.extend(fleet_rows());

    println!("| procedure | data | coverage of the truth | false verdicts (no effect) | power (planted effect) |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.procedure,
            r.data,
            pct(r.coverage),
            pct(r.false_verdicts),
            pct(r.power)
        );
    }
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| {
            let coverage_bad = match r.coverage {
                Some(c) if known_shortfall(r) => c < SKEWED_RUN_VARIANCE_RATIO_MIN,
                Some(c) => !coverage_ok(c, r.data.starts_with("tied")),
                None => false,
            };
            coverage_bad || r.false_verdicts.is_some_and(|f| f > max_false())
        })
        .map(|r| format!("{} / {}: coverage {}, false {}", r.procedure, r.data, pct(r.coverage), pct(r.false_verdicts)))
        .collect();
    assert!(
        bad.is_empty(),
        "coverage outside [{:.1} %, {:.1} %] or false verdicts over {:.1} %:\n{}",
        100.0 * (LEVEL - three_sd(LEVEL)),
        100.0 * (LEVEL + three_sd(LEVEL)),
        100.0 * max_false(),
        bad.join("\n")
    );
}

/// The median of a large sample of `shape` with session effects N(0, sd): the truth a group of
/// sessions estimates (the median of every run of every session there could be).
fn mixture_median(shape: Shape, sd: f64) -> f64 {
    let mut r = rng(777, shape as u64);
    let n = 2_000_000;
    let mut xs: Vec<f64> = (0..n)
        .map(|_| {
            let e = Normal::new(0.0, sd).unwrap().sample(&mut r);
            shape.draw(&mut r, e, 1.0)
        })
        .collect();
    stats::median_in_place(&mut xs)
}

/// `analyze`'s groups of sessions (By env, …): the weighted median with the session as the
/// unit (`stats::group_median`), k sessions with effects N(0, 2 µs).
fn group_median_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for (case, shape, k, sizes) in [
        (300u64, Shape::Normal, 3usize, None),
        (301, Shape::LogNormal, 3, None),
        (302, Shape::Normal, 10, None),
        (303, Shape::LogNormal, 10, None),
        // Sessions of 100–2 000 runs, at most 300 kept: each weighs what it saw.
        (304, Shape::LogNormal, 5, Some((100usize, 2_000usize, 300usize))),
    ] {
        let truth = mixture_median(shape, 2_000.0);
        let covered: Vec<bool> = (0..REPS)
            .into_par_iter()
            .map(|rep| {
                let mut r = rng(case, rep);
                let data: Vec<(Vec<f64>, f64)> = (0..k)
                    .map(|_| {
                        let e = Normal::new(0.0, 2_000.0).unwrap().sample(&mut r);
                        let (seen, kept) = match sizes {
                            Some((lo, hi, cap)) => {
                                let n = lo + (rand::RngExt::random_range(&mut r, 0..=(hi - lo)));
                                (n, n.min(cap))
                            }
                            None => (300, 300),
                        };
                        // A uniform sample of `kept` of the `seen` runs is `kept` draws.
                        ((0..kept).map(|_| shape.draw(&mut r, e, 1.0)).collect(), seen as f64)
                    })
                    .collect();
                let samples: Vec<stats::SessionSample> =
                    data.iter().map(|(v, seen)| stats::SessionSample { values: v, seen: *seen }).collect();
                stats::group_median(&samples, &boot(rep)).unwrap().interval.contains(truth)
            })
            .collect();
        rows.push(Row {
            procedure: "group median (analyze, by env/…)",
            data: match sizes {
                Some((lo, hi, cap)) => {
                    format!("{}, {k} sessions of {lo}–{hi} runs ({cap} kept), session sd 2 µs", shape.name())
                }
                None => format!("{}, {k} sessions × 300 runs, session sd 2 µs", shape.name()),
            },
            coverage: Some(share(covered.into_iter())),
            false_verdicts: None,
            power: None,
        });
    }
    rows
}

/// `regress`: a session factor (2 or 4 sessions per level, effects N(0, 2 µs)) and an
/// interference slope, with the session as the unit of session-level terms.
fn regression_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for (case, per_level) in [(400u64, 2usize), (401, 4)] {
        let fit = |rep: u64, effect: f64| -> stats::Coefficient {
            let mut r = rng(case, rep * 2 + u64::from(effect != 0.0));
            let (mut y, mut f, mut s) = (Vec::new(), Vec::new(), Vec::new());
            for k in 0..2 * per_level {
                let level = (k % 2) as f64;
                let e = Normal::new(0.0, 2_000.0).unwrap().sample(&mut r);
                for _ in 0..100 {
                    y.push(Shape::LogNormal.draw(&mut r, e + level * effect, 1.0));
                    f.push(level);
                    s.push(k as u32);
                }
            }
            let fit = stats::bootstrap_regression_by_session(&y, &[f], &["governor=b".into()], &s, &boot(rep)).unwrap();
            fit.coefficients[1].clone()
        };
        let covers = |c: &stats::Coefficient, v: f64| c.lower <= v && v <= c.upper;
        let null: Vec<stats::Coefficient> = (0..REPS).into_par_iter().map(|rep| fit(rep, 0.0)).collect();
        let planted: Vec<stats::Coefficient> = (0..REPS).into_par_iter().map(|rep| fit(rep, 5_000.0)).collect();
        rows.push(Row {
            procedure: "regress: session factor",
            data: format!("log-normal, {per_level} vs {per_level} sessions × 100 runs, session sd 2 µs"),
            coverage: Some(share(planted.iter().map(|c| covers(c, 5_000.0)))),
            false_verdicts: Some(share(null.iter().map(|c| !covers(c, 0.0)))),
            power: Some(share(planted.iter().map(|c| !covers(c, 0.0)))),
        });
    }
    // Interference: y = session effect + segment + 1 × irq time (0–10 µs), 4 sessions.
    let covered: Vec<bool> = (0..REPS)
        .into_par_iter()
        .map(|rep| {
            let mut r = rng(402, rep);
            let (mut y, mut irq, mut s) = (Vec::new(), Vec::new(), Vec::new());
            for k in 0..4u32 {
                let e = Normal::new(0.0, 2_000.0).unwrap().sample(&mut r);
                for _ in 0..100 {
                    let i = rand::RngExt::random_range(&mut r, 0.0..10_000.0);
                    y.push(Shape::LogNormal.draw(&mut r, e, 1.0) + i);
                    irq.push(i);
                    s.push(k);
                }
            }
            let fit = stats::bootstrap_regression_by_session(&y, &[irq], &["irq".into()], &s, &boot(rep)).unwrap();
            let c = &fit.coefficients[1];
            c.lower <= 1.0 && 1.0 <= c.upper
        })
        .collect();
    rows.push(Row {
        procedure: "regress: interference slope",
        data: "log-normal, 4 sessions × 100 runs, session sd 2 µs".into(),
        coverage: Some(share(covered.into_iter())),
        false_verdicts: None,
        power: None,
    });
    rows
}

/// `regress`'s variance attribution (covariance shares) and the uncovered part's mean.
fn attribution_and_mean_rows() -> Vec<Row> {
    let lognormal_var = |m: f64, s: f64| m * m * ((s * s).exp() - 1.0) * (s * s).exp();
    let mut rows = Vec::new();
    for (case, normal) in [(500u64, true), (501, false)] {
        // Two independent segments: the first's share is var₁ / (var₁ + var₂).
        let truth = if normal {
            9.0 / 25.0
        } else {
            let (v1, v2) = (lognormal_var(20_000.0, 0.35), lognormal_var(6_000.0, 0.5));
            v1 / (v1 + v2)
        };
        let covered: Vec<bool> = (0..REPS)
            .into_par_iter()
            .map(|rep| {
                let mut r = rng(case, rep);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for _ in 0..300 {
                    if normal {
                        a.push(20_000.0 + 3_000.0 * Normal::new(0.0, 1.0).unwrap().sample(&mut r));
                        b.push(6_000.0 + 4_000.0 * Normal::new(0.0, 1.0).unwrap().sample(&mut r));
                    } else {
                        a.push(LogNormal::new(20_000f64.ln(), 0.35).unwrap().sample(&mut r));
                        b.push(LogNormal::new(6_000f64.ln(), 0.5).unwrap().sample(&mut r));
                    }
                }
                let s = stats::covariance_shares(&[a, b], &boot(rep)).unwrap();
                s.shares[0].lower <= truth && truth <= s.shares[0].upper
            })
            .collect();
        rows.push(Row {
            procedure: "regress: variance share",
            data: format!("{}, 2 independent segments, 300 runs", if normal { "normal" } else { "log-normal" }),
            coverage: Some(share(covered.into_iter())),
            false_verdicts: None,
            power: None,
        });
    }
    let truth = MEDIAN * (0.35f64 * 0.35 / 2.0).exp();
    let covered: Vec<bool> = (0..REPS)
        .into_par_iter()
        .map(|rep| {
            let mut r = rng(502, rep);
            let xs: Vec<f64> = (0..300).map(|_| Shape::LogNormal.draw(&mut r, 0.0, 1.0)).collect();
            stats::mean_ci(&xs, &boot(rep)).unwrap().contains(truth)
        })
        .collect();
    rows.push(Row {
        procedure: "regress --outer: mean uncovered part",
        data: "log-normal, 300 pairs".into(),
        coverage: Some(share(covered.into_iter())),
        false_verdicts: None,
        power: None,
    });
    rows
}

/// Values binned on the kernel's bucket grid, as Prometheus holds them.
fn binned(xs: impl Iterator<Item = f64>) -> stats::buckets::BucketCounts {
    use clockpath_common::hist::{NUM_BUCKETS, bucket_le_ns, bucket_of};
    let mut counts = vec![0u64; NUM_BUCKETS];
    for x in xs {
        counts[bucket_of(x.max(1.0) as u64) as usize] += 1;
    }
    let mut cum = 0.0;
    let le: Vec<(f64, f64)> = (0..NUM_BUCKETS)
        .map(|i| {
            cum += counts[i] as f64;
            (bucket_le_ns(i as u32).map_or(f64::INFINITY, |b| b as f64), cum)
        })
        .collect();
    stats::buckets::BucketCounts::from_cumulative(le).unwrap()
}

/// `compare --prometheus`: one instance each side (multinomial resampling of the counts; the
/// truth is the difference of the populations' interpolated medians), and 3 vs 3 instances
/// with instance effects N(0, 2 µs) (t over instance medians).
fn fleet_rows() -> Vec<Row> {
    let shift = 2_000.0;
    let truth = {
        let mut r = rng(600, 0);
        let big = 1_000_000;
        let a = binned((0..big).map(|_| Shape::Normal.draw(&mut r, 0.0, 1.0)));
        let b = binned((0..big).map(|_| Shape::Normal.draw(&mut r, shift, 1.0)));
        b.median() - a.median()
    };
    let one = |rep: u64, planted: bool| -> Interval {
        let mut r = rng(601, rep * 2 + u64::from(planted));
        let a = binned((0..300).map(|_| Shape::Normal.draw(&mut r, 0.0, 1.0)));
        let b = binned((0..300).map(|_| Shape::Normal.draw(&mut r, if planted { shift } else { 0.0 }, 1.0)));
        stats::buckets::median_difference_ci(&b, &a, &boot(rep)).unwrap()
    };
    let null: Vec<Interval> = (0..REPS).into_par_iter().map(|rep| one(rep, false)).collect();
    let planted: Vec<Interval> = (0..REPS).into_par_iter().map(|rep| one(rep, true)).collect();
    let mut rows = vec![Row {
        procedure: "fleet: difference of medians, 1 vs 1 instance",
        data: "normal, 300 observations, kernel buckets".into(),
        coverage: Some(share(planted.iter().map(|i| i.contains(truth)))),
        false_verdicts: Some(share(null.iter().map(|i| !i.contains(0.0)))),
        power: Some(share(planted.iter().map(|i| !i.contains(0.0)))),
    }];
    let over = |rep: u64, planted: bool| -> bool {
        let mut r = rng(602, rep * 2 + u64::from(planted));
        let values: Vec<stats::SessionValue> = (0..6)
            .map(|k| {
                let in_b = k >= 3;
                let e = Normal::new(0.0, 2_000.0).unwrap().sample(&mut r) + if in_b && planted { 5_000.0 } else { 0.0 };
                let h = binned((0..300).map(|_| Shape::Normal.draw(&mut r, e, 1.0)));
                stats::SessionValue { in_b, stratum: 0, value: h.median() }
            })
            .collect();
        !stats::session_effect(&values, LEVEL).unwrap().interval.contains(0.0)
    };
    let null = share((0..REPS).into_par_iter().map(|rep| over(rep, false)).collect::<Vec<_>>().into_iter());
    let power = share((0..REPS).into_par_iter().map(|rep| over(rep, true)).collect::<Vec<_>>().into_iter());
    rows.push(Row {
        procedure: "fleet: difference of medians, 3 vs 3 instances",
        data: "normal, 300 observations each, instance sd 2 µs, kernel buckets".into(),
        coverage: None,
        false_verdicts: Some(null),
        power: Some(power),
    });
    rows
}

/// The audit's case, as it was found: 3 host and 3 VM sessions from one population, session
/// effects N(0, 2 µs), 300 runs each. Pooled over runs, 90 of 100 repeats declared a
/// difference; over sessions the rate is the level's.
#[test]
fn three_sessions_against_three_with_session_effects_rarely_differ() {
    let false_verdicts = (0..REPS)
        .into_par_iter()
        .filter(|&rep| {
            let mut r = rng(99, rep);
            let a = sessions(&mut r, Shape::LogNormal, 3, 300, 2_000.0, 0.0, 1.0);
            let b = sessions(&mut r, Shape::LogNormal, 3, 300, 2_000.0, 0.0, 1.0);
            !compared(rep, &a, &b, &[]).median_difference.expect("an interval").contains(0.0)
        })
        .count() as f64
        / REPS as f64;
    println!("3 vs 3 sessions, no effect: {:.1} % false verdicts", 100.0 * false_verdicts);
    assert!(false_verdicts <= max_false(), "{false_verdicts}");
}

#[test]
fn a_single_run_against_a_single_run_is_too_few() {
    let a = vec![vec![vec![1000.0]]];
    let b = vec![vec![vec![2000.0]]];
    let c = compared(0, &a, &b, &[]);
    assert!(c.median_difference.is_none() && c.verdict.starts_with("too few to compare"), "{}", c.verdict);
    let mut r = rng(7, 0);
    let a = sessions(&mut r, Shape::Normal, 1, 3, 0.0, 0.0, 1.0);
    let b = sessions(&mut r, Shape::Normal, 1, 3, 0.0, 0.0, 1.0);
    assert!(compared(0, &a, &b, &[]).verdict.starts_with("too few to compare"));
}

/// The model check (`regress`): a 0.5 correlation between two segments is flagged in most
/// 300-run sessions, independent segments in no more than the level allows.
#[test]
fn the_model_check_flags_correlated_segments_and_passes_independent_ones() {
    let flagged = |rho: f64, case: u64| -> f64 {
        (0..REPS)
            .into_par_iter()
            .filter(|&rep| {
                let mut r = rng(case, rep);
                let z = Normal::new(0.0, 1.0).unwrap();
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for _ in 0..300 {
                    let (z1, z2) = (z.sample(&mut r), z.sample(&mut r));
                    let z2 = rho * z1 + (1.0 - rho * rho).sqrt() * z2;
                    a.push((20_000.0 * (0.35 * z1).exp()).round());
                    b.push((6_000.0 * (0.35 * z2).exp()).round());
                }
                let check = stats::independence_check(&[a, b], &boot(rep)).unwrap();
                check.quantiles.iter().any(|q| q.lower > 0.0 || q.upper < 0.0)
            })
            .count() as f64
            / REPS as f64
    };
    let (independent, correlated) = (flagged(0.0, 200), flagged(0.5, 201));
    println!(
        "model check, 300 runs: independent segments flagged in {:.1} %, correlation 0.5 in {:.1} %",
        100.0 * independent,
        100.0 * correlated
    );
    assert!(independent <= max_false(), "{independent}");
    assert!(correlated >= 0.80, "{correlated}");
}
