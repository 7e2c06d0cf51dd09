//! SVG plots (plotters): a histogram per chain segment on a log time axis, a forest plot of
//! medians with their CIs per chain segment (one row per session and group), and per session
//! the reference segment over run order with its rolling median ± SD and the stretches whose
//! spread departs from the session's.

use std::{path::Path, sync::OnceLock};

use plotters::prelude::*;

use super::{
    Collected, column_names,
    phases::{self, Phases},
    report::Report,
    units::Unit,
};

/// Fonts plotters measures text with (the SVG itself only names the family).
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error(
        "plots need a TrueType font to measure text: install fonts-dejavu-core (scripts/setup.sh does); looked in {0}"
    )]
    NoFont(String),
    #[error("drawing {path}: {why}")]
    Draw { path: String, why: String },
}

/// Registers a TrueType font for plotters (text is measured even in SVG); once per process.
pub fn ensure_font() -> Result<(), PlotError> {
    static FONT: OnceLock<bool> = OnceLock::new();
    let ok = *FONT.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                // Registered once for the process; plotters keeps a 'static reference.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    });
    if ok { Ok(()) } else { Err(PlotError::NoFont(FONT_PATHS.join(", "))) }
}

fn file_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect()
}

/// Draw every plot into `dir`; returns the files written.
pub fn write(dir: &Path, report: &Report, c: &Collected) -> Result<Vec<String>, PlotError> {
    ensure_font()?;
    let _ = std::fs::create_dir_all(dir);
    let mut written = Vec::new();
    for (name, data) in &c.chains {
        let Some(shape) = &data.shape else { continue };
        for (col, hist) in column_names(shape).iter().zip(&data.histograms) {
            let path = dir.join(format!("hist-{}-{}.svg", file_name(name), file_name(col)));
            histogram(&path, &format!("{name}: {col}"), hist.as_ref())
                .map_err(|why| PlotError::Draw { path: path.display().to_string(), why })?;
            written.push(path.display().to_string());
        }
    }
    for cr in &report.chains {
        for (ci, col) in cr.columns.iter().enumerate() {
            let mut rows: Vec<(String, f64, f64, f64)> = Vec::new();
            for g in cr.sessions.iter().chain(cr.groups.values().flatten()) {
                let label = if cr.sessions.iter().any(|s| std::ptr::eq(s, g)) {
                    format!("session {}", g.name)
                } else {
                    let dim = g.labels.keys().next().cloned().unwrap_or_default();
                    format!("{dim}={}", g.name)
                };
                if let Some(c) = g.columns.get(ci)
                    && let Some(ci) = c.ci
                {
                    rows.push((label, c.median, ci.lower, ci.upper));
                }
            }
            if rows.is_empty() {
                continue;
            }
            // Seconds in the report; the axis in the unit that reads best.
            let unit = Unit::for_values(rows.iter().flat_map(|r| [r.1, r.2, r.3]));
            let scale = |v: f64| unit.format(v).parse::<f64>().unwrap_or(f64::NAN);
            let rows: Vec<(String, f64, f64, f64)> =
                rows.into_iter().map(|(l, m, lo, hi)| (l, scale(m), scale(lo), scale(hi))).collect();
            let path = dir.join(format!("forest-{}-{}.svg", file_name(&cr.chain), file_name(col)));
            let title = format!("{}: {col} — median and {:.0} % CI", cr.chain, report.level * 100.0);
            forest(&path, &title, unit.symbol(), &rows)
                .map_err(|why| PlotError::Draw { path: path.display().to_string(), why })?;
            written.push(path.display().to_string());
        }
    }
    for (name, data) in &c.chains {
        let Some(shape) = &data.shape else { continue };
        let Some(cr) = report.chains.iter().find(|cr| &cr.chain == name) else { continue };
        let reference = shape.segment_name(1);
        for (sid, s) in &data.sessions {
            let values = s.column_in_time_order(0);
            if values.len() < 2 * phases::window(values.len()) {
                continue;
            }
            let path = dir.join(format!("time-{}-{}.svg", file_name(name), file_name(sid)));
            let title = format!("{name}: {reference} over runs, session {sid}");
            over_time(&path, &title, &values, cr.phases.get(sid))
                .map_err(|why| PlotError::Draw { path: path.display().to_string(), why })?;
            written.push(path.display().to_string());
        }
    }
    Ok(written)
}

