//! Removing named rows from the search indexes: the search half of a delete-by-query (a
//! privacy request), so that rows deleted from the lake stop being found by search too.
//!
//! Rows are named as the lake names them, `(partition, offset)`, with their event time
//! (which picks the hour index). Only the indexer may write an hour index (tantivy allows
//! one writer per index, and the indexer may open any hour's writer at any moment for a
//! late event), so [`SearchIndexes::delete_rows`] queues the request and the indexer applies
//! it at its next tick ([`SearchIndexer::apply_deletions`]), answering through a
//! [`DeletionTicket`]:
//! - rows already handled by the indexer are removed with a delete query on the hour's
//!   writer (it also removes documents added but not yet committed), then committed;
//! - rows not handled yet (the indexer lags behind the log) are remembered and skipped when
//!   they arrive, until the offsets past them are durable.
//!
//! The queue and the rows to skip are in memory: a request whose ticket was never answered
//! (the process stopped first) did not reach search, and the caller says so. The log keeps
//! the raw events until its own retention, so rebuilding the indexes from the log (a layout
//! change) would bring deleted rows back; the lake is the record of what was deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use serde::Serialize;
use tantivy::collector::Count;
use tantivy::query::{BitSetDocSet, ConstScorer, EnableScoring, Explanation, Query, Weight};
use tantivy::{BitSet, DocId, Score, SegmentReader, TantivyError};
use tw_core::{Offset, PartitionId, StreamName};

use super::SearchIndexer;
use crate::{SearchError, SearchIndexes, hour_of};

/// Offsets named for deletion per partition, sorted.
type OffsetsByPartition = BTreeMap<PartitionId, Vec<Offset>>;

/// What the removal of rows from a stream's search indexes did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SearchDeletion {
    /// Indexed documents removed.
    pub docs_deleted: u64,
    /// Named rows the indexer had not reached yet: they will be skipped when it does.
    pub rows_not_indexed_yet: u64,
}

/// A queued request, taken by the indexer.
pub(crate) struct PendingDeletion {
    stream: StreamName,
    /// Named rows by the start of their event-time hour.
    by_hour: BTreeMap<i64, OffsetsByPartition>,
    reply: mpsc::SyncSender<Result<SearchDeletion, SearchError>>,
}

/// The answer to a [`SearchIndexes::delete_rows`] request, once the indexer has applied it.
#[derive(Debug)]
pub struct DeletionTicket(mpsc::Receiver<Result<SearchDeletion, SearchError>>);

impl DeletionTicket {
    /// Waits up to `timeout` for the indexer; `None` when it did not answer in time (it is
    /// not running, or is far behind: the request stays queued while the process runs).
    pub fn wait(self, timeout: Duration) -> Option<Result<SearchDeletion, SearchError>> {
        self.0.recv_timeout(timeout).ok()
    }
}

impl SearchIndexes {
    /// Queues the removal of `rows` (`(event time ms, partition, offset)`) of `stream` from
    /// its indexes; see the module documentation.
    pub fn delete_rows(
        &self,
        stream: &StreamName,
        rows: impl IntoIterator<Item = (i64, PartitionId, Offset)>,
    ) -> DeletionTicket {
        let mut by_hour: BTreeMap<i64, OffsetsByPartition> = BTreeMap::new();
        for (time_ms, partition, offset) in rows {
            (by_hour.entry(hour_of(time_ms)).or_default())
                .entry(partition)
                .or_default()
                .push(offset);
        }
        for offsets in by_hour.values_mut().flat_map(|p| p.values_mut()) {
            offsets.sort_unstable();
            offsets.dedup();
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.deletions().push(PendingDeletion {
            stream: stream.clone(),
            by_hour,
            reply,
        });
        DeletionTicket(answer)
    }
}

impl SearchIndexer {
    /// Applies every queued deletion (see the module documentation). A failure is answered to
    /// the request's ticket and returned: the writer may be unusable after it.
    pub(crate) fn apply_deletions(&mut self) -> Result<(), SearchError> {
        let queued = std::mem::take(&mut *self.indexes.deletions());
        let mut queued = queued.into_iter();
        while let Some(request) = queued.next() {
            let outcome = self.delete(&request.stream, &request.by_hour);
            let failed = outcome.as_ref().err().map(ToString::to_string);
            // The requester may have stopped waiting: nothing else to tell.
            let _ = request.reply.send(outcome);
            if let Some(message) = failed {
                // The requests after it wait for the restarted indexer, first in line.
                let mut pending = self.indexes.deletions();
                let later = std::mem::take(&mut *pending);
                pending.extend(queued);
                pending.extend(later);
                return Err(SearchError::DeleteFailed(message));
            }
        }
        Ok(())
    }

