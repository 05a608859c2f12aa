//! Kinesis addressing over Tidewatch partitions: shard ids, the 128-bit hash-key space,
//! sequence numbers and shard iterators.
//!
//! A shard is a partition. As in Kinesis, a record's shard is chosen by the MD5 of its
//! partition key read as a 128-bit big-endian number (or by an explicit hash key), and the
//! space `0..=2^128-1` is split into equal contiguous ranges, one per shard. A sequence number
//! is the record's offset written as a 20-digit decimal, so sequence numbers sort as strings
//! and as numbers exactly like offsets within a shard.

use base64::Engine as _;

/// How long a shard iterator stays valid (Kinesis: 5 minutes).
pub const ITERATOR_TTL_MS: i64 = 5 * 60 * 1000;

/// `shardId-000000000003` for partition 3.
pub fn shard_id(partition: u32) -> String {
    ShardId(partition).to_string()
}

/// The shard id of a partition (see [`shard_id`]); displays and serialises without an
/// intermediate string (a `PutRecords` answer writes 500 of them).
pub struct ShardId(pub u32);

impl ShardId {
    /// The id, written into `buf`.
    pub fn text<'a>(&self, buf: &'a mut [u8; 20]) -> &'a str {
        buf[..8].copy_from_slice(b"shardId-");
        zero_padded(u64::from(self.0), &mut buf[8..]);
        std::str::from_utf8(buf).expect("ASCII")
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 20];
        f.write_str(self.text(&mut buf))
    }
}

impl serde::Serialize for ShardId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 20];
        serializer.serialize_str(self.text(&mut buf))
    }
}

/// The sequence number of an offset (see [`sequence_number`]); displays and serialises
/// without an intermediate string.
pub struct SequenceNumber(pub u64);

impl SequenceNumber {
    /// The number, written into `buf`.
    pub fn text<'a>(&self, buf: &'a mut [u8; 20]) -> &'a str {
        zero_padded(self.0, buf)
    }
}

impl std::fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 20];
        f.write_str(self.text(&mut buf))
    }
}

impl serde::Serialize for SequenceNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 20];
        serializer.serialize_str(self.text(&mut buf))
    }
}

/// `n` in decimal, zero-padded to fill `out` (which holds every digit of the widths used: 12
/// for a `u32`, 20 for a `u64`); the text written. `format!("{n:020}")` costs ten times more.
fn zero_padded(mut n: u64, out: &mut [u8]) -> &str {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    std::str::from_utf8(out).expect("ASCII digits")
}

