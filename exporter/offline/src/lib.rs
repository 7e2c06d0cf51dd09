//! clockpath's offline half, shared by the live exporter and the analysis commands, with no
//! eBPF and no async runtime in its dependency tree (the fuzz target and the analysis
//! benchmarks build this crate alone):
//!
//! - [`chain`]: chain assembly, the one place where stage hits and segment records become
//!   `ChainRecord`s, with the kernel's semantics;
//! - [`trace`]: trace files (CSV, JSON Lines, the older `seconds.nanoseconds probe` lines):
//!   reading, writing;
//! - [`stats`]: medians, outlier rejection, bootstrap confidence intervals, regression;
//! - [`analysis`]: `analyze`, `compare`, `regress`, `simulate` over trace files;
//! - [`clockdomain`]: clock audits and `explain`: which clock a constant offset comes from;
//! - [`outfile`]: files written without following links, into directories others cannot fill.

pub mod analysis;
pub mod chain;
pub mod clockdomain;
pub mod outfile;
pub mod stats;
pub mod trace;
