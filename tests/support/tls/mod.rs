//! Helpers for the HTTPS tests: a throwaway CA, a verifying TLS client
//! (requests over it with `support::http::http_on`), `/ws` and the publish
//! API over it, and (in `pebble`, `dns`) the ACME test CA and DNS
//! servers started on free loopback ports.

pub mod dns;
pub mod pebble;

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::SinkExt;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::http::http_on;

/// A CA that signs leaf certificates for the file-based tests.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub root_pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "roomcast test CA");
        let cert = params.self_signed(&key).unwrap();
        let root_pem = cert.pem();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            root_pem,
        }
    }

    /// A leaf for `names`: (certificate PEM, key PEM).
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A leaf for `name` written into `dir` as `cert.pem` and `key.pem`, for
/// `--tls-cert`/`--tls-key`: their paths.
pub fn write_leaf(dir: &super::TempDir, ca: &TestCa, name: &str) -> (String, String) {
    let (cert, key) = ca.leaf(&[name]);
    std::fs::write(dir.path("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path("key.pem"), &key).unwrap();
    (dir.str("cert.pem"), dir.str("key.pem"))
}

/// Roots from PEM text (one or more certificates).
pub fn roots(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM roots")
}

/// A verifying TLS client trusting only `roots`.
pub fn connector(roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(roomcast::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// Connects and verifies the server's certificate for `name`.
pub async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    roots: &[CertificateDer<'static>],
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).expect("server name");
    connector(roots, &[b"http/1.1"]).connect(name, tcp).await
}

/// The serial (hex) of the certificate the server presented.
pub fn peer_serial(stream: &TlsStream<TcpStream>) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let certs = stream.get_ref().1.peer_certificates().expect("peer certs");
    let (_, cert) = X509Certificate::from_der(certs[0].as_ref()).expect("X.509");
    cert.raw_serial_as_string().replace(':', "")
}

/// A `/ws` client over a fresh verified connection, subscribed to `channel`.
pub async fn wss_subscribe(
    addr: SocketAddr,
    name: &str,
    roots: &[CertificateDer<'static>],
    channel: &str,
) -> WebSocketStream<TlsStream<TcpStream>> {
    let stream = tls_connect(addr, name, roots).await.expect("TLS handshake");
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{name}/ws"), stream)
        .await
        .expect("websocket upgrade over TLS");
    let subscribe = json!({"op": "subscribe", "channel": channel, "id": 1});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    assert_eq!(super::next_json(&mut ws).await["type"], "ok");
    ws
}

/// `POST /api/publish` (API key `k`) over a fresh verified connection.
pub async fn publish(
    addr: SocketAddr,
    name: &str,
    roots: &[CertificateDer<'static>],
    channel: &str,
    data: &str,
) {
    let stream = tls_connect(addr, name, roots).await.expect("TLS handshake");
    let body = json!({"channel": channel, "data": data}).to_string();
    let headers = [
        ("Authorization", "Bearer k"),
        ("Content-Type", "application/json"),
    ];
    let response = http_on(
        stream,
        name,
        "POST",
        "/api/publish",
        &headers,
        body.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
}

/// HTTPS GET with a fresh verified connection; also returns the serial seen.
pub async fn https_get(
    addr: SocketAddr,
    name: &str,
    roots: &[CertificateDer<'static>],
    path: &str,
) -> (u16, String, String) {
    let stream = tls_connect(addr, name, roots).await.expect("TLS handshake");
    let serial = peer_serial(&stream);
    let response = http_on(stream, name, "GET", path, &[], b"").await;
    (response.status, response.text(), serial)
}
