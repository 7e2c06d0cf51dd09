//! Clock domains: which clock each timestamp of a trace is on, and whether a segment's
//! constant is the difference of two clocks' zero points rather than a latency.
//!
//! - [`audit`]: a machine's clocks and their offsets from CLOCK_MONOTONIC (`clockpath clocks`;
//!   measured by `clockpath_probe::clocks`);
//! - [`explain`]: an observed constant against every audited clock difference and structural
//!   constant (`clockpath explain`).

pub mod audit;
pub mod explain;
