//! Finding the next intact frame after damage inside a segment.
//!
//! A bad frame's length cannot be trusted, so the frame after it is found by scanning: the
//! first byte position from which a whole frame decodes (length in bounds, CRC32C matching)
//! and whose stored offset lies in the range the damaged stretch can end at. A chance match
//! needs both a CRC32C collision and an offset in that range, so a found frame is a real one.
//! Readers then lose only the records whose bytes are damaged, not the rest of the segment.

use std::ops::Range;

use bytes::Bytes;
use tw_core::Offset;

use crate::frame::{self, BODY_FIXED, HEADER_LEN};
use crate::segment::{MAX_BODY_BYTES, Segment};

/// Bytes scanned per read.
const SCAN_CHUNK: usize = 256 * 1024;

/// Bytes a position needs in view to be checked cheaply: the header and the stored offset.
const PROBE_LEN: usize = HEADER_LEN + 8;

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
pub(crate) fn next_intact_frame(
    segment: &Segment,
    from: u64,
    limit: u64,
    offsets: Range<Offset>,
) -> std::io::Result<Option<Resync>> {
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
            let body_len = u32::from_le_bytes(le_bytes(&buf, at)) as usize;
            let offset = u64::from_le_bytes(le_bytes(&buf, at + HEADER_LEN));
            let plausible = (BODY_FIXED..=MAX_BODY_BYTES).contains(&body_len)
                && pos + (HEADER_LEN + body_len) as u64 <= limit
                && offsets.contains(&offset);
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

fn le_bytes<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}
