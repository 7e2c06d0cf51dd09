//! Where each chain keeps its open instances: chains whose key components are all bounded
//! small integers (CPU ids, pids, softirq vectors, the constant key) get a region of the
//! `DIRECT` array (no hashing on the hot path); the others use the `INSTANCES` hash map.

use clockpath_common::limits::{MAX_DIRECT_ENTRIES, SOFTIRQ_VECTORS};
use serde::Serialize;

use super::{ChainPlan, Status};
use crate::{kernel::Kernel, value::ValueExpr};

/// A key component with a known small range, so its chain can keep instances in an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyBound {
    One,
    Cpu,
    Pid,
    SoftirqVector,
}

impl KeyBound {
    /// Values are below this on `kernel`.
    pub fn range(self, kernel: &Kernel) -> u32 {
        match self {
            KeyBound::One => 1,
            KeyBound::Cpu => kernel.nr_cpu_ids(),
            KeyBound::Pid => kernel.pid_max(),
            KeyBound::SoftirqVector => SOFTIRQ_VECTORS,
        }
    }

    /// The bound of a value expression, judged by what it reads (a field or member named
    /// `pid`, `next_pid`, `cpu`, `vec`…); None when it may be any 64-bit value.
    pub fn of(v: &ValueExpr) -> Option<KeyBound> {
        let by_name = |n: &str| match n {
            "pid" | "tid" | "tgid" | "next_pid" | "prev_pid" | "child_pid" | "parent_pid" => Some(KeyBound::Pid),
            "cpu" | "target_cpu" | "orig_cpu" | "dest_cpu" => Some(KeyBound::Cpu),
            "vec" | "vec_nr" => Some(KeyBound::SoftirqVector),
            _ => None,
        };
        match v {
            ValueExpr::Cpu => Some(KeyBound::Cpu),
            ValueExpr::Tid | ValueExpr::Tgid => Some(KeyBound::Pid),
            ValueExpr::Global => Some(KeyBound::One),
            ValueExpr::Field(n) => by_name(n),
            ValueExpr::Arg { deref: Some(d), .. } | ValueExpr::Ret { deref: Some(d) } => {
                d.path.last().and_then(|n| by_name(n))
            }
            _ => None,
        }
    }
}

/// Where a chain keeps its open instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Store {
    /// The INSTANCES hash map (any key).
    Hash,
    /// DIRECT[base + k0 * range1 + k1].
    Direct { base: u32, range0: u32, range1: u32 },
}

/// Give each chain whose every key component is bounded, the same way on every target, an
/// array region; the others use the hash map.
pub(super) fn assign_stores(plans: &mut [ChainPlan], kernel: &Kernel) {
    let mut next = 0u32;
    for plan in plans.iter_mut() {
        let cands = plan
            .stages
            .iter()
            .flat_map(|s| s.points.iter())
            .chain(plan.aborts.iter())
            .flat_map(|p| p.candidates.iter())
            .filter(|c| !matches!(c.status, Status::Missing(_)));
        let mut bounds: Option<Vec<KeyBound>> = None;
        let mut ok = true;
        for c in cands {
            match (&c.key_bounds, &bounds) {
                (None, _) => ok = false,
                (Some(b), None) => bounds = Some(b.clone()),
                (Some(b), Some(prev)) => ok &= b == prev,
            }
        }
        plan.store = Store::Hash;
        let Some(bounds) = bounds.filter(|_| ok) else {
            continue;
        };
        let range0 = bounds[0].range(kernel);
        let range1 = bounds.get(1).map_or(1, |b| b.range(kernel));
        let size = range0.saturating_mul(range1);
        if next.saturating_add(size) <= MAX_DIRECT_ENTRIES {
            plan.store = Store::Direct { base: next, range0, range1 };
            next += size;
        }
    }
}

/// Entries the DIRECT array needs for these plans (at least 1).
pub fn direct_entries(plans: &[ChainPlan]) -> u32 {
    plans
        .iter()
        .map(|p| match p.store {
            Store::Direct { base, range0, range1 } => base + range0 * range1,
            Store::Hash => 0,
        })
        .max()
        .unwrap_or(0)
        .max(1)
}
