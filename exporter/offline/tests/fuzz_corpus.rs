//! Replays the fuzzing corpus of the trace parsers (`fuzz/corpus/parse_trace`): every input
//! must parse to hits or to a located error, never panic. `cargo +nightly fuzz run
//! parse_trace` (in `fuzz/`) grows the corpus; this test keeps what it found in CI.

use std::path::Path;

use clockpath_offline::trace::read::{Flow, Interner, ReadError, ReadOptions, ReadStats, read_stream};

#[test]
fn every_corpus_input_parses_or_fails_with_a_location() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/parse_trace");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz corpus directory") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        for skip in [false, true] {
            let mut names = Interner::new();
            let mut stats = ReadStats::default();
            let r = read_stream(
                Path::new("input.csv"),
                data.as_slice(),
                ReadOptions { skip_bad_lines: skip },
                &mut names,
                &mut stats,
                &mut |_, _| Flow::Continue(()),
                &mut |_| {},
            );
            if let Err(ReadError::Malformed { line, .. }) = &r {
                assert!(*line >= 1, "{}: an error must name its line", path.display());
            }
        }
        n += 1;
    }
    assert!(n >= 8, "the corpus has only {n} inputs");
}
