//! The integration suite, one test binary: each module is one area (as its own file says), and
//! one binary links once instead of once per area. Run as root, one test at a time (they share
//! the kernel's tracing state and the machine's two cores):
//! `cargo test --release -p clockpath-tests --test suite -- --test-threads=1 [FILTER]`,
//! where FILTER is a module (`kvm::`) or a test name.

mod clocks;
mod cstates;
mod dashboards;
mod docs;
mod engine;
mod exporter;
mod faults;
mod fleet;
mod guest;
mod helm;
mod image;
mod kvm;
mod memory_limit;
mod names;
mod otlp;
mod pps;
mod privileges;
mod recorder;
mod rules;
mod runqueue;
mod session;
mod suspend;
mod web;
