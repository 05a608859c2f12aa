//! The delivery mark: how far into the alert store every sink is done, kept across crashes.
//!
//! The sinks' queues live in memory, so a kill -9 loses what they hold, and the alerts in them
//! are never raised again (the store refuses their dedup keys when detection replays). The
//! outbox closes that gap. Each stored alert has an ordinal (its position in the store), and
//! [`Dispatcher::dispatch`](crate::Dispatcher::dispatch) registers it with the number of sinks
//! it went to. A sink is done with an alert once it has delivered it or recorded it in the
//! failed-deliveries file. The mark is the first ordinal some sink is not done with; it is
//! written to `{dir}/delivered_through` as soon as it moves (writes coalesce while one is
//! under way) and at shutdown. After a restart,
//! the alerts from the mark on are dispatched again ([`crate::AlertStore::read_from`]), so
//! delivery is at least once: a sink sees an alert twice only when the server is killed
//! between the delivery and the mark's write, a few milliseconds (each alert carries its `id`
//! and `dedup_key` for receivers to drop the copy), and never zero times.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::AlertError;

/// Name of the mark file inside the dispatcher's directory.
pub const DELIVERY_MARK_FILE: &str = "delivered_through";

/// Ordinals in flight and the mark derived from them.
#[derive(Debug)]
pub(crate) struct Outbox {
    path: PathBuf,
    state: Mutex<State>,
    /// Held while the mark file is written: the mark writer and the final write at shutdown
    /// must not share the temporary file.
    writing: Mutex<()>,
    /// Signalled when the mark moves (see `Dispatcher`'s mark writer).
    pub(crate) moved: tokio::sync::Notify,
}

#[derive(Debug)]
struct State {
    /// Sinks still to finish, per ordinal in flight.
    outstanding: BTreeMap<u64, usize>,
    /// One past the largest ordinal registered (or the mark read at open).
    next: u64,
    /// The mark last written to the file.
    written: u64,
}

impl State {
    fn mark(&self) -> u64 {
        self.outstanding.keys().next().copied().unwrap_or(self.next)
    }
}

impl Outbox {
    /// Opens the mark in `dir`. Without a mark file (a new data directory, or one from before
    /// the outbox) every alert already stored counts as delivered: `stored` is the store's
    /// alert count, written as the first mark.
    pub(crate) fn open(dir: &Path, stored: u64) -> Result<Self, AlertError> {
        std::fs::create_dir_all(dir).map_err(|e| AlertError::io(dir, e))?;
        let path = dir.join(DELIVERY_MARK_FILE);
        let mark = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| AlertError::Corrupt {
                    path: path.clone(),
                    line: 1,
                    reason: format!("{DELIVERY_MARK_FILE} holds {text:?}, not an alert count"),
                })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                write_mark(&path, stored)?;
                stored
            }
            Err(error) => return Err(AlertError::io(&path, error)),
        };
        Ok(Self {
            path,
            state: Mutex::new(State {
                outstanding: BTreeMap::new(),
                next: mark,
                written: mark,
            }),
            writing: Mutex::new(()),
            moved: tokio::sync::Notify::new(),
        })
    }

    /// The first ordinal not known to be done by every sink.
    pub(crate) fn mark(&self) -> u64 {
        self.lock().mark()
    }

    /// Registers `ordinal`, going to `sinks` sinks. Ordinals never registered count as done.
    pub(crate) fn begin(&self, ordinal: u64, sinks: usize) {
        let mut state = self.lock();
        let before = state.mark();
        state.next = state.next.max(ordinal + 1);
        if sinks > 0 {
            *state.outstanding.entry(ordinal).or_default() += sinks;
        }
        if state.mark() != before {
            self.moved.notify_one();
        }
    }

    /// One sink is done with `ordinal`.
    pub(crate) fn finish(&self, ordinal: u64) {
        let mut state = self.lock();
        let before = state.mark();
        if let Some(left) = state.outstanding.get_mut(&ordinal) {
            *left -= 1;
            if *left == 0 {
                state.outstanding.remove(&ordinal);
            }
        }
        if state.mark() != before {
            self.moved.notify_one();
        }
    }

    /// Writes the mark when it moved since the last write.
    pub(crate) fn persist(&self) -> Result<(), AlertError> {
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mark = {
            let state = self.lock();
            let mark = state.mark();
            if mark == state.written {
                return Ok(());
            }
            mark
        };
        write_mark(&self.path, mark)?;
        let mut state = self.lock();
        state.written = mark;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a single map or counter change: a panic cannot leave it half done.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Replaces the mark file: a temporary file fsynced, renamed over it, the directory fsynced.
fn write_mark(path: &Path, mark: u64) -> Result<(), AlertError> {
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary).map_err(|e| AlertError::io(&temporary, e))?;
    file.write_all(format!("{mark}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| AlertError::io(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| AlertError::io(path, e))?;
    if let Some(dir) = path.parent() {
        crate::store::sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_waits_for_the_oldest_alert_any_sink_holds() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 5).unwrap();
        assert_eq!(
            outbox.mark(),
            5,
            "alerts stored before the outbox count as delivered"
        );
        outbox.begin(5, 2);
        outbox.begin(6, 1);
        outbox.begin(7, 0); // shadow mode, no sink: done at once
        assert_eq!(outbox.mark(), 5);
        outbox.finish(6);
        outbox.finish(5);
        assert_eq!(outbox.mark(), 5, "one of the two sinks of 5 is not done");
        outbox.persist().unwrap();
        outbox.finish(5);
        assert_eq!(outbox.mark(), 8);
        outbox.begin(9, 1);
        assert_eq!(outbox.mark(), 9, "8 was never registered");
        outbox.persist().unwrap();
        drop(outbox);

        let reopened = Outbox::open(dir.path(), 100).unwrap();
        assert_eq!(
            reopened.mark(),
            9,
            "the file, not the store's count, after the first start"
        );
    }

    #[test]
    fn a_damaged_mark_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DELIVERY_MARK_FILE), "x\n").unwrap();
        let error = Outbox::open(dir.path(), 0).unwrap_err().to_string();
        assert!(error.contains(DELIVERY_MARK_FILE), "{error}");
    }
}
