//! Decoding the base64 `Data` of Kinesis records: the largest cost of `PutRecords` after the
//! event parse itself (a 600-byte record is 800 base64 characters).
//!
//! Every whole 4-character group before the last one is decoded with four pre-shifted lookup
//! tables (one load and one OR per character, one check per group: about half the
//! instructions of the `base64` crate's general-purpose engine). The last group (the only one
//! that may hold padding or non-zero trailing bits), and any input the tables refuse, go to
//! the `base64` crate's standard engine, so what is accepted, what comes out and every error
//! message are exactly the crate's.

use base64::Engine as _;

/// Set in a table entry for a byte outside the alphabet (padding included).
const INVALID: u32 = 1 << 24;

/// The 6-bit value of each base64 character, shifted left by `shift`; [`INVALID`] otherwise.
const fn table(shift: u32) -> [u32; 256] {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[alphabet[i] as usize] = (i as u32) << shift;
        i += 1;
    }
    table
}

static D0: [u32; 256] = table(18);
static D1: [u32; 256] = table(12);
static D2: [u32; 256] = table(6);
static D3: [u32; 256] = table(0);

/// The 24 bits of one group of 4 characters, with [`INVALID`] set if one is not base64 (the
/// other bits are then meaningless).
#[inline(always)]
fn word(group: &[u8]) -> u32 {
    D0[usize::from(group[0])]
        | D1[usize::from(group[1])]
        | D2[usize::from(group[2])]
        | D3[usize::from(group[3])]
}

/// Decodes standard, padded base64 onto the end of `out`, exactly as
/// `base64::engine::general_purpose::STANDARD.decode_vec` does (on error, `out` may hold part
/// of the output: the caller truncates it).
pub(crate) fn decode_into(input: &[u8], out: &mut Vec<u8>) -> Result<(), base64::DecodeError> {
    if !input.len().is_multiple_of(4) || input.len() < 8 {
        // Malformed or tiny: the crate says what is wrong, or decodes it.
        return base64::engine::general_purpose::STANDARD.decode_vec(input, out);
    }
    let (body, last) = input.split_at(input.len() - 4);
    let start = out.len();
    out.resize(start + body.len() / 4 * 3, 0);
    let mut invalid = 0u32;
    // Two groups (8 characters, 6 bytes) per step, then the odd group if there is one.
    let mut pairs = body.chunks_exact(8);
    let mut outputs = out[start..].chunks_exact_mut(6);
    for (group, bytes) in (&mut pairs).zip(&mut outputs) {
        let high = word(&group[..4]);
        let low = word(&group[4..]);
        invalid |= high | low;
        let both = (u64::from(high) << 24) | u64::from(low);
        bytes.copy_from_slice(&both.to_be_bytes()[2..]);
    }
    let (group, bytes) = (pairs.remainder(), outputs.into_remainder());
    if group.len() == 4 {
        let single = word(group);
        invalid |= single;
        bytes.copy_from_slice(&single.to_be_bytes()[1..]);
    }
    if invalid & INVALID == 0
        && base64::engine::general_purpose::STANDARD
            .decode_vec(last, out)
            .is_ok()
    {
        return Ok(());
    }
    // A character outside the alphabet, padding too early, bad trailing bits: the crate's
    // error, with positions in the whole input.
    out.truncate(start);
    base64::engine::general_purpose::STANDARD.decode_vec(input, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_decode(input: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(input)
    }

    fn fast_decode(input: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
        let mut out = b"prefix".to_vec();
        decode_into(input, &mut out).map(|()| out.split_off(6))
    }

    #[test]
    fn decodes_every_length_and_byte_like_the_crate() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for len in 0..300 {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&data[..len]);
            assert_eq!(
                fast_decode(encoded.as_bytes()).unwrap(),
                &data[..len],
                "{len}"
            );
        }
    }

    #[test]
    fn refuses_what_the_crate_refuses_with_its_error() {
        let good = base64::engine::general_purpose::STANDARD.encode(b"a record of some length!!");
        let mut cases: Vec<Vec<u8>> = vec![
            b"QUJD=REVG".to_vec(),  // padding inside
            b"QUJDREVG\n".to_vec(), // newline
            b"QUJDRE-G".to_vec(),   // URL-safe alphabet
            b"QUJDREVH".to_vec(),   // valid
            b"QUJDREV=".to_vec(),   // non-zero trailing bits with padding
            b"QUJDREU=".to_vec(),   // canonical padding
            b"QUJDRE==".to_vec(),
            b"QUJDR===".to_vec(),
            b"QUJ".to_vec(),
            b"".to_vec(),
            "QUJDREVGé===".as_bytes().to_vec(),
        ];
        // Every single-byte corruption of a valid input.
        for position in 0..good.len() {
            for byte in [b'=', b'-', b'_', b' ', 0u8, 0xff, b'A'] {
                let mut bad = good.as_bytes().to_vec();
                bad[position] = byte;
                cases.push(bad);
            }
        }
        for case in cases {
            assert_eq!(
                fast_decode(&case),
                crate_decode(&case),
                "{:?}",
                String::from_utf8_lossy(&case)
            );
        }
    }
}
