//! Loading the BPF object and attaching slot programs according to the plan.
//!
//! Every candidate that may be tried has its slot and role fixed before the object is loaded
//! (`plan::slots::assign`): the roles are the object's read-only data, so the verifier
//! specialises each slot program to its role. Then, for every probe point, the candidates are
//! tried in preference order: the first that loads and attaches wins, and the reason each
//! earlier one failed is kept. A chain with a stage that ends up with no attached point is
//! detached again and disabled.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::OwnedFd,
};

use aya::{
    Btf, Ebpf, EbpfLoader, Endianness,
    maps::{MapData, RingBuf},
    programs::{Program, ProgramError, RawTracePoint, RawTracePointRunOptions, TestRun as _},
};
use clockpath_common::{
    limits::{MAX_CHAINS, NUM_SLOTS},
    slot::{ROLE_NONE, SlotConfig, cause_key},
};

use crate::{
    kernel::{self, Kernel, btf::KernelBtf},
    maps::KernelMaps,
    plan::{Candidate, ChainPlan, ChainState, PlanKind, Status, direct_entries, slots::assign},
    ring::{RING_NAMES, RingLayout},
    staging::{self, StagedRecords},
    target::{AttachKind, Target},
};

/// How the object is sized and what it reports (the `[probe]` configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Ring buffer bytes, shared among the rings this machine's CPUs write (`RingLayout`).
    pub ring_bytes: u32,
    /// Open instances in the hash map, all chains together.
    pub max_instances: u32,
    /// Every stage hit also goes to the ring buffer.
    pub raw_hits: bool,
    /// Turn on the kernel's BPF run-time statistics while loaded.
    pub bpf_stats: bool,
}

/// The program that hands a CPU's staged records to its ring (`ebpf/src/staging.rs`).
const FLUSH_PROGRAM: &str = "cp_flush";

