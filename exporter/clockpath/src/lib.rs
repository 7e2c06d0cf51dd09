//! clockpath: a kernel-resident perf exporter for the Linux time path.
//!
//! This crate is the exporter around the lower crates (`clockpath-probe`: kernel facts, plan,
//! loader; `clockpath-offline`: chain assembly, traces, statistics). Its modules, from the
//! bottom up — each imports only modules before it in this list:
//!
//! - [`config`]: the configuration stack and every section's type and checks (a leaf);
//! - [`ktime`], [`host`], [`process`], [`privileges`]: kernel time to wall and reference time;
//!   the machine; this process's own resource usage and capabilities;
//! - [`pps`]: PPS sources read on their own threads, the time reference;
//! - [`clockaudit`]: this machine's clocks audited at the start and end of a run or session;
//! - [`pipeline`]: ring records → chain assembly → sinks, in one direction;
//! - [`exemplars`]: trace ids per histogram bucket (written by OTLP, read by the scrape);
//! - [`sinks`]: where chains go (quantiles, windows, interference, OTLP, recorder, tally);
//! - [`daemon`]: a running exporter (plan → load → attach → read → stop) and its health;
//! - [`exposition`] and [`http`]: the Prometheus metrics and the endpoints serving them;
//! - [`session`], [`doctor`]: clocksource sessions; what this machine can trace;
//! - [`cli`]: the commands.

pub mod cli;
pub mod clockaudit;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod exemplars;
pub mod exposition;
pub mod host;
pub mod http;
pub mod ktime;
pub mod pipeline;
pub mod pps;
pub mod privileges;
pub mod process;
pub mod session;
pub mod sinks;