/// A session's reference segment in run order, its rolling median ± SD, and the stretches
/// whose spread departs from the session's (shaded).
fn over_time(path: &Path, title: &str, values_ns: &[f64], phases: Option<&Phases>) -> Result<(), String> {
    let unit = Unit::for_values(values_ns.iter().map(|v| v / 1e9));
    let to_unit = |ns: f64| unit.format(ns / 1e9).parse::<f64>().unwrap_or(f64::NAN);
    let v: Vec<f64> = values_ns.iter().map(|x| to_unit(*x)).collect();
    let w = phases::window(values_ns.len());
    let rolling: Vec<(usize, f64, f64)> =
        phases::rolling(values_ns, w, 600).into_iter().map(|(i, m, sd)| (i, to_unit(m), to_unit(sd))).collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-6).max(1e-9);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(90)
            .build_cartesian_2d(0usize..v.len(), lo - pad..hi + pad)
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc("run (time order)").y_desc(unit.symbol()).draw().map_err(|e| e.to_string())?;
        for s in phases.map(|p| p.stretches.as_slice()).unwrap_or_default() {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(s.from_run, lo - pad), (s.to_run + 1, hi + pad)],
                    RGBColor(255, 200, 120).mix(0.45).filled(),
                )))
                .map_err(|e| e.to_string())?;
        }
        chart
            .draw_series(v.iter().enumerate().map(|(i, y)| Circle::new((i, *y), 1, BLUE.mix(0.5).filled())))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(rolling.iter().map(|(i, m, _)| (*i, *m)), BLACK.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(format!("rolling median ({w} runs)"));
        for sign in [-1.0, 1.0] {
            chart
                .draw_series(LineSeries::new(rolling.iter().map(|(i, m, sd)| (*i, m + sign * sd)), RED.mix(0.7)))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    // Written whole, never through a link (crate::outfile).
    crate::outfile::write(path, svg.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

fn histogram(path: &Path, title: &str, buckets: &[u64]) -> Result<(), String> {
    use clockpath_common::hist::{bucket_le_ns, bucket_lower_ns};
    let bars: Vec<(f64, f64, u64)> = buckets
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| {
            let lo = (bucket_lower_ns(i as u32).max(1)) as f64 / 1e3;
            let hi = bucket_le_ns(i as u32).map_or(lo * 1.125, |u| u as f64 / 1e3);
            (lo, hi, *n)
        })
        .collect();
    if bars.is_empty() {
        return Ok(());
    }
    let xmin = bars.iter().map(|b| b.0).fold(f64::INFINITY, f64::min) / 1.5;
    let xmax = bars.iter().map(|b| b.1).fold(0.0, f64::max) * 1.5;
    let ymax = bars.iter().map(|b| b.2).max().unwrap_or(1) as f64 * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((xmin..xmax).log_scale(), 0.0..ymax)
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc("duration (µs, log scale)").y_desc("runs").draw().map_err(|e| e.to_string())?;
        chart
            .draw_series(
                bars.iter().map(|(lo, hi, n)| Rectangle::new([(*lo, 0.0), (*hi, *n as f64)], BLUE.mix(0.6).filled())),
            )
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    // Written whole, never through a link (crate::outfile).
    crate::outfile::write(path, svg.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

fn forest(path: &Path, title: &str, unit: &str, rows: &[(String, f64, f64, f64)]) -> Result<(), String> {
    let xmin = rows.iter().map(|r| r.2).fold(f64::INFINITY, f64::min);
    let xmax = rows.iter().map(|r| r.3).fold(f64::NEG_INFINITY, f64::max);
    let pad = ((xmax - xmin) * 0.1).max(1e-3);
    let height = 120 + 40 * rows.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let n = rows.len() as i32;
        let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(220)
            .build_cartesian_2d(xmin - pad..xmax + pad, -1..n)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .y_labels(rows.len() + 2)
            .y_label_formatter(&|y| labels.get(*y as usize).cloned().unwrap_or_default())
            .x_desc(unit)
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                rows.iter()
                    .enumerate()
                    .map(|(i, r)| ErrorBar::new_horizontal(i as i32, r.2, r.1, r.3, RED.filled(), 8)),
            )
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| Circle::new((r.1, i as i32), 4, BLACK.filled())))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    // Written whole, never through a link (crate::outfile).
    crate::outfile::write(path, svg.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}