/// The partition of a shard id (`shardId-000000000003`, or a bare number).
pub fn parse_shard_id(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("shardId-").unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The inclusive hash-key range of shard `index` of `shards`, split as evenly as 2^128 allows.
pub fn hash_key_range(index: u32, shards: u32) -> (u128, u128) {
    let start = range_start(index, shards);
    let end = if index + 1 >= shards {
        u128::MAX
    } else {
        range_start(index + 1, shards) - 1
    };
    (start, end)
}

/// floor(index * 2^128 / shards), without overflowing.
fn range_start(index: u32, shards: u32) -> u128 {
    if index == 0 {
        // Also keeps one shard (whose 2^128 / 1 does not fit) out of the arithmetic below.
        return 0;
    }
    let n = u128::from(shards.max(2));
    // 2^128 = quotient * n + remainder.
    let (mut quotient, mut remainder) = (u128::MAX / n, u128::MAX % n + 1);
    if remainder == n {
        quotient += 1;
        remainder = 0;
    }
    let i = u128::from(index);
    i * quotient + i * remainder / n
}

/// The start of every shard's hash-key range, computed once per request: placing a record is
/// then a binary search over plain comparisons instead of 128-bit divisions.
#[derive(Debug, Clone)]
pub struct ShardRanges {
    starts: Vec<u128>,
}

impl ShardRanges {
    /// The ranges of `shards` shards.
    pub fn new(shards: u32) -> Self {
        Self {
            starts: (0..shards.max(1)).map(|i| range_start(i, shards)).collect(),
        }
    }

    /// The shard a hash key falls into (as [`shard_for_hash`]).
    pub fn shard_for(&self, hash: u128) -> u32 {
        // The last shard whose start is <= hash; the first starts at 0, so there is one.
        (self.starts.partition_point(|start| *start <= hash) - 1) as u32
    }
}

/// The shard a hash key falls into.
pub fn shard_for_hash(hash: u128, shards: u32) -> u32 {
    let (mut low, mut high) = (0u32, shards.max(1) - 1);
    // Binary search over range starts: the last shard whose start is <= hash.
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if range_start(mid, shards) <= hash {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    low
}

/// The hash key of a partition key: its MD5 as a big-endian 128-bit number.
pub fn hash_partition_key(key: &str) -> u128 {
    u128::from_be_bytes(md5::compute(key.as_bytes()).0)
}

/// Parses an `ExplicitHashKey` (a decimal in `0..2^128`).
pub fn parse_hash_key(text: &str) -> Option<u128> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The sequence number of an offset.
pub fn sequence_number(offset: u64) -> String {
    SequenceNumber(offset).to_string()
}

/// The offset of a sequence number.
pub fn parse_sequence_number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Where a shard iterator points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPosition {
    /// The stream.
    pub stream: String,
    /// The partition.
    pub partition: u32,
    /// The next offset to read.
    pub offset: u64,
}

/// Why an iterator was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum IteratorError {
    /// Not an iterator this server issued.
    Invalid,
    /// Older than [`ITERATOR_TTL_MS`].
    Expired,
}

/// An opaque iterator: the position and the time it was issued, base64 (URL-safe).
pub fn encode_iterator(position: &ShardPosition, issued_ms: i64) -> String {
    let text = format!(
        "tw1\n{}\n{}\n{}\n{issued_ms}",
        position.stream, position.partition, position.offset
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// Decodes an iterator, refusing expired ones.
pub fn decode_iterator(iterator: &str, now_ms: i64) -> Result<ShardPosition, IteratorError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(iterator)
        .map_err(|_| IteratorError::Invalid)?;
    let text = String::from_utf8(bytes).map_err(|_| IteratorError::Invalid)?;
    let mut parts = text.split('\n');
    if parts.next() != Some("tw1") {
        return Err(IteratorError::Invalid);
    }
    let stream = parts.next().ok_or(IteratorError::Invalid)?.to_string();
    let mut number = || -> Result<i64, IteratorError> {
        parts
            .next()
            .and_then(|p| p.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or(IteratorError::Invalid)
    };
    let (partition, offset, issued) = (number()?, number()?, number()?);
    if now_ms - issued > ITERATOR_TTL_MS {
        return Err(IteratorError::Expired);
    }
    Ok(ShardPosition {
        stream,
        partition: u32::try_from(partition).map_err(|_| IteratorError::Invalid)?,
        offset: offset as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_hash_space_without_gaps() {
        for shards in [1u32, 2, 3, 4, 7, 256] {
            let mut expected_start = 0u128;
            for index in 0..shards {
                let (start, end) = hash_key_range(index, shards);
                assert_eq!(start, expected_start, "shard {index} of {shards}");
                assert!(end >= start);
                assert_eq!(shard_for_hash(start, shards), index);
                assert_eq!(shard_for_hash(end, shards), index);
                expected_start = end.wrapping_add(1);
            }
            assert_eq!(hash_key_range(shards - 1, shards).1, u128::MAX);
        }
        // Kinesis' own split of 2 shards: the second starts at 2^127.
        assert_eq!(hash_key_range(1, 2).0, 1u128 << 127);
        assert_eq!(
            hash_key_range(1, 4).0.to_string(),
            "85070591730234615865843651857942052864"
        );
    }

    #[test]
    fn precomputed_ranges_place_like_the_arithmetic() {
        for shards in [1u32, 2, 3, 4, 7, 256] {
            let ranges = ShardRanges::new(shards);
            for index in 0..shards {
                let (start, end) = hash_key_range(index, shards);
                for hash in [start, end, start / 2 + end / 2] {
                    assert_eq!(ranges.shard_for(hash), shard_for_hash(hash, shards));
                    assert_eq!(ranges.shard_for(hash), index);
                }
            }
            for key in ["a", "u1", "u996", "partition-key"] {
                let hash = hash_partition_key(key);
                assert_eq!(ranges.shard_for(hash), shard_for_hash(hash, shards));
            }
        }
    }

    #[test]
    fn partition_keys_hash_like_kinesis() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661.
        assert_eq!(
            hash_partition_key("a"),
            0x0cc1_75b9_c0f1_b6a8_31c3_99e2_6977_2661
        );
        assert_eq!(shard_for_hash(hash_partition_key("a"), 4), 0);
        assert_eq!(parse_hash_key(&u128::MAX.to_string()), Some(u128::MAX));
        assert_eq!(
            parse_hash_key("340282366920938463463374607431768211456"),
            None
        );
        assert_eq!(parse_hash_key("-1"), None);
    }

    #[test]
    fn sequence_numbers_sort_like_offsets() {
        let mut numbers: Vec<String> = [10u64, 2, 300, 0].map(sequence_number).to_vec();
        numbers.sort();
        let offsets: Vec<u64> = numbers
            .iter()
            .map(|n| parse_sequence_number(n).unwrap())
            .collect();
        assert_eq!(offsets, vec![0, 2, 10, 300]);
        assert_eq!(parse_sequence_number("12a"), None);
        assert_eq!(parse_shard_id(&shard_id(7)), Some(7));
        assert_eq!(parse_shard_id("shardId-"), None);
    }

    #[test]
    fn ids_and_numbers_are_zero_padded() {
        for n in [0u64, 7, 42, 999_999_999_999, u64::MAX] {
            assert_eq!(sequence_number(n), format!("{n:020}"));
            assert_eq!(
                serde_json::to_string(&SequenceNumber(n)).unwrap(),
                format!("\"{n:020}\"")
            );
        }
        for p in [0u32, 3, 1000, u32::MAX] {
            assert_eq!(shard_id(p), format!("shardId-{p:012}"));
            assert_eq!(
                serde_json::to_string(&ShardId(p)).unwrap(),
                format!("\"shardId-{p:012}\"")
            );
        }
    }

    #[test]
    fn iterators_round_trip_and_expire() {
        let position = ShardPosition {
            stream: "orders".into(),
            partition: 3,
            offset: 42,
        };
        let iterator = encode_iterator(&position, 1_000);
        assert_eq!(decode_iterator(&iterator, 2_000), Ok(position));
        assert_eq!(
            decode_iterator(&iterator, 1_000 + ITERATOR_TTL_MS + 1),
            Err(IteratorError::Expired)
        );
        assert_eq!(decode_iterator("bm9wZQ", 0), Err(IteratorError::Invalid));
        assert_eq!(decode_iterator("%%%", 0), Err(IteratorError::Invalid));
    }
}
