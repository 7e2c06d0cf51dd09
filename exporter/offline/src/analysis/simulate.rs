//! `clockpath simulate`: synthetic clocksource-switch sessions from a documented model, for
//! demos, tests and examples.
//!
//! Model, per run of the `clocksource_switch` chain (switch_entry → first_read →
//! baseline_recalc), runs 10 ms apart:
//! - switch_entry→first_read: log-normal, median 20 µs on a host (log-σ 0.15), 35 µs in a VM
//!   (log-σ 0.35), plus the constant `offset` (e.g. 1.111 s) when given;
//! - first_read→baseline_recalc: log-normal, median 6 µs host (0.2), 9 µs VM (0.4);
//! - C-state: with the default C-state policy, 30 % of runs wake from a deep idle state and add
//!   an exponential exit latency (mean 40 µs) to the first segment; `max_cstate=1` never does;
//! - outliers: a fraction of runs (default 1 %) have their first segment multiplied by 20.
//!
//! - with `interference`: IRQ time (exponential, mean 3 µs) charged to the first segment and
//!   adding to it one for one, and softirq time (mean 2 µs) charged but adding nothing — a
//!   known effect and a known absence of one, for `regress`;
//! - with `outer`: an outer chain `clocksource_write` around each switch (2 µs + Exp(1 µs)
//!   before, 3 µs + Exp(1 µs) after): what no probe of the inner chain covers.
//!
//! - sessions: each (env, cstate, governor) is recorded `sessions` times, each session with
//!   its own shift of the first segment, N(0, `session_sd`) (what differs from boot to boot);
//!
//! Each (env, cstate, governor, repeat) is a session; governors change nothing (a factor without an
//! effect). Lines carry env, governor and cstate columns so the analyser can group by them.
//! Output: CSV, JSON Lines, Parquet, or the plain `seconds.nanoseconds probe_name` lines of
//! older tooling (one file per session).

use std::{collections::BTreeMap, fs, io, path::Path};

use rand::{RngExt as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::trace::{CsvColumns, Format, TraceHit, TraceWriter};

#[derive(Clone, Debug)]
pub struct SimulateOptions {
    pub runs: usize,
    pub envs: Vec<String>,
    pub cstates: Vec<String>,
    /// cpufreq governors, one session each (no effect on the timings: a factor without one).
    pub governors: Vec<String>,
    /// Constant added to the first segment, in seconds.
    pub offset_s: f64,
    /// Fraction of outlier runs.
    pub outliers: f64,
    /// Charge interference to the first segment: IRQ time (exponential, mean 3 µs) that adds
    /// to it one for one, and softirq time (mean 2 µs) that does not.
    pub interference: bool,
    /// Also record an outer chain, `clocksource_write` (write_enter → write_exit), around each
    /// switch: 2 µs + Exp(1 µs) before it, 3 µs + Exp(1 µs) after.
    pub outer: bool,
    pub seed: u64,
    /// Sessions per (env, cstate, governor).
    pub sessions: usize,
    /// SD of each session's shift of the first segment, ns.
    pub session_sd_ns: f64,
    /// None: plain lines of older tooling.
    pub format: Option<Format>,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        SimulateOptions {
            runs: 300,
            envs: vec!["host".into(), "vm".into()],
            cstates: vec!["default".into()],
            governors: vec!["performance".into()],
            offset_s: 0.0,
            outliers: 0.01,
            interference: false,
            outer: false,
            seed: 1,
            sessions: 1,
            session_sd_ns: 0.0,
            format: Some(Format::Csv),
        }
    }
}

