//! `tidewatch serve`: builds every stage from the configuration, runs them, stops them in order.
//!
//! Stop order on SIGTERM / Ctrl-C: stop accepting requests and finish in-flight ones, stop
//! the demo and the sources (each after its current append), then signal the consumers,
//! which flush the lake and commit their offsets, then drain the alert sinks, then close the
//! log.

use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tw_alerts::{AlertStore, Dispatcher};
use tw_core::{Retention, StreamConfig, StreamName, now_ms};
use tw_detect::{EngineConfig, RuleFormat, parse_rule};
use tw_lake::{Lake, LakeConfig};
use tw_log::{DiskLog, Log, LogConfig, OffsetStore};
use tw_os::ThreadPriority;
use tw_pipeline::{
    DeadLetterQueue, IngestLimits, Ingestor, RunnerConfig, StreamDefaults, StreamRegistry,
    spawn_consumer,
};
use tw_query::{QueryConfig, QueryEngine};
use tw_server::{AppState, RuleRegistry};

use crate::config::Config;
use crate::detection::DetectionConsumer;

/// Priority of the lake consumer and of lake maintenance (ingest and detection keep the
/// normal one): a smaller share of busy CPUs, yet always a share.
const LAKE_PRIORITY: ThreadPriority = ThreadPriority::Nice(10);
/// Priority of the search consumer and of the indexing threads it starts: only the CPU time
/// nothing else wants, since indexing an event costs several times writing it to the lake
/// (BENCHMARKS.md) and SQL sees only what the lake consumer has read. At `nice` 15 its three
/// threads together weighed as much as the lake's one, and took the lake's place under full
/// load (BENCHMARKS.md, session 25).
const SEARCH_PRIORITY: ThreadPriority = ThreadPriority::Idle;

