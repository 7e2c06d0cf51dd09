//! A PPS device through the kernel's RFC 2783 API (`linux/pps.h`): capabilities
//! (`PPS_GETCAP`), parameters (`PPS_GETPARAMS`/`PPS_SETPARAMS`, to enable the edge when it is
//! not) and edges (`PPS_FETCH`, waiting with a timeout).

use std::{
    fs,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::config::PpsEdge;

// Modes and capabilities (linux/pps.h).
const PPS_CAPTUREASSERT: i32 = 0x01;
const PPS_CAPTURECLEAR: i32 = 0x02;
const PPS_OFFSETASSERT: i32 = 0x10;
const PPS_OFFSETCLEAR: i32 = 0x20;
const PPS_ECHOASSERT: i32 = 0x40;
const PPS_ECHOCLEAR: i32 = 0x80;
const PPS_CANWAIT: i32 = 0x100;
const PPS_CANPOLL: i32 = 0x200;
const PPS_TSFMT_NTPFP: i32 = 0x2000;
const PPS_TSFMT_TSPEC: i32 = 0x1000;
const PPS_API_VERS_1: i32 = 1;

// The ioctl numbers encode `sizeof(struct ... *)`, a pointer: 8 on 64-bit kernels.
const PTR: libc::c_ulong = std::mem::size_of::<usize>() as libc::c_ulong;
const fn ioc(dir: libc::c_ulong, nr: libc::c_ulong) -> libc::c_ulong {
    (dir << 30) | (PTR << 16) | ((b'p' as libc::c_ulong) << 8) | nr
}
const PPS_GETPARAMS: libc::c_ulong = ioc(2, 0xa1);
const PPS_SETPARAMS: libc::c_ulong = ioc(1, 0xa2);
const PPS_GETCAP: libc::c_ulong = ioc(2, 0xa3);
const PPS_FETCH: libc::c_ulong = ioc(3, 0xa4);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PpsKtime {
    sec: i64,
    nsec: i32,
    flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PpsKinfo {
    assert_sequence: u32,
    clear_sequence: u32,
    assert_tu: PpsKtime,
    clear_tu: PpsKtime,
    current_mode: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PpsKparams {
    api_version: i32,
    mode: i32,
    assert_off_tu: PpsKtime,
    clear_off_tu: PpsKtime,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PpsFdata {
    info: PpsKinfo,
    timeout: PpsKtime,
}

// The kernel's layout on x86_64 (a wrong size would make the kernel read past the struct).
const _: () = assert!(std::mem::size_of::<PpsFdata>() == 64 && std::mem::size_of::<PpsKparams>() == 40);

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a PPS device (PPS_GETCAP failed)")]
    NotPps {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} cannot capture {edge} edges (it can: {can})")]
    NoEdge { path: PathBuf, edge: &'static str, can: String },
    #[error("{path} cannot wait for an edge (no PPS_CANWAIT)")]
    CannotWait { path: PathBuf },
    #[error("enabling {edge} capture on {path} (PPS_SETPARAMS needs CAP_SYS_TIME)")]
    Enable {
        path: PathBuf,
        edge: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}")]
    Fetch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One edge as the kernel stamped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub sequence: u32,
    /// CLOCK_REALTIME, ns since the epoch.
    pub realtime_ns: i64,
}

/// An open PPS device.
#[derive(Debug)]
pub struct Device {
    file: fs::File,
    path: PathBuf,
    edge: PpsEdge,
    /// The source's name and path from sysfs (`/sys/class/pps/ppsN/{name,path}`).
    pub name: String,
    pub source_path: String,
    /// The edge is enabled in the device's parameters.
    pub edge_enabled: bool,
    /// What PPS_GETCAP says the device can do.
    pub capabilities: Vec<&'static str>,
}

/// The names of the PPS_GETCAP bits set in `cap`.
fn capability_names(cap: i32) -> Vec<&'static str> {
    [
        (PPS_CAPTUREASSERT, "capture-assert"),
        (PPS_CAPTURECLEAR, "capture-clear"),
        (PPS_OFFSETASSERT, "offset-assert"),
        (PPS_OFFSETCLEAR, "offset-clear"),
        (PPS_ECHOASSERT, "echo-assert"),
        (PPS_ECHOCLEAR, "echo-clear"),
        (PPS_CANWAIT, "can-wait"),
        (PPS_CANPOLL, "can-poll"),
        (PPS_TSFMT_TSPEC, "timespec"),
        (PPS_TSFMT_NTPFP, "ntp-fixed-point"),
    ]
    .into_iter()
    .filter(|(b, _)| cap & b != 0)
    .map(|(_, n)| n)
    .collect()
}

fn ioctl<T>(file: &fs::File, request: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: `arg` is a valid, exclusively borrowed value of the type the request expects
    // (checked by the size assertion above for the structs).
    let r = unsafe { libc::ioctl(file.as_raw_fd(), request, arg as *mut T) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

fn edge_name(edge: PpsEdge) -> &'static str {
    match edge {
        PpsEdge::Assert => "assert",
        PpsEdge::Clear => "clear",
    }
}

impl Device {
    /// Open `path`, check it can capture and wait for `edge`, and enable that edge if the
    /// device's parameters do not already.
    pub fn open(path: &Path, edge: PpsEdge) -> Result<Device, DeviceError> {
        Self::open_with(path, edge, true)
    }

    /// Like `open`, changing nothing (`doctor`): `edge_enabled` says whether `run` would have
    /// to enable the edge.
    pub fn inspect(path: &Path, edge: PpsEdge) -> Result<Device, DeviceError> {
        Self::open_with(path, edge, false)
    }

    fn open_with(path: &Path, edge: PpsEdge, enable: bool) -> Result<Device, DeviceError> {
        let file = fs::File::open(path).map_err(|source| DeviceError::Open { path: path.into(), source })?;
        let mut cap: i32 = 0;
        ioctl(&file, PPS_GETCAP, &mut cap).map_err(|source| DeviceError::NotPps { path: path.into(), source })?;
        let bit = match edge {
            PpsEdge::Assert => PPS_CAPTUREASSERT,
            PpsEdge::Clear => PPS_CAPTURECLEAR,
        };
        if cap & bit == 0 {
            let can: Vec<&str> = [(PPS_CAPTUREASSERT, "assert"), (PPS_CAPTURECLEAR, "clear")]
                .into_iter()
                .filter(|(b, _)| cap & b != 0)
                .map(|(_, n)| n)
                .collect();
            return Err(DeviceError::NoEdge { path: path.into(), edge: edge_name(edge), can: can.join(", ") });
        }
        if cap & PPS_CANWAIT == 0 {
            return Err(DeviceError::CannotWait { path: path.into() });
        }
        let mut params = PpsKparams::default();
        let enable_error = |source| DeviceError::Enable { path: path.into(), edge: edge_name(edge), source };
        ioctl(&file, PPS_GETPARAMS, &mut params).map_err(enable_error)?;
        let edge_enabled = params.mode & bit != 0;
        if !edge_enabled && enable {
            // Only set what must be: SETPARAMS needs CAP_SYS_TIME.
            params.api_version = PPS_API_VERS_1;
            params.mode |= bit | PPS_TSFMT_TSPEC;
            ioctl(&file, PPS_SETPARAMS, &mut params).map_err(enable_error)?;
        }
        let sys = Path::new("/sys/class/pps").join(path.file_name().unwrap_or_default());
        let read = |f: &str| fs::read_to_string(sys.join(f)).map(|s| s.trim().to_string()).unwrap_or_default();
        Ok(Device {
            name: read("name"),
            source_path: read("path"),
            edge_enabled: edge_enabled || enable,
            capabilities: capability_names(cap),
            file,
            path: path.into(),
            edge,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next edge, waiting at most `timeout`; None when none came.
    pub fn fetch(&self, timeout: Duration) -> Result<Option<Event>, DeviceError> {
        let mut data = PpsFdata {
            timeout: PpsKtime {
                sec: timeout.as_secs() as i64,
                nsec: timeout.subsec_nanos() as i32,
                // Valid (PPS_TIME_INVALID clear): wait at most this long, not for ever.
                flags: 0,
            },
            ..Default::default()
        };
        match ioctl(&self.file, PPS_FETCH, &mut data) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIMEDOUT) | Some(libc::EINTR)) => return Ok(None),
            Err(source) => return Err(DeviceError::Fetch { path: self.path.clone(), source }),
        }
        let (sequence, tu) = match self.edge {
            PpsEdge::Assert => (data.info.assert_sequence, data.info.assert_tu),
            PpsEdge::Clear => (data.info.clear_sequence, data.info.clear_tu),
        };
        // A fetch that returns for the other edge leaves this one's counter at 0 until it fires.
        if sequence == 0 {
            return Ok(None);
        }
        Ok(Some(Event { sequence, realtime_ns: tu.sec * 1_000_000_000 + i64::from(tu.nsec) }))
    }
}

/// `/dev/ppsN` for every `/sys/class/pps/ppsN`, in order.
pub fn discover() -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/sys/class/pps")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("pps")?.parse().ok()?;
            Some((n, Path::new("/dev").join(name)))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_pps_h() {
        // As printed by a C program including <linux/pps.h> on x86_64.
        assert_eq!(PPS_GETPARAMS, 0x800870a1);
        assert_eq!(PPS_SETPARAMS, 0x400870a2);
        assert_eq!(PPS_GETCAP, 0x800870a3);
        assert_eq!(PPS_FETCH, 0xc00870a4);
    }

    #[test]
    fn capabilities_are_named() {
        assert_eq!(
            capability_names(PPS_CAPTUREASSERT | PPS_OFFSETASSERT | PPS_CANWAIT | PPS_TSFMT_TSPEC),
            ["capture-assert", "offset-assert", "can-wait", "timespec"]
        );
    }

    #[test]
    fn a_device_that_cannot_be_read_says_why() {
        // Write-only even for root: the open fails as for a device without read permission.
        let e = Device::open(Path::new("/proc/sys/vm/compact_memory"), PpsEdge::Assert).unwrap_err();
        assert!(
            matches!(&e, DeviceError::Open { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied),
            "{e:?}"
        );
        assert_eq!(
            format!("{:#}", anyhow::Error::new(e)),
            "cannot open /proc/sys/vm/compact_memory: Permission denied (os error 13)"
        );
    }

    #[test]
    fn a_file_that_is_not_a_pps_device_says_so() {
        let e = Device::open(Path::new("/dev/null"), PpsEdge::Assert).unwrap_err();
        assert!(matches!(e, DeviceError::NotPps { .. }), "{e}");
        assert_eq!(e.to_string(), "/dev/null is not a PPS device (PPS_GETCAP failed)");
        let e = Device::open(Path::new("/dev/pps-none"), PpsEdge::Assert).unwrap_err();
        assert!(matches!(e, DeviceError::Open { .. }), "{e}");
    }
}
