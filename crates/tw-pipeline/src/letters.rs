//! A consumer's dead letters on their way to the queue.
//!
//! The runner holds the letters of a batch here until the queue has them durably, and moves
//! its position past the batch only then; commits never pass a record whose letter is not
//! stored yet ([`PendingLetters::cap`]), so a write that fails loses nothing, even across a
//! stop. A batch retried in the same process does not store a letter twice: letters already
//! stored are remembered per partition ([`PendingLetters::add`]). After a crash, the records
//! read again past the committed offsets are dead-lettered again: at least once, and a
//! duplicate carries the same stage, stream, partition and offset as the first copy.

use std::collections::BTreeMap;

use tw_core::{Offset, StreamName};
use tw_log::LogError;

use crate::dlq::{DeadLetter, DeadLetterQueue};
use crate::{StreamPartition, UnusableRecord};

/// The dead-letter queue refused a consumer's letters.
#[derive(Debug, thiserror::Error)]
#[error("could not store {count} dead letter(s) of {stage} in the dead-letter queue: {source}")]
pub(crate) struct DeadLetterWriteError {
    /// The consumer's stage (`consumer:<name>`).
    pub stage: String,
    /// Letters that were not stored.
    pub count: usize,
    /// Why.
    #[source]
    pub source: LogError,
}

/// Letters found but not stored yet, and how far each partition's letters are stored.
pub(crate) struct PendingLetters {
    stage: String,
    pending: BTreeMap<(StreamPartition, Offset), DeadLetter>,
    /// Per partition, one past the highest source offset whose letter this runner stored. A
    /// record below it that turns up again was read again (a consumer restarted from older
    /// offsets) and is in the queue already.
    stored_below: BTreeMap<StreamPartition, Offset>,
}

impl PendingLetters {
    pub(crate) fn new(consumer: &str) -> Self {
        Self {
            stage: format!("consumer:{consumer}"),
            pending: BTreeMap::new(),
            stored_below: BTreeMap::new(),
        }
    }

    /// Adds records the consumer cannot use, but none already stored or already pending.
    pub(crate) fn add(&mut self, unusable: Vec<UnusableRecord>) {
        for record in unusable {
            let key = (record.stream.clone(), record.partition);
            if self
                .stored_below
                .get(&key)
                .is_some_and(|below| record.offset < *below)
            {
                continue;
            }
            let letter = DeadLetter {
                source_partition: Some(record.partition),
                source_offset: Some(record.offset),
                ..DeadLetter::new(
                    record.stream.as_str(),
                    &self.stage,
                    record.reason,
                    &record.payload,
                )
            };
            self.pending.entry((key, record.offset)).or_insert(letter);
        }
    }

    /// Adds the letter of a range of records damage on disk makes unreadable (`from` up to
    /// `resume_at`): one letter at `from`, without bytes, naming the range and the damage.
    pub(crate) fn add_unreadable(
        &mut self,
        key: &StreamPartition,
        from: Offset,
        resume_at: Offset,
        damage: &LogError,
    ) {
        let (stream, partition) = key;
        let records = match resume_at - from {
            1 => format!("record {from} of {stream}/{partition} cannot be read and was skipped"),
            _ => format!(
                "records {from} to {} of {stream}/{partition} cannot be read and were skipped",
                resume_at - 1
            ),
        };
        self.add(vec![UnusableRecord {
            stream: stream.clone(),
            partition: *partition,
            offset: from,
            payload: bytes::Bytes::new(),
            reason: format!("{records}: {damage}"),
        }]);
    }

    /// Stores every pending letter durably (blocking until fsync). On failure they stay
    /// pending, to be stored by the next call.
    pub(crate) fn store(&mut self, dlq: &DeadLetterQueue) -> Result<(), DeadLetterWriteError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let letters = self.pending.values().cloned().collect();
        if let Err(source) = futures::executor::block_on(dlq.push(letters)) {
            return Err(DeadLetterWriteError {
                stage: self.stage.clone(),
                count: self.pending.len(),
                source,
            });
        }
        for ((key, offset), _) in std::mem::take(&mut self.pending) {
            let below = self.stored_below.entry(key).or_insert(0);
            *below = (*below).max(offset + 1);
        }
        Ok(())
    }

    /// Lowers `offsets` (next offsets to read, about to be committed) so that none passes a
    /// record whose letter is still pending: after a restart that record is read again and
    /// its letter found again.
    pub(crate) fn cap(&self, offsets: &mut BTreeMap<StreamPartition, Offset>) {
        for (key, offset) in self.pending.keys() {
            if let Some(next) = offsets.get_mut(key) {
                *next = (*next).min(*offset);
            }
        }
    }

    /// Drops everything held for a deleted stream: its records are gone with it.
    pub(crate) fn forget(&mut self, stream: &StreamName) {
        self.pending.retain(|((s, _), _), _| s != stream);
        self.stored_below.retain(|(s, _), _| s != stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn unusable(stream: &StreamName, offset: Offset) -> UnusableRecord {
        UnusableRecord {
            stream: stream.clone(),
            partition: 0,
            offset,
            payload: Bytes::from_static(b"not json"),
            reason: "stored record is not valid JSON".into(),
        }
    }

    #[test]
    fn commits_stop_at_the_first_pending_letter_of_each_partition() {
        let stream = StreamName::new("s").unwrap();
        let other = StreamName::new("t").unwrap();
        let mut letters = PendingLetters::new("lake");
        letters.add(vec![unusable(&stream, 7), unusable(&stream, 4)]);
        let mut offsets = BTreeMap::from([
            ((stream.clone(), 0), 10),
            ((stream.clone(), 1), 10),
            ((other.clone(), 0), 10),
        ]);
        letters.cap(&mut offsets);
        assert_eq!(
            offsets,
            BTreeMap::from([
                ((stream.clone(), 0), 4),
                ((stream.clone(), 1), 10),
                ((other, 0), 10),
            ])
        );
        letters.forget(&stream);
        let mut offsets = BTreeMap::from([((stream, 0), 10)]);
        letters.cap(&mut offsets);
        assert_eq!(offsets.into_values().next(), Some(10));
    }
}
