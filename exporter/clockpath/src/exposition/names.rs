//! Every metric name clockpath exposes, in one place, with its help text. Counter names are
//! given without `_total` (the encoder appends it), info names without `_info`.

pub const SEGMENT_DURATION: &str = "clockpath_segment_duration_seconds";
pub const SEGMENT_DURATION_HELP: &str =
    "Duration of each chain segment (and of the whole chain, segment=\"total\"), exact from the in-kernel histograms.";
pub const SEGMENT_QUANTILE: &str = "clockpath_segment_duration_quantile_seconds";
pub const SEGMENT_QUANTILE_HELP: &str = "Quantile q of segment durations over the sliding window (HDR histograms of ring records; a gauge, as the label `quantile` is reserved for summaries).";

pub const CHAINS_OPENED: &str = "clockpath_chains_opened";
pub const CHAINS_OPENED_HELP: &str = "Chain instances opened by their first stage.";
pub const CHAINS_COMPLETED: &str = "clockpath_chains_completed";
pub const CHAINS_COMPLETED_HELP: &str = "Chain instances that reached their last stage.";
pub const CHAINS_TIMED_OUT: &str = "clockpath_chains_timed_out";
pub const CHAINS_TIMED_OUT_HELP: &str = "Chain instances closed because they outlived the chain's timeout.";
pub const CHAINS_REPLACED: &str = "clockpath_chains_replaced";
pub const CHAINS_REPLACED_HELP: &str = "Chain instances replaced by a new first-stage hit on the same key.";
pub const CHAINS_ABORTED: &str = "clockpath_chains_aborted";
pub const CHAINS_ABORTED_HELP: &str = "Chain instances closed by an abort point.";
pub const CHAINS_NOT_SAMPLED: &str = "clockpath_chains_not_sampled";
pub const CHAINS_NOT_SAMPLED_HELP: &str =
    "First-stage hits of a sampled chain (sample_every > 1) that opened no instance.";
pub const CHAINS_NESTED: &str = "clockpath_chains_nested_hits";
pub const CHAINS_NESTED_HELP: &str = "Hits that interrupted a clockpath probe updating the same instance on the same CPU (a hardirq inside a softirq probe): not applied, not streamed.";
pub const SAMPLE_EVERY: &str = "clockpath_chain_sample_every";
pub const SAMPLE_EVERY_HELP: &str = "A chain's sampling: its first stage opens an instance on every Nth hit per CPU (1: every hit). Multiply instance rates by it to estimate the unsampled rate.";
pub const RING_LOST: &str = "clockpath_ring_records_lost";
pub const RING_LOST_HELP: &str =
    "Records the kernel could not write because the ring buffer was full (histograms stay exact).";
pub const MAP_FULL: &str = "clockpath_instance_map_full";
pub const MAP_FULL_HELP: &str = "First-stage hits dropped because the instance map was full.";
pub const OUT_OF_ORDER: &str = "clockpath_stage_hits_out_of_order";
pub const OUT_OF_ORDER_HELP: &str = "Stage hits on an open instance that were not its next stage.";
pub const STAGE_HITS: &str = "clockpath_stage_hits";
pub const STAGE_HITS_HELP: &str = "Hits of each attached stage program.";

pub const RECORDS_RECEIVED: &str = "clockpath_ring_records_received";
pub const RECORDS_RECEIVED_HELP: &str = "Records read from the ring buffer.";
pub const RECORDS_DROPPED: &str = "clockpath_records_dropped";
pub const RECORDS_DROPPED_HELP: &str = "Records dropped in userspace because chain assembly fell behind.";
pub const CHAINS_INCOMPLETE: &str = "clockpath_chains_incomplete";
pub const CHAINS_INCOMPLETE_HELP: &str =
    "Chain instances assembled with missing segments (records lost, or evicted after the timeout).";

