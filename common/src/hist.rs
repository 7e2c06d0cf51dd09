//! Log-linear histogram buckets, shared by the BPF side (which increments them) and userspace
//! (which turns them into Prometheus buckets).
//!
//! The bucket *grid* ([`bucket_index`], [`bucket_lower_ns`]): values below 8 ns have one slot
//! each; from 8 ns up, every power-of-two range `[2^p, 2^(p+1))` is split into [`SUB_BUCKETS`]
//! equal-width slots, so a slot is at most 12.5 % wide relative to its lower bound. The top
//! range starts at 2^[`MAX_EXP`] ns (~68.7 s); larger values land in the last slot (+Inf).
//!
//! Recorded values use [`bucket_of`], which files `v` under `bucket_index(v - 1)`: bucket `i`
//! holds `(lower(i), lower(i + 1)]`, upper bound *included*, which is exactly Prometheus'
//! `le` semantics. Every `le` equal to some `lower(i + 1)` is therefore an exact cumulative
//! count: re-binning kernel buckets into Prometheus buckets loses nothing.

/// Sub-buckets per power of two.
pub const SUB_BUCKETS: u32 = 8;
/// log2 of [`SUB_BUCKETS`].
pub const SUB_BITS: u32 = 3;
/// Highest power-of-two range with its own buckets: 2^36 ns ≈ 68.7 s.
pub const MAX_EXP: u32 = 36;
/// Number of buckets in a row.
pub const NUM_BUCKETS: usize = (SUB_BUCKETS * (MAX_EXP - 1)) as usize;

/// One histogram: a chain's segment (or its total), per CPU in the kernel.
///
/// Written by `ebpf/src/stage.rs` (`record_segment`), read by `exporter/src/probe/maps.rs`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HistRow {
    /// Count per bucket, see [`bucket_index`].
    pub buckets: [u64; NUM_BUCKETS],
    /// Sum of all recorded values, in nanoseconds.
    pub sum_ns: u64,
}

impl HistRow {
    pub const ZERO: HistRow = HistRow { buckets: [0; NUM_BUCKETS], sum_ns: 0 };
}

/// floor(log2(v)) for v > 0, without loops (the BPF verifier prefers straight-line code).
#[inline(always)]
pub fn ilog2(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// The bucket a value (in ns) falls into; always `< NUM_BUCKETS`.
#[inline(always)]
pub fn bucket_index(v: u64) -> u32 {
    if v < SUB_BUCKETS as u64 {
        return v as u32;
    }
    let p = ilog2(v);
    if p > MAX_EXP {
        return NUM_BUCKETS as u32 - 1;
    }
    let sub = ((v >> (p - SUB_BITS)) as u32) & (SUB_BUCKETS - 1);
    SUB_BUCKETS * (p - SUB_BITS + 1) + sub
}

/// The bucket a recorded value (ns) goes into: `bucket_index(v - 1)`, so that bucket `i`
/// holds `(bucket_lower_ns(i), bucket_le_ns(i)]` (0 and 1 ns share bucket 0).
#[inline(always)]
pub fn bucket_of(v: u64) -> u32 {
    bucket_index(v.saturating_sub(1))
}

/// Inclusive upper bound (ns) of recorded bucket `idx` (its Prometheus `le`); `None` for the
/// last bucket (+Inf).
pub const fn bucket_le_ns(idx: u32) -> Option<u64> {
    bucket_upper_ns(idx)
}

/// Inclusive lower bound (ns) of grid slot `idx`.
pub const fn bucket_lower_ns(idx: u32) -> u64 {
    if idx < SUB_BUCKETS {
        return idx as u64;
    }
    let group = idx / SUB_BUCKETS;
    let sub = (idx % SUB_BUCKETS) as u64;
    (SUB_BUCKETS as u64 + sub) << (group - 1)
}

/// Exclusive upper bound (ns) of bucket `idx`; `None` for the last bucket (+Inf).
pub const fn bucket_upper_ns(idx: u32) -> Option<u64> {
    if idx + 1 >= NUM_BUCKETS as u32 { None } else { Some(bucket_lower_ns(idx + 1)) }
}

/// Why a histogram bound (`le`, in seconds) cannot be exported exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BoundError {
    /// The list is empty.
    Empty,
    /// Not finite, not positive, or not above the previous bound.
    NotIncreasing { bound: f64, previous: f64 },
    /// Not the upper bound of a kernel bucket; the nearest ones, in ns.
    NotABoundary { bound: f64, below: Option<u64>, above: Option<u64> },
}

impl core::fmt::Display for BoundError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let secs = |f: &mut core::fmt::Formatter<'_>, ns: Option<u64>| match ns {
            Some(n) => write!(f, "{}", n as f64 / 1e9),
            None => f.write_str("none"),
        };
        match *self {
            BoundError::Empty => f.write_str("at least one bucket bound is needed"),
            BoundError::NotIncreasing { bound, previous } => {
                write!(f, "bounds must be finite, positive and increasing; {bound} follows {previous}")
            }
            BoundError::NotABoundary { bound, below, above } => {
                write!(
                    f,
                    "{bound} s is not a kernel bucket boundary (m × 2^e ns with 8 <= m <= 15, or a whole number of ns below 16); nearest: "
                )?;
                secs(f, below)?;
                f.write_str(" or ")?;
                secs(f, above)
            }
        }
    }
}

