//! Finding the next intact frame after damage inside a segment.
//!
//! A bad frame's length cannot be trusted, so the frame after it is found by scanning: the
//! first byte position from which a whole frame decodes (length in bounds, CRC32C matching)
//! and whose stored offset lies in the range the damaged stretch can end at (after the damaged
//! offset, below the next segment's base and below what the bytes left could hold). A chance
//! match needs both a CRC32C collision and an offset in that narrow range; what it cannot tell
//! apart is a whole frame with such an offset that a producer sent inside a damaged record's
//! payload. Readers then lose only the records whose bytes are damaged, not the rest of the
//! segment.
//!
//! Also here: telling a write torn by a crash from damage to stored records
//! ([`looks_unwritten`]), which decides what the recovery of the last segment cuts.

use std::ops::Range;

use bytes::Bytes;
use tw_core::Offset;

use crate::frame::{self, BODY_FIXED, HEADER_LEN};
use crate::segment::{MAX_BODY_BYTES, Segment};

/// Bytes scanned per read.
const SCAN_CHUNK: usize = 256 * 1024;

/// Bytes a position needs in view to be checked cheaply: the header and the fixed body.
const PROBE_LEN: usize = HEADER_LEN + BODY_FIXED;

/// The smallest frame: header and fixed body, no key, no payload.
const MIN_FRAME: usize = HEADER_LEN + BODY_FIXED;

/// An intact frame found after damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resync {
    /// The frame's offset: the first offset readable after the damage.
    pub offset: Offset,
    /// The frame's byte position in the segment file.
    pub pos: u64,
}

/// Scans `segment` from byte `from` (inclusive) to `limit` for the first intact frame whose
/// offset lies in `offsets`. `None` when the damage reaches `limit`.
///
/// The range is narrowed to the offsets the bytes can hold (a frame takes at least
/// [`MIN_FRAME`] bytes): on high-entropy bytes a wide range would let most positions pass the
/// probe, each costing a read and a CRC of up to the rest of the segment.
pub(crate) fn next_intact_frame(
    segment: &Segment,
    from: u64,
    limit: u64,
    offsets: Range<Offset>,
) -> std::io::Result<Option<Resync>> {
    let fit = limit.saturating_sub(from) / MIN_FRAME as u64 + 1;
    let offsets = offsets.start..offsets.end.min(offsets.start.saturating_add(fit));
    let mut start = from;
    let mut buf = Vec::new();
    while start + (HEADER_LEN + BODY_FIXED) as u64 <= limit {
        let want = (limit - start).min((SCAN_CHUNK + PROBE_LEN) as u64) as usize;
        buf.clear();
        let filled = tw_os::read_at_into(&segment.file, &mut buf, want, start)?;
        if filled < PROBE_LEN {
            return Ok(None);
        }
        // Positions whose probe lies wholly in this chunk; the overlap re-reads the rest.
        let positions = (filled - PROBE_LEN + 1).min(SCAN_CHUNK);
        for at in 0..positions {
            let pos = start + at as u64;
            let body_len = u32::from_le_bytes(frame::bytes_at(&buf, at)) as usize;
            let offset = u64::from_le_bytes(frame::bytes_at(&buf, at + HEADER_LEN));
            let key_len = u32::from_le_bytes(frame::bytes_at(&buf, at + HEADER_LEN + 24)) as usize;
            let plausible = (BODY_FIXED..=MAX_BODY_BYTES).contains(&body_len)
                && pos + (HEADER_LEN + body_len) as u64 <= limit
                && offsets.contains(&offset)
                && key_len <= body_len - BODY_FIXED;
            if plausible && frame_is_intact(segment, pos, body_len, offset)? {
                return Ok(Some(Resync { offset, pos }));
            }
        }
        if filled < want {
            return Ok(None);
        }
        start += positions as u64;
    }
    Ok(None)
}

/// Whether the `body_len`-byte frame at `pos` decodes and holds `offset`.
fn frame_is_intact(
    segment: &Segment,
    pos: u64,
    body_len: usize,
    offset: Offset,
) -> std::io::Result<bool> {
    let mut frame = Vec::new();
    let want = HEADER_LEN + body_len;
    if tw_os::read_at_into(&segment.file, &mut frame, want, pos)? < want {
        return Ok(false);
    }
    let frame = Bytes::from(frame);
    Ok(frame::decode(&frame, 0, MAX_BODY_BYTES).is_ok_and(|(record, _)| record.offset == offset))
}

/// The unit in which a crash can leave a write partly on disk: a page of the page cache.
const PAGE: u64 = 4096;

/// Whether the damaged stretch `[from, to)` of the last segment bears the mark of a write a
/// crash left partly on disk (pages reach the disk in any order before the fsync, and a page
/// that did not reads as zeros): zeros from `from` up to the next page boundary (the page of
/// the first bad frame was not written), a whole zero page, or, when `to` is the end of the
/// file (`to_is_end`), zeros from a page boundary to it. A flipped bit or a garbled stretch of
/// stored records leaves none of these: a frame never starts with a zero length, and a page of
/// frames (JSON text and headers) is never all zeros.
pub(crate) fn looks_unwritten(
    segment: &Segment,
    from: u64,
    to: u64,
    to_is_end: bool,
) -> std::io::Result<bool> {
    let mut start = from;
    while start < to {
        let end = ((start / PAGE + 1) * PAGE).min(to);
        let counts = end.is_multiple_of(PAGE) || (to_is_end && start.is_multiple_of(PAGE));
        if counts {
            let mut bytes = Vec::new();
            let want = (end - start) as usize;
            let filled = tw_os::read_at_into(&segment.file, &mut bytes, want, start)?;
            if filled == want && bytes.iter().all(|b| *b == 0) {
                return Ok(true);
            }
        }
        start = end;
    }
    Ok(false)
}