pub const MEMORY: &str = "clockpath_memory_bytes";
pub const MEMORY_HELP: &str = "Memory clockpath holds, by component: the heap of chain assembly and of each sink (HDR histograms, window reservoirs, OTLP queue, recorder buffers), record batches queued for assembly, and the ring buffer's mapping (shared with the kernel; its pages count in the resident size).";
pub const PROCESS_RESIDENT: &str = "process_resident_memory_bytes";
pub const PROCESS_RESIDENT_HELP: &str = "Resident memory size in bytes.";
pub const PROCESS_RESIDENT_PEAK: &str = "clockpath_process_resident_memory_peak_bytes";
pub const PROCESS_RESIDENT_PEAK_HELP: &str = "The most resident memory the process has used (VmHWM), in bytes: the start-up peak, while the kernel's facts are read and the programs loaded.";
pub const PROCESS_CPU: &str = "process_cpu_seconds";
pub const PROCESS_CPU_HELP: &str = "Total user and system CPU time spent in seconds.";
pub const PROCESS_VIRTUAL: &str = "process_virtual_memory_bytes";
pub const PROCESS_VIRTUAL_HELP: &str = "Virtual memory size in bytes.";
pub const PROCESS_START: &str = "process_start_time_seconds";
pub const PROCESS_START_HELP: &str = "Start time of the process since unix epoch in seconds.";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_OPEN_FDS_HELP: &str = "Number of open file descriptors.";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_MAX_FDS_HELP: &str = "Maximum number of open file descriptors.";

pub const WINDOWS_SKIPPED: &str = "clockpath_windows_skipped";
pub const WINDOWS_SKIPPED_HELP: &str =
    "Statistics windows closed but not computed because the worker was still busy with earlier ones (at most 4 wait).";
pub const ASSEMBLY_EVICTIONS: &str = "clockpath_assembly_evictions";
pub const ASSEMBLY_EVICTIONS_HELP: &str = "Partial chain instances userspace assembly gave up on and emitted incomplete: their chain's timeout passed (a record was lost), or it held its most (twice probe.max_instances).";

pub const PROBE: &str = "clockpath_probe";
pub const PROBE_HELP: &str =
    "Each candidate attach target of each stage: what was attached, and why the others were not.";
pub const RECORDER_LINES: &str = "clockpath_recorder_lines";
pub const RECORDER_LINES_HELP: &str = "Stage hits given to the recorder (lines, lost ones included).";
pub const RECORDER_DROPPED: &str = "clockpath_recorder_lines_dropped";
pub const RECORDER_DROPPED_HELP: &str = "Recorder lines lost: buffered when a write failed (e.g. a full disk; the file is cut back to its last whole line), or recorded while no file could be opened.";
pub const RECORDER_ERRORS: &str = "clockpath_recorder_write_errors";
pub const RECORDER_ERRORS_HELP: &str = "Recorder writes, flushes and file rotations that failed.";

pub const HTTP_AUTH_FAILURES: &str = "clockpath_http_auth_failures";
pub const HTTP_AUTH_FAILURES_HELP: &str =
    "Requests refused with 401: missing or wrong basic-auth credentials (http.web_config).";
pub const HTTP_TLS_FAILURES: &str = "clockpath_http_tls_handshake_failures";
pub const HTTP_TLS_FAILURES_HELP: &str = "TLS connections that never got to a request, by reason: plaintext (plain HTTP sent to the TLS port, answered 400), handshake (a TLS error such as an untrusted client certificate), timeout.";
pub const HTTP_REJECTED: &str = "clockpath_http_connections_rejected";
pub const HTTP_REJECTED_HELP: &str = "Connections closed at accept, by reason: per_address (the client address's 16 connections were all busy or served), total (all 64 were busy).";
pub const HTTP_CLOSED: &str = "clockpath_http_connections_closed";
pub const HTTP_CLOSED_HELP: &str = "Connections the server closed, by reason: evicted (idle, to make room for a new connection at a limit: never answered first), stalled (the client took in less than 1 KiB of a response in 10 s).";
pub const WEB_CONFIG_RELOAD_OK: &str = "clockpath_web_config_last_reload_successful";
pub const WEB_CONFIG_RELOAD_OK_HELP: &str = "1 if the last read of http.web_config (at start, on change or on SIGHUP) succeeded; 0 if it failed and the previous settings stay in force.";
pub const WEB_CONFIG_RELOAD_TIME: &str = "clockpath_web_config_last_reload_success_timestamp_seconds";
pub const WEB_CONFIG_RELOAD_TIME_HELP: &str = "Unix time of the last successful read of http.web_config.";