/// The BPF object, built by build.rs from `ebpf/`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/clockpath"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("this binary was built without its BPF object (AYA_BUILD_SKIP?); rebuild with bpf-linker installed")]
    NoObject,
    #[error("loading the BPF object failed (root or CAP_BPF+CAP_PERFMON needed)")]
    Object(#[source] aya::EbpfError),
    #[error("BPF map `{name}` is missing from the object")]
    NoMap { name: &'static str },
    #[error("BPF map `{name}`")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("probe.bpf_stats: enabling kernel BPF run-time statistics failed (needs CAP_SYS_ADMIN)")]
    Stats(#[source] aya::sys::SyscallError),
}

/// The loaded object, its attached programs and the plan they implement.
pub struct Engine {
    ebpf: Ebpf,
    /// aya's view of the kernel's BTF, for the attach ids of BTF-typed programs: built from
    /// `KernelBtf::attach_blob` (the kernel's type ids, only the names attaching needs) when a
    /// BTF-typed program is first loaded, and released when `attach` is done.
    btf: Option<Btf>,
    /// The BTF-typed targets `btf` can attach (tracepoints and functions by name).
    btf_names: BTreeSet<(bool, String)>,
    /// Every slot's role, as loaded (read-only in the kernel).
    configs: Vec<SlotConfig>,
    /// Slots in use.
    used: BTreeSet<u32>,
    /// Slots whose role runs in another slot's program (guest → host, `Candidate::host`).
    hosted: BTreeMap<u32, u32>,
    /// Kinds the kernel refused outright (e.g. fentry: EPERM), with the reason.
    refused: BTreeMap<AttachKind, String>,
    /// How the ring buffers are laid out on this machine.
    pub rings: RingLayout,
    /// One-segment chains stage their records per CPU (`staging`).
    pub staging: bool,
    /// Why the flush program could not be loaded, if it could not.
    flush_refused: Option<String>,
    pub chains: Vec<ChainPlan>,
    _stats: Option<OwnedFd>,
}

pub(crate) fn chain_msg(e: &dyn std::error::Error) -> String {
    // Verifier logs are long: the first line says what failed, the last lines why (the
    // instruction refused and the verifier's reason, before its "processed N insns").
    let full = crate::report(e);
    let mut lines = full.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    let rest: Vec<&str> = lines.collect();
    if rest.len() <= 1 {
        return rest.first().map_or(first.clone(), |l| format!("{first} {l}"));
    }
    tracing::debug!(log = %full, "verifier log");
    let tail = &rest[rest.len().saturating_sub(4)..];
    format!("{first} {} … {}", rest[0], tail.join(" | "))
}

impl Engine {
    /// Load the object with the configured sizes, and the roles of the slots `plans` will use
    /// (each candidate's `slot` is set; one that finds no free slot is unusable). Nothing is
    /// attached yet.
    pub fn load(probe: &LoadOptions, plans: &mut [ChainPlan]) -> Result<Engine, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        raise_memlock();
        let stats = if probe.bpf_stats {
            Some(aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(LoadError::Stats)?)
        } else {
            None
        };
        let rings = RingLayout::for_this_machine(probe.ring_bytes);
        let wakeup = u64::from(rings.ring_bytes / 4);
        let mask = rings.mask();
        let staging = staging::supported();
        let direct = direct_entries(plans);
        let configs = assign(plans, probe.raw_hits);
        let table: &[SlotConfig; NUM_SLOTS as usize] =
            configs.as_slice().try_into().map_err(|_| LoadError::NoMap { name: "SLOT_CONFIGS" })?;
        let mut loader = EbpfLoader::new();
        // The object has no CO-RE relocations, so aya needs no kernel BTF to load it (its
        // default parses all of /sys/kernel/btf/vmlinux); BTF-typed programs get a small one
        // to attach with (`ensure_btf`).
        loader.btf(None);
        for (i, name) in (0..).zip(RING_NAMES) {
            loader.map_max_entries(name, rings.size_of(i));
        }
        let ebpf = loader
            .map_max_entries("INSTANCES", probe.max_instances)
            .map_max_entries("DIRECT", direct.max(1))
            .override_global("WAKEUP_BYTES", &wakeup, true)
            .override_global("RING_MASK", &mask, true)
            .override_global("STAGING", &u32::from(staging), true)
            .override_global("SLOT_CONFIGS", table, true)
            .load(OBJECT)
            .map_err(LoadError::Object)?;
        let mut ebpf = ebpf;
        fill_cause_values(&mut ebpf, plans)?;
        // The flush program needs what every slot program needs (CAP_BPF, CAP_PERFMON): where
        // it cannot load, no chain will attach either, and the start fails naming what is missing.
        let flush_refused = if staging { load_flush(&mut ebpf).err() } else { None };
        Ok(Engine {
            ebpf,
            btf: None,
            btf_names: BTreeSet::new(),
            configs,
            used: BTreeSet::new(),
            hosted: BTreeMap::new(),
            refused: BTreeMap::new(),
            rings,
            staging,
            flush_refused,
            chains: Vec::new(),
            _stats: stats,
        })
    }

    /// Take the rings some CPU writes (once) for the reader.
    pub fn take_rings(&mut self) -> Result<Vec<RingBuf<MapData>>, LoadError> {
        RING_NAMES[..self.rings.used as usize].iter().map(|name| take(&mut self.ebpf, name)).collect()
    }

    /// Take the per-CPU staged records (once); None when nothing stages on this kernel.
    pub fn take_staged(&mut self) -> Result<Option<StagedRecords>, LoadError> {
        if !self.staging {
            return Ok(None);
        }
        Ok(Some(StagedRecords { map: take(&mut self.ebpf, "STAGED")? }))
    }

    /// Hand the records staged on `cpu` to its ring: runs the flush program there (an IPI to
    /// that CPU). Ok(false): a program on that CPU was writing them; try again later.
    pub fn flush_staged(&self, cpu: u32) -> Result<bool, String> {
        if let Some(why) = &self.flush_refused {
            return Err(format!("the flush program `{FLUSH_PROGRAM}` could not be loaded: {why}"));
        }
        let flush: &RawTracePoint = self
            .ebpf
            .program(FLUSH_PROGRAM)
            .ok_or(ProgramError::NotLoaded)
            .and_then(TryInto::try_into)
            .map_err(|e| crate::report(&e))?;
        let done = flush
            .test_run(RawTracePointRunOptions { cpu: Some(cpu), ..RawTracePointRunOptions::new() })
            .map_err(|e| crate::report(&e))?;
        Ok(done.return_value == 0)
    }

    /// Take the maps userspace reads (once).
    pub fn take_maps(&mut self) -> Result<KernelMaps, LoadError> {
        Ok(KernelMaps {
            hist: take(&mut self.ebpf, "HIST")?,
            counters: take(&mut self.ebpf, "CHAIN_COUNTERS")?,
            slot_hits: take(&mut self.ebpf, "SLOT_HITS")?,
            instances: take(&mut self.ebpf, "INSTANCES")?,
            active: take(&mut self.ebpf, "ACTIVE")?,
            swept: vec![0; MAX_CHAINS as usize],
            deleted: vec![0; MAX_CHAINS as usize],
        })
    }

    /// Attach every chain of the plan; chains that cannot run are disabled with a reason.
    pub fn attach(&mut self, plans: Vec<ChainPlan>) {
        // Chains first: the interference sources are only worth their cost (they fire on
        // every IRQ, softirq and context switch) when a running chain charges interference.
        let btf_targets: Vec<Target> = plans
            .iter()
            .flat_map(|c| c.stages.iter().flat_map(|s| s.points.iter()).chain(c.aborts.iter()))
            .flat_map(|p| p.candidates.iter())
            .filter(|c| c.status == Status::Ready && c.target.kind.is_btf_typed())
            .map(|c| c.target.clone())
            .collect();
        self.ensure_btf(&btf_targets);
        let (chains, sources): (Vec<ChainPlan>, Vec<ChainPlan>) = plans.into_iter().partition(ChainPlan::is_chain);
        for mut chain in chains {
            self.attach_chain(&mut chain);
            self.chains.push(chain);
        }
        let needed = self.chains.iter().any(|c| c.is_running() && c.charges_interference);
        for mut plan in sources {
            if needed {
                self.attach_chain(&mut plan);
            } else {
                plan.state = ChainState::NotNeeded("no running chain charges interference".into());
            }
            self.chains.push(plan);
        }
        self.btf = None;
        self.btf_names.clear();
    }

    /// Make `self.btf` able to attach every BTF-typed target in `targets` (rebuilt only when one
    /// is new). A kernel without readable BTF leaves it `None`: those loads then say why.
    fn ensure_btf(&mut self, targets: &[Target]) {
        let wanted: BTreeSet<(bool, String)> = targets
            .iter()
            .filter(|t| t.kind.is_btf_typed())
            .map(|t| (t.kind == AttachKind::TpBtf, t.name.clone()))
            .collect();
        if wanted.is_empty() || (self.btf.is_some() && wanted.is_subset(&self.btf_names)) {
            return;
        }
        self.btf_names.extend(wanted);
        let Ok(kernel_btf) = KernelBtf::load(std::path::Path::new(kernel::VMLINUX_BTF)) else {
            self.btf = None;
            return;
        };
        let tracepoints = self.btf_names.iter().filter(|(tp, _)| *tp).map(|(_, n)| n.as_str());
        let functions = self.btf_names.iter().filter(|(tp, _)| !*tp).map(|(_, n)| n.as_str());
        let blob = kernel_btf.attach_blob(tracepoints, functions);
        drop(kernel_btf);
        self.btf = Btf::parse(&blob, Endianness::default()).ok();
    }

    fn attach_chain(&mut self, chain: &mut ChainPlan) {
        if chain.kind == PlanKind::InterferenceSources {
            return self.attach_interference(chain);
        }
        let mut missing_stage = None;
        for (i, stage) in chain.stages.iter_mut().enumerate() {
            for point in &mut stage.points {
                self.attach_point(&mut point.candidates);
            }
            if missing_stage.is_none() && !stage.points.iter().any(|p| p.attached().is_some()) {
                missing_stage = Some(i);
            }
        }
        if missing_stage.is_none() {
            for point in &mut chain.aborts {
                self.attach_point(&mut point.candidates);
            }
        }
        match missing_stage {
            None => chain.state = ChainState::Running,
            Some(i) => {
                let stage = &chain.stages[i];
                let mut why = format!("stage `{}` has no usable target", stage.name);
                if let Some(r) = &stage.empty_reason {
                    why.push_str(&format!(": {r}"));
                } else {
                    let reasons: Vec<String> = stage
                        .points
                        .iter()
                        .flat_map(|p| &p.candidates)
                        .map(|c| format!("{}: {}", c.target, c.status.reason()))
                        .collect();
                    why.push_str(&format!(" ({})", reasons.join("; ")));
                }
                let mut slots = Vec::new();
                for p in chain.stages.iter_mut().flat_map(|s| s.points.iter_mut()).chain(chain.aborts.iter_mut()) {
                    for c in &mut p.candidates {
                        if let Status::Attached(slot) = c.status {
                            slots.push((c.target.kind, slot));
                            c.status = Status::Ready;
                        } else if c.status == Status::Standby {
                            c.status = Status::Ready;
                        }
                    }
                }
                for (kind, slot) in slots {
                    self.release(kind, slot);
                }
                tracing::warn!(chain = %chain.name, reason = %why, "chain disabled");
                chain.state = ChainState::Disabled(why);
            }
        }
    }

    /// Attach every interference source that can be; the others stay unavailable.
    fn attach_interference(&mut self, plan: &mut ChainPlan) {
        for stage in &mut plan.stages {
            for point in &mut stage.points {
                self.attach_point(&mut point.candidates);
            }
        }
        let attached: Vec<&str> = plan
            .stages
            .iter()
            .filter(|s| !s.points.is_empty() && s.points.iter().all(|p| p.attached().is_some()))
            .map(|s| s.name.as_str())
            .collect();
        plan.state = if attached.is_empty() {
            ChainState::Disabled("no interference source could attach".into())
        } else {
            ChainState::Running
        };
        tracing::info!(sources = %attached.join(" "), "interference sources attached");
    }

    fn attach_point(&mut self, candidates: &mut [Candidate]) {
        let mut attached = false;
        for cand in candidates.iter_mut() {
            if attached {
                if cand.status == Status::Ready {
                    cand.status = Status::Standby;
                }
                continue;
            }
            if cand.status != Status::Ready {
                continue;
            }
            if let Some(why) = self.refused.get(&cand.target.kind) {
                cand.status = Status::Unusable(why.clone());
                continue;
            }
            match self.attach_candidate(cand) {
                Ok(slot) => {
                    cand.status = Status::Attached(slot);
                    attached = true;
                }
                Err(why) => cand.status = why,
            }
        }
    }

    fn attach_candidate(&mut self, cand: &Candidate) -> Result<u32, Status> {
        let kind = cand.target.kind;
        let Some(slot) = cand.slot.filter(|s| !self.used.contains(s)) else {
            return Err(Status::Unusable(format!("no {kind} slot was reserved for this candidate")));
        };
        // Its host's program is attached and plays this role too: nothing more to attach.
        if let Some(host) = cand.host.filter(|h| self.used.contains(h)) {
            self.used.insert(slot);
            self.hosted.insert(slot, host);
            return Ok(slot);
        }
        let name = kind.program_name(slot - kind.slots().base);
        match self.load_and_attach(&name, cand) {
            Ok(()) => {
                self.used.insert(slot);
                Ok(slot)
            }
            Err(why) => {
                self.unload(&name);
                // A kind the kernel refuses for one function it refuses for all: remember it.
                if kind.is_btf_typed() && why.contains("EPERM") {
                    self.refused.insert(kind, why.clone());
                    return Err(Status::Unusable(why));
                }
                Err(Status::Failed(why))
            }
        }
    }

    fn load_and_attach(&mut self, name: &str, cand: &Candidate) -> Result<(), String> {
        let t = &cand.target;
        if t.kind.is_btf_typed() {
            self.ensure_btf(std::slice::from_ref(t));
        }
        let btf = self.btf.as_ref();
        let prog = self.ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing from the BPF object"))?;
        let no_btf = || "the kernel's BTF could not be read (/sys/kernel/btf/vmlinux)".to_string();
        let err = |what: &str, e: &dyn std::error::Error| {
            let msg = chain_msg(e);
            let msg = msg.trim_end().trim_end_matches("Verifier output:").trim_end().trim_end_matches('.').to_string();
            if msg.contains("os error 1)") {
                format!("{what} refused by the kernel (EPERM): {msg}")
            } else {
                format!("{what}: {msg}")
            }
        };
        match (t.kind, prog) {
            (AttachKind::Tracepoint, Program::TracePoint(p)) => {
                p.load().map_err(|e| err("load", &e))?;
                p.attach(t.category.as_deref().unwrap_or_default(), &t.name).map_err(|e| err("attach", &e))?;
            }
            (AttachKind::RawTracepoint, Program::RawTracePoint(p)) => {
                p.load().map_err(|e| err("load", &e))?;
                p.attach(&t.name).map_err(|e| err("attach", &e))?;
            }
            (AttachKind::TpBtf, Program::BtfTracePoint(p)) => {
                p.load(&t.name, btf.ok_or_else(no_btf)?).map_err(|e| err("tp_btf load", &e))?;
                p.attach().map_err(|e| err("tp_btf attach", &e))?;
            }
            (AttachKind::Kprobe | AttachKind::Kretprobe, Program::KProbe(p)) => {
                p.load().map_err(|e| err("load", &e))?;
                p.attach(&t.name, 0).map_err(|e| err("kprobe attach", &e))?;
            }
            (AttachKind::Fentry, Program::FEntry(p)) => {
                p.load(&t.name, btf.ok_or_else(no_btf)?).map_err(|e| err("fentry load", &e))?;
                p.attach().map_err(|e| err("fentry attach", &e))?;
            }
            (AttachKind::Fexit, Program::FExit(p)) => {
                p.load(&t.name, btf.ok_or_else(no_btf)?).map_err(|e| err("fexit load", &e))?;
                p.attach().map_err(|e| err("fexit attach", &e))?;
            }
            (kind, _) => return Err(format!("program {name} is not a {kind} program")),
        }
        Ok(())
    }

    fn unload(&mut self, name: &str) {
        let Some(prog) = self.ebpf.program_mut(name) else {
            return;
        };
        // Unloading also detaches; a program that never loaded reports an error we ignore.
        let _ = match prog {
            Program::TracePoint(p) => p.unload(),
            Program::RawTracePoint(p) => p.unload(),
            Program::BtfTracePoint(p) => p.unload(),
            Program::KProbe(p) => p.unload(),
            Program::FEntry(p) => p.unload(),
            Program::FExit(p) => p.unload(),
            _ => Ok(()),
        };
    }

    fn release(&mut self, kind: AttachKind, slot: u32) {
        self.used.remove(&slot);
        // A hosted role has no program of its own; its host's is released with its own role
        // (both are points of one chain).
        if self.hosted.remove(&slot).is_none() {
            self.unload(&kind.program_name(slot - kind.slots().base));
        }
    }

    /// Check that `target`'s attach kind works by attaching a slot program with no role to
    /// it (the program returns at once), then detaching it.
    pub fn probe_kind(&mut self, target: &Target, kernel: &Kernel) -> Result<(), String> {
        let kind = target.kind;
        if matches!(kind, AttachKind::Kprobe | AttachKind::Kretprobe) && !kernel.kprobe_pmu() {
            return Err(kernel::kprobes_missing_reason());
        }
        // A slot with no role: its program returns at once. (Tracepoint families differ only
        // in the window they copy, and none is copied for a slot with no role.)
        let range = kind.slots();
        let Some(slot) = (range.base..range.base + range.count)
            .rev()
            .find(|&s| self.configs[s as usize].role == ROLE_NONE && !self.used.contains(&s))
        else {
            return Err(format!("every {kind} slot has a role; none is free to probe with"));
        };
        let name = kind.program_name(slot - range.base);
        let cand = Candidate::new(target.clone(), String::new());
        let result = self.load_and_attach(&name, &cand);
        self.unload(&name);
        result
    }

    /// Attach the empty baseline program of `target`'s kind (`cp_empty_tp`, `cp_empty_btf`,
    /// `cp_empty_raw`): the floor the overhead benchmark compares stage programs against.
    /// Returns the program name, for `run_stats`.
    pub fn attach_baseline(&mut self, target: &Target) -> Result<String, String> {
        let name = match target.kind {
            AttachKind::Tracepoint => "cp_empty_tp",
            AttachKind::TpBtf => "cp_empty_btf",
            AttachKind::RawTracepoint => "cp_empty_raw",
            other => return Err(format!("no baseline program for {other}")),
        };
        let cand = Candidate::new(target.clone(), String::new());
        self.load_and_attach(name, &cand)?;
        Ok(name.to_string())
    }

    /// Kernel run time (ns) and run count of a loaded program, by name (needs bpf_stats).
    pub fn run_stats(&self, program: &str) -> Option<(u64, u64)> {
        let info = self.ebpf.program(program)?.info().ok()?;
        Some((info.run_time().as_nanos() as u64, info.run_count()))
    }

    /// Detach every program (maps stay readable). Called on shutdown before the final drain,
    /// so no record is written after it.
    pub fn detach_all(&mut self) {
        let attached: Vec<(AttachKind, u32)> = self
            .chains
            .iter()
            .flat_map(|c| c.stages.iter().flat_map(|s| s.points.iter()).chain(c.aborts.iter()))
            .flat_map(|p| p.candidates.iter())
            .filter_map(|c| match c.status {
                Status::Attached(slot) => Some((c.target.kind, slot)),
                _ => None,
            })
            .collect();
        for (kind, slot) in attached {
            self.release(kind, slot);
        }
    }

    /// Kernel run time and run count of each attached slot program (needs bpf_stats).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let mut out = Vec::new();
        for chain in &self.chains {
            for (stage, points) in chain
                .stages
                .iter()
                .map(|s| (s.name.as_str(), &s.points))
                .chain(std::iter::once(("abort", &chain.aborts)))
            {
                for c in points.iter().flat_map(|p| p.candidates.iter()) {
                    let Status::Attached(slot) = c.status else {
                        continue;
                    };
                    // A hosted role's cost is its host program's: reported there.
                    if self.hosted.contains_key(&slot) {
                        continue;
                    }
                    let name = c.target.kind.program_name(slot - c.target.kind.slots().base);
                    let Some(Ok(info)) = self.ebpf.program(&name).map(|p| p.info()) else {
                        continue;
                    };
                    let guest = self.hosted.iter().find(|(_, h)| **h == slot).map(|(g, _)| *g);
                    let also = guest.and_then(|g| stage_of_slot(chain, g)).map(|s| format!("+{s}")).unwrap_or_default();
                    out.push(ProgramStats {
                        chain: chain.name.clone(),
                        stage: format!("{stage}{also}"),
                        program: name,
                        target: c.target.to_string(),
                        run_time_ns: info.run_time().as_nanos() as u64,
                        run_count: info.run_count(),
                    });
                }
            }
        }
        out
    }
}

