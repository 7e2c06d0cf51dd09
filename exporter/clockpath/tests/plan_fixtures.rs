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

/// Every built-in chain (the ones off by default too), resolved on a fixture (resolution must
/// succeed: a built-in chain that does not resolve is a bug).
fn plans(kernel: &Kernel) -> Vec<ChainPlan> {
    let mut config = Config::builtin();
    for c in config.chains.values_mut() {
        c.enabled = true;
    }
    plan::resolve(&config.chain_specs(), kernel).unwrap_or_else(|issues| panic!("{issues:#?}"))
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

/// The hrtimer chain leaves the scheduler tick's timer out, by the handler each kernel has:
/// tick_sched_timer on 6.1, tick_nohz_handler on 6.18 (the other name's target is unusable).
#[test]
fn softirq_is_keyed_per_cpu_and_vector_and_hrtimer_by_timer_address_without_the_tick() {
    for (k, tick) in [("dev-6.18", "tick_nohz_handler"), ("debian-6.1", "tick_sched_timer")] {
        let kernel = fixture(k);
        let plans = plans(&kernel);
        let s = chain(&plans, "softirq");
        assert!(matches!(s.store, Store::Direct { .. }), "{k}: {:?}", s.store);
        assert!(s.stages[0].first_hit_only);
        let h = chain(&plans, "hrtimer");
        assert_eq!(h.store, Store::Hash, "{k}: a timer address is unbounded");
        let tick_addr = kernel.symbol(tick).unwrap_or_else(|| panic!("{k}: {tick} in the fixture's kallsyms")).addr;
        for points in [&h.stages[0].points, &h.aborts] {
            let first = points[0].candidates.iter().find(|c| c.status == Status::Ready).expect("a ready candidate");
            assert_eq!(first.target.kind, AttachKind::TpBtf, "{k}");
            let c = first.conditions.first().unwrap_or_else(|| panic!("{k}: {} is filtered", first.target));
            assert!(c.negate && c.operand == tick_addr, "{k}: {} leaves {tick} out: {c:?}", first.target);
        }
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

/// What a process without CAP_SYSLOG sees: the kernel's kallsyms with every address 0.
#[test]
fn hidden_kernel_addresses_make_the_first_read_unusable_naming_cap_syslog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../probe/fixtures/kernels/debian-6.1");
    let ok = std::process::Command::new("cp").arg("-a").arg(format!("{}/.", src.display())).arg(dir.path()).status();
    assert!(ok.is_ok_and(|s| s.success()), "copy the fixture");
    let kallsyms = dir.path().join("proc/kallsyms");
    let text = std::fs::read_to_string(&kallsyms).expect("kallsyms");
    let hidden: String = text
        .lines()
        .map(|l| l.split_once(' ').map_or(l.to_string(), |(addr, rest)| format!("{} {rest}\n", "0".repeat(addr.len()))))
        .collect();
    std::fs::write(&kallsyms, hidden).expect("write kallsyms");
    let plans = plans(&Kernel::fixture(dir.path()));
    let p = chain(&plans, "clocksource_switch");
    // Stage 0 attaches by name and needs no address; the first read matches by address.
    assert_eq!(state_of(p, "switch_entry", "fentry:change_clocksource").0, "ready");
    for t in ["fentry:read_hpet", "kprobe:read_hpet", "fentry:acpi_pm_read", "kprobe:acpi_pm_read"] {
        let (s, r) = state_of(p, "first_read", t);
        assert_eq!(s, "unusable", "{t}: {r}");
        assert!(r.contains("hidden") && r.contains("CAP_SYSLOG"), "{t}: {r}");
    }
    // A filter naming a function says the same.
    let config = hrtimer_filtered("function != hrtimer_nanosleep");
    let plans = plan::resolve(&config.chain_specs(), &Kernel::fixture(dir.path())).expect("resolves");
    let (s, r) = state_of(chain(&plans, "hrtimer"), "start", "tracepoint:timer:hrtimer_start");
    assert_eq!(s, "unusable", "{r}");
    assert!(r.contains("CAP_SYSLOG"), "{r}");
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

/// The config with the hrtimer chain on tracepoints (a filter applies to every target of its
/// stage, and `function` is a tracepoint field), its start stage filtered on the handler.
fn hrtimer_filtered(filter: &str) -> Config {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("clockpath.toml");
    let toml = format!(
        "[chains.hrtimer]\n\
         [[chains.hrtimer.stages]]\nname = \"start\"\nfilter = \"{filter}\"\n\
         targets = [{{ attach = \"tracepoint:timer:hrtimer_start\", key = \"hrtimer\" }}]\n\
         [[chains.hrtimer.stages]]\nname = \"expire_entry\"\n\
         targets = [{{ attach = \"tracepoint:timer:hrtimer_expire_entry\", key = \"hrtimer\" }}]\n"
    );
    std::fs::write(&path, toml).expect("write config");
    Config::load(Some(&path)).unwrap_or_else(|e| panic!("{e}")).config
}

#[test]
fn a_filter_names_a_kernel_function_and_resolves_to_its_address() {
    // `hrtimer_nanosleep` stands in for a timer handler: the fixture's kallsyms is a slice.
    let kernel = fixture("dev-6.18");
    let plans = plan::resolve(&hrtimer_filtered("function != hrtimer_nanosleep").chain_specs(), &kernel)
        .unwrap_or_else(|i| panic!("{i:#?}"));
    let start = &chain(&plans, "hrtimer").stages[0].points[0].candidates;
    let tp = start.iter().find(|c| c.target.kind == AttachKind::Tracepoint).expect("tracepoint candidate");
    assert_eq!(tp.status, Status::Ready, "{:?}", tp.status);
    let cond = tp.conditions.first().expect("one condition");
    assert_eq!(cond.operand, 0xffffffff8142f660, "hrtimer_nanosleep's address in the fixture");
    assert!(cond.negate);
    assert_eq!(cond.mask, u64::MAX);
    assert!(cond.value.offset > 8 && cond.value.size == 8, "the tracepoint's `function` field: {:?}", cond.value);
    // A function the kernel does not have makes the candidate unusable, saying which.
    let plans = plan::resolve(&hrtimer_filtered("function == no_such_timer_fn").chain_specs(), &kernel)
        .unwrap_or_else(|i| panic!("{i:#?}"));
    let start = &chain(&plans, "hrtimer").stages[0].points[0].candidates;
    let tp = start.iter().find(|c| c.target.kind == AttachKind::Tracepoint).expect("tracepoint candidate");
    assert!(
        matches!(&tp.status, Status::Unusable(why) if why.contains("`no_such_timer_fn` is not a function of this kernel")),
        "{:?}",
        tp.status
    );
}

/// Issue 26: the runqueue chain on both kernels. Its stage 0 names a cause per point; the
/// preempted point filters on the switched-out task's state and pid (two conditions), read
/// through `__state` (5.14 and later: the `state` alternative is unusable, not an error); every
/// slot of the chain counts rows per cause, and each stage-0 slot opens with its point's cause.
#[test]
fn the_runqueue_chain_opens_with_a_cause_per_point_and_filters_preemptions_on_two_conditions() {
    use clockpath_common::slot::*;
    for k in ["dev-6.18", "debian-6.1"] {
        let mut plans = plans(&fixture(k));
        let rq = chain(&plans, "runqueue");
        assert_eq!(rq.causes, ["wakeup", "new", "preempted"], "{k}");
        let points = &rq.stages[0].points;
        assert_eq!(points.iter().map(|p| p.cause).collect::<Vec<_>>(), [Some(0), Some(1), Some(2)], "{k}");
        let preempted = &points[2].candidates;
        let btf: Vec<_> = preempted.iter().filter(|c| c.target.kind == AttachKind::TpBtf).collect();
        assert_eq!(btf.len(), 2, "{k}: a __state and a state alternative");
        assert_eq!(btf[0].status, Status::Ready, "{k}: {:?}", btf[0].status);
        assert_eq!(btf[0].conditions.len(), 2, "{k}");
        assert_eq!((btf[0].conditions[0].operand, btf[0].conditions[0].negate), (0, false), "{k}");
        assert_eq!((btf[0].conditions[1].operand, btf[0].conditions[1].negate), (0, true), "{k}: pid != 0");
        assert_eq!(btf[0].conditions[0].value.size, 4, "{k}: __state is an unsigned int");
        assert!(
            matches!(&btf[1].status, Status::Unusable(why) if why.contains("no member `state`")),
            "{k}: {:?}",
            btf[1].status
        );
        let tp = preempted.iter().find(|c| c.target.kind == AttachKind::Tracepoint).expect("tracepoint candidate");
        assert_eq!(tp.conditions[0].mask, 0xff, "{k}: prev_state's preemption bit masked out");
        let configs = plan::slots::assign(&mut plans, false);
        let rq = chain(&plans, "runqueue");
        for (stage, s) in rq.stages.iter().enumerate() {
            for (j, p) in s.points.iter().enumerate() {
                for c in p.candidates.iter().filter(|c| c.slot.is_some()) {
                    let cfg = &configs[c.slot.unwrap() as usize];
                    assert!(cfg.flags & FLAG_CAUSES != 0 && cfg.segments == 1, "{k}: {cfg:?}");
                    if stage == 0 {
                        assert_eq!(cfg.cause as usize, j, "{k}: point {j}'s slot opens with its cause");
                    }
                }
            }
        }
        assert_eq!(
            rq.hist_rows().iter().map(|r| (r.segment, r.cause, r.row)).collect::<Vec<_>>(),
            [(1, Some(0), 0), (1, Some(1), 1), (1, Some(2), 2)],
            "{k}: one histogram row per cause"
        );
        // The switched-out and switched-in points share one sched_switch program: the first's
        // slot also plays the second's role, which then attaches nothing of its own.
        let first_ready = |points: &[plan::PointPlan], i: usize| {
            points[i].candidates.iter().find(|c| c.status == Status::Ready).cloned().expect("a ready candidate")
        };
        let (preempt, switch_in) = (first_ready(&rq.stages[0].points, 2), first_ready(&rq.stages[1].points, 0));
        assert_eq!(preempt.target.to_string(), "tp_btf:sched_switch", "{k}");
        assert_eq!(configs[preempt.slot.unwrap() as usize].also as u32, switch_in.slot.unwrap(), "{k}");
        assert_eq!(switch_in.host, preempt.slot, "{k}");
        // Nothing else shares: every other slot plays one role.
        let shared = configs.iter().filter(|c| c.also != NO_SLOT).count();
        assert_eq!(shared, 1, "{k}: one shared program");
    }
}

#[test]
fn every_candidate_gets_its_own_slot_and_role_before_the_object_loads() {
    use clockpath_common::{limits::NUM_SLOTS, slot::*};
    for k in ["dev-6.18", "debian-6.1"] {
        let mut plans = plans(&fixture(k));
        let configs = plan::slots::assign(&mut plans, false);
        assert_eq!(configs.len(), NUM_SLOTS as usize);
        let mut seen = std::collections::BTreeSet::new();
        // The clocksource chain's first read has several points (one per clocksource read
        // function): its rows have more than one writer.
        let cs = chain(&plans, "clocksource_switch");
        assert!(
            cs.stages.iter().any(|s| s.points.len() > 1),
            "{k}: {:?}",
            cs.stages.iter().map(|s| s.points.len()).collect::<Vec<_>>()
        );
        for p in &plans {
            for (s, c) in p
                .stages
                .iter()
                .enumerate()
                .flat_map(|(i, st)| {
                    st.points.iter().flat_map(move |pt| pt.candidates.iter().map(move |c| (Some(i), c)))
                })
                .chain(p.aborts.iter().flat_map(|pt| pt.candidates.iter().map(|c| (None, c))))
            {
                if c.status != Status::Ready {
                    assert_eq!(c.slot, None, "{k}: {} {}", p.name, c.target);
                    continue;
                }
                let slot = c.slot.unwrap_or_else(|| panic!("{k}: {} {} has no slot", p.name, c.target));
                let range = c.target.kind.slots();
                assert!((range.base..range.base + range.count).contains(&slot), "{k}: {} in {range:?}", c.target);
                assert!(seen.insert(slot), "{k}: slot {slot} given twice");
                let cfg = &configs[slot as usize];
                assert_ne!(cfg.role, ROLE_NONE, "{k}: {} {}", p.name, c.target);
                if p.is_chain() {
                    assert_eq!(cfg.chain, p.index, "{k}: {}", c.target);
                    assert_eq!(cfg.role == ROLE_ABORT, s.is_none(), "{k}: {}", c.target);
                    assert_eq!(cfg.stage as usize, s.unwrap_or(0), "{k}: {}", c.target);
                    assert_eq!(cfg.key0, c.key0, "{k}: {}", c.target);
                    // An instance's records share a ring when it sends more than one.
                    assert_eq!(cfg.flags & FLAG_ORDERED != 0, p.stages.len() > 2, "{k}: {} {}", p.name, c.target);
                    // Plain histogram adds only where no other point writes the rows.
                    let one_point = s.is_some_and(|i| p.stages[i].points.len() == 1);
                    assert_eq!(cfg.sole_writer == 1, one_point, "{k}: {} {}", p.name, c.target);
                }
            }
        }
        assert!(configs.iter().enumerate().all(|(i, c)| seen.contains(&(i as u32)) == (c.role != ROLE_NONE)), "{k}");
    }
    // More candidates of a kind than the object has slots: the rest are unusable, saying why.
    let mut plans = plans(&fixture("dev-6.18"));
    let template = chain(&plans, "hrtimer").clone();
    for n in 0..10u8 {
        let mut p = template.clone();
        p.name = format!("copy{n}");
        p.index = 100 + n;
        plans.push(p);
    }
    plan::slots::assign(&mut plans, false);
    let starved: Vec<&Status> = plans
        .iter()
        .flat_map(|p| p.stages.iter().flat_map(|s| &s.points))
        .flat_map(|pt| &pt.candidates)
        .map(|c| &c.status)
        .filter(|s| matches!(s, Status::Unusable(why) if why.contains("no free tp_btf slot")))
        .collect();
    assert!(!starved.is_empty(), "40 more tp_btf candidates than the object has slots, yet none starved");
}

#[test]
fn the_kvm_chain_decodes_exit_reasons_on_a_kvm_host_and_is_unavailable_without_kvm() {
    use clockpath_common::slot::*;
    use clockpath_probe::kernel::kvm_exit::{self, Isa};
    // dev-6.18 has the kvm tracepoints. As an AMD KVM host (kvm_amd loaded), exit reasons map
    // to causes by the SVM table; stage 0 captures the tracepoint's exit_reason field.
    let host = tempfile::tempdir().unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../probe/fixtures/kernels/dev-6.18/.");
    let copied = std::process::Command::new("cp").arg("-a").arg(&src).arg(host.path()).status().unwrap();
    assert!(copied.success());
    std::fs::create_dir_all(host.path().join("sys/module/kvm_amd")).unwrap();
    let kernel = Kernel::fixture(host.path());
    assert_eq!(kernel.kvm_isa(), Some(Isa::Svm));
    let mut plans = plans(&kernel);
    let kvm = chain(&plans, "kvm");
    assert_eq!(kvm.causes, kvm_exit::CAUSES);
    assert_eq!(kvm.cause_values, kvm_exit::cause_values(Isa::Svm));
    assert_eq!(state_of(kvm, "exit", "tracepoint:kvm:kvm_exit").0, "ready");
    assert_eq!(state_of(kvm, "entry", "tracepoint:kvm:kvm_entry").0, "ready");
    let exit = &kvm.stages[0].points[0].candidates[0];
    assert_eq!((exit.capture.source, exit.capture.offset, exit.capture.size), (SRC_FIELD, 8, 4), "exit_reason");
    let configs = plan::slots::assign(&mut plans, false);
    let kvm = chain(&plans, "kvm");
    let slot = |stage: usize| &configs[kvm.stages[stage].points[0].candidates[0].slot.unwrap() as usize];
    assert!(slot(0).flags & FLAG_CAUSES != 0 && slot(0).flags2 & FLAG2_CAUSE_BY_CAPTURE != 0, "{:?}", slot(0));
    assert_eq!(slot(1).flags2 & FLAG2_CAUSE_BY_CAPTURE, 0, "only stage 0 decides the cause");
    assert_eq!(kvm.hist_rows().len(), kvm_exit::CAUSES.len(), "one histogram row per cause");

    // The stock 6.1 kernel without kvm.ko loaded has no kvm events: the chain cannot run, and
    // the configuration is not refused for it (a missing category is not a typo).
    let stock = self::plans(&fixture("debian-6.1"));
    let kvm = chain(&stock, "kvm");
    let (state, why) = state_of(kvm, "exit", "tracepoint:kvm:kvm_exit");
    assert_eq!(state, "missing");
    assert!(why.contains("no `kvm` events"), "{why}");
}

#[test]
fn a_tracepoint_in_a_missing_category_is_still_a_typo_when_its_name_exists_elsewhere() {
    let mut config = Config::builtin();
    let rq = config.chains.get_mut("runqueue").unwrap();
    rq.stages[1].targets = vec![clockpath::config::chains::TargetConfig {
        attach: "tracepoint:shed:sched_switch".into(),
        key: Some("next_pid".into()),
        filter: None,
    }];
    let issues = plan::resolve(&config.chain_specs(), &fixture("debian-6.1")).expect_err("a typo is refused");
    assert!(issues.iter().any(|i| i.why.contains("it exists in category sched")), "{issues:#?}");
}
