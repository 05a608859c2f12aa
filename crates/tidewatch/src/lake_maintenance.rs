//! The server's background lake maintenance: a compaction pass, then lake retention, every
//! interval, each on a blocking thread (they read and write whole files).

use std::time::Duration;

use tw_core::now_ms;
use tw_lake::Lake;

/// Runs until aborted; an interval of zero disables it. A failed pass is logged and retried
/// at the next interval (every step is atomic, so a half-done pass is safe).
pub async fn run(lake: Lake, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    // The first tick is immediate: skip it so start-up (the writer's clean-up) comes first.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let lake = lake.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let compacted = lake.compact(now, lake.config().compaction.min_age_ms);
            let expired = lake.apply_retention(now);
            (compacted, expired)
        })
        .await;
        match outcome {
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
            Err(error) => tracing::warn!(%error, "lake maintenance task failed"),
        }
    }
}