pub const BUILD: &str = "clockpath_build";
pub const BUILD_HELP: &str = "clockpath build information.";
pub const ENVIRONMENT: &str = "clockpath_environment";
pub const ENVIRONMENT_HELP: &str =
    "The machine clockpath runs on: host or vm, hypervisor, clocksource, cpufreq governor, C-state limit.";

pub const BPF_RUN_TIME: &str = "clockpath_bpf_program_run_time_seconds";
pub const BPF_RUN_TIME_HELP: &str = "Kernel run time of each attached BPF program (kernel.bpf_stats_enabled).";
pub const BPF_RUN_COUNT: &str = "clockpath_bpf_program_run_count";
pub const BPF_RUN_COUNT_HELP: &str = "Runs of each attached BPF program (kernel.bpf_stats_enabled).";

pub const WINDOW_MEDIAN: &str = "clockpath_window_median_seconds";
pub const WINDOW_MEDIAN_HELP: &str = "Median of the segment over the last statistics window (outlier runs rejected).";
pub const WINDOW_CI_LOWER: &str = "clockpath_window_ci_lower_seconds";
pub const WINDOW_CI_LOWER_HELP: &str = "Lower bound of the bootstrap percentile CI of the window median.";
pub const WINDOW_CI_UPPER: &str = "clockpath_window_ci_upper_seconds";
pub const WINDOW_CI_UPPER_HELP: &str = "Upper bound of the bootstrap percentile CI of the window median.";
pub const WINDOW_STD_DEV: &str = "clockpath_window_std_dev_seconds";
pub const WINDOW_STD_DEV_HELP: &str =
    "Sample standard deviation of the segment over the window (outlier runs rejected).";
pub const WINDOW_SAMPLES: &str = "clockpath_window_samples";
pub const WINDOW_SAMPLES_HELP: &str = "Runs the window statistics were computed from (after rejection).";
pub const WINDOW_REJECTED: &str = "clockpath_window_outliers_rejected";
pub const WINDOW_REJECTED_HELP: &str = "Runs rejected as outliers in the window (beyond sigma standard deviations from the median of the reference segment).";
pub const WINDOW_END: &str = "clockpath_window_end_timestamp_seconds";
pub const WINDOW_END_HELP: &str = "When the window closed (UNIX time).";
pub const WINDOW_RELIABLE: &str = "clockpath_window_reliable";
pub const WINDOW_RELIABLE_HELP: &str = "1 when the window had at least 100 runs, 0 when its CI is not to be relied on.";

pub const INTERFERENCE: &str = "clockpath_segment_interference_seconds";
pub const INTERFERENCE_HELP: &str = "Time charged to segments by each interference source (IRQs, softirqs, the task switched out, hrtimer handlers, VM exits) on the segment's CPU.";
pub const INTERFERENCE_UNKNOWN: &str = "clockpath_segment_interference_unknown";
pub const INTERFERENCE_UNKNOWN_HELP: &str = "Segments of interference-charged chains that ended on another CPU than they started on (their interference is unknown).";

pub const OTLP_SAMPLED: &str = "clockpath_otlp_chains_sampled";
pub const OTLP_SAMPLED_HELP: &str = "Chain instances kept for a trace, by reason: outlier of the statistics window, slower than the p99, or within the per-chain rate.";
pub const OTLP_SAMPLED_OUT: &str = "clockpath_otlp_chains_sampled_out";
pub const OTLP_SAMPLED_OUT_HELP: &str =
    "Chain instances not traced (over the per-chain rate and neither outlier nor slow).";
