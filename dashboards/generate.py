#!/usr/bin/env python3
"""Generate clockpath's Grafana dashboards with Grafana's Foundation SDK (grafana-foundation-sdk).

    generate.py            write dashboards/clockpath.json and dashboards/clockpath-fleet.json
    generate.py --check    exit 1 when a committed file differs from what this script generates

The dashboards are built here, not edited by hand, because the SDK's model is Grafana's
dashboard schema: a panel or variable option the schema does not know cannot be written. (A
hand-written variable's `definition`, which Grafana accepts and writes, is one such key: the
SDK drops it.) tests/dashboards/check.py regenerates them and compares byte for byte, then
round-trips each file through the SDK's Dashboard model and fails on any key it drops.

Run with the venv scripts/setup.sh installs (/opt/clockpath-test/grafana-venv, or
$CLOCKPATH_GRAFANA_VENV). The Helm chart ships the same files (helm/clockpath/dashboards/ links
them; tests/tests/suite/helm.rs checks what it renders).

Queries only use the metrics the exporter itself exposes (exporter/clockpath/src/exposition/
names.rs), plus Prometheus' `up`, so every panel works without the recording rules. Template
variables: $datasource, $env, $instance, $chain, $segment, and Grafana's $__rate_interval.
"""

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

HERE = Path(__file__).resolve().parent
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
# The window median's comparison bands are drawn between two series named after the env; env is
# "host" or "vm" (environment.env: auto resolves to one of them).
ENVS = ("host", "vm")


class Ids:
    """Panel ids, in order of appearance (rows included)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        return self.n


def q(ref: str, expr: str, legend: str = "") -> prom.Dataquery:
    """A range query (a time series panel's target)."""
    t = prom.Dataquery().ref_id(ref).datasource(DS).editor_mode(pm.QueryEditorMode.CODE).expr(expr).range()
    return t.legend_format(legend) if legend else t


def qt(ref: str, expr: str) -> prom.Dataquery:
    """An instant query in table format (a table panel's target)."""
    return (
        prom.Dataquery()
        .ref_id(ref)
        .datasource(DS)
        .editor_mode(pm.QueryEditorMode.CODE)
        .expr(expr)
        .instant()
        .format(pm.PromQueryFormat.TABLE)
    )


def legend() -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .show_legend(True)
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .calcs(["lastNotNull", "max"])
    )


def ts(ids: Ids, title: str, description: str, unit: str, *targets: prom.Dataquery, w: int = 12, h: int = 8):
    p = (
        timeseries.Panel()
        .id(ids())
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(h)
        .line_width(1)
        .fill_opacity(0)
        .show_points(common.VisibilityMode.NEVER)
        .legend(legend())
    )
    for t in targets:
        p = p.with_target(t)
    return p


DASHED = [
    dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
    dm.DynamicConfigValue(id_val="custom.lineWidth", value=1),
]


def ci_dashed(p):
    """Draw the CI bounds (series named `... CI lower` / `... CI upper`) dashed."""
    return p.override_by_regexp(".* CI (lower|upper)$", DASHED)


def window_ci(ids: Ids, title: str, description: str, sel: str, legend: str, by: str = ""):
    """Window median with its CI bounds dashed: the three gauges for `sel`, each named
    `<legend> median` / `CI lower` / `CI upper`; with `by`, the median averaged and the bounds
    the lowest and highest of each group."""
    agg = [f"avg by ({by}) ", f"min by ({by}) ", f"max by ({by}) "] if by else ["", "", ""]
    wrap = (lambda a, m: f"{a}({m}{{{sel}}})") if by else (lambda a, m: f"{m}{{{sel}}}")
    gauges = ["clockpath_window_median_seconds", "clockpath_window_ci_lower_seconds", "clockpath_window_ci_upper_seconds"]
    names = ["median", "CI lower", "CI upper"]
    return ci_dashed(
        ts(
            ids,
            title,
            description,
            "s",
            *[q(ref, wrap(a, m), f"{legend} {n}") for ref, a, m, n in zip("ABC", agg, gauges, names)],
        )
    )


