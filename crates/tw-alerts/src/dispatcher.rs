//! The dispatcher: one task per sink, each fed by a bounded queue; whatever a sink cannot take
//! or deliver goes to the failed-deliveries file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tw_core::Alert;

use crate::AlertError;
use crate::config::{FileSinkConfig, SinkConfig, validate_sinks};
use crate::failed::FailedLog;
use crate::outbox::Outbox;
use crate::store::AlertStore;
use crate::webhook::WebhookSink;

const DELIVERIES_METRIC: &str = "tidewatch_alert_deliveries_total";
/// Most alerts a file sink writes (and fsyncs) at once.
const FILE_BATCH: usize = 256;
/// After the shutdown deadline, how long tasks get to write their remaining alerts to the
/// failed-deliveries file before they are aborted.
const FAILED_WRITE_GRACE: Duration = Duration::from_secs(5);

/// An alert in a sink's queue, with its ordinal in the store when the delivery mark tracks it.
type Queued = (Alert, Option<u64>);

/// What [`Dispatcher::dispatch`] did with one alert. `queued + diverted + lost` is the number of
/// distinct target sinks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Sinks whose queue took the alert.
    pub queued: usize,
    /// Targets that could not take it (unknown sink, queue full, sink stopped): the alert was
    /// written to the failed-deliveries file instead.
    pub diverted: usize,
    /// Targets for which even the failed-deliveries file could not be written (logged as errors).
    pub lost: usize,
}

/// Outcome counters of one sink, registered once (`tidewatch_alert_deliveries_total{sink,outcome}`).
#[derive(Clone)]
struct Outcomes {
    delivered: Counter,
    failed: Counter,
    queue_full: Counter,
    lost: Counter,
}

impl Outcomes {
    fn register(sink: &str) -> Self {
        let counter = |outcome: &'static str| metrics::counter!(DELIVERIES_METRIC, "sink" => sink.to_owned(), "outcome" => outcome);
        Self {
            delivered: counter("delivered"),
            failed: counter("failed"),
            queue_full: counter("queue_full"),
            lost: counter("lost"),
        }
    }
}

struct SinkHandle {
    queue: mpsc::Sender<Queued>,
    capacity: usize,
    outcomes: Outcomes,
}

/// Delivers alerts to the configured sinks. Dropping it without [`Dispatcher::shutdown`] lets
/// the tasks finish their queues in the background.
pub struct Dispatcher {
    names: Vec<String>,
    sinks: HashMap<String, SinkHandle>,
    failed: Arc<FailedLog>,
    /// The delivery mark, when the dispatcher was started with the store
    /// ([`Dispatcher::start_tracked`]).
    outbox: Option<Arc<Outbox>>,
    mark_writer: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("sinks", &self.names)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Validates every sink (reporting all problems at once), opens the failed-deliveries file
    /// in `failed_dir` and the file sinks' files, builds the HTTP clients, and spawns one task
    /// per sink. Must be called inside a tokio runtime.
    pub fn start(sinks: Vec<SinkConfig>, failed_dir: &Path) -> Result<Dispatcher, AlertError> {
        Self::start_inner(sinks, failed_dir, None)
    }

    /// [`start`](Self::start), keeping the delivery mark of `store`'s alerts in `dir` (see the
    /// `outbox` module): alerts given to [`dispatch_stored`](Self::dispatch_stored) count as
    /// delivered only once every sink delivered or recorded them. Also returns the stored
    /// alerts no mark covers yet (dispatched before a crash, not confirmed), to be dispatched
    /// again. Blocking I/O.
    pub fn start_tracked(
        sinks: Vec<SinkConfig>,
        dir: &Path,
        store: &AlertStore,
    ) -> Result<(Dispatcher, Vec<(u64, Alert)>), AlertError> {
        let outbox = Arc::new(Outbox::open(dir, store.len() as u64)?);
        let unconfirmed = store.read_from(outbox.mark())?;
        let dispatcher = Self::start_inner(sinks, dir, Some(outbox))?;
        Ok((dispatcher, unconfirmed))
    }

