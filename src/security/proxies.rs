//! Trusted proxies: which address the per-IP limits count a connection
//! against when it arrives through a load balancer or ingress.
//!
//! Owns the `--trusted-proxies` networks and the reading of
//! `X-Forwarded-For` / `Forwarded: for=`. Only a request whose TCP peer is a
//! trusted proxy has these headers read; anyone else could write them. The
//! client is the rightmost address that is not itself a trusted proxy (each
//! proxy appends the address it saw, so everything left of the first
//! untrusted hop may be forged). Malformed headers fall back to the peer with
//! a debug line; nothing here can panic on input. Called through
//! [`crate::security::Security::client_ip`] by every transport.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// The networks whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The address the per-IP limits apply to: the forwarded client when
    /// `peer` is a trusted proxy and the headers name one, else `peer`.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.contains(peer) {
            return Some(peer);
        }
        let forwarded = match forwarded_chain(headers) {
            Ok(Some(chain)) => chain,
            Ok(None) => return Some(peer),
            Err(why) => {
                tracing::debug!(%peer, why, "ignoring a malformed forwarding header");
                return Some(peer);
            }
        };
        // Rightmost untrusted hop; if every hop is a trusted proxy, the
        // leftmost is the farthest address known.
        let client = forwarded
            .iter()
            .rev()
            .find(|ip| !self.contains(**ip))
            .or(forwarded.first())
            .copied();
        Some(client.unwrap_or(peer))
    }
}

/// Parses one `--trusted-proxies` item: an address (`10.0.0.1`, `::1`) or a
/// network (`10.0.0.0/8`, `fd00::/8`).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR network"))
}

/// Most hops read from one request: a longer chain is refused as malformed
/// rather than walked (it can only come from a forged header).
const MAX_HOPS: usize = 64;

/// The forwarded addresses, leftmost (farthest) first: `X-Forwarded-For` if
/// present, else `Forwarded`; `Ok(None)` when neither is present.
fn forwarded_chain(headers: &HeaderMap) -> Result<Option<Vec<IpAddr>>, &'static str> {
    if headers.contains_key("x-forwarded-for") {
        return x_forwarded_for(headers).map(Some);
    }
    if headers.contains_key(http::header::FORWARDED) {
        return forwarded(headers).map(Some);
    }
    Ok(None)
}

/// Every `X-Forwarded-For` line, in order: `client, proxy1, proxy2`.
fn x_forwarded_for(headers: &HeaderMap) -> Result<Vec<IpAddr>, &'static str> {
    let mut chain = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let value = value.to_str().map_err(|_| "X-Forwarded-For is not ASCII")?;
        for item in value.split(',') {
            if chain.len() == MAX_HOPS {
                return Err("X-Forwarded-For has too many hops");
            }
            chain.push(node_ip(item.trim()).ok_or("X-Forwarded-For names no address")?);
        }
    }
    Ok(chain)
}

/// RFC 7239 `Forwarded: for=192.0.2.60;proto=http, for="[2001:db8::1]:80"`:
/// the `for` of each element, in order. An element without `for` is skipped;
/// `unknown` or an obfuscated name (`_hidden`) makes the chain unusable.
fn forwarded(headers: &HeaderMap) -> Result<Vec<IpAddr>, &'static str> {
    let mut chain = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        let value = value.to_str().map_err(|_| "Forwarded is not ASCII")?;
        for element in value.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("for")
                    .then_some(value.trim())
            });
            let Some(node) = node else { continue };
            if chain.len() == MAX_HOPS {
                return Err("Forwarded has too many hops");
            }
            let node = unquote(node).ok_or("Forwarded has an unbalanced quote")?;
            chain.push(node_ip(node).ok_or("Forwarded `for` names no address")?);
        }
    }
    Ok(chain)
}

