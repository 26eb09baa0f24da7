//! ACME against a real CA (pebble), which really validates: HTTP-01 on our
//! plain-HTTP listener, TLS-ALPN-01 on our HTTPS listener. A verifying
//! client trusting pebble's root connects, /ws and Socket.IO work over TLS,
//! a restart reuses the cached certificate (no new order), and a forced
//! renewal swaps in a new serial while an open websocket keeps working.

use std::time::Duration;

mod support;
use support::tls::pebble::{ChallDns, Pebble};
use support::tls::*;
use support::{Server, TempDir, eventually, free_port, next_json};

/// Waits until HTTPS serves a certificate the client verifies for `name`.
async fn wait_for_certificate(
    addr: std::net::SocketAddr,
    name: &str,
    roots: &[rustls::pki_types::CertificateDer<'static>],
) -> String {
    eventually(Duration::from_secs(60), || async {
        let stream = tls_connect(addr, name, roots).await.ok()?;
        Some(peer_serial(&stream))
    })
    .await
    .expect("a certificate from pebble within 60 s")
}

#[tokio::test]
async fn http01_issues_reuses_the_cache_and_renews() {
    let dir = TempDir::new("acme-http01");
    let dns = ChallDns::start(&dir).await;
    let (https_port, http_port) = (free_port(), free_port());
    let pebble = Pebble::start(&dir, http_port, https_port, dns.addr).await;
    let roots = roots(&pebble.issuer_root);
    let name = "http01.example.com";
    let listen = format!("127.0.0.1:{https_port}");
    let http_listen = format!("127.0.0.1:{http_port}");
    let cache = dir.str("cache");
    let args = [
        &["--listen", &listen, "--http-listen", &http_listen][..],
        &pebble.acme_args(name, &cache),
        &[
            "--acme-challenge",
            "http-01",
            "--acme-email",
            "ops@example.com",
            "--api-key",
            "k",
        ],
    ]
    .concat();
    let server = Server::start(&args).await;
    let addr = server.running.local_addr;
    let first = wait_for_certificate(addr, name, &roots).await;
    assert_eq!(server.tls().issued(), 1);
    assert!(server.tls().readiness().check().is_ok());
    let (status, body, _) = https_get(addr, name, &roots, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (_, metrics, _) = https_get(addr, name, &roots, "/metrics").await;
    assert!(
        metrics.contains(
            "roomcast_tls_certificate_expiry_seconds{certificate=\"http01.example.com\"}"
        ),
        "{metrics}"
    );
    assert_private_files(&dir.path("cache"));

    // A websocket over wss:// survives a forced renewal.
    let mut ws = wss_subscribe(addr, name, &roots, "acme").await;
    server.tls().renew_now();
    let renewed = eventually(Duration::from_secs(60), || async {
        let stream = tls_connect(addr, name, &roots).await.ok()?;
        let serial = peer_serial(&stream);
        (serial != first).then_some(serial)
    })
    .await
    .expect("a renewed certificate");
    assert_eq!(server.tls().issued(), 2);
    publish(addr, name, &roots, "acme", "after renewal").await;
    assert_eq!(next_json(&mut ws).await["data"], "after renewal");
    drop(ws);
    server.stop().await;

    // Restart: the cached certificate is served at once, with no new order.
    let server = Server::start(&args).await;
    assert!(
        server.tls().readiness().check().is_ok(),
        "cached certificate served before any order"
    );
    let (status, _, serial) = https_get(addr, name, &roots, "/healthz").await;
    assert_eq!((status, serial.as_str()), (200, renewed.as_str()));
    assert_eq!(server.tls().issued(), 0, "no new order after a restart");
    server.stop().await;
}

#[tokio::test]
async fn tls_alpn01_issues_on_the_https_port() {
    let dir = TempDir::new("acme-alpn");
    let dns = ChallDns::start(&dir).await;
    let https_port = free_port();
    let pebble = Pebble::start(&dir, free_port(), https_port, dns.addr).await;
    let roots = roots(&pebble.issuer_root);
    let name = "alpn.example.com";
    let listen = format!("127.0.0.1:{https_port}");
    let cache = dir.str("cache");
    let server = Server::start(
        &[
            &["--listen", &listen, "--http-listen", "off"][..],
            &pebble.acme_args(name, &cache),
            &["--acme-challenge", "tls-alpn-01"],
        ]
        .concat(),
    )
    .await;
    let addr = server.running.local_addr;
    wait_for_certificate(addr, name, &roots).await;
    // Socket.IO's handshake over https://.
    let (status, body, _) =
        https_get(addr, name, &roots, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("0{"), "{body}");
    // The challenge certificate is gone: acme-tls/1 gets no certificate now.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let alpn = connector(&roots, &[b"acme-tls/1"])
        .connect(rustls::pki_types::ServerName::try_from(name).unwrap(), tcp)
        .await;
    assert!(alpn.is_err(), "no acme-tls/1 answer outside a validation");
    server.stop().await;
}

/// Every file in the cache is 0600.
fn assert_private_files(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                files += 1;
                assert_eq!(
                    meta.permissions().mode() & 0o777,
                    0o600,
                    "{}",
                    entry.path().display()
                );
            }
        }
    }
    assert_eq!(files, 3, "account.json, cert.pem and key.pem");
}
