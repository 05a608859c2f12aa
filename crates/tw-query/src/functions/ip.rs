//! IP address and CIDR parsing for the SQL IP functions; pure, no Arrow.
//!
//! An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is treated as the IPv4 address it
//! carries, because log sources write the same peer both ways.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

/// Parses an address as logs write it: surrounding spaces, `[v6]` brackets and a `%zone`
/// suffix are accepted. Returns None for anything that is not an address.
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    // A zone id only exists on IPv6 link-local addresses; it names an interface, not
    // part of the address.
    let text = match text.split_once('%') {
        Some((addr, _zone)) if addr.contains(':') => addr,
        _ => text,
    };
    text.parse::<IpAddr>().ok().map(canonical)
}

/// IPv4-mapped IPv6 addresses become IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a single host).
    ///
    /// Host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`), as most firewalls read it.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{text}' is not a CIDR: '{addr}' is not an IP address"))?;
        // A bare mapped address is the IPv4 host it carries. A mapped network with a prefix
        // (`::ffff:10.0.0.0/104`) stays IPv6 and so matches no (canonical, IPv4) address;
        // such literals are rare enough not to shift prefixes for.
        let addr = if prefix.is_none() {
            canonical(addr)
        } else {
            addr
        };
        let max = max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => {
                    return Err(format!(
                        "'{text}' is not a CIDR: the prefix length must be 0 to {max}"
                    ));
                }
            },
        };
        Ok(Self {
            network: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is inside the network (never across address families).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.network
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u32::MAX << (32 - u32::from(prefix)))
            };
            IpAddr::V4(Ipv4Addr::from(kept))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = if prefix == 0 {
                0
            } else {
                bits & (u128::MAX << (128 - u32::from(prefix)))
            };
            IpAddr::V6(Ipv6Addr::from(kept))
        }
    }
}

/// Networks that are not reachable from the public Internet: RFC 1918 private, loopback,
/// link-local, carrier-grade NAT (RFC 6598), IPv6 unique-local and link-local.
const PRIVATE_NETWORKS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// [`PRIVATE_NETWORKS`] parsed once.
static PRIVATE: LazyLock<Vec<Cidr>> = LazyLock::new(|| {
    PRIVATE_NETWORKS
        .iter()
        .filter_map(|net| Cidr::parse(net).ok())
        .collect()
});

/// Whether `ip` belongs to one of the [`PRIVATE_NETWORKS`].
pub(crate) fn is_private(ip: IpAddr) -> bool {
    PRIVATE.iter().any(|cidr| cidr.contains(ip))
}

/// 4 or 6.
pub(crate) fn version(ip: IpAddr) -> i32 {
    match ip {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        parse_ip(text).expect("valid address")
    }

    #[test]
    fn addresses_parse_as_logs_write_them() {
        assert_eq!(ip(" 10.0.0.1 "), ip("10.0.0.1"));
        assert_eq!(ip("[2001:db8::1]"), ip("2001:db8::1"));
        assert_eq!(ip("fe80::1%eth0"), ip("fe80::1"));
        assert_eq!(ip("::ffff:192.168.1.1"), ip("192.168.1.1"));
        for bad in [
            "",
            "10.0.0",
            "10.0.0.256",
            "host.example",
            "10.0.0.1%eth0",
            "1.2.3.4:80",
        ] {
            assert_eq!(parse_ip(bad), None, "{bad}");
        }
    }

    #[test]
    fn cidr_membership_v4_and_v6() {
        let net = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(net.contains(ip("10.255.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::a00:1")), "no match across families");
        let host_bits = Cidr::parse("192.168.1.77/24").expect("cidr");
        assert!(host_bits.contains(ip("192.168.1.1")));
        let single = Cidr::parse("8.8.8.8").expect("bare address");
        assert!(single.contains(ip("8.8.8.8")) && !single.contains(ip("8.8.4.4")));
        let all = Cidr::parse("0.0.0.0/0").expect("cidr");
        assert!(all.contains(ip("203.0.113.9")));
        let v6 = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("::/0").expect("cidr").contains(ip("::1")));
    }

    #[test]
    fn bad_cidrs_say_why() {
        for (bad, why) in [
            ("10.0.0.0/33", "0 to 32"),
            ("2001:db8::/129", "0 to 128"),
            ("10.0.0.0/x", "0 to 32"),
            ("10.0.0/8", "not an IP address"),
            ("", "not an IP address"),
        ] {
            let error = Cidr::parse(bad).expect_err(bad);
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn private_ranges() {
        assert_eq!(
            PRIVATE.len(),
            PRIVATE_NETWORKS.len(),
            "every listed network parses"
        );
        for private in [
            "10.1.2.3",
            "172.31.0.1",
            "192.168.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip(private)), "{private}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "192.169.0.1",
            "2001:4860::8888",
            "100.128.0.1",
        ] {
            assert!(!is_private(ip(public)), "{public}");
        }
        assert_eq!(version(ip("::ffff:1.2.3.4")), 4);
        assert_eq!(version(ip("2001:db8::1")), 6);
    }
}
