//! DNS-01 end to end: pebble resolves through a local Knot DNS server, and
//! roomcast sets the `_acme-challenge` TXT record there with RFC 2136
//! updates signed by TSIG (zone found by asking the server for SOAs), then
//! removes it.

use std::time::Duration;

mod support;
use support::tls::dns::{Knot, TSIG_KEY};
use support::tls::pebble::Pebble;
use support::tls::*;
use support::{Server, TempDir, eventually, free_port};

#[tokio::test]
async fn dns01_over_rfc2136_issues_a_certificate() {
    let dir = TempDir::new("acme-dns01");
    let knot = Knot::start(&dir).await;
    // No inbound validation port is needed for DNS-01.
    let pebble = Pebble::start(&dir, free_port(), free_port(), knot.addr).await;
    let roots = roots(&pebble.issuer_root);
    let name = "dns01.example.com";
    let cache = dir.str("cache");
    let server = knot.addr.to_string();
    let roomcast = Server::start(
        &[
            &["--listen", "127.0.0.1:0", "--http-listen", "off"][..],
            &pebble.acme_args(name, &cache),
            &[
                "--acme-dns-wait-s",
                "0",
                "--rfc2136-server",
                &server,
                "--rfc2136-tsig-key",
                TSIG_KEY,
                "--rfc2136-tsig-secret",
                &knot.tsig_secret,
            ],
        ]
        .concat(),
    )
    .await;
    let addr = roomcast.running.local_addr;
    eventually(Duration::from_secs(60), || async {
        let stream = tls_connect(addr, name, &roots).await.ok()?;
        Some(peer_serial(&stream))
    })
    .await
    .expect("a DNS-01 certificate from pebble within 60 s");
    assert_eq!(roomcast.tls().issued(), 1);
    let (status, body, _) = https_get(addr, name, &roots, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    roomcast.stop().await;
}

#[tokio::test]
async fn a_wrong_tsig_key_fails_loudly_and_readyz_says_so() {
    let dir = TempDir::new("acme-dns01-bad");
    let knot = Knot::start(&dir).await;
    let pebble = Pebble::start(&dir, free_port(), free_port(), knot.addr).await;
    let cache = dir.str("cache");
    let server = knot.addr.to_string();
    let roomcast = Server::start(
        &[
            &["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"][..],
            &pebble.acme_args("bad.example.com", &cache),
            &[
                "--acme-dns-wait-s",
                "0",
                "--rfc2136-server",
                &server,
                "--rfc2136-zone",
                "example.com",
                "--rfc2136-tsig-key",
                TSIG_KEY,
                "--rfc2136-tsig-secret",
                "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCB3cm9uZyE=",
            ],
        ]
        .concat(),
    )
    .await;
    let readiness = roomcast.tls().readiness();
    let reason = eventually(Duration::from_secs(30), || async {
        readiness.check().err().filter(|r| r.contains("failed"))
    })
    .await
    .expect("the failure shows in readiness");
    assert!(reason.contains("bad.example.com"), "{reason}");
    assert!(reason.contains("dns-01"), "{reason}");
    assert!(
        reason.contains("NOTAUTH") || reason.contains("refused"),
        "{reason}"
    );
    roomcast.stop().await;
}
