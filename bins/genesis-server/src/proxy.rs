//! Who the client is behind a reverse proxy: `server.trusted_proxies` (IP addresses and
//! CIDR blocks) and the client IP taken from `X-Forwarded-For` / `Forwarded` when, and
//! only when, the TCP peer is one of them.
//!
//! Each proxy appends the address it received the request from, so the right end of
//! the header is what our own proxies wrote and the left end is whatever the client
//! sent. Walking from the right and skipping trusted proxies, the first address left is
//! the client; anything further left may be forged and is never read.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};

/// One `server.trusted_proxies` entry: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// `a` and `b` (`bits` wide) agree on their first `prefix` bits.
fn prefix_eq(a: u128, b: u128, prefix: u8, bits: u32) -> bool {
    let prefix = u32::from(prefix);
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (a >> shift) == (b >> shift)
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket reports) as
/// the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The network a client is counted under by every per-client limit (the request rate
/// limit, connections per IP, event streams per IP, an anonymous caller's runs): an IPv4
/// address as it is; an IPv6 address by its /64 network, the block one host or one
/// customer is given (RFC 6177), so a client cannot multiply its limits by cycling
/// through the 2^64 addresses of its own network; an IPv4-mapped IPv6 address as the
/// IPv4 address. Logs keep the full address.
pub(crate) fn client_network(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        // NAT64 (RFC 6052's well-known prefix 64:ff9b::/96): an IPv4 client behind a
        // translator, counted by its IPv4 address (verification V11 L-4: they all
        // shared one /64).
        IpAddr::V6(v6) if u128::from(v6) >> 32 == NAT64_PREFIX => {
            IpAddr::V4(std::net::Ipv4Addr::from(u128::from(v6) as u32))
        }
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// 64:ff9b::/96, the top 96 bits.
const NAT64_PREFIX: u128 = 0x0064_ff9b_0000_0000_0000_0000;

/// A [`client_network`] as text: an IPv4 address as it is, an IPv6 network with its
/// prefix length (`2001:db8:1:2::/64`).
pub(crate) fn network_label(net: IpAddr) -> String {
    match net {
        IpAddr::V6(v6) => format!("{v6}/64"),
        v4 => v4.to_string(),
    }
}

/// `server.trusted_proxies`, parsed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<Cidr>);

/// A `server.trusted_proxies` entry that is neither an IP address nor a CIDR block.
#[derive(Debug, thiserror::Error)]
#[error(
    "server.trusted_proxies entry {value:?} is not an IP address or CIDR block such as \"10.0.0.0/8\" (rule: trusted_proxies)"
)]
pub struct InvalidTrustedProxy {
    /// The entry as configured.
    pub value: String,
}

impl TrustedProxies {
    /// Parses every entry; the first that does not parse is the error.
    pub(crate) fn parse(entries: &[String]) -> Result<TrustedProxies, InvalidTrustedProxy> {
        entries
            .iter()
            .map(|e| Cidr::parse(e).ok_or_else(|| InvalidTrustedProxy { value: e.clone() }))
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    /// No proxy is trusted (the default): the peer is always the client.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `ip` is a trusted proxy.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client of a request that arrived from `peer`: `peer` itself unless it is a
    /// trusted proxy; then the right-most address of `X-Forwarded-For` (every such
    /// header, in order) that is not a trusted proxy, or of `Forwarded`'s `for=` when
    /// there is no `X-Forwarded-For`. When every address is a trusted proxy, the
    /// left-most one; when the header is missing or an address does not parse before an
    /// untrusted one is found, the peer. Allocates nothing.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.is_empty() || !self.contains(peer) {
            return peer;
        }
        const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
        if headers.contains_key(&XFF) {
            let hops = headers
                .get_all(&XFF)
                .iter()
                .rev()
                .flat_map(|v| v.to_str().unwrap_or("").rsplit(','))
                .map(parse_hop);
            return self.first_untrusted(peer, hops);
        }
        if headers.contains_key(axum::http::header::FORWARDED) {
            let hops = headers
                .get_all(axum::http::header::FORWARDED)
                .iter()
                .rev()
                .flat_map(|v| v.to_str().unwrap_or("").rsplit(','))
                .map(|element| {
                    element
                        .split(';')
                        .find_map(|pair| {
                            let (k, v) = pair.split_once('=')?;
                            k.trim().eq_ignore_ascii_case("for").then_some(v)
                        })
                        .and_then(parse_hop)
                });
            return self.first_untrusted(peer, hops);
        }
        peer
    }

    fn first_untrusted(&self, peer: IpAddr, hops: impl Iterator<Item = Option<IpAddr>>) -> IpAddr {
        let mut leftmost = peer;
        for hop in hops {
            match hop {
                Some(ip) if self.contains(ip) => leftmost = ip,
                Some(ip) => return canonical(ip),
                // Garbage where our own proxies write: do not guess.
                None => return peer,
            }
        }
        leftmost
    }
}

