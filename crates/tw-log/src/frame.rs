//! The on-disk frame of one record (format version [`FORMAT_VERSION`]).
//!
//! ```text
//! length  u32   bytes after the 8-byte header (= BODY_FIXED + key_len + payload_len)
//! crc     u32   CRC32C (Castagnoli) of those `length` bytes
//! offset          u64
//! ingest_time_ms  i64
//! event_time_ms   i64
//! key_len         u32
//! key             key_len bytes
//! payload         the rest
//! ```
//! Every integer is little endian. The offset is stored in the frame (not only implied by
//! position) so recovery can prove that a segment holds the dense sequence its name promises.

use bytes::Bytes;
use tw_core::{AppendRecord, Offset, Record};

/// Version of the frame format, recorded in every stream's `meta.json`.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Bytes of the frame header: length + CRC.
pub(crate) const HEADER_LEN: usize = 8;

/// Bytes of the fixed part of the body: offset, two times, key length.
pub(crate) const BODY_FIXED: usize = 8 + 8 + 8 + 4;

/// Total frame size of a record (header included).
pub(crate) fn frame_len(record: &AppendRecord) -> usize {
    HEADER_LEN + BODY_FIXED + record.key.len() + record.payload.len()
}

/// Appends the frame of `record` at `offset` to `buf`, without allocating beyond `buf`'s growth.
pub(crate) fn encode(buf: &mut Vec<u8>, offset: Offset, record: &AppendRecord) {
    let start = buf.len();
    let body_len = BODY_FIXED + record.key.len() + record.payload.len();
    // The caller enforced `max_record_bytes` (a `usize` far below 4 GiB), so this cannot wrap.
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&record.ingest_time_ms.to_le_bytes());
    buf.extend_from_slice(&record.event_time_ms.to_le_bytes());
    buf.extend_from_slice(&(record.key.len() as u32).to_le_bytes());
    buf.extend_from_slice(&record.key);
    buf.extend_from_slice(&record.payload);
    let crc = crc32c::crc32c(&buf[start + HEADER_LEN..]);
    buf[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameFault {
    /// Fewer bytes remain than the header or the announced length needs.
    Short,
    /// The announced length is impossible (below the fixed body or above the limit).
    BadLength,
    /// The CRC does not match.
    BadCrc,
    /// The key length points past the body.
    BadKeyLength,
}

/// Reads the body length announced by the header at the start of `bytes`.
pub(crate) fn body_len(bytes: &[u8]) -> Option<usize> {
    let header: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(header) as usize)
}

/// Decodes the frame at the start of `chunk[at..]`. Returns the record and the frame's total
/// length. Key and payload are zero-copy slices of `chunk`.
pub(crate) fn decode(
    chunk: &Bytes,
    at: usize,
    max_body: usize,
) -> Result<(Record, usize), FrameFault> {
    let bytes = &chunk[at..];
    let len = body_len(bytes).ok_or(FrameFault::Short)?;
    if !(BODY_FIXED..=max_body).contains(&len) {
        return Err(FrameFault::BadLength);
    }
    if bytes.len() < HEADER_LEN + len {
        return Err(FrameFault::Short);
    }
    let crc = u32::from_le_bytes(bytes_at(bytes, 4));
    let body = &bytes[HEADER_LEN..HEADER_LEN + len];
    if crc32c::crc32c(body) != crc {
        return Err(FrameFault::BadCrc);
    }
    let offset = u64::from_le_bytes(bytes_at(body, 0));
    let ingest_time_ms = i64::from_le_bytes(bytes_at(body, 8));
    let event_time_ms = i64::from_le_bytes(bytes_at(body, 16));
    let key_len = u32::from_le_bytes(bytes_at(body, 24)) as usize;
    if key_len > len - BODY_FIXED {
        return Err(FrameFault::BadKeyLength);
    }
    let key_start = at + HEADER_LEN + BODY_FIXED;
    let payload_start = key_start + key_len;
    let end = at + HEADER_LEN + len;
    let record = Record {
        offset,
        ingest_time_ms,
        event_time_ms,
        key: chunk.slice(key_start..payload_start),
        payload: chunk.slice(payload_start..end),
    };
    Ok((record, HEADER_LEN + len))
}

/// The `N` bytes of `bytes` at `at`, for a `from_le_bytes` (the caller checked the length).
pub(crate) fn bytes_at<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &'static [u8], payload: &'static [u8]) -> AppendRecord {
        AppendRecord {
            ingest_time_ms: 1_700_000_000_123,
            event_time_ms: -5,
            key: Bytes::from_static(key),
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn round_trip_and_exact_layout() {
        let rec = record(b"k1", b"{\"a\":1}");
        let mut buf = Vec::new();
        encode(&mut buf, 42, &rec);
        assert_eq!(buf.len(), frame_len(&rec));
        assert_eq!(buf.len(), 8 + 28 + 2 + 7);
        // Pinned layout: length, then CRC over the rest, then the offset.
        assert_eq!(&buf[0..4], &(28u32 + 2 + 7).to_le_bytes());
        assert_eq!(&buf[4..8], &crc32c::crc32c(&buf[8..]).to_le_bytes());
        assert_eq!(&buf[8..16], &42u64.to_le_bytes());
        let chunk = Bytes::from(buf);
        let (got, used) = decode(&chunk, 0, 1 << 20).unwrap();
        assert_eq!(used, chunk.len());
        assert_eq!(got.offset, 42);
        assert_eq!(got.ingest_time_ms, rec.ingest_time_ms);
        assert_eq!(got.event_time_ms, -5);
        assert_eq!(got.key, rec.key);
        assert_eq!(got.payload, rec.payload);
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, &record(b"key", b"payload bytes"));
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(
                decode(&Bytes::from(bad), 0, 1 << 20).is_err(),
                "flip at {i} undetected"
            );
        }
        for cut in 0..buf.len() {
            let short = Bytes::copy_from_slice(&buf[..cut]);
            assert_eq!(
                decode(&short, 0, 1 << 20).unwrap_err(),
                FrameFault::Short,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn length_above_limit_is_refused() {
        let mut buf = Vec::new();
        encode(&mut buf, 0, &record(b"", &[7; 100]));
        assert_eq!(
            decode(&Bytes::from(buf), 0, 64).unwrap_err(),
            FrameFault::BadLength
        );
    }
}