fn normal(rng: &mut Xoshiro256PlusPlus) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn lognormal(rng: &mut Xoshiro256PlusPlus, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

fn exponential(rng: &mut Xoshiro256PlusPlus, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

/// One simulated run.
struct Run {
    /// Segment durations, ns.
    segments: [u64; 2],
    /// Interference charged to the first segment (irq, softirq, sched, hrtimer, kvm), ns.
    interference: [u64; 5],
    /// The outer bracket before and after the switch, ns.
    outer: (u64, u64),
}

fn run(rng: &mut Xoshiro256PlusPlus, env: &str, cstate: &str, session_shift: f64, o: &SimulateOptions) -> Run {
    let vm = env == "vm";
    let mut s1 = lognormal(rng, if vm { 35_000.0 } else { 20_000.0 }, if vm { 0.35 } else { 0.15 }) + session_shift;
    if cstate == "default" && rng.random::<f64>() < 0.3 {
        s1 += exponential(rng, 40_000.0);
    }
    if rng.random::<f64>() < o.outliers {
        s1 *= 20.0;
    }
    let mut interference = [0u64; 5];
    if o.interference {
        let irq = exponential(rng, 3_000.0).round();
        let softirq = exponential(rng, 2_000.0).round();
        s1 += irq;
        interference = [irq as u64, softirq as u64, 0, 0, 0];
    }
    s1 += o.offset_s * 1e9;
    let s2 = lognormal(rng, if vm { 9_000.0 } else { 6_000.0 }, if vm { 0.4 } else { 0.2 });
    let outer = if o.outer {
        ((2_000.0 + exponential(rng, 1_000.0)).round() as u64, (3_000.0 + exponential(rng, 1_000.0)).round() as u64)
    } else {
        (0, 0)
    };
    Run { segments: [s1.round() as u64, s2.round() as u64], interference, outer }
}

/// Write the sessions into `dir`; returns the files written.
pub fn simulate(dir: &Path, o: &SimulateOptions) -> io::Result<Vec<String>> {
    fs::create_dir_all(dir)?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(o.seed);
    let mut written = Vec::new();
    let columns =
        CsvColumns { interference: o.interference, reference: false, labels: vec!["governor".into(), "cstate".into()] };
    let mut all: Vec<TraceHit> = Vec::new();
    for env in &o.envs {
        for cstate in &o.cstates {
            for (governor, repeat) in o.governors.iter().flat_map(|g| (0..o.sessions.max(1)).map(move |k| (g, k))) {
                let mut session = if o.governors.len() > 1 {
                    format!("sim-{env}-{cstate}-{governor}")
                } else {
                    format!("sim-{env}-{cstate}")
                };
                if o.sessions > 1 {
                    session.push_str(&format!("-{}", repeat + 1));
                }
                let session_shift = normal(&mut rng) * o.session_sd_ns;
                let labels = BTreeMap::from([
                    ("governor".to_string(), governor.clone()),
                    ("cstate".to_string(), cstate.clone()),
                ]);
                let mut lines = Vec::new();
                let mut ts: u64 = 1_000_000_000_000;
                for i in 0..o.runs {
                    let r = run(&mut rng, env, cstate, session_shift, o);
                    let [s1, s2] = r.segments;
                    let id = (i + 1) as u64;
                    let hit = |probe: &str, t: u64, chain: &str, id: u64, interference: Option<[u64; 5]>| TraceHit {
                        timestamp_ns: t,
                        probe_name: probe.into(),
                        session_id: session.clone(),
                        cpu_id: (i % 2) as u32,
                        delta_chain_id: id,
                        chain: chain.into(),
                        env: env.clone(),
                        interference_ns: interference,
                        reference_ns: None,
                        labels: labels.clone(),
                    };
                    let start = ts + r.outer.0;
                    let mut hits = vec![
                        hit("switch_entry", start, "clocksource_switch", id, None),
                        hit(
                            "first_read",
                            start + s1,
                            "clocksource_switch",
                            id,
                            o.interference.then_some(r.interference),
                        ),
                        hit("baseline_recalc", start + s1 + s2, "clocksource_switch", id, None),
                    ];
                    if o.outer {
                        // Its own instance ids, as a separate chain in the same session has.
                        let oid = 1_000_000_000 + id;
                        hits.insert(0, hit("write_enter", ts, "clocksource_write", oid, None));
                        hits.push(hit("write_exit", start + s1 + s2 + r.outer.1, "clocksource_write", oid, None));
                    }
                    if o.format.is_some() {
                        all.extend(hits);
                    } else {
                        for h in &hits {
                            let probe = if h.probe_name == "switch_entry" {
                                "do_clocksource_switch_entry"
                            } else {
                                &h.probe_name
                            };
                            lines.push(format!(
                                "{}.{:09} {probe}\n",
                                h.timestamp_ns / 1_000_000_000,
                                h.timestamp_ns % 1_000_000_000
                            ));
                        }
                    }
                    ts = start + s1 + s2 + r.outer.1 + 10_000_000;
                }
                if o.format.is_none() {
                    let p = dir.join(format!("{session}.txt"));
                    crate::outfile::write(&p, lines.concat().as_bytes())?;
                    written.push(p.display().to_string());
                }
            }
        }
    }
    if let Some(f) = o.format {
        let p = dir.join(format!("sessions.{}", f.extension()));
        let mut w = TraceWriter::with_columns(&p, f, columns)?;
        for h in &all {
            w.write(h)?;
        }
        w.finish()?;
        written.push(p.display().to_string());
    }
    Ok(written)
}