/// Runs the server until a shutdown signal.
pub async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    config.validate()?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let data = config.data_dir.clone();
    std::fs::create_dir_all(&data)
        .with_context(|| format!("creating data directory {}", data.display()))?;

    let log: Arc<dyn Log> = DiskLog::open(LogConfig {
        segment_max_bytes: config.log.segment_max_bytes,
        commit_interval_ms: config.log.commit_interval_ms,
        ..LogConfig::new(data.join("log"))
    })
    .context("opening the log")?;
    let offsets =
        Arc::new(OffsetStore::open(data.join("offsets")).context("opening consumer offsets")?);
    let dlq = DeadLetterQueue::open(log.clone()).context("opening the dead-letter queue")?;
    let defaults = StreamDefaults {
        config: StreamConfig {
            partitions: config.streams.partitions,
            partition_key: config.streams.partition_key.clone(),
            event_time_field: config.streams.event_time_field.clone(),
            lake: config.streams.lake.clone(),
            ..StreamConfig::default()
        },
        partition_keys: config.streams.partition_keys.clone(),
    };
    let registry = Arc::new(
        StreamRegistry::open(&data.join("streams"), log.clone(), defaults)
            .context("opening stream configurations")?,
    );
    let limits = IngestLimits {
        max_body_bytes: config.ingest.max_body_bytes,
        max_decompressed_bytes: config.ingest.max_decompressed_bytes,
        max_event_bytes: config.ingest.max_event_bytes,
    };
    let ingestor = Arc::new(Ingestor::new(
        log.clone(),
        registry.clone(),
        dlq.clone(),
        limits,
    ));
    let rules = Arc::new(
        RuleRegistry::open(&data.join("rules"), Arc::new(config.sigma.clone()))
            .context("opening rules")?,
    );
    if let Some(dir) = &config.rules_dir {
        load_rules_dir(&rules, dir, &config.sigma)?;
    }
    if demo {
        crate::demo::install_rules(&rules)?;
    }
    let alerts = AlertStore::open(&data.join("alerts")).context("opening the alert store")?;
    let (dispatcher, unconfirmed) =
        Dispatcher::start_tracked(config.sinks.clone(), &data.join("alerts"), &alerts)
            .context("starting alert sinks")?;
    resend_unconfirmed(&dispatcher, &rules, unconfirmed);
    let dispatcher = Arc::new(dispatcher);
    let lake_location = config
        .lake_location()
        .map_err(|problem| anyhow::anyhow!(problem))?;
    let lake = Lake::open(LakeConfig {
        location: lake_location.clone(),
        flush_max_rows: config.lake.flush_max_rows,
        flush_max_bytes: config.lake.flush_max_bytes,
        flush_max_age_ms: config.lake.flush_max_age_ms,
        compaction: config.lake.compaction.to_lake(),
    })
    .with_context(|| format!("opening the lake at {lake_location}"))?;
    let settings_registry = registry.clone();
    lake.use_stream_settings(Arc::new(move |stream| {
        settings_registry
            .get(stream)
            .map(|state| state.config.lake.clone())
            .unwrap_or_else(|| settings_registry.default_config(stream).lake)
    }));
    let query = Arc::new(
        QueryEngine::new(
            lake.clone(),
            QueryConfig {
                timeout_ms: config.query.timeout_ms,
                max_result_rows: config.query.max_result_rows,
                memory_limit_bytes: config.query.memory_limit_bytes,
                threads: config.query.threads,
            },
        )
        .context("starting the query engine")?,
    );

    let stop_consumers = Arc::new(AtomicBool::new(false));
    // The lake and search consumers (and the Parquet encoding and index merges they start)
    // run at a lower priority than ingest and detection: when the CPUs are busy, alerts and
    // acknowledgements come first, then the lake, and search catches up when there is slack.
    let runner_defaults = RunnerConfig {
        unready_after_failing: Duration::from_secs(config.unready_after_failing_secs),
        ..RunnerConfig::default()
    };
    let background = |priority| RunnerConfig {
        priority,
        ..runner_defaults.clone()
    };
    let lake_consumer = spawn_consumer(
        Box::new(lake.writer()),
        log.clone(),
        offsets.clone(),
        dlq.clone(),
        background(LAKE_PRIORITY),
        stop_consumers.clone(),
    )?;
    // Its own consumer (offsets under `search`): it commits every second, the lake every 10 s.
    let mut search =
        tw_search::SearchIndexes::open(tw_search::SearchConfig::new(data.join("search")))
            .context("opening the search indexes")?;
    if search.needs_rebuild() {
        // Indexes of an older layout: replay the log into new ones (the log's retention
        // bounds what comes back).
        tracing::warn!(
            "search indexes were built by an older version; rebuilding them from the log"
        );
        offsets
            .commit(search.indexer_name(), &Default::default())
            .context("resetting the search offsets")?;
        search
            .finish_rebuild()
            .context("removing the old search indexes")?;
    }
    let streams = registry.clone();
    let fields_of: tw_search::FieldsOf = Arc::new(move |stream| {
        streams
            .get(stream)
            .and_then(|state| state.config.search_fields.clone())
    });
    // Search keeps the hours the lake keeps (`lake.retention` of each stream).
    let streams = registry.clone();
    let retention_of: tw_search::RetentionOf = Arc::new(move |stream| {
        streams
            .get(stream)
            .and_then(|state| state.config.lake.retention_ms())
    });
    let search_consumer = spawn_consumer(
        Box::new(
            search
                .indexer()
                .with_fields(fields_of)
                .with_retention(retention_of),
        ),
        log.clone(),
        offsets.clone(),
        dlq.clone(),
        background(SEARCH_PRIORITY),
        stop_consumers.clone(),
    )?;
    let detect_dir = data.join("detect");
    std::fs::create_dir_all(&detect_dir)
        .with_context(|| format!("creating {}", detect_dir.display()))?;
    let engine_config = EngineConfig {
        allowed_lateness_ms: config.detect.allowed_lateness_ms,
        max_time_ahead_ms: config.detect.max_time_ahead_ms,
        max_groups_per_rule: config.detect.max_keys_per_rule,
        ..EngineConfig::default()
    };
    let detection = DetectionConsumer::new(
        engine_config.clone(),
        rules.subscribe(),
        alerts.clone(),
        dispatcher.clone(),
        detect_dir.join("checkpoint.json"),
    );
    let detect_consumer = spawn_consumer(
        Box::new(detection),
        log.clone(),
        offsets,
        dlq,
        RunnerConfig {
            // Partitions read in turn while catching up would put one partition's backlog
            // ahead of the others' by a whole batch (minutes on a quiet stream): their events
            // would be late. Slices well within the allowed lateness keep them in order.
            merge_partitions: Some(Duration::from_millis(
                (config.detect.allowed_lateness_ms / 4).clamp(1, 1000) as u64,
            )),
            ..runner_defaults.clone()
        },
        stop_consumers.clone(),
    )?;

    // One store of remembered ids for the native API's idempotency keys and the compatible
    // APIs' request ids and `_id`s.
    let dedup = tw_pipeline::DedupStore::open(log.clone(), tw_pipeline::dedup::DEFAULT_HORIZON_MS)
        .context("opening the remembered request ids")?;
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let state = Arc::new(AppState {
        log: log.clone(),
        ingestor: ingestor.clone(),
        dedup: dedup.clone(),
        rules,
        alerts,
        lake: lake.clone(),
        query,
        lake_progress: lake_consumer.progress.clone(),
        consumers: vec![
            ("lake".into(), lake_consumer.progress.clone()),
            ("detect".into(), detect_consumer.progress.clone()),
            ("search".into(), search_consumer.progress.clone()),
        ],
        metrics,
        query_freshness_wait: Duration::from_millis(config.query.freshness_wait_ms),
        sigma: Arc::new(config.sigma.clone()),
        engine_config,
        search,
        stopping: stopping.clone(),
    });
    let auth = Arc::new(tw_compat::Auth::new(config.auth.clone()));
    let compat = Arc::new(tw_compat::CompatState {
        ingestor: ingestor.clone(),
        log: log.clone(),
        auth: auth.clone(),
        dedup: dedup.clone(),
        consumers: state.consumers.clone(),
    });
    let dedup_maintenance = tokio::spawn(dedup.run_maintenance());
    let retention = tokio::spawn(enforce_retention(
        log.clone(),
        ingestor.clone(),
        config.log.dlq_retention.clone(),
    ));
    let lake_maintenance = tokio::spawn(crate::lake_maintenance::run(
        lake.clone(),
        Duration::from_secs(config.lake.compaction.interval_secs),
        LAKE_PRIORITY,
    ));
    let source_context = tw_sources::SourceContext {
        ingestor: ingestor.clone(),
        log: log.clone(),
        state_dir: data.join("sources"),
    };
    let source_list = config
        .sources
        .iter()
        .map(|source| tw_sources::build(source, &source_context))
        .collect::<Result<Vec<_>, _>>()
        .context("starting sources")?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    // Tests and scripts read this line to find an ephemeral port.
    println!(
        "tidewatch listening on http://{address} (data in {})",
        data.display()
    );
    let demo_task = demo.then(|| tokio::spawn(crate::demo::run(ingestor.clone())));
    let sources = tw_sources::RunningSources::start(source_list);

    // The native API behind the API-key check; the compatible protocols check their own
    // credentials (SigV4 needs the body).
    let app = tw_server::router(state)
        .layer(axum::middleware::from_fn_with_state(
            auth,
            tw_compat::require_api_key,
        ))
        .merge(tw_compat::router(compat));
    let deadline = Duration::from_secs(config.shutdown_timeout_secs);
    let serving = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            stopping_tx.send_replace(true);
        })
        .into_future();
    // In-flight requests get the shutdown timeout to finish; a client holding a connection
    // open longer must not keep the lake from being flushed.
    let mut stopping_seen = stopping.clone();
    let drain_bound = async move {
        let _ = stopping_seen.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(deadline).await;
    };
    tokio::select! {
        served = serving => served.context("serving HTTP")?,
        () = drain_bound => tracing::warn!(
            ?deadline,
            "HTTP connections still open after the shutdown timeout; closing them"
        ),
    }

    tracing::info!("shutting down: flushing the lake and committing offsets");
    if let Some(task) = demo_task {
        task.abort();
    }
    sources.stop(deadline).await;
    retention.abort();
    lake_maintenance.abort();
    dedup_maintenance.abort();
    stop_consumers.store(true, Ordering::Relaxed);
    let joined = tokio::time::timeout(
        deadline,
        tokio::task::spawn_blocking(move || {
            let _ = lake_consumer.thread.join();
            let _ = detect_consumer.thread.join();
            let _ = search_consumer.thread.join();
        }),
    )
    .await;
    if joined.is_err() {
        tracing::warn!(
            "consumers did not stop in time; what they had not committed will be replayed at the next start"
        );
    }
    // The detection consumer (joined above) held the other reference.
    match Arc::try_unwrap(dispatcher) {
        Ok(dispatcher) => dispatcher.shutdown(deadline).await,
        Err(_) => tracing::warn!(
            "alert sinks still in use at shutdown; queued deliveries finish in the background"
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Sends again the stored alerts that sinks had not confirmed when the server last stopped
/// (a kill -9 loses the sinks' queues), to the sinks their rule names now; alerts of rules in
/// shadow mode are not sent.
fn resend_unconfirmed(
    dispatcher: &Dispatcher,
    rules: &RuleRegistry,
    unconfirmed: Vec<(u64, tw_core::Alert)>,
) {
    if unconfirmed.is_empty() {
        return;
    }
    tracing::warn!(
        alerts = unconfirmed.len(),
        "sending again the alerts sinks had not confirmed before the last stop"
    );
    for (ordinal, alert) in unconfirmed {
        let rule = rules.get(&alert.rule_id);
        if rule.as_ref().is_some_and(|rule| rule.shadow) {
            continue;
        }
        let sinks = rule.map(|rule| rule.sinks).unwrap_or_default();
        dispatcher.dispatch_stored(ordinal, &alert, &sinks);
    }
}

/// Imports every `.yaml`, `.yml` and `.json` rule file under `dir` (native or Sigma), storing a
/// new version only when a file differs from the stored rule. A Sigma file may hold several
/// rules (a correlation and the rules it refers to), stored together or not at all; a
/// correlation referring to a rule of another file is retried once the other files are in.
fn load_rules_dir(
    rules: &RuleRegistry,
    dir: &Path,
    sigma: &tw_sigma::SigmaConfig,
) -> anyhow::Result<()> {
    // Recursively, as `rules import` reads a directory (SigmaHQ keeps rules in subfolders).
    let files: Vec<(PathBuf, RuleFormat)> = crate::rules_cli::rule_files(dir)?
        .into_iter()
        .map(|path| {
            let json = path.extension().is_some_and(|e| e == "json");
            let format = if json {
                RuleFormat::Json
            } else {
                RuleFormat::Yaml
            };
            (path, format)
        })
        .collect();
    let mut problems = Vec::new();
    let mut pending = Vec::new();
    for (path, format) in &files {
        match load_rule_file(rules, path, *format, sigma) {
            Ok(()) => {}
            Err(FileError::UnknownRule(_)) => pending.push((path, *format)),
            Err(FileError::Other(error)) => problems.push(format!("{}: {error}", path.display())),
        }
    }
    for (path, format) in pending {
        if let Err(FileError::UnknownRule(error) | FileError::Other(error)) =
            load_rule_file(rules, path, format, sigma)
        {
            problems.push(format!("{}: {error}", path.display()));
        }
    }
    anyhow::ensure!(
        problems.is_empty(),
        "rules directory {} has invalid rules:\n  {}",
        dir.display(),
        problems.join("\n  ")
    );
    Ok(())
}

/// Why a rule file did not load: a reference to a rule not (yet) loaded, or anything else.
enum FileError {
    UnknownRule(String),
    Other(String),
}

fn load_rule_file(
    rules: &RuleRegistry,
    path: &Path,
    format: RuleFormat,
    sigma: &tw_sigma::SigmaConfig,
) -> Result<(), FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError::Other(e.to_string()))?;
    let translation = if tw_sigma::is_sigma(&text) {
        tw_sigma::translate_file_with_stored(&text, sigma, rules).map_err(|e| match e {
            tw_sigma::SigmaError::UnknownRule { .. } => FileError::UnknownRule(e.to_string()),
            other => FileError::Other(other.to_string()),
        })?
    } else {
        let rule = parse_rule(&text, format).map_err(|e| FileError::Other(e.to_string()))?;
        tw_sigma::Translation {
            rules: vec![rule],
            sources: Default::default(),
        }
    };
    let mut parsed = translation.rules;
    for rule in &mut parsed {
        if let Some(stored) = rules.get(&rule.id) {
            rule.version = stored.version;
        }
    }
    // Only rules that differ from the stored ones get a new version, and correlations over
    // stored rules stored before they kept their source (so that they follow those rules).
    parsed.retain(|rule| {
        rules.get(&rule.id).as_ref() != Some(rule)
            || (translation.sources.contains_key(&rule.id) && !rules.follows(&rule.id))
    });
    if parsed.is_empty() {
        return Ok(());
    }
    // A correlation over stored rules keeps its source: it follows them from now on.
    rules
        .upsert_all_with_sources(
            parsed,
            translation.sources,
            &format!("file:{}", path.display()),
            true,
        )
        .map(|_| ())
        .map_err(|e| FileError::Other(e.to_string()))
}

