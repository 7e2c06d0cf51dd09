//! "Did you mean": the closest known name to a misspelt one (config keys, tracepoint fields,
//! tracepoint names).

/// The closest known name, if it is close enough to be a typo.
pub fn closest<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(given, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    #[test]
    fn typos_are_found_and_strangers_are_not() {
        assert_eq!(super::closest("ring_byte", &["ring_bytes", "raw_hits"]), Some("ring_bytes"));
        assert_eq!(super::closest("next_pdi", &["prev_pid", "next_pid"]), Some("next_pid"));
        assert_eq!(super::closest("completely_else", &["ring_bytes"]), None);
    }
}
