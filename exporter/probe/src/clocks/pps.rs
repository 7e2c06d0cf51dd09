//! A PPS source's phase: where its edges fall against the system clock's second. The edge
//! marks a whole second of its reference; the kernel stamps it on CLOCK_REALTIME, so
//! `reference − realtime = −(stamp mod 1 s)`, and against CLOCK_MONOTONIC the offset is the
//! realtime offset minus that phase, known modulo one second only.

use std::path::PathBuf;

use clockpath_offline::clockdomain::audit::Family;

use super::{ClockInfo, Sample, Source};

pub struct Pps {
    devices: Vec<PathBuf>,
}

impl Pps {
    pub fn new(devices: Vec<PathBuf>) -> Pps {
        Pps { devices }
    }
}

/// `SEC.NSEC#SEQ` of sysfs `assert` → (ns since the epoch, sequence).
pub fn parse_assert(s: &str) -> Option<(i128, u64)> {
    let (stamp, seq) = s.trim().split_once('#')?;
    let (sec, nsec) = stamp.split_once('.')?;
    Some((sec.parse::<i128>().ok()? * 1_000_000_000 + nsec.parse::<i128>().ok()?, seq.parse().ok()?))
}

impl Source for Pps {
    fn round(&mut self, _samples: usize, realtime: Option<i128>) -> Vec<(ClockInfo, Result<Sample, String>)> {
        let info = |name: String| ClockInfo {
            name,
            family: Family::Pps,
            description: "a PPS source's edges (the reference's whole seconds), modulo one second".into(),
            resolution_ns: 1,
            ns_per_count: None,
            modulo_ns: Some(1_000_000_000),
            note: Some("the edge's CLOCK_REALTIME stamp modulo 1 s; interrupt latency not included".into()),
        };
        if self.devices.is_empty() {
            return vec![(info("pps".into()), Err("no [pps] source configured".into()))];
        }
        self.devices
            .iter()
            .map(|dev| {
                let short = dev
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| dev.display().to_string());
                let sys = format!("/sys/class/pps/{short}/assert");
                let r = std::fs::read_to_string(&sys)
                    .map_err(|e| format!("reading {sys}: {e}"))
                    .and_then(|s| parse_assert(&s).ok_or_else(|| format!("{sys}: not SEC.NSEC#SEQ: {}", s.trim())))
                    .and_then(|(stamp, seq)| {
                        if seq == 0 {
                            return Err(format!("{short} has given no edge yet"));
                        }
                        let real = realtime.ok_or("CLOCK_REALTIME could not be read")?;
                        let phase = stamp.rem_euclid(1_000_000_000);
                        Ok(Sample {
                            offset: (real - phase).rem_euclid(1_000_000_000),
                            uncertainty: 1_000,
                            per_cpu: Vec::new(),
                        })
                    });
                (info(format!("pps:{short}")), r)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_sysfs_assert() {
        assert_eq!(super::parse_assert("1733500000.250000123#17\n"), Some((1_733_500_000_250_000_123, 17)));
        assert_eq!(super::parse_assert("0.000000000#0"), Some((0, 0)));
        assert_eq!(super::parse_assert("garbage"), None);
    }
}
