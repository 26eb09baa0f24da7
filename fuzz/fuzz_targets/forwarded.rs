//! `X-Forwarded-For` / `Forwarded` reading (`security::proxies`): never a
//! panic; an untrusted peer is always itself; a trusted peer yields an
//! address, which is the peer or a hop the headers name.
#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use roomcast::security::proxies::{TrustedProxies, parse_net};

static PROXIES: LazyLock<TrustedProxies> = LazyLock::new(|| {
    let nets = ["10.0.0.0/8", "fd00::/8", "192.0.2.7"];
    TrustedProxies::new(nets.iter().map(|n| parse_net(n).expect("valid")).collect())
});

fuzz_target!(|data: &[u8]| {
    // `xff \0 forwarded`; either may be absent or not a valid header value.
    let mut parts = data.splitn(2, |b| *b == 0);
    let mut headers = HeaderMap::new();
    for name in ["x-forwarded-for", "forwarded"] {
        if let Some(value) = parts.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
            headers.append(name, value);
        }
    }
    let untrusted: IpAddr = [192, 0, 2, 1].into();
    assert_eq!(
        PROXIES.client_ip(Some(untrusted), &headers),
        Some(untrusted)
    );
    let trusted: IpAddr = [10, 0, 0, 1].into();
    let client = PROXIES
        .client_ip(Some(trusted), &headers)
        .expect("an address");
    if let IpAddr::V4(v4) = client
        && client != trusted
    {
        // IPv6 hops have many spellings; an IPv4 one is written as is, or
        // as an IPv4-mapped IPv6 address.
        let text = String::from_utf8_lossy(data).to_ascii_lowercase();
        assert!(
            text.contains(&v4.to_string()) || text.contains("ffff"),
            "{client} is not in {text:?}"
        );
    }
    assert_eq!(PROXIES.client_ip(None, &headers), None);
});