    fn start_inner(
        sinks: Vec<SinkConfig>,
        failed_dir: &Path,
        outbox: Option<Arc<Outbox>>,
    ) -> Result<Dispatcher, AlertError> {
        validate_sinks(&sinks)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AlertError::NoRuntime)?;
        let failed = Arc::new(FailedLog::open(failed_dir)?);
        // Build everything before spawning anything, so an error leaves no task behind.
        let mut built = Vec::with_capacity(sinks.len());
        for config in sinks {
            let sink = match &config {
                SinkConfig::Webhook(webhook) => {
                    BuiltSink::Webhook(WebhookSink::build(webhook.clone())?)
                }
                SinkConfig::File(file) => BuiltSink::File(open_sink_file(file)?),
            };
            built.push((config, sink));
        }
        let (stop, _) = watch::channel(false);
        let mut names = Vec::new();
        let mut handles = HashMap::new();
        let mut tasks = Vec::new();
        for (config, sink) in built {
            let name = config.name().to_owned();
            let capacity = config.queue_capacity();
            let (queue, receiver) = mpsc::channel(capacity);
            let outcomes = Outcomes::register(&name);
            let context = TaskContext {
                sink: name.clone(),
                failed: Arc::clone(&failed),
                outbox: outbox.clone(),
                outcomes: outcomes.clone(),
                stop: stop.subscribe(),
            };
            tasks.push(match sink {
                BuiltSink::Webhook(webhook) => {
                    runtime.spawn(run_webhook(webhook, receiver, context))
                }
                BuiltSink::File((path, file)) => {
                    runtime.spawn(run_file(path, file, receiver, context))
                }
            });
            names.push(name.clone());
            handles.insert(
                name,
                SinkHandle {
                    queue,
                    capacity,
                    outcomes,
                },
            );
        }
        let mark_writer = outbox.clone().map(|outbox| {
            runtime.spawn(async move {
                loop {
                    // A move while the previous write ran left a permit: writes coalesce.
                    outbox.moved.notified().await;
                    persist_mark(&outbox).await;
                }
            })
        });
        Ok(Dispatcher {
            names,
            sinks: handles,
            failed,
            outbox,
            mark_writer,
            stop,
            tasks,
        })
    }

    /// Names of the configured sinks, in config order.
    pub fn sink_names(&self) -> &[String] {
        &self.names
    }

    /// Queues `alert` for the named sinks (all sinks when `sink_names` is empty; a name listed
    /// twice is served once). Never waits on a sink: when a queue is full, the sink is unknown
    /// or its task has stopped, the alert is written to the failed-deliveries file instead
    /// (one blocking append + fsync on the caller's thread, only on that path).
    pub fn dispatch(&self, alert: &Alert, sink_names: &[String]) -> DispatchReport {
        self.dispatch_inner(alert, sink_names, None)
    }

    /// [`dispatch`](Self::dispatch) of the store's alert number `ordinal`, counted in the
    /// delivery mark when the dispatcher keeps one. Call in the order the alerts were stored.
    pub fn dispatch_stored(
        &self,
        ordinal: u64,
        alert: &Alert,
        sink_names: &[String],
    ) -> DispatchReport {
        self.dispatch_inner(alert, sink_names, Some(ordinal))
    }

    fn dispatch_inner(
        &self,
        alert: &Alert,
        sink_names: &[String],
        ordinal: Option<u64>,
    ) -> DispatchReport {
        let targets: &[String] = if sink_names.is_empty() {
            &self.names
        } else {
            sink_names
        };
        let mut seen = HashSet::new();
        let targets: Vec<&String> = targets
            .iter()
            .filter(|name| seen.insert(name.as_str()))
            .collect();
        let ordinal = ordinal.filter(|_| self.outbox.is_some());
        if let (Some(outbox), Some(ordinal)) = (&self.outbox, ordinal) {
            // Before any queue takes it: a sink may be done before this call returns.
            outbox.begin(ordinal, targets.len());
        }
        let mut report = DispatchReport::default();
        for name in targets {
            let Some(handle) = self.sinks.get(name) else {
                let unknown = metrics::counter!(DELIVERIES_METRIC, "sink" => name.clone(), "outcome" => "unknown_sink");
                self.divert(
                    name,
                    &format!("unknown sink {name:?}"),
                    (alert, ordinal),
                    &unknown,
                    None,
                    &mut report,
                );
                continue;
            };
            match handle.queue.try_send((alert.clone(), ordinal)) {
                Ok(()) => report.queued += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let error = format!(
                        "queue of sink {name:?} is full ({} alerts waiting)",
                        handle.capacity
                    );
                    self.divert(
                        name,
                        &error,
                        (alert, ordinal),
                        &handle.outcomes.queue_full,
                        Some(&handle.outcomes.lost),
                        &mut report,
                    );
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    let error = format!("task of sink {name:?} has stopped");
                    self.divert(
                        name,
                        &error,
                        (alert, ordinal),
                        &handle.outcomes.failed,
                        Some(&handle.outcomes.lost),
                        &mut report,
                    );
                }
            }
        }
        report
    }

    fn divert(
        &self,
        sink: &str,
        error: &str,
        (alert, ordinal): (&Alert, Option<u64>),
        outcome: &Counter,
        lost_counter: Option<&Counter>,
        report: &mut DispatchReport,
    ) {
        tracing::warn!(sink, alert = %alert.id, error, "alert not queued for its sink; recording it as a failed delivery");
        match self.failed.record(sink, error, 0, alert) {
            Ok(()) => {
                outcome.increment(1);
                report.diverted += 1;
                if let (Some(outbox), Some(ordinal)) = (&self.outbox, ordinal) {
                    outbox.finish(ordinal);
                }
            }
            Err(record_error) => {
                tracing::error!(sink, alert = %alert.id, error = %record_error, "alert lost: failed-deliveries file not writable");
                match lost_counter {
                    Some(lost) => lost.increment(1),
                    None => metrics::counter!(DELIVERIES_METRIC, "sink" => sink.to_owned(), "outcome" => "lost").increment(1),
                }
                report.lost += 1;
            }
        }
    }

    /// Closes the queues and waits up to `deadline` for every sink to deliver what it holds.
    /// At the deadline, sinks stop retrying: the alerts they still hold are written to the
    /// failed-deliveries file (so nothing is lost), then the tasks end.
    pub async fn shutdown(self, deadline: Duration) {
        let Dispatcher {
            sinks,
            stop,
            mut tasks,
            outbox,
            mark_writer,
            ..
        } = self;
        drop(sinks);
        let drained = tokio::time::timeout(deadline, async {
            for task in &mut tasks {
                let _ = task.await;
            }
        })
        .await;
        if let Some(writer) = mark_writer {
            writer.abort();
        }
        if drained.is_ok() {
            if let Some(outbox) = &outbox {
                persist_mark(outbox).await;
            }
            return;
        }
        tracing::warn!(
            ?deadline,
            "alert sinks did not drain before the deadline; recording the rest as failed deliveries"
        );
        stop.send_replace(true);
        let flushed = tokio::time::timeout(FAILED_WRITE_GRACE, async {
            for task in &mut tasks {
                let _ = task.await;
            }
        })
        .await;
        if flushed.is_err() {
            tracing::error!("alert sink tasks still busy after the grace period; aborting them");
            for task in &tasks {
                task.abort();
            }
        }
        // Alerts of aborted tasks are still outstanding: the mark stays before them.
        if let Some(outbox) = &outbox {
            persist_mark(outbox).await;
        }
    }
}