pub const OTLP_SPANS_EXPORTED: &str = "clockpath_otlp_spans_exported";
pub const OTLP_SPANS_EXPORTED_HELP: &str = "Spans the collector accepted.";
pub const OTLP_SPANS_DROPPED: &str = "clockpath_otlp_spans_dropped";
pub const OTLP_SPANS_DROPPED_HELP: &str = "Spans dropped: export queue full, export failed (collector down, refused or timed out, after retries), or still queued at shutdown.";
pub const OTLP_REQUESTS: &str = "clockpath_otlp_export_requests";
pub const OTLP_REQUESTS_HELP: &str = "OTLP export requests by result.";
pub const OTLP_QUEUE: &str = "clockpath_otlp_queue_chains";
pub const OTLP_QUEUE_HELP: &str = "Sampled chain instances waiting for export.";
pub const OTLP_QUEUE_CAPACITY: &str = "clockpath_otlp_queue_capacity_chains";
pub const OTLP_QUEUE_CAPACITY_HELP: &str = "Size of the export queue (otlp.queue_chains).";
pub const OTLP_LAST_EXPORT: &str = "clockpath_otlp_last_export_timestamp_seconds";
pub const OTLP_LAST_EXPORT_HELP: &str = "When the collector last accepted spans (UNIX time).";

// The time reference: PPS sources (per `device`).
pub const PPS_INFO: &str = "clockpath_pps";
pub const PPS_INFO_HELP: &str = "A configured PPS source: its device, and the name and path the kernel gives it.";
pub const PPS_SIGNAL: &str = "clockpath_pps_signal_present";
pub const PPS_SIGNAL_HELP: &str =
    "1 while the source's edges come (one within pps.lost_after_ms), 0 once the signal is lost.";
pub const PPS_OFFSET: &str = "clockpath_pps_offset_seconds";
pub const PPS_OFFSET_HELP: &str = "The system clock's offset from the true second at the last edge (edge time minus cable delay minus the second; positive: the system clock is ahead). A PPS edge gives the offset modulo one second.";
pub const PPS_PULSES: &str = "clockpath_pps_pulses";
pub const PPS_PULSES_HELP: &str = "Edges read from the source.";
pub const PPS_MISSED: &str = "clockpath_pps_missed_pulses";
pub const PPS_MISSED_HELP: &str = "Pulses missed: seconds between consecutive edges (or their sequence numbers) beyond one, including while the signal was lost.";
pub const PPS_JITTER: &str = "clockpath_pps_jitter_seconds";
pub const PPS_JITTER_HELP: &str = "RMS scatter of the last 16 offsets around their straight line (drift removed).";
pub const PPS_READ_ERRORS: &str = "clockpath_pps_read_errors";
pub const PPS_READ_ERRORS_HELP: &str = "PPS_FETCH calls that failed (device gone, driver error).";
pub const PPS_REMOVALS: &str = "clockpath_pps_device_removals";
pub const PPS_REMOVALS_HELP: &str = "Times the device went away under the reader (driver unloaded, receiver unplugged); it is opened again when it comes back.";
pub const PPS_GLITCHES: &str = "clockpath_pps_glitches";
pub const PPS_GLITCHES_HELP: &str =
    "Edges dropped as glitches: less than half a second after the previous one (a bouncing line, noise).";
pub const PPS_UNUSABLE: &str = "clockpath_pps_unusable";
pub const PPS_UNUSABLE_HELP: &str = "A PPS device `pps.devices = auto` found but cannot use, and why.";
pub const PPS_WINDOW_MEDIAN: &str = "clockpath_pps_window_median_seconds";
pub const PPS_WINDOW_MEDIAN_HELP: &str =
    "Median of the PPS offset over the last statistics window (outliers rejected as for chains).";
