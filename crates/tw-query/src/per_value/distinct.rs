//! Dense ids for the distinct values of a `Utf8View` batch, and a function evaluated once
//! per distinct value then spread back to the rows (see the parent module for why views of
//! one value repeat). The ids also serve the per-value count (`count.rs`).

use datafusion::arrow::array::{Array, ArrayRef, StringViewArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::common::Result;

/// Below this many rows a batch is evaluated row by row: hashing would not pay.
const MIN_ROWS_PER_VALUE: usize = 64;

/// After this many rows of a batch, half of them distinct means the column does not repeat.
const SAMPLE_ROWS: usize = 256;

/// The distinct values of one batch: for each row the id of its value (0 for NULL rows, which
/// have none), and for each id the first row holding it.
pub(crate) struct DistinctViews {
    pub(crate) ids: Vec<u32>,
    pub(crate) first_rows: Vec<u32>,
}

/// The distinct views of `values`; `None` when the batch has few non-NULL rows, or its values
/// hardly repeat (more than a quarter of the non-NULL rows distinct, or half of the first
/// [`SAMPLE_ROWS`] of them), so that the caller works row by row.
///
/// Repetition is judged among the non-NULL rows only: a sparse column (an error message
/// present on one event in thirty, nearly every one different) would otherwise pass for a
/// repeating one, and a few hundred distinct long strings per batch cost more through the
/// distinct values (hashing, remembered answers) than the kernel costs row by row.
///
/// Distinct means distinct views: equal views are equal strings (same bytes inline, or same
/// length, buffer and offset). Equal strings behind different views get two ids.
pub(crate) fn distinct_views(values: &StringViewArray) -> Option<DistinctViews> {
    let rows = values.len();
    let valid = rows - values.null_count();
    if valid < MIN_ROWS_PER_VALUE || u32::try_from(rows).is_err() {
        return None;
    }
    let max_distinct = valid / 4;
    let views = values.views();
    let mut table = ViewIds::new();
    let mut first_rows: Vec<u32> = Vec::new();
    // Two loops rather than one over a closure: the dense one is the hot path of every
    // repeating column, and through a closure it ran at 4.0 ns a row instead of 2.2.
    let ids = match values.nulls().filter(|nulls| nulls.null_count() > 0) {
        None => {
            let mut ids: Vec<u32> = Vec::with_capacity(rows);
            for (row, &view) in views.iter().enumerate() {
                let id = table.id(view);
                if id as usize == first_rows.len()
                    && gives_up(&mut first_rows, row, row, max_distinct)
                {
                    return None;
                }
                ids.push(id);
            }
            ids
        }
        // Only the non-NULL rows, found a word of the validity bitmap at a time; NULL rows
        // keep id 0.
        Some(nulls) => {
            let mut ids: Vec<u32> = vec![0; rows];
            for (seen, row) in nulls.valid_indices().enumerate() {
                let id = table.id(views[row]);
                if id as usize == first_rows.len()
                    && gives_up(&mut first_rows, row, seen, max_distinct)
                {
                    return None;
                }
                ids[row] = id;
            }
            ids
        }
    };
    Some(DistinctViews { ids, first_rows })
}

/// Records that `row` holds a new value, the `seen`-th non-NULL row; whether to give up
/// because values clearly do not repeat: more than a quarter of the non-NULL rows distinct,
/// or half of those seen past the first few hundred.
#[inline]
fn gives_up(first_rows: &mut Vec<u32>, row: usize, seen: usize, max_distinct: usize) -> bool {
    first_rows.push(row as u32);
    let distinct = first_rows.len();
    distinct > max_distinct || (seen >= SAMPLE_ROWS && distinct * 2 > seen)
}

/// `eval` of the distinct values of `values`, spread back to their rows (NULL rows give
/// NULL); `None` when [`distinct_views`] finds the values do not repeat enough, so that the
/// caller evaluates the batch row by row.
pub(crate) fn per_distinct_value(
    values: &StringViewArray,
    eval: impl FnOnce(ArrayRef) -> Result<ArrayRef>,
) -> Result<Option<ArrayRef>> {
    let Some(DistinctViews { ids, first_rows }) = distinct_views(values) else {
        return Ok(None);
    };
    let distinct = take(values, &UInt32Array::from(first_rows), None)?;
    let answers = eval(distinct)?;
    // The ids of NULL rows point anywhere: the NULL mask makes `take` answer NULL.
    let ids = UInt32Array::new(ids.into(), values.nulls().cloned());
    Ok(Some(take(answers.as_ref(), &ids, None)?))
}

/// Dense ids (0, 1, 2, … in order of first sight) for the views of one batch.
///
/// Open addressing with linear probing over a table kept at most half full, hashed by one
/// multiplication: a batch has a few hundred distinct views, and `hashbrown` (SIMD groups, a
/// general hasher) cost twice as much per row here (`perf`, ILIKE over 10M events).
struct ViewIds {
    /// `(view, id)`; `id == EMPTY` marks a free slot.
    slots: Vec<(u128, u32)>,
    len: u32,
}

const EMPTY: u32 = u32::MAX;

impl ViewIds {
    fn new() -> Self {
        Self {
            slots: vec![(0, EMPTY); 64],
            len: 0,
        }
    }

    /// The id of `view`; a new view gets the next id.
    #[inline(always)]
    fn id(&mut self, view: u128) -> u32 {
        let mask = self.slots.len() - 1;
        let mut slot = Self::home(view, self.slots.len());
        loop {
            let (seen, id) = self.slots[slot];
            if id == EMPTY {
                let id = self.len;
                self.slots[slot] = (view, id);
                self.len += 1;
                if self.len as usize * 2 > self.slots.len() {
                    self.grow();
                }
                return id;
            }
            if seen == view {
                return id;
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The slot a view hashes to (Fibonacci hashing: the top bits of the product depend on
    /// every bit of the folded view — length, prefix, buffer and offset).
    #[inline]
    fn home(view: u128, slots: usize) -> usize {
        let folded = (view as u64) ^ ((view >> 64) as u64).rotate_left(32);
        let bits = slots.trailing_zeros();
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let doubled = vec![(0, EMPTY); self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, doubled);
        let mask = self.slots.len() - 1;
        for (view, id) in old.into_iter().filter(|&(_, id)| id != EMPTY) {
            let mut slot = Self::home(view, self.slots.len());
            while self.slots[slot].1 != EMPTY {
                slot = (slot + 1) & mask;
            }
            self.slots[slot] = (view, id);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use datafusion::arrow::array::{AsArray, StringArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::DataType;

    use super::*;

    /// A `Utf8View` column of `rows` rows cycling through `values`, as the Parquet reader
    /// gives a dictionary-encoded column: equal values share one view into one buffer.
    pub(crate) fn dictionary_like_views(values: &[Option<&str>], rows: usize) -> StringViewArray {
        let dictionary: StringViewArray = values.iter().copied().collect();
        let indices: UInt32Array = (0..rows).map(|row| (row % values.len()) as u32).collect();
        take(&dictionary, &indices, None)
            .expect("take")
            .as_string_view()
            .clone()
    }

    /// `column` through [`per_distinct_value`] with the identity as the function: how many
    /// values it was called with, and the answers (the column again, if all went well).
    fn evaluated_per_value(column: &StringViewArray) -> (usize, ArrayRef) {
        let mut evaluated = 0;
        let answers = per_distinct_value(column, |distinct| {
            evaluated = distinct.len();
            Ok(distinct)
        })
        .expect("evaluates")
        .expect("values repeat");
        (evaluated, answers)
    }

    #[test]
    fn distinct_values_are_evaluated_once_each() {
        let column = dictionary_like_views(
            &[Some("a long value of more than 12 bytes"), Some("b")],
            512,
        );
        let (evaluated, answers) = evaluated_per_value(&column);
        assert_eq!(evaluated, 2);
        assert_eq!(answers.as_string_view().value(511), "b");
    }

    #[test]
    fn view_ids_are_dense_and_stable_across_growth() {
        let mut ids = ViewIds::new();
        let views: Vec<u128> = (0..5000u128).map(|i| (i << 64) | (i * 7919 % 13)).collect();
        for (expected, &view) in views.iter().enumerate() {
            assert_eq!(ids.id(view), expected as u32);
        }
        for (expected, &view) in views.iter().enumerate().rev() {
            assert_eq!(ids.id(view), expected as u32);
        }
        assert_eq!(ids.len, 5000);
    }

    #[test]
    fn batches_that_hardly_repeat_go_row_by_row() {
        let unique: StringArray = (0..1000).map(|i| Some(format!("agent {i}"))).collect();
        let unique = cast(&unique, &DataType::Utf8View).expect("cast");
        let called = per_distinct_value(unique.as_string_view(), |_| panic!("not evaluated"));
        assert!(called.expect("no error").is_none());
        let small = dictionary_like_views(&[Some("x")], MIN_ROWS_PER_VALUE - 1);
        assert!(per_distinct_value(&small, Ok).expect("no error").is_none());
    }

    #[test]
    fn repetition_is_judged_among_non_null_rows() {
        // One row in eight has a value, each one different (an error message with ids in
        // it): a quarter of the batch is far more than the distinct values, yet they do not
        // repeat at all.
        let sparse: StringViewArray = (0..4096)
            .map(|i| (i % 8 == 0).then(|| format!("AccessDenied for request {i:06} of many")))
            .collect();
        assert!(distinct_views(&sparse).is_none());
        // The same sparseness with two values that repeat: answered per value, NULLs kept.
        let mut values = vec![None; 14];
        values.insert(3, Some("a value longer than twelve bytes"));
        values.insert(9, Some("b"));
        let repeating = dictionary_like_views(&values, 4096);
        let (evaluated, answers) = evaluated_per_value(&repeating);
        assert_eq!(evaluated, 2);
        let answers = answers.as_string_view();
        for row in [0, 3, 9, 16 + 3, 4095] {
            assert_eq!(answers.is_null(row), repeating.is_null(row), "row {row}");
            if repeating.is_valid(row) {
                assert_eq!(answers.value(row), repeating.value(row));
            }
        }
        // Too few non-NULL rows for the distinct values to pay.
        let rare: StringViewArray = (0..4096).map(|i| (i % 100 == 0).then_some("x")).collect();
        assert!(distinct_views(&rare).is_none());
    }
}

/// Not a timed assertion: run by hand in release mode,
/// `cargo test --release -p tw-query --lib measure_distinct_views -- --ignored --nocapture`.
#[cfg(test)]
mod measure {
    use datafusion::arrow::array::AsArray;

    use super::tests::dictionary_like_views;
    use super::*;

    /// Nanoseconds per row of [`distinct_views`] over 8,192 rows of `values` in scattered order.
    fn nanos_per_row(values: &[Option<&str>]) -> f64 {
        let column = dictionary_like_views(values, 8192);
        let scattered: UInt32Array = (0..8192u32)
            .map(|i| i.wrapping_mul(2_654_435_761) % 8192)
            .collect();
        let column = take(&column, &scattered, None).expect("take");
        let column = column.as_string_view();
        let started = std::time::Instant::now();
        for _ in 0..20_000 {
            std::hint::black_box(distinct_views(std::hint::black_box(column)));
        }
        started.elapsed().as_nanos() as f64 / (20_000.0 * 8192.0)
    }

    #[test]
    #[ignore = "measurement, run by hand in release mode"]
    fn measure_distinct_views() {
        // 24 event names, half short enough to be stored inline in the view.
        let names: Vec<String> = (0..24)
            .map(|i| match i % 2 {
                0 => format!("Op{i}"),
                _ => format!("DescribeSomething{i}"),
            })
            .collect();
        let mut values: Vec<Option<&str>> = names.iter().map(|name| Some(name.as_str())).collect();
        println!("dense, 24 values: {:.2} ns/row", nanos_per_row(&values));
        values.extend(std::iter::repeat_n(None, 24 * 7));
        println!("one row in eight set: {:.2} ns/row", nanos_per_row(&values));
    }
}