/// Writes the delivery mark off the async threads (it fsyncs); a failure is logged and the
/// next write tries again (meanwhile a restart would only send some alerts twice).
async fn persist_mark(outbox: &Arc<Outbox>) {
    let outbox = Arc::clone(outbox);
    match tokio::task::spawn_blocking(move || outbox.persist()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "could not write the alert delivery mark"),
        Err(error) => tracing::warn!(%error, "the alert delivery mark writer did not finish"),
    }
}

enum BuiltSink {
    Webhook(WebhookSink),
    File((PathBuf, tokio::fs::File)),
}

fn open_sink_file(config: &FileSinkConfig) -> Result<(PathBuf, tokio::fs::File), AlertError> {
    if let Some(parent) = config
        .path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|e| AlertError::io(parent, e))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.path)
        .map_err(|e| AlertError::io(&config.path, e))?;
    Ok((config.path.clone(), tokio::fs::File::from_std(file)))
}

/// What every sink task shares.
struct TaskContext {
    sink: String,
    failed: Arc<FailedLog>,
    outbox: Option<Arc<Outbox>>,
    outcomes: Outcomes,
    stop: watch::Receiver<bool>,
}

impl TaskContext {
    /// This sink is done with the alert numbered `ordinal` (delivered or recorded as failed).
    fn done(&self, ordinal: Option<u64>) {
        if let (Some(outbox), Some(ordinal)) = (&self.outbox, ordinal) {
            outbox.finish(ordinal);
        }
    }

