//! The CPU's time-stamp counter, read in userspace on each CPU, in ns by the kernel's own
//! conversion (the `time_mult`/`time_shift` perf publishes for TSC → sched_clock), else by a
//! frequency measured against CLOCK_MONOTONIC; and the hypervisor's CPUID vendor.

use std::sync::OnceLock;

use clockpath_offline::clockdomain::audit::{CpuOffset, Family};

use super::{ClockInfo, Sample, Source, bracketed, mono, on_cpu, online_cpus, sample_of};

/// The TSC now (cycles).
#[cfg(target_arch = "x86_64")]
pub fn read() -> Option<u64> {
    // SAFETY: RDTSC has no preconditions on x86_64.
    Some(unsafe { std::arch::x86_64::_rdtsc() })
}

#[cfg(not(target_arch = "x86_64"))]
pub fn read() -> Option<u64> {
    None
}

/// The hypervisor's vendor string (CPUID leaf 0x40000000), e.g. "KVMKVMKVM".
#[cfg(target_arch = "x86_64")]
pub fn hypervisor_vendor() -> Option<String> {
    #[allow(unused_unsafe, reason = "__cpuid is unsafe on older toolchains, safe on newer ones")]
    // SAFETY: CPUID has no preconditions on x86_64.
    let r = unsafe { std::arch::x86_64::__cpuid(0x4000_0000) };
    let bytes: Vec<u8> = [r.ebx, r.ecx, r.edx].iter().flat_map(|w| w.to_le_bytes()).filter(|&b| b != 0).collect();
    let s = String::from_utf8_lossy(&bytes).trim().to_string();
    (!s.is_empty()).then_some(s)
}

#[cfg(not(target_arch = "x86_64"))]
pub fn hypervisor_vendor() -> Option<String> {
    None
}

/// ns per TSC cycle and where it comes from.
pub fn ns_per_cycle() -> Option<(f64, &'static str)> {
    static CONV: OnceLock<Option<(f64, &'static str)>> = OnceLock::new();
    *CONV.get_or_init(|| perf_conversion().map(|k| (k, "the kernel's TSC → ns conversion (perf time_mult/time_shift)")).or_else(|| measured().map(|k| (k, "a frequency measured against CLOCK_MONOTONIC over 20 ms (the kernel publishes none here: perf cap_user_time is 0)"))))
}

/// linux/perf_event.h (not in the libc crate).
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// perf's mmap page of a dummy software event: with `cap_user_time`, ns = cyc × mult >> shift.
fn perf_conversion() -> Option<f64> {
    // perf_event_attr, PERF_ATTR_SIZE_VER0 (64 bytes): type, size, config = SOFTWARE, DUMMY.
    let mut attr = [0u64; 8];
    attr[0] = 1 | (64u64 << 32); // type = PERF_TYPE_SOFTWARE, size = 64
    attr[1] = 9; // config = PERF_COUNT_SW_DUMMY
    attr[6] = 1; // disabled
    // SAFETY: a valid attr of the size it states; pid 0 (this thread), cpu −1, no group.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, PERF_FLAG_FD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let fd = fd as libc::c_int;
    // SAFETY: maps one page of the event's fd read-only; unmapped below.
    let page = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, fd, 0) };
    let out = if page == libc::MAP_FAILED {
        None
    } else {
        let p = page as *const u8;
        // SAFETY: offsets within struct perf_event_mmap_page (capabilities at 40, time_shift at
        // 50, time_mult at 52), all inside the mapped page.
        let (caps, shift, mult) = unsafe {
            (
                std::ptr::read_volatile(p.add(40) as *const u64),
                std::ptr::read_volatile(p.add(50) as *const u16),
                std::ptr::read_volatile(p.add(52) as *const u32),
            )
        };
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(page, 4096) };
        let cap_user_time = caps & (1 << 3) != 0;
        (cap_user_time && mult != 0).then(|| mult as f64 / (1u64 << shift) as f64)
    };
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    out
}

fn measured() -> Option<f64> {
    let (b0, c0, a0) = bracketed(8, || read().ok_or_else(String::new)).ok()?;
    let start = mono();
    while mono() - start < 20_000_000 {
        std::hint::spin_loop();
    }
    let (b1, c1, a1) = bracketed(8, || read().ok_or_else(String::new)).ok()?;
    let ns = ((b1 + a1) - (b0 + a0)) as f64 / 2.0;
    (c1 > c0).then(|| ns / (c1 - c0) as f64)
}

pub struct Tsc;

impl Source for Tsc {
    fn round(&mut self, samples: usize, _realtime: Option<i128>) -> Vec<(ClockInfo, Result<Sample, String>)> {
        let conv = ns_per_cycle();
        let info = ClockInfo {
            name: "tsc".into(),
            family: Family::Tsc,
            description: "the time-stamp counter (RDTSC), per CPU".into(),
            resolution_ns: 1,
            ns_per_count: conv.map(|c| c.0),
            modulo_ns: None,
            note: conv.map(|c| format!("cycles to ns by {}", c.1)),
        };
        let r = match (read(), conv) {
            (None, _) => Err("no TSC on this architecture".into()),
            (Some(_), None) => {
                Err("the TSC's frequency is unknown: perf publishes no conversion and it could not be measured".into())
            }
            (Some(_), Some((k, _))) => {
                let per: Result<Vec<(u32, Sample)>, String> = online_cpus()
                    .into_iter()
                    .map(|cpu| {
                        on_cpu(cpu, || bracketed(samples, || read().ok_or_else(String::new)))?
                            .map(|(b, c, a)| (cpu, sample_of(b, (c as f64 * k) as i128, a, 1)))
                    })
                    .collect();
                per.and_then(|per| {
                    let mut best = per.iter().map(|(_, s)| s.clone()).min_by_key(|s| s.uncertainty).ok_or("no CPU")?;
                    if per.len() > 1 {
                        best.per_cpu = per
                            .iter()
                            .map(|(cpu, s)| CpuOffset {
                                cpu: *cpu,
                                offset_ns: s.offset as i64,
                                uncertainty_ns: s.uncertainty,
                            })
                            .collect();
                    }
                    Ok(best)
                })
            }
        };
        vec![(info, r)]
    }
}