/// The content of a quoted string, or the token itself.
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None if value.ends_with('"') => None,
        None => Some(value),
    }
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn node_ip(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(items: &[&str]) -> TrustedProxies {
        TrustedProxies::new(items.iter().map(|i| parse_net(i).unwrap()).collect())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn nets_parse_from_addresses_and_cidrs() {
        assert_eq!(parse_net("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(parse_net(" ::1 ").unwrap().to_string(), "::1/128");
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("fd00::/8").unwrap().to_string(), "fd00::/8");
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0.1/", "1.2.3"] {
            assert!(parse_net(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof_its_address() {
        let p = proxies(&["10.0.0.0/8"]);
        let spoofed = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.10"),
        ]);
        assert_eq!(p.client_ip(ip("192.0.2.1"), &spoofed), ip("192.0.2.1"));
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(ip("10.0.0.1"), &spoofed), ip("10.0.0.1"));
        assert_eq!(p.client_ip(None, &spoofed), None);
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8", "192.0.2.7"]);
        let peer = ip("10.0.0.1");
        let cases = [
            ("203.0.113.9", "203.0.113.9"),
            // The client wrote a forged first hop; our proxies appended the rest.
            ("1.1.1.1, 203.0.113.9, 192.0.2.7, 10.0.0.2", "203.0.113.9"),
            ("203.0.113.9:4711", "203.0.113.9"),
            ("10.0.0.3, 10.0.0.2", "10.0.0.3"),
        ];
        for (xff, client) in cases {
            let got = p.client_ip(peer, &headers(&[("x-forwarded-for", xff)]));
            assert_eq!(got, ip(client), "X-Forwarded-For: {xff}");
        }
        // Several lines are one list, in order.
        let split = headers(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "203.0.113.2, 10.0.0.9"),
        ]);
        assert_eq!(p.client_ip(peer, &split), ip("203.0.113.2"));
        // No header: the proxy itself.
        assert_eq!(p.client_ip(peer, &HeaderMap::new()), peer);
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let p = proxies(&["fd00::/8", "127.0.0.1"]);
        let xff = headers(&[("x-forwarded-for", "2001:db8::1, fd00::2")]);
        assert_eq!(p.client_ip(ip("fd00::1"), &xff), ip("2001:db8::1"));
        // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
        let xff = headers(&[("x-forwarded-for", "[2001:db8::5]:80")]);
        assert_eq!(p.client_ip(ip("::ffff:127.0.0.1"), &xff), ip("2001:db8::5"));
        let mapped = headers(&[("x-forwarded-for", "::ffff:198.51.100.4")]);
        assert_eq!(p.client_ip(ip("fd00::1"), &mapped), ip("198.51.100.4"));
        assert_eq!(
            p.client_ip(ip("::ffff:192.0.2.1"), &xff),
            ip("192.0.2.1"),
            "untrusted, canonical"
        );
    }

    #[test]
    fn the_forwarded_header_is_read_when_there_is_no_x_forwarded_for() {
        let p = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        let cases = [
            ("for=192.0.2.60;proto=http;by=10.0.0.1", "192.0.2.60"),
            (r#"for="[2001:db8:cafe::17]:4711""#, "2001:db8:cafe::17"),
            (
                "For=192.0.2.43, for=198.51.100.17, for=10.0.0.4",
                "198.51.100.17",
            ),
            ("proto=https, for=192.0.2.9", "192.0.2.9"),
        ];
        for (value, client) in cases {
            let got = p.client_ip(peer, &headers(&[("forwarded", value)]));
            assert_eq!(got, ip(client), "Forwarded: {value}");
        }
        let both = headers(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("forwarded", "for=203.0.113.2"),
        ]);
        assert_eq!(p.client_ip(peer, &both), ip("203.0.113.1"));
    }

    #[test]
    fn garbage_falls_back_to_the_peer() {
        let p = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        let long = vec!["192.0.2.1"; MAX_HOPS + 1].join(",");
        let cases: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b"not-an-ip"),
            ("x-forwarded-for", b"192.0.2.1,,"),
            ("x-forwarded-for", b""),
            ("x-forwarded-for", b"192.0.2.1, \xff\xfe"),
            ("x-forwarded-for", long.as_bytes()),
            ("x-forwarded-for", b"[192.0.2.1"),
            ("forwarded", b"for=unknown"),
            ("forwarded", b"for=_hidden"),
            ("forwarded", b"for=\"192.0.2.1"),
            ("forwarded", b"for=192.0.2.1\""),
            ("forwarded", b"for="),
            ("forwarded", b"for=\"\xc3\xa9\""),
        ];
        for (name, value) in cases {
            let mut map = HeaderMap::new();
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(value).unwrap(),
            );
            assert_eq!(p.client_ip(peer, &map), peer, "{name}: {value:?}");
        }
        // A Forwarded without any `for` names nobody: the peer.
        let no_for = headers(&[("forwarded", "proto=https;by=10.0.0.1")]);
        assert_eq!(p.client_ip(peer, &no_for), peer);
    }
}