    /// Records an undeliverable alert, off the async threads (it fsyncs); done with it once
    /// recorded (a lost one stays outstanding in the delivery mark, sent again after a restart).
    async fn record_failure(&self, error: String, attempts: u32, (alert, ordinal): Queued) {
        tracing::warn!(sink = %self.sink, alert = %alert.id, %error, attempts, "alert delivery failed");
        let failed = Arc::clone(&self.failed);
        let sink = self.sink.clone();
        let alert_id = alert.id.clone();
        let written =
            tokio::task::spawn_blocking(move || failed.record(&sink, &error, attempts, &alert))
                .await;
        match written {
            Ok(Ok(())) => {
                self.outcomes.failed.increment(1);
                self.done(ordinal);
            }
            Ok(Err(error)) => {
                tracing::error!(sink = %self.sink, alert = %alert_id, %error, "alert lost: failed-deliveries file not writable");
                self.outcomes.lost.increment(1);
            }
            Err(join_error) => {
                tracing::error!(sink = %self.sink, alert = %alert_id, error = %join_error, "alert lost: failed-deliveries writer did not finish");
                self.outcomes.lost.increment(1);
            }
        }
    }
}

async fn run_webhook(
    sink: WebhookSink,
    mut queue: mpsc::Receiver<Queued>,
    mut context: TaskContext,
) {
    while let Some((alert, ordinal)) = queue.recv().await {
        match sink.deliver(&alert, &mut context.stop).await {
            Ok(_attempts) => {
                context.outcomes.delivered.increment(1);
                context.done(ordinal);
            }
            Err(failure) => {
                context
                    .record_failure(failure.error, failure.attempts, (alert, ordinal))
                    .await
            }
        }
    }
}

async fn run_file(
    path: PathBuf,
    mut file: tokio::fs::File,
    mut queue: mpsc::Receiver<Queued>,
    context: TaskContext,
) {
    let mut batch = Vec::with_capacity(FILE_BATCH);
    // A local write is quick, so the stop signal is not consulted: draining is the write itself.
    while queue.recv_many(&mut batch, FILE_BATCH).await > 0 {
        let mut bytes = Vec::new();
        let mut encoded = Vec::with_capacity(batch.len());
        for queued in batch.drain(..) {
            match serde_json::to_writer(&mut bytes, &queued.0) {
                Ok(()) => {
                    bytes.push(b'\n');
                    encoded.push(queued);
                }
                Err(error) => {
                    context
                        .record_failure(format!("alert could not be encoded: {error}"), 1, queued)
                        .await
                }
            }
        }
        let written = async {
            file.write_all(&bytes).await?;
            file.flush().await?;
            file.sync_data().await
        }
        .await;
        match written {
            Ok(()) => {
                context.outcomes.delivered.increment(encoded.len() as u64);
                for (_, ordinal) in encoded {
                    context.done(ordinal);
                }
            }
            Err(error) => {
                // Part of the batch may have reached the file: those alerts can appear both there
                // and in the failed-deliveries file (at-least-once, never zero times).
                let error = format!("write to {} failed: {error}", path.display());
                for queued in encoded {
                    context.record_failure(error.clone(), 1, queued).await;
                }
            }
        }
    }
}
