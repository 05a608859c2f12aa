//! Evaluating conditions over a chunk of events at once: the engine's hot path.
//!
//! The engine cuts a batch into chunks of up to [`CHUNK`] events and evaluates each rule's
//! condition over a whole chunk as bit masks ([`Mask`]). `all` narrows the mask operand by
//! operand (cheapest first), so an expensive test only sees the events that passed the cheap
//! ones, as per-event short-circuiting would; `any` evaluates each operand on the events it has
//! not decided yet. Every field path the stream's rules use is read from each event once, in one
//! walk ([`paths`]), into columns. A costly test (text, wildcard, regex, time) on a column whose
//! strings repeat — user agents, ARNs, event names — runs once per distinct string of the chunk
//! ([`ids`]) instead of once per event; an address column is parsed once per chunk however many
//! CIDR tests read it.
//!
//! The result for every event is exactly [`Matcher::eval`]'s on that event alone: the same leaf
//! functions decide, and a leaf's answer depends only on the value it reads
//! (`tests/batch_equivalence.rs` compares the two on generated rules and events).

mod hits;
mod ids;
mod mask;
mod paths;

use std::net::IpAddr;

use serde_json::Value;
use tw_core::SelectedFields;

use crate::field_ref::field_ref_holds;
use crate::matcher::{Matcher, Test};
pub(crate) use hits::Hits;
pub(crate) use ids::NO_ID;
pub(crate) use ids::ValueIds;
pub(crate) use mask::Mask;
pub(crate) use paths::PathTree;

/// Events per chunk: masks are `CHUNK` bits, ids fit in `u16`.
pub(crate) const CHUNK: usize = 1024;
/// A test at least this costly ([`Test::cost`]) runs once per distinct string when the column's
/// strings repeat: below it, hashing the string costs about as much as the test.
const MEMO_COST: u32 = 4;
/// Fewer events than this in a leaf's mask are tested one by one (ids are built over the whole
/// chunk, which would cost more than it saves).
const MEMO_MIN_EVENTS: usize = 64;

/// Whether a column has ids for the current chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdState {
    NotBuilt,
    Built,
    /// The strings hardly repeat: test event by event.
    Unique,
}

/// A batch's events as the engine reads them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Events<'a> {
    /// Parsed trees (maybe pruned to the rules' fields): each path is walked in each event.
    Trees(&'a [Value]),
    /// Rows of values by slot (`tw_core::FieldSelection::parse_fields`): the stream's path `p`
    /// is in slot `slots[p]`.
    Rows {
        rows: &'a [SelectedFields],
        slots: &'a [usize],
    },
}

impl<'a> Events<'a> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Events::Trees(events) => events.len(),
            Events::Rows { rows, .. } => rows.len(),
        }
    }

    /// The events of `range`.
    pub(crate) fn slice(&self, range: std::ops::Range<usize>) -> Self {
        match *self {
            Events::Trees(events) => Events::Trees(&events[range]),
            Events::Rows { rows, slots } => Events::Rows {
                rows: &rows[range],
                slots,
            },
        }
    }

    /// Event `at` as a tree, when the events are trees.
    pub(crate) fn tree(&self, at: usize) -> Option<&'a Value> {
        match self {
            Events::Trees(events) => events.get(at),
            Events::Rows { .. } => None,
        }
    }
}

/// The values of one chunk's events at the field paths of one stream.
pub(crate) struct Chunk<'a, 't> {
    len: usize,
    tree: &'t PathTree,
    /// `columns[path * CHUNK + i]`: the value at the stream's path `path` in event `i`.
    columns: Vec<Option<&'a Value>>,
    id_state: Vec<IdState>,
    ids: Vec<ValueIds>,
    /// Per path: its strings parsed as IP addresses, once per chunk, when a CIDR test asks
    /// (empty until then).
    ips: Vec<Vec<IpText>>,
}

/// A column value as a CIDR test sees it.
#[derive(Debug, Clone, Copy)]
enum IpText {
    Ip(IpAddr),
    /// A string that is not an IP address: no network contains it.
    NotIp,
    /// Not a string (absent, an array...): the test decides from the value.
    Other,
}

impl<'a, 't> Chunk<'a, 't> {
    /// An empty chunk for the stream's paths (fill it with [`Chunk::load`]).
    pub(crate) fn new(tree: &'t PathTree) -> Self {
        Self {
            len: 0,
            tree,
            columns: vec![None; tree.len() * CHUNK],
            id_state: vec![IdState::NotBuilt; tree.len()],
            ids: (0..tree.len()).map(|_| ValueIds::default()).collect(),
            ips: vec![Vec::new(); tree.len()],
        }
    }

