//! The BPF time helpers, read inside BPF programs (`ebpf/src/clocks.rs`) run on demand with
//! `BPF_PROG_TEST_RUN`. Each helper is read between two `bpf_ktime_get_ns` reads in the same
//! program, so its offset from CLOCK_MONOTONIC is bracketed in the kernel (tens of ns);
//! `bpf_ktime_get_ns` itself is bracketed by `clock_gettime` around the run.

use aya::{
    Ebpf, EbpfLoader,
    maps::Array,
    programs::{ProgramError, RawTracePoint, RawTracePointRunOptions, SocketFilter, TestRun as _, TestRunOptions},
};
use clockpath_common::clocks::{BPF_CLOCKS, ClockRead};
use clockpath_offline::clockdomain::audit::Family;

use super::{ClockInfo, Sample, Source, bracketed, posix, sample_of};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/clocks"));

/// The loaded object and, per helper, why its program could not be loaded.
pub struct Bpf {
    ebpf: Result<Ebpf, String>,
    refused: Vec<Option<String>>,
}

impl Bpf {
    pub fn load() -> Bpf {
        if OBJECT.is_empty() {
            return Bpf { ebpf: Err("this build carries no BPF object (AYA_BUILD_SKIP)".into()), refused: vec![] };
        }
        let mut loader = EbpfLoader::new();
        // No CO-RE relocations and no BTF-typed programs: no kernel BTF needed.
        loader.btf(None);
        let mut ebpf = match loader.load(OBJECT) {
            Ok(e) => e,
            Err(e) => {
                return Bpf {
                    ebpf: Err(format!("loading the clock programs: {}", crate::report(&e))),
                    refused: vec![],
                };
            }
        };
        let refused = BPF_CLOCKS
            .iter()
            .map(|(program, helper)| {
                let loaded = match ebpf.program_mut(program) {
                    None => Err(ProgramError::NotLoaded),
                    Some(aya::programs::Program::SocketFilter(p)) => p.load(),
                    Some(p) => <&mut RawTracePoint>::try_from(p).and_then(|p| p.load()),
                };
                loaded
                    .err()
                    .map(|e| format!("the kernel refused a program calling {helper}: {}", crate::loader::chain_msg(&e)))
            })
            .collect();
        Bpf { ebpf: Ok(ebpf), refused }
    }

    fn run(ebpf: &Ebpf, index: usize) -> Result<ClockRead, String> {
        let (program, _) = BPF_CLOCKS[index];
        let returned = match ebpf.program(program) {
            None => return Err(crate::report(&ProgramError::NotLoaded)),
            Some(aya::programs::Program::SocketFilter(p)) => {
                // A socket filter runs on a packet: an Ethernet header's worth of zeros.
                let packet = [0u8; 64];
                let p: &SocketFilter = p;
                p.test_run(TestRunOptions { data_in: Some(&packet), ..TestRunOptions::new() }).map(|r| r.return_value)
            }
            Some(p) => {
                // SAFETY: plain libc call.
                let cpu = u32::try_from(unsafe { libc::sched_getcpu() }).ok();
                <&RawTracePoint>::try_from(p)
                    .and_then(|p| p.test_run(RawTracePointRunOptions { cpu, ..RawTracePointRunOptions::new() }))
                    .map(|r| r.return_value)
            }
        }
        .map_err(|e| crate::report(&e))?;
        if returned != 0 {
            return Err(format!("{program} returned {returned}"));
        }
        let map = ebpf.map("CLOCK_READS").ok_or("no map CLOCK_READS")?;
        let reads: Array<_, ClockRead> = Array::try_from(map).map_err(|e| crate::report(&e))?;
        reads.get(&(index as u32), 0).map_err(|e| crate::report(&e))
    }
}

impl Source for Bpf {
    fn round(&mut self, samples: usize, _realtime: Option<i128>) -> Vec<(ClockInfo, Result<Sample, String>)> {
        let tick = posix::tick_ns();
        BPF_CLOCKS
            .iter()
            .enumerate()
            .map(|(i, &(_, helper))| {
                let jiffies = helper == "bpf_jiffies64";
                let coarse = helper == "bpf_ktime_get_coarse_ns";
                let resolution = if jiffies || coarse { tick.unwrap_or(1) } else { 1 };
                let info = ClockInfo {
                    name: format!("bpf:{}", helper.trim_start_matches("bpf_")),
                    family: Family::Bpf,
                    description: format!("{helper}() in a BPF program"),
                    resolution_ns: resolution,
                    ns_per_count: jiffies.then(|| tick.unwrap_or(1) as f64),
                    modulo_ns: None,
                    note: Some(if i == 0 {
                        "bracketed by clock_gettime(CLOCK_MONOTONIC) around BPF_PROG_TEST_RUN".into()
                    } else {
                        "bracketed inside the BPF program by bpf_ktime_get_ns".into()
                    }),
                };
                let r = match (&self.ebpf, self.refused.get(i).cloned().flatten()) {
                    (Err(e), _) => Err(e.clone()),
                    (Ok(_), Some(why)) => Err(why),
                    (Ok(_), None) if jiffies && tick.is_none() => Err("the kernel's tick (clock_getres of CLOCK_MONOTONIC_COARSE) is unknown: jiffies cannot be converted to ns".into()),
                    (Ok(ebpf), None) if i == 0 => bracketed(samples, || Self::run(ebpf, i)).map(|(b, r, a)| sample_of(b, r.value as i128, a, 1)),
                    (Ok(ebpf), None) => {
                        // The tightest in-kernel bracket of `samples` runs.
                        let mut best: Option<ClockRead> = None;
                        let mut err = None;
                        for _ in 0..samples.max(1) {
                            match Self::run(ebpf, i) {
                                Ok(r) if best.is_none_or(|b| r.after - r.before < b.after - b.before) => best = Some(r),
                                Ok(_) => {}
                                Err(e) => {
                                    err = Some(e);
                                    break;
                                }
                            }
                        }
                        match (err, best) {
                            (Some(e), _) => Err(e),
                            (None, Some(r)) => {
                                let value = if jiffies { r.value as i128 * tick.unwrap_or(1) as i128 } else { r.value as i128 };
                                Ok(sample_of(r.before as i128, value, r.after as i128, resolution))
                            }
                            (None, None) => Err("no run".into()),
                        }
                    }
                };
                (info, r)
            })
            .collect()
    }
}
