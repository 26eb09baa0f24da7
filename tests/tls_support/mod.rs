//! Helpers for the HTTPS tests: a throwaway CA, a verifying TLS client,
//! HTTP/1.1 and websocket over it, roomcast in-process, and (in `pebble`)
//! the ACME test CA and DNS servers started on free loopback ports.
#![allow(dead_code)] // each test binary uses a different part

pub mod dns;
pub mod pebble;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use roomcast::server::{self, Running};
use roomcast::shutdown::Shutdown;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

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

/// One HTTP/1.1 GET on an established stream: (status, headers, body).
pub async fn get<S>(stream: S, host: &str, path: &str) -> (u16, http::HeaderMap, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
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
    let (status, _, body) = get(stream, name, path).await;
    (status, body, serial)
}

/// Retries `check` every 50 ms until it returns Some, at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// roomcast in-process with `args` (no environment).
pub struct Roomcast {
    pub running: Running,
    pub shutdown: Shutdown,
}

impl Roomcast {
    pub async fn start(args: &[&str]) -> Roomcast {
        Self::try_start(args).await.expect("roomcast starts")
    }

    pub async fn try_start(args: &[&str]) -> Result<Roomcast, server::ServeError> {
        let mut all = vec!["roomcast"];
        all.extend_from_slice(args);
        let cli = roomcast::config::parse_from(all.into_iter().map(Into::into).collect(), |_| None)
            .expect("valid flags");
        let shutdown = Shutdown::new();
        let running = server::start(&cli.serve, shutdown.clone()).await?;
        Ok(Roomcast { running, shutdown })
    }

    pub fn tls(&self) -> &roomcast::tls::TlsHandle {
        self.running.tls.as_ref().expect("TLS on")
    }

    /// Stops and waits for every task (the port is free afterwards).
    pub async fn stop(self) {
        self.shutdown.trigger();
        self.shutdown.wait(Duration::from_secs(5)).await;
    }
}

impl Drop for Roomcast {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// A free loopback TCP port (bound and released; tests then bind it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A scratch directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "roomcast-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    pub fn str(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // ROOMCAST_KEEP_TEST_DIRS=1 keeps the logs of pebble, knot and friends.
        if std::env::var_os("ROOMCAST_KEEP_TEST_DIRS").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
