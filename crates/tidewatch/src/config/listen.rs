//! `listen`: an IP address or a host name, and a port. The form is checked without I/O (by
//! `validate`); a host name is resolved once, before the server starts, and replaced by its
//! address.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

/// `listen`, understood without resolving anything.
#[derive(Debug, PartialEq, Eq)]
pub enum ListenAddress<'a> {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A host name and port.
    Host(&'a str, u16),
}

/// Splits `listen` into an IP address or a host name, and a port.
pub fn parse_listen(listen: &str) -> Result<ListenAddress<'_>, String> {
    if let Ok(address) = listen.parse::<SocketAddr>() {
        return Ok(ListenAddress::Ip(address));
    }
    let forms = "an address like 127.0.0.1:7070, [::1]:7070 or localhost:7070";
    if listen.parse::<u16>().is_ok() {
        return Err(format!(
            "listen: {listen:?} has no host ({forms}; 0.0.0.0:{listen} listens on every interface)"
        ));
    }
    let Some((host, port)) = listen.rsplit_once(':') else {
        return Err(format!("listen: {listen:?} has no port ({forms})"));
    };
    if host.contains(':') || host.starts_with('[') {
        return Err(format!(
            "listen: {listen:?} is not {forms} (an IPv6 address goes in brackets)"
        ));
    }
    let Ok(port) = port.parse::<u16>() else {
        return Err(format!(
            "listen: the port of {listen:?} is not a number from 0 to 65535 ({forms})"
        ));
    };
    if host.is_empty() {
        return Err(format!(
            "listen: {listen:?} has no host ({forms}; 0.0.0.0{listen} listens on every interface)"
        ));
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() > 253 || !host.trim_end_matches('.').split('.').all(valid_label) {
        return Err(format!(
            "listen: {host:?} is neither a host name nor an IP address ({forms})"
        ));
    }
    Ok(ListenAddress::Host(host, port))
}

/// The address `listen` names: a host name is resolved (`localhost` is 127.0.0.1 without
/// asking the resolver; else the first IPv4 address, else the first one).
pub fn resolve_listen(listen: &str) -> Result<SocketAddr, String> {
    let (host, port) = match parse_listen(listen)? {
        ListenAddress::Ip(address) => return Ok(address),
        ListenAddress::Host(host, port) => (host, port),
    };
    if host.trim_end_matches('.').eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    let addresses: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|error| format!("listen: host {host:?} cannot be resolved: {error}"))?
        .collect();
    addresses
        .iter()
        .find(|address| address.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("listen: host {host:?} resolves to no address"))
}