pub const PPS_WINDOW_CI_LOWER: &str = "clockpath_pps_window_ci_lower_seconds";
pub const PPS_WINDOW_CI_LOWER_HELP: &str =
    "Lower bound of the bootstrap percentile CI of the window's median PPS offset.";
pub const PPS_WINDOW_CI_UPPER: &str = "clockpath_pps_window_ci_upper_seconds";
pub const PPS_WINDOW_CI_UPPER_HELP: &str =
    "Upper bound of the bootstrap percentile CI of the window's median PPS offset.";
pub const PPS_WINDOW_STD_DEV: &str = "clockpath_pps_window_std_dev_seconds";
pub const PPS_WINDOW_STD_DEV_HELP: &str = "Standard deviation of the PPS offset over the window (outliers rejected).";
pub const PPS_WINDOW_SAMPLES: &str = "clockpath_pps_window_samples";
pub const PPS_WINDOW_SAMPLES_HELP: &str = "Offsets the window statistics were computed from (after rejection).";
pub const PPS_WINDOW_REJECTED: &str = "clockpath_pps_window_outliers_rejected";
pub const PPS_WINDOW_REJECTED_HELP: &str = "Offsets rejected as outliers in the window.";
pub const PPS_WINDOW_END: &str = "clockpath_pps_window_end_timestamp_seconds";
pub const PPS_WINDOW_END_HELP: &str = "When the PPS offset window closed (UNIX time).";
pub const PPS_WINDOW_RELIABLE: &str = "clockpath_pps_window_reliable";
pub const PPS_WINDOW_RELIABLE_HELP: &str =
    "1 when the window had at least 100 offsets, 0 when its CI is not to be relied on.";

// The kernel clock's synchronisation (adjtimex, read-only): node_exporter's timex names and
// units with the clockpath_ prefix, so `node_timex_X` and `clockpath_timex_X` join on instance.
pub const TIMEX_SYNC: &str = "clockpath_timex_sync_status";
pub const TIMEX_SYNC_HELP: &str =
    "1 when the kernel clock is synchronised (adjtimex does not return TIME_ERROR), as node_timex_sync_status.";
pub const TIMEX_MAXERROR: &str = "clockpath_timex_maxerror_seconds";
pub const TIMEX_MAXERROR_HELP: &str = "The kernel clock's maximum error (adjtimex maxerror).";
pub const TIMEX_ESTERROR: &str = "clockpath_timex_estimated_error_seconds";
pub const TIMEX_ESTERROR_HELP: &str = "The kernel clock's estimated error (adjtimex esterror).";
pub const TIMEX_OFFSET: &str = "clockpath_timex_offset_seconds";
pub const TIMEX_OFFSET_HELP: &str = "The kernel discipline's time offset (adjtimex offset).";
pub const TIMEX_FREQ: &str = "clockpath_timex_frequency_adjustment_ratio";
pub const TIMEX_FREQ_HELP: &str = "The kernel clock's frequency adjustment as a ratio (1 + ppm / 10^6).";
pub const TIMEX_STATUS: &str = "clockpath_timex_status";
pub const TIMEX_STATUS_HELP: &str = "The adjtimex status word (STA_* bits).";
pub const TIMEX_TAI: &str = "clockpath_timex_tai_offset_seconds";
pub const TIMEX_TAI_HELP: &str = "TAI minus UTC as the kernel knows it.";
pub const TIMEX_CONSTANT: &str = "clockpath_timex_loop_time_constant";
pub const TIMEX_CONSTANT_HELP: &str = "The kernel PLL's time constant.";
pub const TIMEX_TICK: &str = "clockpath_timex_tick_seconds";
pub const TIMEX_TICK_HELP: &str = "Seconds between clock ticks.";
pub const TIMEX_PPS_FREQ: &str = "clockpath_timex_pps_frequency_hertz";
pub const TIMEX_PPS_FREQ_HELP: &str = "The kernel PPS discipline's frequency.";
pub const TIMEX_PPS_JITTER: &str = "clockpath_timex_pps_jitter_seconds";
pub const TIMEX_PPS_JITTER_HELP: &str = "The kernel PPS discipline's jitter.";
pub const TIMEX_PPS_SHIFT: &str = "clockpath_timex_pps_shift_seconds";
pub const TIMEX_PPS_SHIFT_HELP: &str = "The kernel PPS discipline's calibration interval.";
pub const TIMEX_PPS_STABILITY: &str = "clockpath_timex_pps_stability_hertz";
pub const TIMEX_PPS_STABILITY_HELP: &str = "The kernel PPS discipline's stability (average relative frequency change).";
pub const TIMEX_PPS_JITTER_COUNT: &str = "clockpath_timex_pps_jitter";
pub const TIMEX_PPS_JITTER_COUNT_HELP: &str = "Kernel PPS jitter limit exceeded events.";
pub const TIMEX_PPS_CALIBRATION: &str = "clockpath_timex_pps_calibration";
pub const TIMEX_PPS_CALIBRATION_HELP: &str = "Kernel PPS calibration intervals.";
pub const TIMEX_PPS_ERROR: &str = "clockpath_timex_pps_error";
pub const TIMEX_PPS_ERROR_HELP: &str = "Kernel PPS calibration errors.";
pub const TIMEX_PPS_STABILITY_EXCEEDED: &str = "clockpath_timex_pps_stability_exceeded";
pub const TIMEX_PPS_STABILITY_EXCEEDED_HELP: &str = "Kernel PPS stability limit exceeded events.";

