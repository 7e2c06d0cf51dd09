//! The built-in chains' attach plans on captured kernels, without root: every fallback rule
//! of every built-in chain on this development machine's 6.18 kernel (no kprobes, fentry
//! refused at load, `read_tsc` ambiguous, `timekeeping_update_from_shadow` inlined) and on
//! the stock Debian 6.1 kernel the guest tests boot (kprobes and fentry, `read_tsc` notrace).
//!
//! The fixtures are `clockpath doctor --capture` of each kernel (see
//! `exporter/probe/fixtures/kernels/README.md`); the resolver reads them through the same
//! interface as the running kernel.

use std::path::PathBuf;

use clockpath::config::Config;
use clockpath_probe::{
    kernel::Kernel,
    plan::{self, ChainPlan, PlanKind, Status, Store},
    target::AttachKind,
};

fn fixture(name: &str) -> Kernel {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../probe/fixtures/kernels").join(name);
    assert!(dir.is_dir(), "fixture {} is missing", dir.display());
    Kernel::fixture(dir)
}

/// The default config's chains, resolved on a fixture (resolution must succeed: a built-in
/// config that does not resolve is a bug).
fn plans(kernel: &Kernel) -> Vec<ChainPlan> {
    plan::resolve(&Config::builtin().chain_specs(), kernel).unwrap_or_else(|issues| panic!("{issues:#?}"))
}

fn chain<'a>(plans: &'a [ChainPlan], name: &str) -> &'a ChainPlan {
    plans.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no chain {name}"))
}

/// (target, state, reason) of every candidate of `stage` (`abort` for abort points), points
/// in order.
fn candidates(p: &ChainPlan, stage: &str) -> Vec<(String, &'static str, String)> {
    let points = if stage == "abort" {
        &p.aborts
    } else {
        &p.stages.iter().find(|s| s.name == stage).unwrap_or_else(|| panic!("no stage {stage}")).points
    };
    points
        .iter()
        .flat_map(|pt| &pt.candidates)
        .map(|c| (c.target.to_string(), c.status.label(), c.status.reason().to_string()))
        .collect()
}

fn state_of(p: &ChainPlan, stage: &str, target: &str) -> (&'static str, String) {
    candidates(p, stage)
        .into_iter()
        .find(|(t, _, _)| t == target)
        .map(|(_, s, r)| (s, r))
        .unwrap_or_else(|| panic!("{}: stage {stage} has no candidate {target}: {:#?}", p.name, candidates(p, stage)))
}

/// Labels of the first-read points: one per registered clocksource with a known read function.
fn first_read_labels(p: &ChainPlan) -> Vec<String> {
    let stage = p.stages.iter().find(|s| s.name == "first_read").expect("first_read stage");
    stage.points.iter().filter_map(|pt| pt.label.clone()).collect()
}

#[test]
fn the_capture_records_what_the_kernels_are() {
    let dev = fixture("dev-6.18");
    assert!(dev.release().starts_with("6.18"), "{}", dev.release());
    assert!(!dev.kprobe_pmu(), "the 6.18 development kernel has no kprobe PMU");
    let debian = fixture("debian-6.1");
    assert!(debian.release().starts_with("6.1.") && debian.release().ends_with("-amd64"), "{}", debian.release());
    assert!(debian.kprobe_pmu());
    assert_eq!(debian.traceable("read_tsc"), Some(false), "read_tsc is notrace in Debian's kernel");
    assert_eq!(debian.traceable("read_hpet"), Some(true));
    assert_eq!(dev.traceable("read_tsc"), None, "6.18 here refuses to list traceable functions");
    assert_eq!(dev.symbol("read_tsc").map(|s| s.count), Some(2), "two static read_tsc in 6.18's kallsyms");
    assert!(dev.btf().unwrap().has_tracepoint("sched_switch"));
    assert!(debian.btf().unwrap().has_function("change_clocksource"));
}

