//! Records the kernel stages per CPU before handing them to the CPU's ring in one piece
//! (`ebpf/src/staging.rs`): which CPUs hold some (the reader has `cp_flush` run there, see
//! `Engine::flush_staged`), and taking what is left once the probes are detached.

use aya::{
    maps::{MapData, MapError, PerCpuArray},
    util::KernelVersion,
};
use clockpath_common::record::{RECORD_HEAD_BYTES, Record, STAGE_RECORDS, Staged};

use crate::ring::decode_item;

/// Whether this kernel can run the flush program on a chosen CPU (`BPF_PROG_TEST_RUN` of a raw
/// tracepoint program with `BPF_F_TEST_RUN_ON_CPU`, Linux 5.10). Without it nothing stages.
pub fn supported() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(5, 10, 0))
}

/// The per-CPU `STAGED` map.
pub struct StagedRecords {
    pub(crate) map: PerCpuArray<MapData, Staged>,
}

impl StagedRecords {
    /// CPUs with records staged now (a snapshot: they may flush by themselves meanwhile).
    pub fn pending_cpus(&self) -> Result<Vec<u32>, MapError> {
        let values = self.map.get(&0, 0)?;
        Ok((0u32..).zip(values.iter()).filter(|(_, s)| s.n > 0).map(|(cpu, _)| cpu).collect())
    }

    /// Every staged record, CPU by CPU. Exact only once no program can stage any more (the
    /// probes are detached): a CPU's records are not taken out of its buffer.
    pub fn take(&self) -> Result<Vec<Record>, MapError> {
        let values = self.map.get(&0, 0)?;
        let mut out = Vec::new();
        for s in values.iter() {
            let heads = &s.records[..(s.n as usize).min(STAGE_RECORDS)];
            // SAFETY: `RecordHead` is plain old data, `RECORD_HEAD_BYTES` bytes each.
            let bytes =
                unsafe { std::slice::from_raw_parts(heads.as_ptr().cast::<u8>(), heads.len() * RECORD_HEAD_BYTES) };
            decode_item(bytes, &mut out);
        }
        Ok(out)
    }
}
