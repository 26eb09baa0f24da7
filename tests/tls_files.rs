//! HTTPS from --tls-cert/--tls-key: a verifying client connects, /ws
//! upgrades over TLS, the files are rotated on disk and new handshakes get
//! the new certificate while an open websocket keeps working; the
//! plain-HTTP listener redirects to https and answers /healthz.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

mod support;
use support::http::http_on;
use support::tls::*;
use support::{Server, TempDir, eventually, next_json};

const NAME: &str = "localhost";

#[tokio::test]
async fn serves_reloads_and_redirects() {
    let dir = TempDir::new("tls-files");
    let ca = TestCa::new();
    let roots = roots(&ca.root_pem);
    let (cert_path, key_path) = write_leaf(&dir, &ca, NAME);
    let server = Server::start(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert_path,
        "--tls-key",
        &key_path,
        "--http-listen",
        "127.0.0.1:0",
        "--tls-reload-interval-ms",
        "100",
        "--api-key",
        "k",
    ])
    .await;
    let addr = server.running.local_addr;

    // A verifying client, ALPN http/1.1, and the API over TLS.
    let stream = tls_connect(addr, NAME, &roots).await.expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let first_serial = peer_serial(&stream);
    let readyz = http_on(stream, NAME, "GET", "/readyz", &[], b"").await;
    assert_eq!(readyz.status, 200, "{}", readyz.text());

    // A websocket over wss:// stays open across the rotation.
    let mut ws = wss_subscribe(addr, NAME, &roots, "tls").await;
    // So does an event stream (answered without hyper, over TLS too).
    let mut sse = tls_connect(addr, NAME, &roots).await.unwrap();
    sse.write_all(b"GET /sse?channel=tls HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut sse, ": connected\n\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");

    // Rotate: write a new pair (key first, as certbot does not promise any order).
    let (cert2, key2) = ca.leaf(&[NAME]);
    std::fs::write(dir.path("key.pem"), &key2).unwrap();
    std::fs::write(dir.path("cert.pem"), &cert2).unwrap();
    let new_serial = eventually(Duration::from_secs(10), || async {
        let (_, _, serial) = https_get(addr, NAME, &roots, "/healthz").await;
        (serial != first_serial).then_some(serial)
    })
    .await
    .expect("new handshakes get the rotated certificate");
    assert_ne!(new_serial, first_serial);

    // The websocket opened before the rotation still receives.
    publish(addr, NAME, &roots, "tls", "after rotation").await;
    let message = next_json(&mut ws).await;
    assert_eq!(message["data"], "after rotation", "{message}");
    let event = read_until(&mut sse, "\n\n").await;
    assert!(event.contains(r#""data":"after rotation""#), "{event}");

    // A broken pair on disk is refused and the current certificate stays.
    std::fs::write(dir.path("cert.pem"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, _, serial) = https_get(addr, NAME, &roots, "/healthz").await;
    assert_eq!((status, serial), (200, new_serial));

    // Plain HTTP: /healthz answers, the rest redirects to https on our port.
    let http_addr = server.running.http_addr.expect("plain-HTTP listener");
    let plain = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    let redirect = http_on(plain, "example.test:80", "GET", "/room/x?y=1", &[], b"").await;
    assert_eq!(redirect.status, 308);
    assert_eq!(
        redirect.header("location"),
        Some(format!("https://example.test:{}/room/x?y=1", addr.port()).as_str())
    );
    let plain = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    let healthz = http_on(plain, "example.test", "GET", "/healthz", &[], b"").await;
    assert_eq!(healthz.status, 200);

    server.stop().await;
}

#[tokio::test]
async fn bad_files_fail_startup_by_name() {
    let dir = TempDir::new("tls-bad");
    std::fs::write(dir.path("cert.pem"), "nothing").unwrap();
    std::fs::write(dir.path("key.pem"), "nothing").unwrap();
    let (cert, key) = (dir.str("cert.pem"), dir.str("key.pem"));
    let result = Server::try_start(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--http-listen",
        "off",
    ])
    .await;
    let error = result.err().expect("startup refused").to_string();
    assert!(error.contains("cert.pem"), "{error}");
    let missing = dir.str("missing.pem");
    let result = Server::try_start(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &missing,
        "--tls-key",
        &key,
    ])
    .await;
    let error = result.err().expect("startup refused").to_string();
    assert!(error.contains("missing.pem"), "{error}");
}

/// Reads until `needle` has arrived; returns all that came.
async fn read_until(stream: &mut (impl AsyncRead + Unpin), needle: &str) -> String {
    let mut text = Vec::new();
    while !String::from_utf8_lossy(&text).contains(needle) {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("data within 5 s")
            .unwrap();
        assert!(n > 0, "closed before {needle:?}");
        text.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&text).into_owned()
}
