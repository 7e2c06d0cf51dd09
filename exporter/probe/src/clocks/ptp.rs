//! PTP hardware clocks (`/dev/ptp*`), read as dynamic POSIX clocks (`clock_gettime` on
//! `FD_TO_CLOCKID(fd)`). In a KVM guest `ptp_kvm` is the host's CLOCK_REALTIME: its offset
//! minus the guest's realtime offset is host − guest directly.

use std::{fs, os::fd::AsRawFd as _, os::unix::fs::OpenOptionsExt as _};

use clockpath_offline::clockdomain::audit::Family;

use super::{ClockInfo, Sample, Source, bracketed, posix, sample_of};

/// A device: its name (`ptp0`), its `clock_name`, and the open file or why not.
type Device = (String, String, Result<fs::File, String>);

pub struct Ptp {
    devices: Result<Vec<Device>, String>,
}

impl Ptp {
    pub fn open() -> Ptp {
        let dir = "/sys/class/ptp";
        let mut names: Vec<String> = match fs::read_dir(dir) {
            Ok(d) => d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        if names.is_empty() {
            return Ptp {
                devices: Err("no PTP hardware clock (/sys/class/ptp is empty; in a KVM guest `modprobe ptp_kvm` gives the host's clock)".into()),
            };
        }
        let devices = names
            .into_iter()
            .map(|n| {
                let clock_name = fs::read_to_string(format!("{dir}/{n}/clock_name"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                let f = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(format!("/dev/{n}"))
                    .map_err(|e| format!("opening /dev/{n}: {e}"));
                (n, clock_name, f)
            })
            .collect();
        Ptp { devices: Ok(devices) }
    }
}

/// `FD_TO_CLOCKID` of linux/posix-timers.h.
fn clockid(fd: libc::c_int) -> libc::clockid_t {
    ((!fd) << 3) | 3
}

impl Source for Ptp {
    fn round(&mut self, samples: usize, _realtime: Option<i128>) -> Vec<(ClockInfo, Result<Sample, String>)> {
        let info = |name: &str, clock_name: &str| ClockInfo {
            name: if name.is_empty() { "ptp".into() } else { format!("ptp:{name}") },
            family: Family::Ptp,
            description: if clock_name.is_empty() {
                "PTP hardware clock".into()
            } else {
                format!("PTP hardware clock \"{clock_name}\"")
            },
            resolution_ns: 1,
            ns_per_count: None,
            modulo_ns: None,
            note: (clock_name == "KVM virtual PTP").then(|| "ptp_kvm: the KVM host's CLOCK_REALTIME".to_string()),
        };
        match &self.devices {
            Err(e) => vec![(info("", ""), Err(e.clone()))],
            Ok(devs) => devs
                .iter()
                .map(|(n, clock_name, f)| {
                    let r = match f {
                        Err(e) => Err(e.clone()),
                        Ok(f) => {
                            let id = clockid(f.as_raw_fd());
                            bracketed(samples, || {
                                posix::read(id).ok_or_else(|| {
                                    format!("clock_gettime(/dev/{n}): {}", std::io::Error::last_os_error())
                                })
                            })
                            .map(|(b, v, a)| sample_of(b, v, a, 1))
                        }
                    };
                    (info(n, clock_name), r)
                })
                .collect(),
        }
    }
}
