//! The HTTPS listener's TLS stream (`tls::stream`, rustls's unbuffered
//! connection) against tokio-rustls's client: what tokio-rustls gave the
//! server for free — many records each way, a reader slower than the
//! writer, close_notify both ways, key updates — and what a peer can do to
//! it: end inside a record, send a record that does not decrypt (an error,
//! never a panic, and the server's other clients are unharmed).

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio_rustls::client::TlsStream as ClientStream;

use roomcast::tls::stream::{TlsStream, accept};

mod support;
use support::tls::*;
use support::{Server, next_json};

const NAME: &str = "localhost";
/// Far more than one record (16 KiB) and than the pipe holds.
const LARGE: usize = 1 << 20;

struct Pair {
    client: ClientStream<DuplexStream>,
    server: TlsStream<DuplexStream>,
}

/// A handshaken pair over an in-memory pipe that holds `pipe` bytes each way.
async fn pair(pipe: usize) -> Pair {
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&[NAME]);
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut config = ServerConfig::builder_with_provider(roomcast::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (client_io, server_io) = duplex(pipe);
    let connector = connector(&roots(&ca.root_pem), &[b"http/1.1"]);
    let name = ServerName::try_from(NAME).unwrap();
    let (client, server) = tokio::join!(
        connector.connect(name, client_io),
        accept(server_io, Arc::new(config))
    );
    let (client, server) = (
        client.expect("client handshake"),
        server.expect("server handshake"),
    );
    assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
    Pair { client, server }
}

/// An application-data record of 32 bytes that decrypt under no key.
fn forged_record() -> Vec<u8> {
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    record.extend_from_slice(&[0xAB; 32]);
    record
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Reads exactly `len` bytes in `chunk`-sized reads.
async fn read_len(stream: &mut (impl AsyncReadExt + Unpin), len: usize, chunk: usize) -> Vec<u8> {
    let mut all = Vec::with_capacity(len);
    let mut buf = vec![0u8; chunk];
    while all.len() < len {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "ended after {} of {len} bytes", all.len());
        all.extend_from_slice(&buf[..n]);
    }
    all
}

#[tokio::test]
async fn many_records_both_ways_through_a_narrow_pipe() {
    let Pair { client, mut server } = pair(4096).await;
    // The server echoes through a read buffer smaller than a record.
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 3000];
        loop {
            let n = server.read(&mut buf).await.expect("server read");
            if n == 0 {
                break;
            }
            server.write_all(&buf[..n]).await.expect("server write");
        }
        server.shutdown().await.expect("server close_notify");
    });
    let sent = pattern(LARGE);
    let (mut reader, mut writer) = tokio::io::split(client);
    let to_send = sent.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(&to_send).await.unwrap();
        writer.shutdown().await.unwrap();
    });
    let echoed = read_len(&mut reader, LARGE, 5000).await;
    assert!(echoed == sent, "the echo differs from what was sent");
    writing.await.unwrap();
    echo.await.unwrap();
    // After the echo, the server's close_notify: an end, not an error.
    let mut rest = Vec::new();
    assert_eq!(reader.read_to_end(&mut rest).await.unwrap(), 0);
}

#[tokio::test]
async fn a_slow_reader_holds_the_writer_back() {
    let Pair {
        mut client,
        mut server,
    } = pair(16 * 1024).await;
    let sent = pattern(LARGE);
    let to_send = sent.clone();
    let writer = tokio::spawn(async move {
        server.write_all(&to_send).await.unwrap();
        server.flush().await.unwrap();
        server
    });
    // The client reads nothing: the pipe (16 KiB) and what the stream keeps
    // unsent (one write, at most 64 KiB) cannot hold 1 MiB.
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    assert!(
        !writer.is_finished(),
        "1 MiB written to a reader that reads nothing"
    );
    // Then it reads, slowly, and gets every byte in order.
    let received = read_len(&mut client, LARGE, 1000).await;
    assert!(
        received == sent,
        "what arrived differs from what was written"
    );
    writer.await.unwrap();
}