/// Applies each stream's log retention once a minute (the first time at start), and
/// `dlq_retention` to the dead-letter queue.
async fn enforce_retention(log: Arc<dyn Log>, ingestor: Arc<Ingestor>, dlq_retention: Retention) {
    let mut interval = tokio::time::interval(Duration::from_secs(60));
    let dlq = StreamName::internal(tw_pipeline::DLQ_STREAM);
    loop {
        interval.tick().await;
        let mut partitions: Vec<(StreamName, u32, Retention)> = Vec::new();
        for stream in ingestor.registry().list() {
            let retention = &stream.config.retention;
            if retention.max_age_secs.is_some() || retention.max_bytes.is_some() {
                partitions.extend(
                    (0..stream.config.partitions)
                        .map(|p| (stream.name.clone(), p, retention.clone())),
                );
            }
        }
        if dlq_retention.max_age_secs.is_some() || dlq_retention.max_bytes.is_some() {
            partitions.push((dlq.clone(), 0, dlq_retention.clone()));
        }
        for (name, partition, retention) in partitions {
            let log = log.clone();
            let stream = name.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                log.apply_retention(&stream, partition, &retention, now_ms())
            })
            .await;
            if let Ok(Err(error)) = outcome {
                tracing::warn!(%error, stream = %name, partition, "retention failed");
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
}
