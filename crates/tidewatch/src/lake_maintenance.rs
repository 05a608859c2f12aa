//! The server's background lake maintenance: a compaction pass, then lake retention, every
//! interval, on a thread of their own (they read and write whole files) at the lake's lower
//! priority, so that a pass never takes CPU from ingest and detection.

use std::time::Duration;

use tw_core::now_ms;
use tw_lake::Lake;
use tw_os::ThreadPriority;

/// Runs until aborted; an interval of zero disables it. A failed pass is logged and retried
/// at the next interval (every step is atomic, so a half-done pass is safe). Each pass runs
/// at `priority` (a thread per pass: a pooled thread would keep the lower priority for others).
pub async fn run(lake: Lake, interval: Duration, priority: ThreadPriority) {
    if interval.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    // The first tick is immediate: skip it so start-up (the writer's clean-up) comes first.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let lake = lake.clone();
        let (done, finished) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("lake-maintenance".into())
            .spawn(move || {
                if let Err(error) = tw_os::set_current_thread_priority(priority) {
                    tracing::debug!(?priority, %error, "lake maintenance keeps the normal priority");
                }
                let now = now_ms();
                let compacted = lake.compact(now, lake.config().compaction.min_age_ms);
                let expired = lake.apply_retention(now);
                // The receiver is gone only when the server stops.
                let _ = done.send((compacted, expired));
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "could not start a lake maintenance pass");
            continue;
        }
        match finished.await {
            Ok((compacted, expired)) => {
                match compacted {
                    Ok(report) if report.files_compacted > 0 || report.superseded_deleted > 0 => {
                        tracing::info!(?report, "lake compaction pass")
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "lake compaction failed"),
                }
                match expired {
                    Ok(report) if report.hours_deleted > 0 => {
                        tracing::info!(?report, "lake retention pass")
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "lake retention failed"),
                }
            }
            Err(_) => tracing::warn!("lake maintenance pass ended without a report (panicked)"),
        }
    }
}
