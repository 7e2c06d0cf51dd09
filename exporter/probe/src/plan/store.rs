//! Where each chain keeps its open instances: chains whose key components are all bounded
//! small integers (CPU ids, pids, softirq vectors, the constant key) get a region of the
//! `DIRECT` array (no hashing on the hot path); the others use the `INSTANCES` hash map.

use clockpath_common::limits::{MAX_DIRECT_ENTRIES, SOFTIRQ_VECTORS};
use serde::Serialize;

use super::{ChainPlan, PointPlan, Status};
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

    /// The bound of a value by the name of what it reads (a field, member or parameter named
    /// `pid`, `next_pid`, `cpu`, `vec`…).
    pub fn by_name(n: &str) -> Option<KeyBound> {
        match n {
            "pid" | "tid" | "tgid" | "next_pid" | "prev_pid" | "child_pid" | "parent_pid" => Some(KeyBound::Pid),
            "cpu" | "target_cpu" | "orig_cpu" | "dest_cpu" => Some(KeyBound::Cpu),
            "vec" | "vec_nr" => Some(KeyBound::SoftirqVector),
            _ => None,
        }
    }

    /// The bound of a value expression, judged by what it reads; `arg_name` is the parameter's
    /// name for a plain `argN` (from BTF). None when it may be any 64-bit value.
    pub fn of(v: &ValueExpr, arg_name: Option<&str>) -> Option<KeyBound> {
        let by_name = KeyBound::by_name;
        match v {
            ValueExpr::Cpu => Some(KeyBound::Cpu),
            ValueExpr::Tid | ValueExpr::Tgid => Some(KeyBound::Pid),
            ValueExpr::Global => Some(KeyBound::One),
            ValueExpr::Field(n) => by_name(n),
            ValueExpr::Arg { deref: Some(d), .. } | ValueExpr::Ret { deref: Some(d) } => {
                d.path.last().and_then(|n| by_name(n))
            }
            ValueExpr::Arg { deref: None, .. } => arg_name.and_then(by_name),
            ValueExpr::Ret { deref: None } => None,
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
        plan.store = Store::Hash;
        let points = plan.stages.iter().flat_map(|s| s.points.iter()).chain(plan.aborts.iter());
        let Some(bounds) = chain_bounds(points) else { continue };
        let range0 = bounds[0].range(kernel);
        let range1 = bounds.get(1).map_or(1, |b| b.range(kernel));
        let size = range0.saturating_mul(range1);
        if next.saturating_add(size) <= MAX_DIRECT_ENTRIES {
            plan.store = Store::Direct { base: next, range0, range1 };
            next += size;
        }
    }
}

/// The key bounds every probe point of a chain agrees on, if any. A point's targets are
/// alternatives for the same probe point, so they key on the same quantity: the point's bound
/// is what its targets with a known bound say (they must agree), and a target whose bound is
/// unknown (a tp_btf `arg0` whose BTF parameter has no name) shares it. The kernel checks every
/// direct-array key against the range anyway and counts what falls outside
/// (`key_out_of_range`). A point with no bounded target makes the chain use the hash map.
fn chain_bounds<'a>(points: impl Iterator<Item = &'a PointPlan>) -> Option<Vec<KeyBound>> {
    let mut chain: Option<Vec<KeyBound>> = None;
    for p in points {
        let known = p.candidates.iter().filter(|c| !matches!(c.status, Status::Missing(_)));
        let mut point: Option<&Vec<KeyBound>> = None;
        let mut any = false;
        for c in known {
            any = true;
            if let Some(b) = &c.key_bounds {
                match point {
                    None => point = Some(b),
                    Some(prev) if prev != b => return None,
                    Some(_) => {}
                }
            }
        }
        if !any {
            continue;
        }
        let point = point?;
        match &chain {
            None => chain = Some(point.clone()),
            Some(prev) if prev != point => return None,
            Some(_) => {}
        }
    }
    chain
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
