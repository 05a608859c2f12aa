//! Recovery: a segment cut at every byte near its end, or with a corrupted last frame, reopens
//! with every complete record before the damage, and appends continue at the right offset; a
//! corrupted frame with intact frames after it costs only its own record.

mod common;

use std::path::Path;

use common::*;
use tw_core::AppendRecord;
use tw_log::Log;

const RECORDS: u64 = 12;

/// Writes RECORDS single-record appends into one segment and returns what was appended.
fn write_log(dir: &Path) -> Vec<AppendRecord> {
    let log = open(dir, 1 << 20);
    let s = stream("s");
    log.create_stream(&s, 1).unwrap();
    let records: Vec<_> = (0..RECORDS)
        .map(|i| record(i, i as i64, 20 + (i as usize * 37) % 90))
        .collect();
    for r in &records {
        append(&log, &s, 0, vec![r.clone()]);
    }
    records
}

/// Reopens `dir` and checks that exactly `kept` records survive and appends continue.
fn check_reopen(dir: &Path, records: &[AppendRecord], kept: usize, ctx: &str) {
    let s = stream("s");
    let log = open(dir, 1 << 20);
    assert_eq!(
        log.end_offset(&s, 0).unwrap(),
        kept as u64,
        "{ctx}: end offset"
    );
    // The damage is physically cut: the file is exactly the kept frames, so nothing of the
    // old tail can resurface behind later appends.
    let bytes = std::fs::read(segment_files(dir, "s", 0).pop().unwrap()).unwrap();
    let ends = frame_ends(&bytes);
    assert_eq!(ends.len(), kept, "{ctx}: frames left in the file");
    assert_eq!(
        ends.last().copied().unwrap_or(0),
        bytes.len(),
        "{ctx}: file ends at the last kept frame"
    );
    let read = read_all(&log, &s, 0);
    assert_eq!(read.len(), kept, "{ctx}: records read");
    assert!(
        read.iter()
            .zip(records)
            .enumerate()
            .all(|(i, (r, a))| same(r, i as u64, a)),
        "{ctx}: content"
    );
    let extra = record(777, 777, 33);
    let range = append(&log, &s, 0, vec![extra.clone()]);
    assert_eq!(
        range,
        kept as u64..kept as u64 + 1,
        "{ctx}: next append offset"
    );
    drop(log);
    // And the repaired log reopens cleanly with the new record in place.
    let log = open(dir, 1 << 20);
    let read = read_all(&log, &s, 0);
    assert_eq!(read.len(), kept + 1, "{ctx}: after second reopen");
    assert!(
        same(&read[kept], kept as u64, &extra),
        "{ctx}: appended record"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn truncation_at_every_byte_of_the_last_three_frames_keeps_every_complete_record() {
    let original = tempfile::tempdir().unwrap();
    let records = write_log(original.path());
    let segment = segment_files(original.path(), "s", 0).pop().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    let ends = frame_ends(&bytes);
    assert_eq!(ends.len() as u64, RECORDS);
    assert_eq!(*ends.last().unwrap(), bytes.len());
    let start = ends[ends.len() - 4];
    for cut in start..=bytes.len() {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let file = segment_files(copy.path(), "s", 0).pop().unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        // Complete frames are those ending at or before the cut.
        let kept = ends.iter().filter(|e| **e <= cut).count();
        check_reopen(copy.path(), &records, kept, &format!("cut at {cut}"));
    }
}

/// A flipped byte in the length of the last frame makes it look torn: cut. Anywhere else it is
/// damage to a record written whole (acknowledged, maybe): kept, and only the damaged record
/// is lost, its offset never reused.
#[test]
fn a_corrupted_byte_in_the_tail_costs_only_its_record() {
    let original = tempfile::tempdir().unwrap();
    let records = write_log(original.path());
    let bytes = std::fs::read(segment_files(original.path(), "s", 0).pop().unwrap()).unwrap();
    let ends = frame_ends(&bytes);
    // Every byte of the last three frames (header, offset, times, key, payload).
    for at in ends[ends.len() - 4]..bytes.len() {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let file = segment_files(copy.path(), "s", 0).pop().unwrap();
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        std::fs::write(&file, &damaged).unwrap();
        let frame = ends.iter().filter(|e| **e <= at).count();
        let ctx = format!("byte {at} flipped");
        let in_last_length = frame + 1 == ends.len() && at < ends[frame - 1] + 4;
        if in_last_length {
            check_reopen(copy.path(), &records, frame, &ctx);
        } else {
            check_hole(copy.path(), &records, frame as u64, &ctx);
        }
    }
}

/// Reopens `dir` and checks that every record but `lost` reads back, that a read of `lost`
/// reports the damage, and that appends continue after the last record.
fn check_hole(dir: &Path, records: &[AppendRecord], lost: u64, ctx: &str) {
    let s = stream("s");
    let log = open(dir, 1 << 20);
    assert_eq!(log.end_offset(&s, 0).unwrap(), RECORDS, "{ctx}: end offset");
    let before = log.read(&s, 0, 0, 100, usize::MAX).unwrap();
    assert_eq!(
        before.len() as u64,
        lost,
        "{ctx}: records before the damage"
    );
    match log.read(&s, 0, lost, 100, usize::MAX) {
        Err(tw_log::LogError::Corrupt { resume_at, .. }) => {
            assert_eq!(resume_at, lost + 1, "{ctx}: resume")
        }
        other => panic!("{ctx}: expected corruption, got {other:?}"),
    }
    let after = log.read(&s, 0, lost + 1, 100, usize::MAX).unwrap();
    let read: Vec<_> = before.iter().chain(&after).collect();
    assert_eq!(read.len() as u64, RECORDS - 1, "{ctx}: records read");
    assert!(
        read.iter()
            .all(|r| r.offset != lost && same(r, r.offset, &records[r.offset as usize])),
        "{ctx}: content"
    );
    let range = append(&log, &s, 0, vec![record(777, 777, 33)]);
    assert_eq!(range, RECORDS..RECORDS + 1, "{ctx}: next append offset");
    drop(log);
    let log = open(dir, 1 << 20);
    let after = log.read(&s, 0, lost + 1, 100, usize::MAX).unwrap();
    assert_eq!(
        after.last().unwrap().offset,
        RECORDS,
        "{ctx}: after second reopen"
    );
}

#[test]
fn garbage_appended_after_the_last_frame_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_log(dir.path());
    let file = segment_files(dir.path(), "s", 0).pop().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    // A zeroed tail (pre-allocated blocks after a crash) and a huge bogus length.
    bytes.extend_from_slice(&[0; 100]);
    std::fs::write(&file, &bytes).unwrap();
    check_reopen(dir.path(), &records, RECORDS as usize, "zero tail");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(&[0xff; 16]);
    std::fs::write(&file, &bytes).unwrap();
    let mut with_extra = records.clone();
    with_extra.push(record(777, 777, 33));
    check_reopen(dir.path(), &with_extra, RECORDS as usize + 1, "0xff tail");
}

/// Pages of the last write that a crash left unwritten (zeros) with later pages of it on disk:
/// the frames after the hole are of that unacknowledged write too, and are cut with it.
#[test]
fn a_write_torn_across_pages_is_cut_at_its_first_hole() {
    let original = tempfile::tempdir().unwrap();
    let s = stream("s");
    // The last record spans a page boundary.
    let mut records: Vec<AppendRecord> = (0..120).map(|i| record(i, i as i64, 100)).collect();
    records.push(record(120, 120, 6000));
    {
        let log = open(original.path(), 1 << 20);
        log.create_stream(&s, 1).unwrap();
        for r in &records {
            append(&log, &s, 0, vec![r.clone()]);
        }
    }
    let bytes = std::fs::read(segment_files(original.path(), "s", 0).pop().unwrap()).unwrap();
    let ends = frame_ends(&bytes);
    assert!(bytes.len() > 3 * 4096, "{}", bytes.len());
    // The frame holding byte `at`, and where it starts.
    let frame_at = |at: usize| ends.iter().filter(|e| **e <= at).count();
    let start_of = |frame: usize| if frame == 0 { 0 } else { ends[frame - 1] };
    // A whole zero page: the frame it begins in is the first one cut.
    let whole_page = 4096..8192;
    // Zeros from a frame's start up to the page boundary: its page was not written.
    let first_after = frame_at(4096 + 200) + 1;
    let page_rest = start_of(first_after)..8192;
    // Zeros from a page boundary to the end, inside the last record (written whole in length
    // but not in content): it is cut, where a flipped bit in it would not be.
    let last_page = (bytes.len() / 4096 * 4096)..bytes.len();
    assert!(start_of(ends.len() - 1) < last_page.start);
    for (hole, kept) in [
        (whole_page, frame_at(4096)),
        (page_rest.clone(), first_after),
        (last_page, ends.len() - 1),
    ] {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let mut damaged = bytes.clone();
        damaged[hole.clone()].fill(0);
        let file = segment_files(copy.path(), "s", 0).pop().unwrap();
        std::fs::write(&file, &damaged).unwrap();
        check_reopen(copy.path(), &records, kept, &format!("zeros at {hole:?}"));
    }
}
