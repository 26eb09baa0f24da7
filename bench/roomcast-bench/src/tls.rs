//! TLS for the bench's clients (`run --tls-ca`): trust one CA (the throwaway
//! one `scripts/bench` makes for each run) and run rustls over each
//! connection, so `wss://` and `https://` are measured the way plain
//! connections are.
//!
//! The client config is roomcast's own `tls::client_config_trusting` (ring,
//! the same protocol versions). Session resumption is off: every connection
//! costs the server a full handshake, so churn's connects/s are full
//! handshakes/s.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::Resumption;
use tokio_rustls::rustls::pki_types::ServerName;

/// How workers reach a TLS server (part of their plan).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsTarget {
    /// PEM file of the CA the server's certificate chains to.
    pub ca_file: PathBuf,
    /// Name sent in SNI and checked against the certificate.
    pub server_name: String,
}

/// Wraps TCP connections in TLS for one [`TlsTarget`]; cheap to clone.
#[derive(Clone)]
pub struct Connector {
    inner: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connector({:?})", self.name)
    }
}

impl Connector {
    pub fn new(target: &TlsTarget) -> Result<Connector, String> {
        let file = target.ca_file.display();
        let pem = std::fs::read(&target.ca_file).map_err(|e| format!("{file}: {e}"))?;
        let mut config =
            roomcast::tls::client_config_trusting(&pem).map_err(|e| format!("{file}: {e}"))?;
        config.resumption = Resumption::disabled();
        let name = ServerName::try_from(target.server_name.clone())
            .map_err(|e| format!("TLS server name {:?}: {e}", target.server_name))?;
        Ok(Connector {
            inner: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The TLS handshake over `tcp`.
    pub async fn handshake(&self, tcp: TcpStream) -> io::Result<Stream> {
        let tls = self.inner.connect(self.name.clone(), tcp).await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// A client's byte stream: plain TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