/// The recorded bucket whose inclusive upper bound (`le`) is `seconds`: re-binning the kernel
/// buckets at that bound is exact.
pub fn le_index(seconds: f64) -> Result<usize, BoundError> {
    let ns_f = seconds * 1e9;
    if ns_f.is_finite() && ns_f >= 0.5 {
        // Round to the nearest ns (no `f64::round` in core).
        let ns = (ns_f + 0.5) as u64;
        let off = ns_f - ns as f64;
        if -1e-3 < off && off < 1e-3 {
            let mut i = 0;
            while i < NUM_BUCKETS as u32 - 1 {
                if bucket_le_ns(i) == Some(ns) {
                    return Ok(i as usize);
                }
                i += 1;
            }
        }
    }
    let target = if ns_f.is_finite() && ns_f > 0.0 { ns_f as u64 } else { 0 };
    let mut below = None;
    let mut above = None;
    for i in 1..NUM_BUCKETS as u32 {
        let b = bucket_lower_ns(i);
        if b <= target {
            below = Some(b);
        }
        if above.is_none() && b >= target.max(1) {
            above = Some(b);
        }
    }
    Err(BoundError::NotABoundary { bound: seconds, below, above })
}

/// Check histogram bounds in seconds: increasing, positive, each a kernel bucket boundary.
pub fn check_buckets(bounds: &[f64]) -> Result<(), BoundError> {
    if bounds.is_empty() {
        return Err(BoundError::Empty);
    }
    let mut previous = 0.0;
    for &bound in bounds {
        if bound <= previous || !bound.is_finite() {
            return Err(BoundError::NotIncreasing { bound, previous });
        }
        le_index(bound)?;
        previous = bound;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_between_its_bucket_bounds() {
        let mut v = 0u64;
        while v < (1u64 << 40) {
            let idx = bucket_index(v);
            assert!((idx as usize) < NUM_BUCKETS);
            assert!(bucket_lower_ns(idx) <= v, "v={v} idx={idx}");
            if let Some(up) = bucket_upper_ns(idx) {
                assert!(v < up, "v={v} idx={idx} upper={up}");
            }
            v = if v < 4096 { v + 1 } else { v + v / 7 + 1 };
        }
    }

    #[test]
    fn bounds_are_contiguous_and_increasing() {
        for idx in 0..NUM_BUCKETS as u32 - 1 {
            let lo = bucket_lower_ns(idx);
            let up = bucket_upper_ns(idx).unwrap();
            assert!(lo < up);
            assert_eq!(bucket_index(lo), idx);
            assert_eq!(bucket_index(up - 1), idx);
            assert_eq!(bucket_index(up), idx + 1);
        }
    }

    #[test]
    fn recorded_buckets_include_their_upper_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        for idx in 0..NUM_BUCKETS as u32 - 1 {
            let le = bucket_le_ns(idx).unwrap();
            assert_eq!(bucket_of(le), idx, "le {le} belongs to its own bucket");
            assert_eq!(bucket_of(le + 1), idx + 1);
        }
    }

    #[test]
    fn bounds_must_be_kernel_boundaries_and_errors_name_the_nearest() {
        extern crate std;
        use std::string::ToString as _;
        assert_eq!(le_index(1.024e-6), Ok(bucket_of(1024) as usize));
        assert_eq!(le_index(1e-9), Ok(0), "1 ns: the first bucket's le");
        let e = check_buckets(&[1e-6]).unwrap_err().to_string();
        assert!(
            e.contains("not a kernel bucket boundary") && e.contains("0.00000096") && e.contains("0.000001024"),
            "{e}"
        );
        assert!(matches!(check_buckets(&[2.048e-6, 1.024e-6]), Err(BoundError::NotIncreasing { .. })));
        assert_eq!(check_buckets(&[]), Err(BoundError::Empty));
        assert!(check_buckets(&[f64::NAN]).is_err());
        assert!(le_index(-1.0).is_err());
        assert!(check_buckets(&[2.56e-7, 1.024e-6, 1.073741824]).is_ok());
    }

    #[test]
    fn range_reaches_beyond_ten_seconds_with_eight_sub_buckets() {
        let ten_s = 10_000_000_000u64;
        let idx = bucket_index(ten_s);
        assert!(bucket_upper_ns(idx).is_some(), "10 s must not be in the overflow bucket");
        assert_eq!(bucket_index(u64::MAX), NUM_BUCKETS as u32 - 1);
        // Relative width of every bucket from 8 ns up is at most 1/8.
        for idx in SUB_BUCKETS..NUM_BUCKETS as u32 - 1 {
            let lo = bucket_lower_ns(idx);
            let up = bucket_upper_ns(idx).unwrap();
            assert!((up - lo) * 8 <= lo, "bucket {idx}: [{lo}, {up})");
        }
    }
}