pub const CHAIN_RUNNING: &str = "clockpath_chain_running";
pub const CHAIN_RUNNING_HELP: &str = "1 when the chain is attached and running, 0 when it is configured but unavailable (clockpath_probe_info says why).";

// The periodic clock audit (`[clock_audit]`, per `clock`: `posix:boottime`, `ftrace:local`, …).
pub const CLOCK_OFFSET: &str = "clockpath_clock_offset_seconds";
pub const CLOCK_OFFSET_HELP: &str = "The clock minus CLOCK_MONOTONIC at the latest audit (a PPS phase: modulo one second). Two timestamps taken on two clocks differ by the difference of their offsets.";
pub const CLOCK_UNCERTAINTY: &str = "clockpath_clock_offset_uncertainty_seconds";
pub const CLOCK_UNCERTAINTY_HELP: &str = "Half the tightest bracket of CLOCK_MONOTONIC reads around the clock's read, plus its resolution: the offset is within ± this.";
pub const CLOCK_DRIFT: &str = "clockpath_clock_drift_ratio";
pub const CLOCK_DRIFT_HELP: &str = "How fast the offset changes, seconds per second of CLOCK_MONOTONIC (1e-6 is 1 ppm): over the last interval between audits without a jump, else within the latest audit.";
pub const CLOCK_JUMPS: &str = "clockpath_clock_offset_jumps";
pub const CLOCK_JUMPS_HELP: &str = "Times the offset moved between two audits by more than the previous interval's drift, both uncertainties and clock_audit.jump_threshold_us explain: a suspend (boottime), a clock step (realtime, tai), a changed slew.";
pub const CLOCK_AUDITS: &str = "clockpath_clock_audits";
pub const CLOCK_AUDITS_HELP: &str = "Clock audits done (the one at start included).";
pub const CLOCK_AUDIT_CPU: &str = "clockpath_clock_audit_cpu_seconds";
pub const CLOCK_AUDIT_CPU_HELP: &str = "CPU time the periodic clock audits took.";
pub const CLOCK_AUDIT_LAST: &str = "clockpath_clock_audit_last_timestamp_seconds";
pub const CLOCK_AUDIT_LAST_HELP: &str = "When the latest clock audit ended (UNIX time).";
