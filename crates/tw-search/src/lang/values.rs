//! Leaf values of the query language that are not words: CIDR blocks (`f:10.0.0.0/8`) and
//! `_time` bounds (Unix milliseconds or RFC 3339).

use std::net::{IpAddr, Ipv6Addr};

use super::bad;
use crate::SearchError;
use crate::indexer::parse_ip;

/// `10.0.0.0/8` or `2001:db8::/32` as its first and last address (IPv4 mapped); `None` for
/// text that is not a CIDR block, an error for one with a bad prefix length.
pub(super) fn parse_cidr(text: &str) -> Result<Option<(Ipv6Addr, Ipv6Addr)>, SearchError> {
    let Some((address, bits)) = text.split_once('/') else {
        return Ok(None);
    };
    let (Some(ip), Ok(bits)) = (parse_ip(address), bits.parse::<u32>()) else {
        return Ok(None);
    };
    let (v6, bits) = match ip {
        IpAddr::V4(v4) if bits <= 32 => (v4.to_ipv6_mapped(), bits + 96),
        IpAddr::V6(v6) if bits <= 128 => (v6, bits),
        _ => {
            return Err(bad(format!(
                "CIDR block {text:?}: the prefix length is at most 32 for IPv4, 128 for IPv6"
            )));
        }
    };
    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    let value = u128::from(v6);
    Ok(Some((
        Ipv6Addr::from(value & mask),
        Ipv6Addr::from(value | !mask),
    )))
}

/// A `_time` value: Unix milliseconds or RFC 3339.
pub(super) fn parse_time(text: &str) -> Result<i64, SearchError> {
    text.parse::<i64>()
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.timestamp_millis())
        })
        .ok_or_else(|| {
            bad(format!(
                "_time value {text:?}: expected Unix milliseconds or RFC 3339"
            ))
        })
}