#[tokio::test]
async fn close_notify_both_ways() {
    let Pair {
        mut client,
        mut server,
    } = pair(4096).await;
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    server
        .read_to_end(&mut got)
        .await
        .expect("close_notify is an end");
    assert_eq!(got, b"last words");
    // Half-closed: the server may still answer, then closes.
    server.write_all(b"goodbye").await.unwrap();
    server.shutdown().await.unwrap();
    let mut got = Vec::new();
    // tokio-rustls fails a read that ends without close_notify.
    client
        .read_to_end(&mut got)
        .await
        .expect("the server's close_notify");
    assert_eq!(got, b"goodbye");
}

#[tokio::test]
async fn key_updates_from_the_client() {
    let Pair {
        mut client,
        mut server,
    } = pair(4096).await;
    for round in 0..3 {
        client.get_mut().1.refresh_traffic_keys().unwrap();
        let message = format!("round {round}");
        client.write_all(message.as_bytes()).await.unwrap();
        client.flush().await.unwrap();
        let got = read_len(&mut server, message.len(), 100).await;
        assert_eq!(got, message.as_bytes());
        // The server answered the update: its records under its new keys.
        server.write_all(&got).await.unwrap();
        server.flush().await.unwrap();
        let echoed = read_len(&mut client, message.len(), 100).await;
        assert_eq!(echoed, message.as_bytes());
    }
}

#[tokio::test]
async fn an_end_inside_a_record_is_an_error() {
    let Pair { client, mut server } = pair(4096).await;
    let (mut raw, _) = client.into_inner();
    // An application-data record header promising 64 bytes, then 3 of them.
    raw.write_all(&[0x17, 0x03, 0x03, 0x00, 0x40, 1, 2, 3])
        .await
        .unwrap();
    drop(raw);
    let mut buf = [0u8; 100];
    let error = server.read(&mut buf).await.expect_err("a cut record");
    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");

    // Between records, an end without close_notify is an end.
    let Pair { client, mut server } = pair(4096).await;
    drop(client.into_inner());
    assert_eq!(server.read(&mut buf).await.unwrap(), 0);
}

#[tokio::test]
async fn a_record_that_does_not_decrypt_is_an_error() {
    let Pair { client, mut server } = pair(4096).await;
    let (mut raw, _) = client.into_inner();
    raw.write_all(&forged_record()).await.unwrap();
    let mut buf = [0u8; 100];
    let error = server.read(&mut buf).await.expect_err("a forged record");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    // The peer is told (an alert record), and the stream stays failed.
    let n = raw.read(&mut buf).await.unwrap();
    assert!(n > 0, "no alert sent");
    assert_eq!(buf[0], 0x17, "an encrypted alert record");
    assert!(server.read(&mut buf).await.is_err());
}

/// Through the server: a client sending a bad record is closed, while
/// another client over TLS keeps receiving, also a message of many records
/// each way (published over HTTPS, delivered over wss).
#[tokio::test]
async fn a_bad_client_harms_no_other() {
    let dir = support::TempDir::new("tls-stream");
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
        "off",
        "--api-key",
        "k",
    ])
    .await;
    let addr = server.running.local_addr;
    let mut ws = wss_subscribe(addr, NAME, &roots, "room").await;

    let bad = tls_connect(addr, NAME, &roots).await.unwrap();
    let (mut raw, _) = bad.into_inner();
    raw.write_all(&forged_record()).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut rest))
        .await
        .expect("the bad client is closed")
        .expect("closed cleanly after the alert");

    let large = "x".repeat(300_000);
    publish(addr, NAME, &roots, "room", &large).await;
    let message = next_json(&mut ws).await;
    assert_eq!(message["data"].as_str().map(str::len), Some(large.len()));
    assert!(message["data"] == large.as_str());
    server.stop().await;
}
