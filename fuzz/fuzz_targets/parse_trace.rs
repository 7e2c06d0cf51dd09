//! Fuzz the trace parsers: any bytes, read as a CSV, JSON Lines, plain or unknown trace, with
//! and without skipping bad lines, must give hits or a located error, never a panic.
#![no_main]

use clockpath_offline::trace::read::{Flow, Interner, ReadOptions, ReadStats, read_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for skip in [false, true] {
        let mut names = Interner::new();
        let mut stats = ReadStats::default();
        let _ = read_stream(
            std::path::Path::new("fuzz.csv"),
            data,
            ReadOptions { skip_bad_lines: skip },
            &mut names,
            &mut stats,
            &mut |hit, names| {
                let _ = names.name(hit.probe);
                Flow::Continue(())
            },
            &mut |_| {},
        );
    }
});
