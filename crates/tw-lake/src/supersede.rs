//! Which data files of one hour directory are superseded, and so invisible to readers.
//!
//! Rule: a file is superseded when another file of the same log partition in the same
//! directory covers its whole offset range (a compacted file covers the flushes it merged),
//! or has the same range and a higher revision (`p000-{first}-{last}-r{n}.parquet`: a file
//! rewritten without some rows by delete-by-query; no suffix is revision 0).
//! Live files of one partition and directory always have disjoint ranges: flushes write
//! disjoint ranges, compaction replaces consecutive files by one covering exactly their span,
//! and the crash clean-up only shrinks ranges. So "covered by another" can only mean "merged
//! into it", and the merged file holds every row of the files it covers.

use std::collections::BTreeMap;

use tw_core::{Offset, PartitionId};

use crate::LakeError;
use crate::files::{self, DataFile, parse_file_name};
use crate::storage::LakeStorage;

/// `(partition, first, last, revision)` of a data file's name.
pub(crate) type Range = (PartitionId, Offset, Offset, u32);

/// The range and revision of a data file name; `None` for any other name.
pub(crate) fn range_of(name: &str) -> Option<Range> {
    let (partition, first, last) = parse_file_name(name)?;
    let stem = name.strip_suffix(".parquet")?;
    Some((partition, first, last, split_revision(stem).1))
}

/// [`range_of`] for a `/`-separated path relative to the lake root.
pub(crate) fn range_of_path(path: &str) -> Option<Range> {
    range_of(path.rsplit('/').next()?)
}

/// The files of one listing by directory (superseding is decided per directory).
pub(crate) fn by_dir(files: Vec<DataFile>) -> BTreeMap<String, Vec<DataFile>> {
    let mut by_dir: BTreeMap<String, Vec<DataFile>> = BTreeMap::new();
    for file in files {
        by_dir
            .entry(files::parent(&file.path).to_string())
            .or_default()
            .push(file);
    }
    by_dir
}

/// `stem` without a trailing `-r{n}`, and `n` (0 without the suffix).
pub(crate) fn split_revision(stem: &str) -> (&str, u32) {
    if let Some((rest, revision)) = stem.rsplit_once("-r")
        && let Ok(revision) = revision.parse()
    {
        return (rest, revision);
    }
    (stem, 0)
}

/// The name of revision `revision` of the range `first..=last` (revision 0: the plain name).
pub(crate) fn revised_name(
    partition: PartitionId,
    first: Offset,
    last: Offset,
    revision: u32,
) -> String {
    let plain = files::file_name(partition, first, last);
    if revision == 0 {
        return plain;
    }
    let stem = plain.strip_suffix(".parquet").unwrap_or(&plain);
    format!("{stem}-r{revision}.parquet")
}

/// For each name of one directory, whether it is a superseded lake file. Names that are not
/// lake data files are never superseded.
pub fn superseded(names: &[&str]) -> Vec<bool> {
    let parsed: Vec<Option<Range>> = names.iter().map(|name| range_of(name)).collect();
    superseded_ranges(&parsed)
}

/// [`superseded`] on parsed ranges (`None`: not a data file).
pub(crate) fn superseded_ranges(ranges: &[Option<Range>]) -> Vec<bool> {
    let mut order: Vec<usize> = (0..ranges.len()).filter(|i| ranges[*i].is_some()).collect();
    // By partition, then first offset, widest first, highest revision first: any file
    // superseding another comes before it, so one sweep with the largest `last` seen so far
    // decides.
    order.sort_by_key(|i| {
        let (partition, first, last, revision) = ranges[*i].unwrap_or_default();
        (
            partition,
            first,
            std::cmp::Reverse(last),
            std::cmp::Reverse(revision),
        )
    });
    let mut result = vec![false; ranges.len()];
    let mut reach: Option<(PartitionId, Offset)> = None;
    for i in order {
        let (partition, _first, last, _revision) = ranges[i].unwrap_or_default();
        match reach {
            Some((p, max_last)) if p == partition && max_last >= last => result[i] = true,
            Some((p, max_last)) if p == partition => reach = Some((p, max_last.max(last))),
            _ => reach = Some((partition, last)),
        }
    }
    result
}

/// Deletes the superseded files among `files` (any directories) and returns the live ones.
/// Only for when no query can be reading them (the writer's start, before queries run).
pub(crate) fn remove_superseded(
    storage: &LakeStorage,
    files: Vec<DataFile>,
) -> Result<Vec<DataFile>, LakeError> {
    let mut live = Vec::new();
    for files in by_dir(files).into_values() {
        let ranges: Vec<_> = files.iter().map(|f| range_of_path(&f.path)).collect();
        for (file, gone) in files.into_iter().zip(superseded_ranges(&ranges)) {
            if gone {
                storage.delete(&file.path)?;
            } else {
                live.push(file);
            }
        }
    }
    live.sort_by(|a, b| (a.partition, a.first, &a.path).cmp(&(b.partition, b.first, &b.path)));
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::file_name;

    #[test]
    fn covered_ranges_of_the_same_partition_are_superseded() {
        let names = [
            file_name(0, 0, 9),
            file_name(0, 10, 19),
            file_name(0, 0, 19), // compacted: covers the two above
            file_name(0, 20, 29),
            file_name(1, 5, 6), // other partition: untouched
            file_name(1, 7, 30),
            "notes.txt".to_string(),
            ".p000-00000000000000000000-00000000000000000019.parquet.tmp".to_string(),
        ];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            superseded(&refs),
            vec![true, true, false, false, false, false, false, false]
        );
    }

    #[test]
    fn a_higher_revision_of_the_same_range_supersedes() {
        let names = [
            revised_name(0, 0, 9, 0),
            revised_name(0, 0, 9, 2),
            revised_name(0, 0, 9, 1),
            revised_name(0, 10, 19, 1),
        ];
        assert_eq!(
            names[1],
            "p000-00000000000000000000-00000000000000000009-r2.parquet"
        );
        assert_eq!(parse_file_name(&names[1]), Some((0, 0, 9)));
        assert_eq!(range_of(&names[1]), Some((0, 0, 9, 2)));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(superseded(&refs), vec![true, false, true, false]);
        // A compaction covering a revised file supersedes it.
        let names = [revised_name(0, 0, 9, 3), revised_name(0, 0, 19, 0)];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(superseded(&refs), vec![true, false]);
    }

    #[test]
    fn nested_compactions_leave_only_the_widest() {
        let names = [
            file_name(2, 0, 99),
            file_name(2, 0, 49),
            file_name(2, 50, 99),
            file_name(2, 10, 20),
            file_name(2, 100, 100),
        ];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(superseded(&refs), vec![false, true, true, true, false]);
    }
}