    /// Makes `events` (at most [`CHUNK`]) the current chunk, reading every path of each.
    pub(crate) fn load(&mut self, events: Events<'a>) {
        debug_assert!(events.len() <= CHUNK);
        self.len = events.len().min(CHUNK);
        match events {
            Events::Trees(events) => {
                for (at, event) in events[..self.len].iter().enumerate() {
                    self.tree.resolve_into(event, &mut self.columns, CHUNK, at);
                }
            }
            Events::Rows { rows, slots } => {
                // The parser already put each path's value in its slot: nothing to walk.
                for (path, &slot) in slots.iter().enumerate() {
                    let column = &mut self.columns[path * CHUNK..path * CHUNK + self.len];
                    for (cell, row) in column.iter_mut().zip(rows) {
                        *cell = row.get(slot);
                    }
                }
            }
        }
        self.id_state.fill(IdState::NotBuilt);
        for ips in &mut self.ips {
            ips.clear();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The column of `path`.
    fn column(&self, path: usize) -> &[Option<&'a Value>] {
        &self.columns[path * CHUNK..path * CHUNK + self.len]
    }

    /// The value at `path` of event `at`.
    pub(crate) fn value(&self, path: usize, at: usize) -> Option<&'a Value> {
        self.columns[path * CHUNK + at]
    }

    /// The whole column of `path` and, when its strings repeat, their ids.
    pub(crate) fn column_with_ids(
        &mut self,
        path: usize,
    ) -> (&[Option<&'a Value>], Option<&ValueIds>) {
        let built = self.build_ids(path);
        (self.column(path), built.then(|| &self.ids[path]))
    }

    /// Builds ids of the column's strings once per chunk; false when they hardly repeat.
    fn build_ids(&mut self, path: usize) -> bool {
        if self.id_state[path] == IdState::NotBuilt {
            let column = &self.columns[path * CHUNK..path * CHUNK + self.len];
            self.id_state[path] = if self.ids[path].build(column) {
                IdState::Built
            } else {
                IdState::Unique
            };
        }
        self.id_state[path] == IdState::Built
    }

    /// Reads the column of `path` as IP addresses (once per chunk).
    fn parse_ips(&mut self, path: usize) {
        let ips = &mut self.ips[path];
        if ips.is_empty() {
            ips.extend(
                self.columns[path * CHUNK..path * CHUNK + self.len]
                    .iter()
                    .map(|value| match value {
                        Some(Value::String(text)) => text.parse().map_or(IpText::NotIp, IpText::Ip),
                        _ => IpText::Other,
                    }),
            );
        }
    }

    /// The events of `mask` that satisfy `matcher`; `path_map[i]` is the stream path of the
    /// rule's `i`-th path.
    pub(crate) fn eval(&mut self, matcher: &Matcher, mask: Mask, path_map: &[usize]) -> Mask {
        if mask.is_empty() {
            return mask;
        }
        match matcher {
            Matcher::All(items) => {
                let mut holding = mask;
                for item in items {
                    holding = self.eval(item, holding, path_map);
                    if holding.is_empty() {
                        break;
                    }
                }
                holding
            }
            Matcher::Any(items) => {
                let (mut holding, mut undecided) = (Mask::EMPTY, mask);
                for item in items {
                    let found = self.eval(item, undecided, path_map);
                    holding = holding.or(found);
                    undecided = undecided.without(found);
                    if undecided.is_empty() {
                        break;
                    }
                }
                holding
            }
            Matcher::Not(inner) => mask.without(self.eval(inner, mask, path_map)),
            Matcher::AtLeast(needed, items) => {
                let mut counts = [0usize; CHUNK];
                let (mut holding, mut undecided) = (Mask::EMPTY, mask);
                for item in items {
                    for at in self.eval(item, undecided, path_map).iter() {
                        counts[at] += 1;
                        if counts[at] >= *needed {
                            holding.set(at);
                        }
                    }
                    undecided = undecided.without(holding);
                    if undecided.is_empty() {
                        break;
                    }
                }
                holding
            }
            Matcher::Leaf { path, test } => self.leaf(path_map[*path], test, mask),
            Matcher::AnyField { path, test } => {
                let path = path_map[*path];
                self.each(mask, |chunk, at| {
                    chunk
                        .value(path, at)
                        .is_some_and(|value| test.holds_anywhere(value))
                })
            }
            Matcher::FieldRef {
                path,
                other,
                relation,
                ignore_case,
            } => {
                let (path, other) = (path_map[*path], path_map[*other]);
                self.each(mask, |chunk, at| {
                    let (value, other) = (chunk.value(path, at), chunk.value(other, at));
                    field_ref_holds(value, other, *relation, *ignore_case)
                })
            }
        }
    }

    fn each(&self, mask: Mask, mut holds: impl FnMut(&Self, usize) -> bool) -> Mask {
        let mut holding = Mask::EMPTY;
        for at in mask.iter() {
            if holds(self, at) {
                holding.set(at);
            }
        }
        holding
    }

    fn leaf(&mut self, path: usize, test: &Test, mask: Mask) -> Mask {
        if let Test::Cidr(networks) = test {
            // Addresses rarely repeat, but several rules test the same one: parse it once.
            self.parse_ips(path);
            let (ips, column) = (&self.ips[path], &self.columns[path * CHUNK..]);
            let mut holding = Mask::EMPTY;
            for at in mask.iter() {
                let holds = match ips[at] {
                    IpText::Ip(ip) => networks.iter().any(|network| network.contains(ip)),
                    IpText::NotIp => false,
                    IpText::Other => test.holds(column[at]),
                };
                if holds {
                    holding.set(at);
                }
            }
            return holding;
        }
        if test.cost() >= MEMO_COST && mask.count() >= MEMO_MIN_EVENTS && self.build_ids(path) {
            // Per distinct string: 0 not tested yet, 1 fails, 2 holds.
            let mut known = [0u8; CHUNK];
            let (column, ids) = (&self.columns[path * CHUNK..], &self.ids[path]);
            let mut holding = Mask::EMPTY;
            for at in mask.iter() {
                let id = ids.id(at);
                let holds = if id == NO_ID {
                    test.holds(column[at])
                } else {
                    match known[id as usize] {
                        0 => {
                            let holds = test.holds(column[ids.first(id)]);
                            known[id as usize] = 1 + u8::from(holds);
                            holds
                        }
                        answer => answer == 2,
                    }
                };
                if holds {
                    holding.set(at);
                }
            }
            return holding;
        }
        self.each(mask, |chunk, at| test.holds(chunk.value(path, at)))
    }
}