#[test]
fn sched_wakeup_prefers_tp_btf_and_keeps_fallbacks_on_both_kernels() {
    for k in ["dev-6.18", "debian-6.1"] {
        let plans = plans(&fixture(k));
        let p = chain(&plans, "sched_wakeup");
        let wakeup = candidates(p, "wakeup");
        assert_eq!(
            wakeup.iter().map(|(t, s, _)| (t.as_str(), *s)).collect::<Vec<_>>(),
            [
                ("tp_btf:sched_wakeup", "ready"),
                ("tracepoint:sched:sched_wakeup", "ready"),
                ("raw_tracepoint:sched_wakeup", "ready"),
                ("tp_btf:sched_wakeup_new", "ready"),
                ("tracepoint:sched:sched_wakeup_new", "ready"),
                ("raw_tracepoint:sched_wakeup_new", "ready"),
            ],
            "{k}"
        );
        assert_eq!(state_of(p, "switch_in", "tp_btf:sched_switch").0, "ready", "{k}");
        // Keyed by pid: instances in the direct array, no hashing.
        assert!(matches!(p.store, Store::Direct { .. }), "{k}: {:?}", p.store);
        // arg0->pid resolved through the BTF slice to task_struct's pid.
        let c = &p.stages[0].points[0].candidates[0];
        assert_eq!(c.key0.size, 4, "{k}: pid is an int");
        assert!(c.key0.offset > 0, "{k}: task_struct.pid offset");
    }
}

#[test]
fn softirq_is_keyed_per_cpu_and_vector_and_hrtimer_by_timer_address() {
    for k in ["dev-6.18", "debian-6.1"] {
        let plans = plans(&fixture(k));
        let s = chain(&plans, "softirq");
        assert!(matches!(s.store, Store::Direct { .. }), "{k}: {:?}", s.store);
        assert!(s.stages[0].first_hit_only);
        let h = chain(&plans, "hrtimer");
        assert_eq!(h.store, Store::Hash, "{k}: a timer address is unbounded");
        assert_eq!(state_of(h, "abort", "tp_btf:hrtimer_cancel").0, "ready", "{k}");
    }
}

#[test]
fn clocksource_chain_on_the_development_kernel_has_no_usable_function_probe() {
    let plans = plans(&fixture("dev-6.18"));
    let p = chain(&plans, "clocksource_switch");
    // No kprobe PMU: every kprobe candidate of a function this kernel has says why; the
    // functions it lacks are missing.
    let kernel = fixture("dev-6.18");
    for stage in ["switch_entry", "first_read", "baseline_recalc"] {
        for (t, s, r) in candidates(p, stage).into_iter().filter(|(t, _, _)| t.starts_with("kprobe:")) {
            let exists = kernel.symbol(t.trim_start_matches("kprobe:")).is_some();
            assert_eq!(s, if exists { "unusable" } else { "missing" }, "{t}: {r}");
            if exists {
                assert!(r.contains("kprobes are not built into this kernel"), "{t}: {r}");
            }
        }
    }
    // fentry on change_clocksource resolves (the kernel refuses it only at load: EPERM).
    assert_eq!(state_of(p, "switch_entry", "fentry:change_clocksource").0, "ready");
    // The update function is inlined on 6.18: neither name exists.
    for t in ["fentry:timekeeping_update_from_shadow", "fentry:timekeeping_update"] {
        let (s, r) = state_of(p, "baseline_recalc", t);
        assert_eq!(s, "missing", "{t}: {r}");
        assert!(r.contains("not in /proc/kallsyms or the kernel's BTF"), "{t}: {r}");
    }
    // ... so the return of change_clocksource stands in: it resolves (fexit is refused only at
    // load, like fentry), and its kretprobe twin says kprobes are missing.
    assert_eq!(state_of(p, "baseline_recalc", "fexit:change_clocksource").0, "ready");
    let (s, r) = state_of(p, "baseline_recalc", "kretprobe:change_clocksource");
    assert_eq!(s, "unusable", "{r}");
    assert!(r.contains("kprobes are not built into this kernel"), "{r}");
    // One first-read point per registered clocksource with a known read function.
    assert_eq!(first_read_labels(p), ["tsc", "kvm-clock"]);
    assert_eq!(state_of(p, "first_read", "fentry:kvm_clock_get_cycles").0, "ready");
}