def ci_bands(p, names=ENVS):
    """Fill between `<name> CI lower` and `<name> CI upper` for each name."""
    for n in names:
        p = p.override_by_name(
            f"{n} CI upper",
            [
                dm.DynamicConfigValue(id_val="custom.fillBelowTo", value=f"{n} CI lower"),
                dm.DynamicConfigValue(id_val="custom.fillOpacity", value=20),
                dm.DynamicConfigValue(id_val="custom.lineWidth", value=0),
            ],
        )
        p = p.override_by_name(f"{n} CI lower", [dm.DynamicConfigValue(id_val="custom.lineWidth", value=0)])
    return p


def states(ids: Ids, title: str, description: str, target: prom.Dataquery, one: str, zero: str, w: int = 12):
    """A state timeline of a 1/0 gauge: green `one`, red `zero`."""
    mapping = dm.ValueMap(
        options={
            "1": dm.ValueMappingResult(text=one, color="green", index=0),
            "0": dm.ValueMappingResult(text=zero, color="red", index=1),
        }
    )
    return (
        statetimeline.Panel()
        .id(ids())
        .title(title)
        .description(description)
        .datasource(DS)
        .span(w)
        .height(8)
        .show_value(common.VisibilityMode.NEVER)
        .mappings([mapping])
        .with_target(target)
    )


def tab(ids: Ids, title: str, description: str, target: prom.Dataquery, value: str = "", w: int = 12, h: int = 8):
    """A table of an instant query's labels; `value` names the value column ("": hidden)."""
    organize = {"excludeByName": {"Time": True}, "renameByName": {}}
    if value:
        organize["renameByName"]["Value"] = value
    else:
        organize["excludeByName"]["Value"] = True
    return (
        table.Panel()
        .id(ids())
        .title(title)
        .description(description)
        .datasource(DS)
        .span(w)
        .height(h)
        .with_target(target)
        .with_transformation(dm.DataTransformerConfig(id_val="organize", options=organize))
    )


def row(ids: Ids, title: str) -> db.Row:
    return db.Row(title).id(ids())


def variables(d: db.Dashboard, chain: bool) -> db.Dashboard:
    d = d.with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))

    def query_var(name: str, query: str, multi: bool):
        v = (
            db.QueryVariable(name)
            .label(name)
            .datasource(DS)
            .query(query)
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
        )
        return v.multi(True).include_all(True) if multi else v.multi(False).include_all(False)

    # env is "host" or "vm": All is any value. instance's All is the list of the instances of
    # the chosen envs (no allValue), so metrics without an env label follow the env choice.
    d = d.with_variable(query_var("env", "label_values(clockpath_environment_info, env)", True).all_value(".*"))
    d = d.with_variable(query_var("instance", 'label_values(clockpath_environment_info{env=~"$env"}, instance)', True))
    if chain:
        d = d.with_variable(
            query_var(
                "chain", 'label_values(clockpath_chains_completed_total{env=~"$env", instance=~"$instance"}, chain)', False
            )
        )
        d = d.with_variable(
            query_var(
                "segment",
                'label_values(clockpath_segment_duration_seconds_count{chain="$chain", env=~"$env", instance=~"$instance"}, segment)',
                False,
            )
        )
    return d


SEL = 'env=~"$env", instance=~"$instance"'
CHAIN = f'chain="$chain", {SEL}'
SEG = f'chain="$chain", segment="$segment", {SEL}'
CS = f'chain="clocksource_switch", {SEL}'
INST = 'instance=~"$instance"'
RI = "[$__rate_interval]"


