//! The persisted summary of a sealed segment, `{base_offset:020}.idx`, so that opening the log
//! does not rescan every sealed segment.
//!
//! It is a cache, never the source of truth: written (temporary file + rename, no fsync) when
//! a segment is sealed, and trusted on open only when its CRC is valid and it describes a file
//! of exactly the segment's current length; otherwise the segment is scanned (and the summary
//! rewritten). Reads verify every frame's CRC regardless.
//!
//! Layout (little endian): `TWIX`, version u32, base u64, length u64, end offset u64,
//! first ingest i64, max ingest i64, entry count u32, entries (offset u64, position u64,
//! ingest i64), then a CRC32C of everything before it.

use std::path::{Path, PathBuf};

use tw_core::Offset;

use crate::segment::{IndexEntry, SegmentAppend};

const MAGIC: &[u8; 4] = b"TWIX";
const VERSION: u32 = 1;
const FIXED: usize = 4 + 4 + 8 * 5 + 4;
const ENTRY: usize = 24;

/// The summary file of the segment stored at `segment_path`.
pub(crate) fn path_for(segment_path: &Path) -> PathBuf {
    segment_path.with_extension("idx")
}

/// Everything recovery would learn by scanning a sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Base offset of the segment.
    pub base: Offset,
    /// Length of the segment file.
    pub len: u64,
    /// One past its last record.
    pub end_offset: Offset,
    /// Ingest time of its first record (`i64::MAX` when empty).
    pub first_ingest_ms: i64,
    /// Newest ingest time (`i64::MIN` when empty).
    pub max_ingest_ms: i64,
    /// The sparse index.
    pub index: Vec<IndexEntry>,
}

impl Summary {
    /// What [`crate::segment::Segment::publish`] needs to restore the segment's state.
    pub(crate) fn to_append(&self) -> SegmentAppend {
        let mut append = SegmentAppend::new(0);
        append.index = self.index.clone();
        append.first_ingest_ms = Some(self.first_ingest_ms).filter(|t| *t != i64::MAX);
        append.max_ingest_ms = self.max_ingest_ms;
        append.new_len = self.len;
        append.end_offset = self.end_offset;
        append
    }
}

/// Encodes a summary.
pub(crate) fn encode(summary: &Summary) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED + 4 + summary.index.len() * ENTRY);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&summary.base.to_le_bytes());
    out.extend_from_slice(&summary.len.to_le_bytes());
    out.extend_from_slice(&summary.end_offset.to_le_bytes());
    out.extend_from_slice(&summary.first_ingest_ms.to_le_bytes());
    out.extend_from_slice(&summary.max_ingest_ms.to_le_bytes());
    out.extend_from_slice(&(summary.index.len() as u32).to_le_bytes());
    for entry in &summary.index {
        out.extend_from_slice(&entry.offset.to_le_bytes());
        out.extend_from_slice(&entry.pos.to_le_bytes());
        out.extend_from_slice(&entry.ingest_time_ms.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a summary; `None` for anything torn, corrupted or of another version.
pub(crate) fn decode(bytes: &[u8]) -> Option<Summary> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) || body.len() < FIXED {
        return None;
    }
    let u64_at = |at: usize| {
        body.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let i64_at = |at: usize| u64_at(at).map(|v| v as i64);
    if &body[..4] != MAGIC || body[4..8] != VERSION.to_le_bytes() {
        return None;
    }
    let count = u32::from_le_bytes(body[48..52].try_into().ok()?) as usize;
    if body.len() != FIXED + count.checked_mul(ENTRY)? {
        return None;
    }
    let index = (0..count)
        .map(|i| {
            let at = FIXED + i * ENTRY;
            Some(IndexEntry {
                offset: u64_at(at)?,
                pos: u64_at(at + 8)?,
                ingest_time_ms: i64_at(at + 16)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Summary {
        base: u64_at(8)?,
        len: u64_at(16)?,
        end_offset: u64_at(24)?,
        first_ingest_ms: i64_at(32)?,
        max_ingest_ms: i64_at(40)?,
        index,
    })
}

/// Loads the summary of the segment at `segment_path` if it is valid for a file of `len`
/// bytes starting at `base`.
pub(crate) fn load(segment_path: &Path, base: Offset, len: u64) -> Option<Summary> {
    let bytes = std::fs::read(path_for(segment_path)).ok()?;
    decode(&bytes).filter(|s| s.base == base && s.len == len && s.end_offset >= base)
}

/// Writes the summary of a sealed segment. Best effort: a failure only costs a rescan on the
/// next open, so it is logged, not returned.
pub(crate) fn store(segment_path: &Path, summary: &Summary) {
    let path = path_for(segment_path);
    let tmp = path.with_extension("idx.tmp");
    let result = std::fs::write(&tmp, encode(summary)).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(error) = result {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(file = %path.display(), %error, "could not write a segment index (it will be rebuilt)");
    }
}

/// Removes the summary of a deleted segment (absent is fine).
pub(crate) fn remove(segment_path: &Path) {
    let path = path_for(segment_path);
    if let Err(error) = std::fs::remove_file(&path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), %error, "could not remove a segment index");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            base: 100,
            len: 9000,
            end_offset: 140,
            first_ingest_ms: -3,
            max_ingest_ms: 77,
            index: vec![
                IndexEntry {
                    offset: 110,
                    pos: 4100,
                    ingest_time_ms: 5,
                },
                IndexEntry {
                    offset: 125,
                    pos: 8200,
                    ingest_time_ms: 60,
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_every_damage_is_refused() {
        let bytes = encode(&summary());
        assert_eq!(decode(&bytes), Some(summary()));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert_eq!(decode(&bad), None, "flip at {i}");
        }
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn load_checks_base_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let segment = dir.path().join("00000000000000000100.log");
        store(&segment, &summary());
        assert!(path_for(&segment).ends_with("00000000000000000100.idx"));
        assert_eq!(load(&segment, 100, 9000), Some(summary()));
        assert_eq!(
            load(&segment, 100, 9001),
            None,
            "segment changed since the summary"
        );
        assert_eq!(load(&segment, 99, 9000), None);
        remove(&segment);
        assert_eq!(load(&segment, 100, 9000), None);
        remove(&segment);
    }
}