/// One hop: `10.0.0.1`, `10.0.0.1:443`, `2001:db8::1`, `[2001:db8::1]:443`, quoted or
/// not (`Forwarded` quotes IPv6). `unknown` and obfuscated names are `None`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn entries_are_addresses_or_cidr_blocks_and_bad_ones_are_named() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8", "2001:db8::/32", "0.0.0.0/0"]);
        assert!(p.contains(ip("127.0.0.1")));
        assert!(p.contains(ip("10.200.3.4")));
        assert!(p.contains(ip("2001:db8:1::5")));
        assert!(!p.contains(ip("2001:db9::1")));
        let only_v4 = proxies(&["10.0.0.0/8"]);
        assert!(!only_v4.contains(ip("11.0.0.1")));
        assert!(only_v4.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(proxies(&["::/0"]).contains(ip("::1")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/", "::/129", ""] {
            let e = TrustedProxies::parse(&[bad.to_owned()]).unwrap_err();
            assert!(e.to_string().contains("rule: trusted_proxies"), "{e}");
            assert_eq!(e.value, bad);
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_and_only_behind_a_trusted_peer() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let local = ip("127.0.0.1");
        // Forged left-most entries are never read.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.1.1")]);
        assert_eq!(p.client_ip(local, &h), ip("203.0.113.7"));
        // Several headers read as one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.8:5555"),
        ]);
        assert_eq!(p.client_ip(local, &h), ip("203.0.113.8"));
        // An untrusted peer is the client: its headers are ignored.
        let h = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(p.client_ip(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        assert_eq!(TrustedProxies::default().client_ip(local, &h), local);
        // No header, or garbage where our proxy writes: the peer.
        assert_eq!(p.client_ip(local, &HeaderMap::new()), local);
        let h = headers(&[("x-forwarded-for", "203.0.113.7, garbage")]);
        assert_eq!(p.client_ip(local, &h), local);
        // Every hop trusted: the left-most.
        let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.8")]);
        assert_eq!(p.client_ip(local, &h), ip("10.0.0.9"));
        // Forwarded (RFC 7239), used when there is no X-Forwarded-For.
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, for=10.2.2.2",
        )]);
        assert_eq!(p.client_ip(local, &h), ip("2001:db8::7"));
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(p.client_ip(local, &h), local);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_network() {
        // Addresses of one /64 share one key; the next /64 is another client.
        let a = client_network(ip("2001:db8:1:2::7"));
        assert_eq!(a, ip("2001:db8:1:2::"));
        assert_eq!(client_network(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")), a);
        assert_ne!(client_network(ip("2001:db8:1:3::7")), a);
        // IPv4, and IPv4 as a mapped IPv6 address, keep the whole address.
        assert_eq!(client_network(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(client_network(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
        assert_ne!(client_network(ip("203.0.113.8")), ip("203.0.113.7"));
        assert_eq!(network_label(a), "2001:db8:1:2::/64");
        // NAT64 addresses are the IPv4 clients they translate.
        assert_eq!(
            client_network(ip("64:ff9b::c633:640a")),
            ip("198.51.100.10")
        );
        assert_eq!(
            client_network(ip("64:ff9b::c633:640b")),
            ip("198.51.100.11")
        );
        assert_eq!(client_network(ip("64:ff9b:1::7")), ip("64:ff9b:1::"));
        assert_eq!(network_label(ip("203.0.113.7")), "203.0.113.7");
    }
}