def offset_tracking() -> db.Dashboard:
    ids = Ids()
    d = (
        db.Dashboard("clockpath — offset tracking")
        .uid("clockpath-time-path")
        .description(
            "Time-path segment durations per env, C-state policy and governor, the clocksource switch, "
            "the PPS reference and the kernel clock's sync, records lost and BPF self-overhead."
        )
        .tags(["clockpath", "ebpf", "timekeeping"])
        .editable()
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
    )
    d = variables(d, chain=True)

    d = d.with_row(row(ids, "Chain $chain"))
    d = d.with_panel(
        ts(
            ids,
            "Segment duration per env: median and p99 (exact kernel histograms)",
            "histogram_quantile over the rate of clockpath_segment_duration_seconds_bucket, summed over the "
            "env's instances: exact counts, resolved to the bucket bounds (metrics.buckets_seconds).",
            "s",
            q("A", f"histogram_quantile(0.5, sum by (le, env, segment) (rate(clockpath_segment_duration_seconds_bucket{{{CHAIN}}}{RI})))", "{{env}} {{segment}} p50"),
            q("B", f"histogram_quantile(0.99, sum by (le, env, segment) (rate(clockpath_segment_duration_seconds_bucket{{{CHAIN}}}{RI})))", "{{env}} {{segment}} p99"),
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Segment duration quantiles over the sliding window (HDR)",
            "clockpath_segment_duration_quantile_seconds: quantiles of the ring records over "
            "metrics.quantile_window_secs; the highest instance of each env.",
            "s",
            q("A", f"max by (env, segment, q) (clockpath_segment_duration_quantile_seconds{{{CHAIN}}})", "{{env}} {{segment}} q{{q}}"),
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Chains per second",
            "Chain instances completed and timed out per second, every chain.",
            "ops",
            q("A", f"sum by (instance, chain) (rate(clockpath_chains_completed_total{{{SEL}}}{RI}))", "{{instance}} {{chain}} completed"),
            q("B", f"sum by (instance, chain) (rate(clockpath_chains_timed_out_total{{{SEL}}}{RI}))", "{{instance}} {{chain}} timed out"),
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Window samples and rejected outliers",
            "Runs each statistics window was computed from, and the runs rejected as outliers "
            "(windows.sigma from the reference segment's median).",
            "short",
            q("A", f"clockpath_window_samples{{{SEG}}}", "{{instance}} samples"),
            q("B", f"clockpath_window_outliers_rejected{{{SEG}}}", "{{instance}} rejected"),
        )
    )

    d = d.with_row(row(ids, "Segment $segment: window medians with bootstrap CI"))
    d = d.with_panel(
        ci_bands(
            ts(
                ids,
                "Host vs VM: window median and CI per env",
                "Mean of the instances' window medians per env; the band spans every instance's bootstrap "
                "CI in the env (lowest lower bound to highest upper bound).",
                "s",
                q("A", f"avg by (env) (clockpath_window_median_seconds{{{SEG}}})", "{{env}} median"),
                q("B", f"min by (env) (clockpath_window_ci_lower_seconds{{{SEG}}})", "{{env}} CI lower"),
                q("C", f"max by (env) (clockpath_window_ci_upper_seconds{{{SEG}}})", "{{env}} CI upper"),
            )
        )
    )
    d = d.with_panel(
        window_ci(
            ids,
            "Window median and CI per instance",
            "Each instance's window median, and its bootstrap CI (dashed; windows.bootstrap.level).",
            SEG,
            "{{instance}}",
        )
    )
    d = d.with_panel(
        window_ci(
            ids,
            "Per C-state limit and governor: window median and CI",
            "Window medians grouped by the instances' C-state limit and cpufreq governor (labels of "
            "the window gauges); the CI bounds are the group's lowest and highest (dashed).",
            SEG,
            "C-states {{cstate_limit}}, {{governor}}",
            by="cstate_limit, governor",
        )
    )
    by_policy = (
        f"sum by (le, cstate_limit, governor) (rate(clockpath_segment_duration_seconds_bucket{{{SEG}}}{RI}) "
        "* on (instance) group_left (cstate_limit, governor) "
        "max by (instance, cstate_limit, governor) (clockpath_environment_info))"
    )
    d = d.with_panel(
        ts(
            ids,
            "Per C-state limit and governor: median and p99 (exact kernel histograms)",
            "The exact histograms, labelled with each instance's C-state limit and governor from "
            "clockpath_environment_info, summed per policy.",
            "s",
            q("A", f"histogram_quantile(0.5, {by_policy})", "C-states {{cstate_limit}}, {{governor}} p50"),
            q("B", f"histogram_quantile(0.99, {by_policy})", "C-states {{cstate_limit}}, {{governor}} p99"),
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Window standard deviation per instance",
            "Sample standard deviation of the segment over each window (outliers rejected).",
            "s",
            q("A", f"clockpath_window_std_dev_seconds{{{SEG}}}", "{{instance}}"),
        )
    )

    d = d.with_row(row(ids, "Clocksource switches (chain clocksource_switch)"))
    d = d.with_panel(
        ts(
            ids,
            "Clocksource switch segments since the exporter started: median and p99",
            "Switches are rare events: quantiles of every switch since the exporter started, from the "
            "exact kernel histograms (cumulative buckets, no rate).",
            "s",
            q("A", f"histogram_quantile(0.5, sum by (le, instance, segment) (clockpath_segment_duration_seconds_bucket{{{CS}}}))", "{{instance}} {{segment}} p50"),
            q("B", f"histogram_quantile(0.99, sum by (le, instance, segment) (clockpath_segment_duration_seconds_bucket{{{CS}}}))", "{{instance}} {{segment}} p99"),
        )
    )
    d = d.with_panel(
        window_ci(
            ids,
            "Clocksource switch: window median and CI per segment",
            "Statistics windows of the switch segments (published for windows with at least two "
            "switches); CI dashed.",
            CS,
            "{{instance}} {{segment}}",
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Clocksource switches",
            "Switches completed and timed out in each interval.",
            "short",
            q("A", f"sum by (instance) (increase(clockpath_chains_completed_total{{{CS}}}{RI}))", "{{instance}} completed"),
            q("B", f"sum by (instance) (increase(clockpath_chains_timed_out_total{{{CS}}}{RI}))", "{{instance}} timed out"),
        )
    )
    d = d.with_panel(
        tab(
            ids,
            "Clocksource in use",
            "The current clocksource of each instance (clockpath_environment_info).",
            qt("A", f"max by (instance, env, hypervisor, clocksource) (clockpath_environment_info{{{SEL}}})"),
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Interference charged to segments (share of time)",
            "Time charged to each segment by each interference source on its CPU, per second, for "
            "chains with interference = true (by default clocksource_switch).",
            "percentunit",
            q("A", f"sum by (instance, chain, segment, source) (rate(clockpath_segment_interference_seconds_total{{{SEL}}}{RI}))", "{{instance}} {{chain}} {{segment}} {{source}}"),
            w=24,
        )
    )

    d = d.with_row(row(ids, "Time reference: PPS and the kernel clock"))
    d = d.with_panel(
        ci_dashed(
            ts(
                ids,
                "PPS offset: last edge, window median and CI",
                "The system clock's offset from the PPS second (positive: ahead) at the last edge, and "
                "the window median with its bootstrap CI (dashed).",
                "s",
                q("A", f"clockpath_pps_offset_seconds{{{SEL}}}", "{{instance}} {{device}} last edge"),
                q("B", f"clockpath_pps_window_median_seconds{{{SEL}}}", "{{instance}} {{device}} window median"),
                q("C", f"clockpath_pps_window_ci_lower_seconds{{{SEL}}}", "{{instance}} {{device}} CI lower"),
                q("D", f"clockpath_pps_window_ci_upper_seconds{{{SEL}}}", "{{instance}} {{device}} CI upper"),
            )
        )
    )
    d = d.with_panel(
        states(
            ids,
            "PPS signal",
            "1 while the source's edges come (one within pps.lost_after_ms).",
            q("A", f"clockpath_pps_signal_present{{{SEL}}}", "{{instance}} {{device}}"),
            "present",
            "lost",
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "PPS jitter",
            "RMS scatter of the last 16 offsets around their straight line (drift removed).",
            "s",
            q("A", f"clockpath_pps_jitter_seconds{{{SEL}}}", "{{instance}} {{device}}"),
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "PPS pulses and missed pulses per second",
            "Edges read, and pulses missed (including while the signal was lost).",
            "ops",
            q("A", f"rate(clockpath_pps_pulses_total{{{SEL}}}{RI})", "{{instance}} {{device}} pulses"),
            q("B", f"rate(clockpath_pps_missed_pulses_total{{{SEL}}}{RI})", "{{instance}} {{device}} missed"),
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Kernel clock: maximum and estimated error",
            "adjtimex maxerror and esterror (as node_timex_maxerror_seconds / _estimated_error_seconds).",
            "s",
            q("A", f"clockpath_timex_maxerror_seconds{{{INST}}}", "{{instance}} max error"),
            q("B", f"clockpath_timex_estimated_error_seconds{{{INST}}}", "{{instance}} estimated error"),
        )
    )
    d = d.with_panel(
        states(
            ids,
            "Kernel clock synchronised",
            "1 when adjtimex does not return TIME_ERROR (as node_timex_sync_status).",
            q("A", f"clockpath_timex_sync_status{{{INST}}}", "{{instance}}"),
            "synchronised",
            "unsynchronised",
        )
    )

    d = d.with_row(row(ids, "Clock domains: every trace clock against CLOCK_MONOTONIC"))
    d = d.with_panel(
        tab(
            ids,
            "Clock offsets (latest audit)",
            "Each clock minus CLOCK_MONOTONIC, re-measured every clock_audit.interval_secs. Two "
            "timestamps taken on two clocks differ by the difference of their offsets: a constant "
            "between two probes that equals one is a clock-domain offset, not a latency "
            "(`clockpath explain`).",
            qt("A", f"clockpath_clock_offset_seconds{{{INST}}}"),
            value="offset (s)",
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Clock offset jumps",
            "Offsets that moved between two audits beyond the drift before: a suspend (boottime), a "
            "clock step (realtime, tai). Offsets measured before a jump no longer hold.",
            "short",
            q("A", f"increase(clockpath_clock_offset_jumps_total{{{INST}}}[$__rate_interval])", "{{instance}} {{clock}}"),
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Clock drift against CLOCK_MONOTONIC",
            "How fast each offset changes, ppm: 0 for clocks that are CLOCK_MONOTONIC plus a constant "
            "(boottime, realtime, tai between steps); the NTP frequency correction for monotonic_raw, "
            "sched_clock (ftrace local) and the TSC.",
            "ppm",
            q("A", f"clockpath_clock_drift_ratio{{{INST}}} * 1e6", "{{instance}} {{clock}}"),
        )
    )

    d = d.with_row(row(ids, "Health and self-overhead"))
    d = d.with_panel(
        ts(
            ids,
            "Records lost and dropped per second",
            "Ring records the kernel could not write (ring full) and records userspace dropped. The "
            "histograms stay exact; windows, quantiles and traces miss these runs.",
            "ops",
            q("A", f"sum by (instance, chain) (rate(clockpath_ring_records_lost_total{{{SEL}}}{RI}))", "{{instance}} {{chain}} lost in the ring"),
            q("B", f"sum by (instance) (rate(clockpath_records_dropped_total{{{INST}}}{RI}))", "{{instance}} dropped in userspace"),
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Self-overhead: BPF run time per second",
            "Kernel CPU time of the BPF programs per second (1 = one CPU; needs probe.bpf_stats = true), "
            "and the exporter process's own CPU.",
            "percentunit",
            q("A", f"sum by (instance, chain) (rate(clockpath_bpf_program_run_time_seconds_total{{{INST}}}{RI}))", "{{instance}} {{chain}} BPF"),
            q("B", f"sum by (instance) (rate(process_cpu_seconds_total{{{INST}}}{RI})) and on (instance) clockpath_build_info", "{{instance}} userspace"),
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "BPF run time per program run",
            "Mean kernel run time of one run of each stage's program (needs probe.bpf_stats = true).",
            "s",
            q(
                "A",
                f"sum by (instance, chain, stage) (rate(clockpath_bpf_program_run_time_seconds_total{{{INST}}}{RI})) "
                f"/ sum by (instance, chain, stage) (rate(clockpath_bpf_program_run_count_total{{{INST}}}{RI}))",
                "{{instance}} {{chain}} {{stage}}",
            ),
        )
    )
    d = d.with_panel(
        tab(
            ids,
            "Attach plan of the chain",
            "Each candidate attach target of each stage: what was attached, and why the others were not.",
            qt("A", f'max by (instance, chain, stage, target, attach, state, reason) (clockpath_probe_info{{chain="$chain", {INST}}})'),
        )
    )
    return d


