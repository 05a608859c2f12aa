//! A set of event positions within one chunk, as bits.

use super::CHUNK;

const WORDS: usize = CHUNK / 64;

/// Bit `i` stands for the chunk's `i`-th event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mask([u64; WORDS]);

impl Mask {
    pub(crate) const EMPTY: Self = Self([0; WORDS]);

    /// Events `0..len` (`len` at most [`CHUNK`]).
    pub(crate) fn first(len: usize) -> Self {
        let mut words = [0; WORDS];
        let len = len.min(CHUNK);
        for word in &mut words[..len / 64] {
            *word = u64::MAX;
        }
        if !len.is_multiple_of(64) {
            words[len / 64] = (1 << (len % 64)) - 1;
        }
        Self(words)
    }

    pub(crate) fn set(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }

    /// Whether event `index` is in the mask.
    pub(crate) fn has(&self, index: usize) -> bool {
        self.0[index / 64] & (1 << (index % 64)) != 0
    }

    pub(crate) fn remove(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }

    pub(crate) fn and(mut self, other: Self) -> Self {
        for (word, other) in self.0.iter_mut().zip(other.0) {
            *word &= other;
        }
        self
    }

    pub(crate) fn or(mut self, other: Self) -> Self {
        for (word, other) in self.0.iter_mut().zip(other.0) {
            *word |= other;
        }
        self
    }

    /// The events of `self` that are not in `other`.
    pub(crate) fn without(mut self, other: Self) -> Self {
        for (word, other) in self.0.iter_mut().zip(other.0) {
            *word &= !other;
        }
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|word| *word == 0)
    }

    pub(crate) fn count(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }

    /// The positions in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(at, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(at * 64 + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sets_exactly_the_leading_positions() {
        for len in [0, 1, 63, 64, 65, 1000, CHUNK] {
            let mask = Mask::first(len);
            assert_eq!(mask.count(), len);
            assert_eq!(
                mask.iter().collect::<Vec<_>>(),
                (0..len).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn set_operations() {
        let mut a = Mask::EMPTY;
        let mut b = Mask::EMPTY;
        for i in [0, 5, 64, 700, CHUNK - 1] {
            a.set(i);
        }
        for i in [5, 700, 900] {
            b.set(i);
        }
        assert_eq!(a.and(b).iter().collect::<Vec<_>>(), vec![5, 700]);
        assert_eq!(a.or(b).count(), 6);
        assert_eq!(
            a.without(b).iter().collect::<Vec<_>>(),
            vec![0, 64, CHUNK - 1]
        );
        assert!(Mask::EMPTY.is_empty() && !a.is_empty());
        a.remove(64);
        a.remove(65);
        assert_eq!(a.count(), 4);
    }
}
