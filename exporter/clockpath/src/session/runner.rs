//! The run loop: switch the clocksource, wait for that switch's chain (or its timeout), label
//! it with the session and the clocksources, and account for every switch, complete or not.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use clockpath_common::record::UNKNOWN_INTERFERENCE;
use clockpath_offline::chain::{ChainRecord, Outcome};
use clockpath_probe::plan::{ChainPlan, Status};

use super::{
    Condition, Run, SessionArgs, clocksource, cpufreq,
    idle::{self, Evidence},
    mode::Mode,
};
use crate::{ktime, pipeline::Sink as _, sinks::otlp::OtlpSink};

/// What the loop produced.
pub struct Outcomes {
    pub runs: Vec<Run>,
    /// The chain record of each run that got one, labelled.
    pub records: Vec<ChainRecord>,
    pub interrupted: bool,
    /// Per policy (index into `Runner::policies`): entries into each idle state while it held.
    pub evidence: Vec<Option<Evidence>>,
    /// Per policy with a governor: the governors read back when it ended.
    pub governor_evidence: Vec<Option<cpufreq::Evidence>>,
}

/// Drives the switches of one session.
pub struct Runner<'a> {
    pub args: &'a SessionArgs,
    pub session_id: &'a str,
    pub mode: Mode,
    /// The session chain's attached plan.
    pub plan: &'a ChainPlan,
    pub records: &'a mpsc::Receiver<ChainRecord>,
    /// Every run is traced when an OTLP endpoint is configured.
    pub otlp: Option<&'a mut OtlpSink>,
    /// Set by a signal handler to end the session early.
    pub stop: Arc<AtomicBool>,
    /// The conditions (C-state policy, governor), and the index of each run's (its length is
    /// the run count).
    pub policies: &'a [Condition],
    pub order: &'a [usize],
    /// Idle-state control, when the session sets policies.
    pub idle: Option<&'a idle::Guard>,
    /// Governor control, when the session sets governors.
    pub governors: Option<&'a cpufreq::Guard>,
}

/// The policy in force: which, the usage counters when it was set, and its PM QoS request.
struct InForce {
    policy: usize,
    since: Vec<u64>,
    _request: Option<idle::LatencyRequest>,
}

