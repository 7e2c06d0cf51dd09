//! Sinks: where assembled chains go. Each sink owns its config section's runtime and a
//! snapshot the HTTP side reads.

pub mod hdr;
pub mod interference;
pub mod otlp;
pub mod prometheus;
pub mod window;
