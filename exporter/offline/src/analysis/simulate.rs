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
//! Each (env, cstate) pair is a session; lines carry env, governor and cstate columns so the
//! analyser can group by them. Output: CSV, JSON Lines, or the plain
//! `seconds.nanoseconds probe_name` lines of older tooling (one file per session).

use std::{fs, io, path::Path};

use rand::{RngExt as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::trace::{Format, TraceHit};

#[derive(Clone, Debug)]
pub struct SimulateOptions {
    pub runs: usize,
    pub envs: Vec<String>,
    pub cstates: Vec<String>,
    /// Constant added to the first segment, in seconds.
    pub offset_s: f64,
    /// Fraction of outlier runs.
    pub outliers: f64,
    pub seed: u64,
    /// None: plain lines of older tooling.
    pub format: Option<Format>,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        SimulateOptions {
            runs: 300,
            envs: vec!["host".into(), "vm".into()],
            cstates: vec!["default".into()],
            offset_s: 0.0,
            outliers: 0.01,
            seed: 1,
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

/// Segment durations (ns) of one run.
fn run(rng: &mut Xoshiro256PlusPlus, env: &str, cstate: &str, o: &SimulateOptions) -> [u64; 2] {
    let vm = env == "vm";
    let mut s1 = lognormal(rng, if vm { 35_000.0 } else { 20_000.0 }, if vm { 0.35 } else { 0.15 });
    if cstate == "default" && rng.random::<f64>() < 0.3 {
        s1 += -40_000.0 * (1.0 - rng.random::<f64>()).ln();
    }
    if rng.random::<f64>() < o.outliers {
        s1 *= 20.0;
    }
    s1 += o.offset_s * 1e9;
    let s2 = lognormal(rng, if vm { 9_000.0 } else { 6_000.0 }, if vm { 0.4 } else { 0.2 });
    [s1.round() as u64, s2.round() as u64]
}

/// Write the sessions into `dir`; returns the files written.
pub fn simulate(dir: &Path, o: &SimulateOptions) -> io::Result<Vec<String>> {
    fs::create_dir_all(dir)?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(o.seed);
    let mut written = Vec::new();
    let mut all: Vec<String> = Vec::new();
    for env in &o.envs {
        for cstate in &o.cstates {
            let session = format!("sim-{env}-{cstate}");
            let mut lines = Vec::new();
            let mut ts: u64 = 1_000_000_000_000;
            for i in 0..o.runs {
                let [s1, s2] = run(&mut rng, env, cstate, o);
                let id = (i + 1) as u64;
                for (probe, t) in [("switch_entry", ts), ("first_read", ts + s1), ("baseline_recalc", ts + s1 + s2)] {
                    let hit = TraceHit {
                        timestamp_ns: t,
                        probe_name: probe.into(),
                        session_id: session.clone(),
                        cpu_id: (i % 2) as u32,
                        delta_chain_id: id,
                        chain: "clocksource_switch".into(),
                        env: env.clone(),
                        interference_ns: None,
                    };
                    lines.push(match o.format {
                        Some(Format::Csv) => {
                            format!("{},{},{}\n", hit.line(Format::Csv).trim_end(), "performance", cstate)
                        }
                        Some(Format::Jsonl) => {
                            let mut v = serde_json::to_value(&hit).map_err(io::Error::other)?;
                            v["labels"] = serde_json::json!({"governor": "performance", "cstate": cstate});
                            format!("{v}\n")
                        }
                        None => format!(
                            "{}.{:09} {}\n",
                            t / 1_000_000_000,
                            t % 1_000_000_000,
                            if probe == "switch_entry" { "do_clocksource_switch_entry" } else { probe }
                        ),
                    });
                }
                ts += s1 + s2 + 10_000_000;
            }
            if o.format.is_none() {
                let p = dir.join(format!("{session}.txt"));
                fs::write(&p, lines.concat())?;
                written.push(p.display().to_string());
            } else {
                all.extend(lines);
            }
        }
    }
    if let Some(f) = o.format {
        let p = dir.join(format!("sessions.{}", f.extension()));
        let mut text = String::new();
        if f == Format::Csv {
            text.push_str(crate::trace::CSV_HEADER);
            text.push_str(",governor,cstate\n");
        }
        text.push_str(&all.concat());
        fs::write(&p, text)?;
        written.push(p.display().to_string());
    }
    Ok(written)
}