impl Runner<'_> {
    /// Make one switch per entry of `order` starting from `current`, cycling through the
    /// requested clocksources, under the policy the entry names.
    pub fn run(mut self, mut current: String) -> Outcomes {
        let points = slot_targets(self.plan);
        let read_points = first_read_points(self.plan);
        let requested = &self.args.clocksources;
        let mut out = Outcomes {
            runs: Vec::with_capacity(self.order.len()),
            records: Vec::new(),
            interrupted: false,
            evidence: vec![None; self.policies.len()],
            governor_evidence: vec![None; self.policies.len()],
        };
        let mut next = 0usize;
        let mut in_force: Option<InForce> = None;
        for (index, &policy) in self.order.iter().enumerate() {
            if self.stop.load(Ordering::Relaxed) {
                out.interrupted = true;
                break;
            }
            let policy_error = match self.set_policy(policy, &mut in_force, &mut out) {
                Ok(()) => None,
                Err(e) => Some(format!("setting {}: {e}", self.policies[policy].label())),
            };
            // The next requested clocksource that differs from the current one.
            let mut target = requested[next % requested.len()].clone();
            if target == current {
                next += 1;
                target = requested[next % requested.len()].clone();
            }
            next += 1;
            let mut run = Run {
                index,
                old: current.clone(),
                new: target.clone(),
                segments_ns: Vec::new(),
                total_ns: None,
                cpu: None,
                missing: None,
                points: Vec::new(),
                interference_ns: Vec::new(),
                policy: self.sets_conditions().then(|| self.policies[policy].label()),
            };
            if let Some(why) = policy_error {
                run.missing = Some(why);
                out.runs.push(run);
                continue;
            }
            let t0 = ktime::monotonic_now_ns();
            let result = clocksource::switch_to(&target);
            let now = clocksource::current().unwrap_or_default();
            if let Err(e) = result {
                run.missing = Some(format!("write failed: {e}"));
            } else if now != target {
                run.missing = Some(format!("the kernel kept {now} after writing {target}"));
            } else if let Some(why) = self.unprobed(&read_points, &target) {
                // No record can come (the chain cannot see the new clocksource's reads): say
                // why now instead of waiting out the timeout. The next switch's entry replaces
                // the instance this one left open.
                current = target.clone();
                run.missing = Some(why);
            } else {
                current = target.clone();
                match self.wait(t0) {
                    Some(mut rec) => {
                        rec.session = Some(Arc::from(self.session_id));
                        rec.labels = vec![
                            (Arc::from("old_clocksource"), Arc::from(run.old.as_str())),
                            (Arc::from("new_clocksource"), Arc::from(run.new.as_str())),
                        ];
                        let condition = &self.policies[policy];
                        if self.idle.is_some() {
                            rec.labels.push((Arc::from(CSTATE_LABEL), Arc::from(condition.cstate.label())));
                        }
                        if let (Some(_), Some(g)) = (self.governors, &condition.governor) {
                            rec.labels.push((Arc::from(GOVERNOR_LABEL), Arc::from(g.as_str())));
                        }
                        fill(&mut run, &rec, &points);
                        if let Some(o) = self.otlp.as_deref_mut() {
                            // Traces also carry the session's own labels (--label k=v).
                            let mut traced = rec.clone();
                            let labels =
                                self.args.labels.iter().map(|(k, v)| (Arc::from(k.as_str()), Arc::from(v.as_str())));
                            traced.labels.extend(labels);
                            o.on_chain(&traced);
                        }
                        out.records.push(rec);
                    }
                    None => run.missing = Some(format!("no chain record within {:?}", self.args.timeout)),
                }
            }
            out.runs.push(run);
        }
        if let Some(f) = in_force.take() {
            self.close(f, &mut out);
        }
        out
    }

    /// Why a switch to `target` cannot complete the chain (kernel mode: no usable probe on its
    /// read function), or None.
    fn unprobed(&self, read_points: &BTreeMap<String, Result<String, String>>, target: &str) -> Option<String> {
        if self.mode != Mode::Kernel {
            return None;
        }
        match read_points.get(target) {
            Some(Ok(_)) => None,
            Some(Err(why)) => Some(format!("no first_read probe for {target}: {why}")),
            None => Some(format!("no first_read probe for {target}: no known read function")),
        }
    }

    /// Whether runs carry a condition (the session sets C-states or governors).
    fn sets_conditions(&self) -> bool {
        self.idle.is_some() || self.governors.is_some()
    }

    /// Put `policy` in force if it is not: close the evidence of the one before, write the
    /// settings, and start counting entries from now.
    fn set_policy(
        &self,
        policy: usize,
        in_force: &mut Option<InForce>,
        out: &mut Outcomes,
    ) -> Result<(), super::SessionError> {
        if !self.sets_conditions() || in_force.as_ref().is_some_and(|f| f.policy == policy) {
            return Ok(());
        }
        if let Some(f) = in_force.take() {
            self.close(f, out);
        }
        let condition = &self.policies[policy];
        if let (Some(f), Some(gov)) = (self.governors, &condition.governor) {
            f.apply(&f.settings(gov))?;
        }
        let Some(g) = self.idle else {
            *in_force = Some(InForce { policy, since: Vec::new(), _request: None });
            return Ok(());
        };
        let settings = g.settings(&condition.cstate, g.original());
        g.apply(&settings)?;
        let request = match g.latency_limit(&settings) {
            Some(us) => Some(idle::LatencyRequest::hold(std::path::Path::new(idle::PM_QOS_DEVICE), us)?),
            None => None,
        };
        out.evidence[policy].get_or_insert_with(|| Evidence::new(g, &settings));
        // Counted from here: entries while the settings were being written, and those in flight
        // when they were (counted when the CPU wakes), are not the policy's.
        g.flush()?;
        *in_force = Some(InForce { policy, since: g.usage(), _request: request });
        Ok(())
    }

    /// End the condition in force: add its idle-state entries and read its governors back.
    fn close(&self, f: InForce, out: &mut Outcomes) {
        if let Some(g) = self.idle {
            let now = g.usage();
            if let Some(e) = out.evidence[f.policy].as_mut() {
                e.add(g, &f.since, &now);
            }
        }
        if let (Some(freq), Some(gov)) = (self.governors, &self.policies[f.policy].governor) {
            let read = cpufreq::Evidence::read(freq, gov);
            // Once a governor did not hold, the condition's evidence keeps saying so.
            let slot = &mut out.governor_evidence[f.policy];
            if slot.as_ref().is_none_or(|e| e.held) {
                *slot = Some(read);
            }
        }
    }

    /// The first chain record that started after `t0`, or None at the timeout.
    fn wait(&self, t0: u64) -> Option<ChainRecord> {
        let deadline = Instant::now() + self.args.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.records.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(rec) if rec.start_ns < t0 => continue,
                Ok(rec) => return Some(rec),
                Err(_) => return None,
            }
        }
    }
}

/// The label each run's records carry with the C-state policy in force.
pub const CSTATE_LABEL: &str = "cstate_policy";
/// The label each run's records carry with the cpufreq governor in force (`--governors`).
pub const GOVERNOR_LABEL: &str = "governor_policy";

/// What a chain record says about its run.
fn fill(run: &mut Run, rec: &ChainRecord, points: &BTreeMap<u32, String>) {
    run.cpu = Some(rec.cpu);
    run.points = rec.segments.iter().map(|s| points.get(&(s.slot as u32)).cloned().unwrap_or_default()).collect();
    run.interference_ns = rec
        .segments
        .iter()
        .map(|s| (s.interference_ns[0] != UNKNOWN_INTERFERENCE).then_some(s.interference_ns))
        .collect();
    if rec.outcome == Outcome::Completed {
        run.segments_ns = rec.segments.iter().map(|s| s.duration_ns()).collect();
        run.total_ns = Some(rec.total_ns());
    } else {
        run.missing = Some(format!("chain {}", rec.outcome.as_str()));
    }
}

/// slot → target string of every attached candidate of a plan.
fn slot_targets(plan: &ChainPlan) -> BTreeMap<u32, String> {
    plan.stages
        .iter()
        .flat_map(|s| s.points.iter())
        .flat_map(|p| p.candidates.iter())
        .filter_map(|c| match c.status {
            Status::Attached(slot) => Some((slot, c.target.to_string())),
            _ => None,
        })
        .collect()
}

/// For each clocksource with a first_read point: Ok(target attached) or Err(why not).
fn first_read_points(plan: &ChainPlan) -> BTreeMap<String, Result<String, String>> {
    let Some(stage) = plan.stages.iter().find(|s| s.match_capture) else { return BTreeMap::new() };
    stage
        .points
        .iter()
        .filter_map(|p| {
            let label = p.label.clone()?;
            let r = match p.attached() {
                Some(c) => Ok(c.target.to_string()),
                None => Err(p
                    .candidates
                    .iter()
                    .map(|c| format!("{}: {}", c.target, c.status.reason()))
                    .collect::<Vec<_>>()
                    .join("; ")),
            };
            Some((label, r))
        })
        .collect()
}