    fn delete(
        &mut self,
        stream: &StreamName,
        by_hour: &BTreeMap<i64, OffsetsByPartition>,
    ) -> Result<SearchDeletion, SearchError> {
        let mut report = SearchDeletion::default();
        let mut handled_rows: BTreeMap<i64, OffsetsByPartition> = BTreeMap::new();
        for (hour, partitions) in by_hour {
            for (partition, offsets) in partitions {
                let key = (stream.clone(), *partition);
                let handled = self.handled.get(&key).copied().unwrap_or(0);
                let (done, ahead) = offsets.split_at(offsets.partition_point(|o| *o < handled));
                if !done.is_empty() {
                    (handled_rows.entry(*hour).or_default()).insert(*partition, done.to_vec());
                }
                if !ahead.is_empty() {
                    report.rows_not_indexed_yet += ahead.len() as u64;
                    self.skipped.entry(key).or_default().extend(ahead);
                }
            }
        }
        if handled_rows.is_empty() {
            return Ok(report);
        }
        // Committed first, so that the count below sees every document added so far.
        self.commit_all()?;
        for (hour, partitions) in handled_rows {
            let Some(index) = self.indexes.hour(stream, hour, false)? else {
                continue; // nothing indexed in that hour (or removed by retention)
            };
            let query = NamedRows(Arc::new(partitions));
            let matching = (index.reader.searcher())
                .search(&query, &Count)
                .map_err(SearchError::index(&index.path))?;
            if matching == 0 {
                continue;
            }
            let open = self.writer(stream, hour)?;
            open.writer
                .delete_query(Box::new(query))
                .map_err(SearchError::index(&open.hour.path))?;
            open.dirty = true;
            report.docs_deleted += matching as u64;
        }
        self.commit_all()?;
        metrics::counter!("tidewatch_search_docs_deleted_total").increment(report.docs_deleted);
        Ok(report)
    }

    /// Whether the record at `offset` was named by a deletion before the indexer reached it.
    pub(crate) fn is_skipped(&self, key: &(StreamName, PartitionId), offset: Offset) -> bool {
        self.skipped.get(key).is_some_and(|o| o.contains(&offset))
    }

    /// Forgets the rows to skip below the durable offsets: they were skipped, and a restart
    /// resumes past them.
    pub(crate) fn prune_skipped(&mut self) {
        let durable = &self.durable;
        self.skipped.retain(|key, offsets| {
            let below = durable.get(key).copied().unwrap_or(0);
            *offsets = offsets.split_off(&below);
            !offsets.is_empty()
        });
    }
}

/// Rows to skip per stream partition (see the module documentation).
pub(crate) type Skipped = BTreeMap<(StreamName, PartitionId), BTreeSet<Offset>>;

/// The documents of the named rows of one hour index, found through the `_partition` and
/// `_offset` fast fields (they are not in the inverted index).
#[derive(Clone, Debug)]
struct NamedRows(Arc<OffsetsByPartition>);

impl Query for NamedRows {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl NamedRows {
    fn docs(&self, reader: &SegmentReader) -> tantivy::Result<Vec<DocId>> {
        let fast = reader.fast_fields();
        let partitions = fast.u64("_partition")?;
        let offsets = fast.u64("_offset")?;
        let mut matched = Vec::new();
        let mut candidates = Vec::new();
        for (partition, wanted) in self.0.iter() {
            let (Some(&low), Some(&high)) = (wanted.first(), wanted.last()) else {
                continue;
            };
            candidates.clear();
            offsets.get_docids_for_value_range(low..=high, 0..reader.max_doc(), &mut candidates);
            matched.extend(candidates.iter().copied().filter(|&doc| {
                partitions.first(doc) == Some(u64::from(*partition))
                    && offsets
                        .first(doc)
                        .is_some_and(|offset| wanted.binary_search(&offset).is_ok())
            }));
        }
        matched.sort_unstable();
        matched.dedup();
        Ok(matched)
    }
}

impl Weight for NamedRows {
    fn scorer(
        &self,
        reader: &SegmentReader,
        boost: Score,
    ) -> tantivy::Result<Box<dyn tantivy::query::Scorer>> {
        let mut docs = BitSet::with_max_value(reader.max_doc());
        for doc in self.docs(reader)? {
            docs.insert(doc);
        }
        Ok(Box::new(ConstScorer::new(BitSetDocSet::from(docs), boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        if self.docs(reader)?.binary_search(&doc).is_ok() {
            Ok(Explanation::new("a row named by a deletion", 1.0))
        } else {
            Err(TantivyError::InvalidArgument(format!(
                "document {doc} is not a row named by the deletion"
            )))
        }
    }
}