#[test]
fn clocksource_chain_on_debian_6_1_uses_fentry_then_kprobe_and_knows_notrace_reads() {
    let plans = plans(&fixture("debian-6.1"));
    let p = chain(&plans, "clocksource_switch");
    assert_eq!(state_of(p, "switch_entry", "fentry:change_clocksource").0, "ready");
    assert_eq!(state_of(p, "switch_entry", "kprobe:change_clocksource").0, "ready");
    let (s, r) = state_of(p, "baseline_recalc", "fentry:timekeeping_update_from_shadow");
    assert_eq!(s, "missing", "6.1 has timekeeping_update, not the 6.13+ name: {r}");
    assert_eq!(state_of(p, "baseline_recalc", "fentry:timekeeping_update").0, "ready");
    assert_eq!(state_of(p, "baseline_recalc", "kprobe:timekeeping_update").0, "ready");
    // tsc's read function is notrace: unusable for both attach kinds, with the reason.
    for t in ["fentry:read_tsc", "kprobe:read_tsc"] {
        let (s, r) = state_of(p, "first_read", t);
        assert_eq!(s, "unusable", "{t}");
        assert!(r.contains("notrace"), "{t}: {r}");
    }
    for t in ["fentry:read_hpet", "kprobe:read_hpet", "fentry:acpi_pm_read", "kprobe:acpi_pm_read"] {
        assert_eq!(state_of(p, "first_read", t).0, "ready", "{t}");
    }
    // The capture of stage 0 reads struct clocksource's read member, found in the BTF slice.
    let c = &p.stages[0].points[0].candidates[0];
    // (`read` is its first member: offset 0, a pointer, read through the argument.)
    assert_eq!((c.capture.offset, c.capture.size, c.capture.flags), (0, 8, clockpath_common::slot::VALUE_DEREF));
    // Match-capture needs each read function's address: from kallsyms.
    let hpet = p.stages[1].points.iter().find(|pt| pt.label.as_deref() == Some("hpet")).unwrap();
    assert!(hpet.candidates.iter().all(|c| c.func_addr != 0));
}

#[test]
fn interference_sources_attach_where_their_tracepoints_exist() {
    let by_kernel = [("dev-6.18", true), ("debian-6.1", false)];
    for (k, has_kvm) in by_kernel {
        let plans = plans(&fixture(k));
        let src = plans.iter().find(|p| p.kind == PlanKind::InterferenceSources).expect("interference plan");
        let kvm = src.stages.iter().find(|s| s.name == "kvm").unwrap();
        let ready = kvm.points.iter().all(|p| p.candidates.iter().any(|c| c.status == Status::Ready));
        assert_eq!(ready, has_kvm, "{k}: kvm tracepoints exist only where the kvm module is loaded");
        for name in ["irq", "softirq", "sched", "hrtimer"] {
            let s = src.stages.iter().find(|s| s.name == name).unwrap();
            assert!(s.points.iter().all(|p| p.candidates.iter().any(|c| c.status == Status::Ready)), "{k}: {name}");
        }
    }
}

#[test]
fn a_kprobe_only_config_is_refused_on_neither_kernel_but_disabled_where_kprobes_are_missing() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/configs/kprobe-only.toml");
    let config = Config::load(Some(&path)).unwrap_or_else(|e| panic!("{e}")).config;
    for (k, usable) in [("dev-6.18", false), ("debian-6.1", true)] {
        let plans = plan::resolve(&config.chain_specs(), &fixture(k)).unwrap_or_else(|i| panic!("{k}: {i:#?}"));
        let p = chain(&plans, "clocksource_switch");
        let kinds: Vec<(AttachKind, bool)> = p
            .stages
            .iter()
            .flat_map(|s| &s.points)
            .flat_map(|pt| &pt.candidates)
            .map(|c| (c.target.kind, c.status == Status::Ready))
            .collect();
        assert!(
            kinds.iter().all(|(kind, _)| matches!(kind, AttachKind::Kprobe | AttachKind::Kretprobe)),
            "{k}: {kinds:?}"
        );
        assert_eq!(kinds.iter().any(|(_, ready)| *ready), usable, "{k}: {kinds:?}");
    }
}
