//! Time units for people: a table of durations picks one of s, ms, µs or ns so its values
//! read with 4 to 7 significant digits (a 1.111 s median reads `1.111000 s`, not
//! `1111001.123 µs`), never more digits than the nanosecond data has.

/// A display unit for durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    S,
    Ms,
    Us,
    Ns,
}

impl Unit {
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::S => "s",
            Unit::Ms => "ms",
            Unit::Us => "µs",
            Unit::Ns => "ns",
        }
    }

    /// Seconds per unit.
    fn seconds(self) -> f64 {
        match self {
            Unit::S => 1.0,
            Unit::Ms => 1e-3,
            Unit::Us => 1e-6,
            Unit::Ns => 1e-9,
        }
    }

    /// Decimals that reach the nanosecond in this unit.
    fn ns_decimals(self) -> i32 {
        match self {
            Unit::S => 9,
            Unit::Ms => 6,
            Unit::Us => 3,
            Unit::Ns => 0,
        }
    }

    /// The largest unit in which every one of `seconds` (the finite, non-zero ones) is at
    /// least 1, so none reads as 0.000…; ns when there is nothing to go by.
    pub fn for_values(seconds: impl IntoIterator<Item = f64>) -> Unit {
        let smallest =
            seconds.into_iter().filter(|v| v.is_finite() && *v != 0.0).map(f64::abs).fold(f64::INFINITY, f64::min);
        [Unit::S, Unit::Ms, Unit::Us]
            .into_iter()
            .find(|u| smallest.is_finite() && smallest / u.seconds() >= 1.0)
            .unwrap_or(Unit::Ns)
    }

    /// `seconds` in this unit with up to 7 significant digits, no finer than 1 ns; `—` when
    /// not finite.
    pub fn format(self, seconds: f64) -> String {
        if !seconds.is_finite() {
            return "—".into();
        }
        let v = seconds / self.seconds();
        let int_digits = if v.abs() < 1.0 { 1 } else { v.abs().log10().floor() as i32 + 1 };
        let decimals = (7 - int_digits).clamp(0, self.ns_decimals());
        format!("{v:.*}", decimals as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_scale_offset_reads_in_seconds_and_microseconds_in_microseconds() {
        let u = Unit::for_values([1.111000141, 1.111000212]);
        assert_eq!(u, Unit::S);
        assert_eq!(u.format(1.111000141), "1.111000");
        let u = Unit::for_values([20.512e-6, 35.0e-6, 0.0, f64::NAN]);
        assert_eq!(u, Unit::Us);
        assert_eq!(u.format(20.512e-6), "20.512", "no digit finer than 1 ns");
        assert_eq!(u.format(1234.5678e-6), "1234.568");
        assert_eq!(Unit::for_values([5e-9]), Unit::Ns);
        assert_eq!(Unit::Ns.format(5e-9), "5");
        assert_eq!(Unit::for_values([2.5e-3, 0.9]), Unit::Ms);
        assert_eq!(Unit::Ms.format(0.9), "900.0000");
        assert_eq!(Unit::Us.format(f64::NAN), "—");
        assert_eq!(Unit::for_values([]), Unit::Ns);
    }
}