/// The stage (or `abort`) whose candidate uses `slot`.
fn stage_of_slot(chain: &ChainPlan, slot: u32) -> Option<String> {
    let uses =
        |points: &[crate::plan::PointPlan]| points.iter().flat_map(|p| &p.candidates).any(|c| c.slot == Some(slot));
    chain
        .stages
        .iter()
        .find(|s| uses(&s.points))
        .map(|s| s.name.clone())
        .or_else(|| uses(&chain.aborts).then(|| "abort".to_string()))
}

/// Kernel-measured cost of one slot program.
#[derive(Clone, Debug)]
pub struct ProgramStats {
    pub chain: String,
    pub stage: String,
    pub program: String,
    pub target: String,
    pub run_time_ns: u64,
    pub run_count: u64,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, LoadError> {
    let map = ebpf.take_map(name).ok_or(LoadError::NoMap { name })?;
    T::try_from(map).map_err(|source| LoadError::Map { name, source })
}

/// Write the value → cause maps of chains whose causes come from a captured value
/// (`CAUSE_BY_VALUE`). The map stays in the object: the programs, loaded later, refer to it.
fn fill_cause_values(ebpf: &mut Ebpf, plans: &[ChainPlan]) -> Result<(), LoadError> {
    const NAME: &str = "CAUSE_BY_VALUE";
    let entries: Vec<(u64, u32)> = plans
        .iter()
        .filter(|p| p.is_chain())
        .flat_map(|p| p.cause_values.iter().map(move |&(v, c)| (cause_key(p.index, v), u32::from(c))))
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let map = ebpf.map_mut(NAME).ok_or(LoadError::NoMap { name: NAME })?;
    let mut map: aya::maps::HashMap<_, u64, u32> =
        aya::maps::HashMap::try_from(map).map_err(|source| LoadError::Map { name: NAME, source })?;
    for (key, cause) in entries {
        map.insert(key, cause, 0).map_err(|source| LoadError::Map { name: NAME, source })?;
    }
    Ok(())
}

/// Load the flush program (`FLUSH_PROGRAM`); the error's first line otherwise.
fn load_flush(ebpf: &mut Ebpf) -> Result<(), String> {
    let flush: &mut RawTracePoint = ebpf
        .program_mut(FLUSH_PROGRAM)
        .ok_or(ProgramError::NotLoaded)
        .and_then(TryInto::try_into)
        .map_err(|e| chain_msg(&e))?;
    flush.load().map_err(|e| chain_msg(&e))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("setrlimit(RLIMIT_MEMLOCK) failed; fine on kernels with memcg accounting");
    }
}
