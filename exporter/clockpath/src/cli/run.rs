//! `clockpath run`: attach the configured chains, serve `/metrics`, `/healthz` and `/`, and
//! export what the chains measure until a signal or `--duration`.

use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use clockpath_probe::{kernel::Kernel, loader::ProgramStats};

use super::{CliError, RunArgs, config_error, load_config, runtime, start_error};
use crate::{
    config::ConfigError,
    daemon::{self, Daemon},
    exposition::{CommonLabels, EnvironmentInfo, Exposition},
    host::{Environment, TimeSync},
    http,
    ktime::WallClock,
    pps::TimeReference,
    privileges,
    sinks::{self, Builder, Published},
};

pub(super) fn run_cmd(config: Option<&Path>, args: RunArgs) -> Result<ExitCode, CliError> {
    crate::process::tune_allocator();
    let mut loaded = load_config(config)?;
    if let Some(listen) = &args.listen {
        listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| config_error(anyhow::anyhow!("--listen: `{listen}` is not an ADDRESS:PORT ({e})")))?;
        loaded.config.http.listen = listen.clone();
    }
    // The kernel's facts (symbols, BTF) are only needed to plan: dropped before the daemon
    // starts, which hands the memory back.
    let kernel = Kernel::open();
    let plans = daemon::plan(&loaded, &kernel).map_err(start_error)?;
    // What this process lacks, named with what it disables, before anything is tried.
    let context = privileges::Context { run_only: true, ..privileges::Context::of(&kernel, &loaded.config) };
    let missing = privileges::missing(&privileges::effective(), &context);
    drop(kernel);
    for m in &missing {
        tracing::warn!(capability = %m.capability, disables = %m.disables, "missing capability");
    }
    // Kernels before 5.19 refuse every bpf() call, reads of maps already open included,
    // without CAP_BPF while unprivileged BPF is disabled: there the exporter keeps them.
    let drop_capabilities = match privileges::drop_refused_by_kernel() {
        Some(why) => {
            tracing::warn!("capabilities kept after attaching: {why}");
            false
        }
        None => true,
    };
    // Created now, with the capabilities the path may need, and written at exit.
    // `-` is standard output; a file is never written through a link (such as /dev/stdout).
    let summary_file: Option<Box<dyn std::io::Write>> = match &args.summary_json {
        Some(path) if path.as_os_str() == "-" => Some(Box::new(std::io::stdout())),
        Some(path) => Some(Box::new(
            clockpath_offline::outfile::create(path)
                .with_context(|| format!("--summary-json: creating {} (`-` writes to standard output)", path.display()))
                .map_err(config_error)?,
        )),
        None => None,
    };
    // The clocks audited at the start (sources kept for the periodic audits and the end),
    // opened while the process holds its capabilities.
    let audit_every = Duration::from_secs(loaded.config.clock_audit.interval_secs);
    let mut audits =
        (args.summary_json.is_some() || !audit_every.is_zero()).then(|| crate::clockaudit::Audits::start(&loaded));
    let rt = runtime(drop_capabilities)?;
    rt.block_on(async move {
        // SIGTERM and SIGINT are caught from here on: one that comes while attaching or
        // before the server is up stops the exporter cleanly too, instead of killing it.
        let stop_signals = StopSignals::install()?;
        let cfg = &loaded.config;
        // Bind before attaching anything: a taken port is a configuration error.
        let addr: std::net::SocketAddr =
            cfg.http.listen.parse().map_err(|e| config_error(anyhow::anyhow!("http.listen: {e}")))?;
        // The web config is read before anything is attached: a bad one is a configuration
        // error naming its key.
        let web = match cfg.http.web_config.as_str() {
            "" => None,
            path => Some(Arc::new(http::web_config::WebConfig::load(std::path::Path::new(path)).map_err(|e| {
                config_error(ConfigError::Invalid(vec![loaded.issue("http.web_config", e.to_string())]))
            })?)),
        };
        let listener = http::bind(addr).await.map_err(config_error)?;
        let environment = Environment::detect();
        let env = environment.env_label(&cfg.environment.env);
        let le_buckets = sinks::le_buckets(&loaded).map_err(config_error)?;
        let time_sync_at_start = TimeSync::read();
        if let Some(problem) = time_sync_at_start.as_ref().and_then(|t| t.problem(cfg.time_sync.max_error_ms)) {
            tracing::warn!("{problem}; the summary records the state");
        }
        // The PPS sources open before anything is attached: a device that cannot be used is a
        // configuration error naming its entry.
        let reference =
            Arc::new(TimeReference::start(&cfg.pps, &cfg.windows, Arc::new(WallClock::new())).map_err(|e| {
                let issue =
                    loaded.issue(format!("pps.devices[{}]", e.index), format!("{:#}", anyhow::Error::new(e.source)));
                config_error(ConfigError::Invalid(vec![issue]))
            })?);
        let mut published = Published::default();
        let daemon = Daemon::start_with(&loaded, plans, |attached| {
            // The sinks are built with this thread's capabilities (a recorder directory or
            // certificate where root needs DAC_OVERRIDE); their threads give up their own.
            let set = Builder::exporter(&loaded, attached, &env, reference.clone())?;
            // Attached and built: nothing from here on needs a capability. The assembly
            // thread started next inherits this thread's empty sets.
            if drop_capabilities {
                privileges::drop_thread(&[])?;
            }
            published = set.published;
            Ok(set.sinks)
        })
        .map_err(|e| match e {
            daemon::StartError::NothingRuns(why) if missing.iter().any(|m| m.fatal) => {
                let lacking: Vec<String> = missing.iter().filter(|m| m.fatal).map(|m| m.capability.clone()).collect();
                start_error(daemon::StartError::NothingRuns(format!(
                    "{why}\n  this process lacks {} (see `clockpath doctor`)",
                    lacking.join(" and ")
                )))
            }
            e => start_error(e),
        })?;
        // Started after the capability drop, so the audit thread holds none either.
        let live_clocks = crate::clockaudit::SharedClocks::default();
        let mut live_audits = None;
        if !audit_every.is_zero()
            && let Some(a) = audits.take()
        {
            let threshold_ns = cfg.clock_audit.jump_threshold_us.saturating_mul(1000);
            match a.live(audit_every, threshold_ns, live_clocks.clone()) {
                Ok(l) => live_audits = Some(l),
                Err(e) => tracing::warn!("the periodic clock audit does not run: starting its thread: {e}"),
            }
        }
        if drop_capabilities {
            let threads = privileges::verify_within(Duration::from_secs(2)).map_err(|e| start_error(e.into()))?;
            let kept: Vec<String> = threads
                .iter()
                .filter(|t| !t.permitted.is_empty())
                .map(|t| format!("{} keeps {}", t.name, privileges::names(&t.permitted).join(",")))
                .collect();
            tracing::info!(
                threads = threads.len(),
                kept = %if kept.is_empty() { "none".to_string() } else { kept.join("; ") },
                "capabilities given up after attaching"
            );
        }
        let exposition = Exposition {
            plans: daemon.plans.clone(),
            maps: daemon.maps.clone(),
            stats: daemon.stats.clone(),
            published: published.clone(),
            labels: CommonLabels { env: env.clone(), statics: cfg.environment.labels.clone() },
            environment: EnvironmentInfo {
                env: env.clone(),
                kernel: environment.kernel.clone(),
                hypervisor: environment.hypervisor.clone(),
                governor: environment.cpufreq_governor.clone(),
                cstate_limit: environment.cstate_limit.clone(),
            },
            le_buckets,
            ring_mapping_bytes: daemon.rings.mapping_bytes(),
            reference: Some(reference.clone()),
            clocks: live_audits.is_some().then(|| live_clocks.clone()),
            program_stats: cfg
                .probe
                .bpf_stats
                .then(|| Box::new(daemon.program_stats_fn()) as Box<dyn Fn() -> Vec<ProgramStats> + Send + Sync>),
        };
        let http_stats = Arc::new(http::HttpStats::default());
        let mut registry = exposition.into_registry();
        http::register(&mut registry, http_stats.clone(), web.clone());
        let scheme = if web.as_ref().is_some_and(|w| w.tls_enabled()) { "https" } else { "http" };
        let state = Arc::new(http::HttpState {
            registry,
            health: daemon.health.clone(),
            landing: http::landing_page(&daemon.plans, &env),
            exemplars: published.exemplars.clone(),
            reference: Some(reference.clone()),
            web,
            auth: Arc::default(),
            stats: http_stats,
        });
        let (stop_http, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(http::serve(listener, state, stop_rx));
        tracing::info!(%addr, scheme, "serving /metrics, /healthz and /");
        stop_signals.wait(args.duration).await;
        tracing::info!("stopping: detaching probes and draining the ring buffer");
        let (plans, maps, stats) = (daemon.plans.clone(), daemon.maps.clone(), daemon.stats.clone());
        let _sinks = daemon.stop().await;
        let _ = stop_http.send(true);
        let _ = server.await;
        reference.stop();
        let mut summary = {
            let m = maps.lock().map_err(|_| anyhow::anyhow!("kernel maps lock poisoned"))?;
            let tally = published.tally.as_ref().context("the exporter counts what it receives")?;
            let t = tally.chains.lock().map_err(|_| anyhow::anyhow!("tally lock poisoned"))?;
            daemon::summary::summarize(&plans, &m, &t, &stats)
        };
        let mut time = daemon::summary::TimeSummary::new(time_sync_at_start, TimeSync::read(), &reference);
        if let Some(l) = live_audits {
            audits = tokio::task::block_in_place(|| l.stop());
        }
        if args.summary_json.is_some() {
            time.clocks = audits.map(|a| tokio::task::block_in_place(|| a.finish()));
        }
        summary.time = Some(time);
        for c in &summary.chains {
            tracing::info!(
                chain = %c.name,
                completed = c.completed,
                hist_segments = c.hist_segments,
                received = c.segments_received,
                lost = c.ring_lost_segments,
                "summary"
            );
        }
        if let (Some(mut file), Some(path)) = (summary_file, &args.summary_json) {
            use std::io::Write as _;
            let text = serde_json::to_string_pretty(&summary).context("serializing the summary")?;
            file.write_all(text.as_bytes())
                .and_then(|()| file.flush())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGTERM and SIGINT, caught.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<StopSignals, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Until a signal, or `duration`.
    async fn wait(mut self, duration: Option<Duration>) {
        let timer = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
            _ = timer => {}
        }
    }
}
