//! CIDR networks and membership tests, written with `std::net` only.

use std::net::IpAddr;

/// One network: an address with its prefix bits masked off, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cidr {
    /// IPv4 network (`10.0.0.0/8`).
    V4 {
        /// Network address as a number, host bits zero.
        network: u32,
        /// Prefix length, 0..=32.
        prefix: u8,
    },
    /// IPv6 network (`2001:db8::/32`).
    V6 {
        /// Network address as a number, host bits zero.
        network: u128,
        /// Prefix length, 0..=128.
        prefix: u8,
    },
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl Cidr {
    /// Parses `address/prefix`; a bare address means a single host (/32 or /128). Host bits set
    /// in the address are ignored (`10.1.2.3/8` is `10.0.0.0/8`), as most tools do.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("invalid CIDR {text:?}");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => {
                if prefix.is_empty()
                    || !prefix.bytes().all(|b| b.is_ascii_digit())
                    || prefix.len() > 3
                {
                    return Err(invalid());
                }
                (address, Some(prefix.parse::<u8>().map_err(|_| invalid())?))
            }
            None => (text, None),
        };
        match address.parse::<IpAddr>().map_err(|_| invalid())? {
            IpAddr::V4(v4) => {
                let prefix = prefix.unwrap_or(32);
                if prefix > 32 {
                    return Err(invalid());
                }
                Ok(Self::V4 {
                    network: u32::from(v4) & mask32(prefix),
                    prefix,
                })
            }
            IpAddr::V6(v6) => {
                let prefix = prefix.unwrap_or(128);
                if prefix > 128 {
                    return Err(invalid());
                }
                Ok(Self::V6 {
                    network: u128::from(v6) & mask128(prefix),
                    prefix,
                })
            }
        }
    }

    /// Whether `address` is inside this network. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`)
    /// are treated as the IPv4 address they carry.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self, address.to_canonical()) {
            (Self::V4 { network, prefix }, IpAddr::V4(v4)) => {
                u32::from(v4) & mask32(*prefix) == *network
            }
            (Self::V6 { network, prefix }, IpAddr::V6(v6)) => {
                u128::from(v6) & mask128(*prefix) == *network
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_membership_at_the_edges() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.0.0.0")));
        assert!(net.contains(ip("10.255.255.255")));
        assert!(!net.contains(ip("11.0.0.0")));
        assert!(!net.contains(ip("9.255.255.255")));
        assert!(
            net.contains(ip("::ffff:10.1.2.3")),
            "mapped IPv4 counts as IPv4"
        );
        assert!(!net.contains(ip("2001:db8::1")));
        let host = Cidr::parse("192.168.1.7").unwrap();
        assert!(host.contains(ip("192.168.1.7")) && !host.contains(ip("192.168.1.8")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("1.2.3.4")) && !all.contains(ip("::1")));
        assert_eq!(
            Cidr::parse("10.1.2.3/8"),
            Ok(Cidr::V4 {
                network: 0x0a00_0000,
                prefix: 8
            })
        );
        let odd = Cidr::parse("172.16.0.0/12").unwrap();
        assert!(odd.contains(ip("172.31.255.255")) && !odd.contains(ip("172.32.0.0")));
    }

    #[test]
    fn ipv6_membership_at_the_edges() {
        let net = Cidr::parse("2001:db8::/32").unwrap();
        assert!(net.contains(ip("2001:db8::")));
        assert!(net.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!net.contains(ip("2001:db9::")));
        assert!(!net.contains(ip("10.0.0.1")));
        let all = Cidr::parse("::/0").unwrap();
        assert!(all.contains(ip("fe80::1")));
        let host = Cidr::parse("::1/128").unwrap();
        assert!(host.contains(ip("::1")) && !host.contains(ip("::2")));
    }

    #[test]
    fn refuses_malformed_networks() {
        for bad in [
            "10.0.0.0/33",
            "2001:db8::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "/8",
            "x",
            "10.0.0.0/8/8",
            "10.0.0.0/ 8",
            "10.0.0.0/0008",
        ] {
            assert_eq!(
                Cidr::parse(bad),
                Err(format!("invalid CIDR {bad:?}")),
                "{bad}"
            );
        }
    }
}