def fleet() -> db.Dashboard:
    ids = Ids()
    d = (
        db.Dashboard("clockpath — fleet overview")
        .uid("clockpath-fleet")
        .description(
            "Which chains run on which instance and how they attached, kernels, probe problems, "
            "exporters up, records lost, PPS signal and clock sync."
        )
        .tags(["clockpath", "ebpf", "timekeeping", "fleet"])
        .editable()
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
    )
    d = variables(d, chain=False)
    d = d.with_panel(
        states(
            ids,
            "Exporters up",
            "Prometheus' scrape of each exporter (the scrape job's name contains clockpath, as the "
            "alerting rules expect).",
            q("A", f'up{{job=~".*clockpath.*", {INST}}}', "{{instance}}"),
            "up",
            "down",
        )
    )
    d = d.with_panel(
        states(
            ids,
            "Chains running",
            "1 when the chain is attached and running, 0 when it is configured but unavailable (the "
            "probe tables below say why).",
            q("A", f"clockpath_chain_running{{{INST}}}", "{{instance}} {{chain}}"),
            "running",
            "unavailable",
        )
    )
    d = d.with_panel(
        tab(
            ids,
            "Instances: environment and kernel",
            "clockpath_environment_info of each instance.",
            qt("A", f"max by (instance, env, kernel, hypervisor, clocksource, governor, cstate_limit) (clockpath_environment_info{{{SEL}}})"),
            w=16,
        )
    )
    d = d.with_panel(
        tab(
            ids,
            "clockpath version",
            "clockpath_build_info of each instance.",
            qt("A", f"max by (instance, version, revision) (clockpath_build_info{{{INST}}})"),
            w=8,
        )
    )
    d = d.with_panel(
        tab(
            ids,
            "Chains and attach kinds per instance",
            "Probe points attached, per instance, chain and attach kind (fentry, kprobe, tp_btf, ...).",
            qt("A", f'count by (instance, chain, attach) (clockpath_probe_info{{state="attached", {INST}}})'),
            value="attached points",
        )
    )
    d = d.with_panel(
        tab(
            ids,
            "Attached probes",
            "Each stage's attached target per instance.",
            qt("A", f'max by (instance, chain, stage, attach, target) (clockpath_probe_info{{state="attached", {INST}}})'),
        )
    )
    d = d.with_panel(
        tab(
            ids,
            "Probe problems: candidates not attached, with the reason",
            "Candidates that are missing, unusable or failed. A candidate with a reason is normal when "
            "another candidate of its stage attached (a fallback); see the next table for stages with none.",
            qt("A", f'max by (instance, chain, stage, target, attach, state, reason) (clockpath_probe_info{{reason!="", {INST}}})'),
            w=16,
        )
    )
    d = d.with_panel(
        tab(
            ids,
            "Stages with no attached probe",
            "Stages of which no candidate attached (the chain cannot run).",
            qt(
                "A",
                f"count by (instance, chain, stage) (clockpath_probe_info{{{INST}}}) unless on (instance, chain, stage) "
                f'count by (instance, chain, stage) (clockpath_probe_info{{state="attached", {INST}}})',
            ),
            value="candidates",
            w=8,
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Chains completed per second",
            "Chain instances completed per second, per instance and chain.",
            "ops",
            q("A", f"sum by (instance, chain) (rate(clockpath_chains_completed_total{{{SEL}}}{RI}))", "{{instance}} {{chain}}"),
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Ring records lost per second",
            "Records the kernel could not write because the ring was full (histograms stay exact).",
            "ops",
            q("A", f"sum by (instance) (rate(clockpath_ring_records_lost_total{{{SEL}}}{RI}))", "{{instance}}"),
        )
    )
    d = d.with_panel(
        states(
            ids,
            "PPS signal",
            "1 while the source's edges come, per instance and device.",
            q("A", f"clockpath_pps_signal_present{{{SEL}}}", "{{instance}} {{device}}"),
            "present",
            "lost",
        )
    )
    d = d.with_panel(
        states(
            ids,
            "Kernel clock synchronised",
            "adjtimex sync state of each instance (as node_timex_sync_status).",
            q("A", f"clockpath_timex_sync_status{{{INST}}}", "{{instance}}"),
            "synchronised",
            "unsynchronised",
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Kernel clock maximum error",
            "adjtimex maxerror of each instance.",
            "s",
            q("A", f"clockpath_timex_maxerror_seconds{{{INST}}}", "{{instance}}"),
        )
    )
    d = d.with_panel(
        ts(
            ids,
            "Self-overhead per instance",
            "BPF programs' kernel CPU per second (with probe.bpf_stats = true) and the exporter process's CPU.",
            "percentunit",
            q("A", f"sum by (instance) (rate(clockpath_bpf_program_run_time_seconds_total{{{INST}}}{RI}))", "{{instance}} BPF"),
            q("B", f"sum by (instance) (rate(process_cpu_seconds_total{{{INST}}}{RI})) and on (instance) clockpath_build_info", "{{instance}} userspace"),
        )
    )
    return d


DASHBOARDS = {"clockpath.json": offset_tracking, "clockpath-fleet.json": fleet}


def render() -> dict[str, str]:
    """File name -> the JSON text it must hold."""
    return {
        name: json.dumps(build().build(), cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main() -> int:
    check = sys.argv[1:] == ["--check"]
    stale = []
    for name, text in render().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"dashboards differ from dashboards/generate.py: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
