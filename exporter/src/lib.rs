//! clockpath: a kernel-resident perf exporter for the Linux time path.
//!
//! Data flows one way: `probe` (kernel programs, ring buffer, maps) → `chain` (assembly into
//! `ChainRecord`s) → `pipeline` sinks. `config` holds the configuration stack, `host` the
//! machine's environment, `daemon` ties a running exporter together, `cli` the commands.

pub mod analysis;
pub mod chain;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod host;
pub mod ktime;
pub mod pipeline;
pub mod probe;
pub mod session;
pub mod sink;
pub mod stats;
pub mod trace_io;
