//! The matches of one chunk, collected rule by rule and handed out event by event.

use super::{CHUNK, Mask};

/// A counting sort by event (stable: within an event, rules keep the order they were added
/// in). Buffers are kept between chunks and batches: a chunk of a busy rule set holds tens of
/// thousands of matches, and sorting them or growing fresh vectors showed in the profile.
#[derive(Debug, Default)]
pub(crate) struct Hits {
    /// `(event, rule)` in the order added.
    added: Vec<(u16, u32)>,
    /// Per event: where its rules start in `sorted` (one more entry than events).
    starts: Vec<u32>,
    /// Per event: the next free slot in `sorted` while placing.
    next: Vec<u32>,
    sorted: Vec<u32>,
}

impl Hits {
    pub(crate) fn clear(&mut self) {
        self.added.clear();
    }

    /// Records that `rule` matched the events of `matched`.
    pub(crate) fn add(&mut self, rule: usize, matched: Mask) {
        // Chunk positions are below CHUNK (fits u16); rule indexes fit u32 in practice, and a
        // rule set that did not would not fit in memory.
        self.added
            .extend(matched.iter().map(|at| (at as u16, rule as u32)));
    }

    /// The matches as `(event, rule)`, by event, rules in the order they were added.
    pub(crate) fn by_event(&mut self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.starts.clear();
        self.starts.resize(CHUNK + 1, 0);
        for &(at, _) in &self.added {
            self.starts[at as usize + 1] += 1;
        }
        for at in 0..CHUNK {
            self.starts[at + 1] += self.starts[at];
        }
        self.sorted.clear();
        self.sorted.resize(self.added.len(), 0);
        self.next.clear();
        self.next.extend_from_slice(&self.starts);
        for &(at, rule) in &self.added {
            let slot = &mut self.next[at as usize];
            self.sorted[*slot as usize] = rule;
            *slot += 1;
        }
        let (starts, sorted) = (&self.starts, &self.sorted);
        (0..CHUNK).flat_map(move |at| {
            sorted[starts[at] as usize..starts[at + 1] as usize]
                .iter()
                .map(move |&rule| (at, rule as usize))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_matches_by_event_keeping_rule_order() {
        let mut hits = Hits::default();
        let mask = |events: &[usize]| {
            let mut mask = Mask::EMPTY;
            for &at in events {
                mask.set(at);
            }
            mask
        };
        hits.add(0, mask(&[5, 1, CHUNK - 1]));
        hits.add(7, mask(&[1]));
        hits.add(2, mask(&[5, 0]));
        let order: Vec<_> = hits.by_event().collect();
        assert_eq!(
            order,
            vec![(0, 2), (1, 0), (1, 7), (5, 0), (5, 2), (CHUNK - 1, 0)]
        );
        hits.clear();
        hits.add(3, mask(&[9]));
        assert_eq!(hits.by_event().collect::<Vec<_>>(), vec![(9, 3)]);
    }
}
