//! HTTPS: serving TLS with rustls, from certificate files or from an ACME CA.
//!
//! Owns the rustls crypto provider (ring — the only one compiled in; every
//! rustls config in roomcast comes from [`provider`]), the certificate in
//! service ([`resolver`]), the HTTPS accept loop ([`listener`]), the
//! plain-HTTP listener's router ([`redirect`]), reloading files ([`files`])
//! and obtaining/renewing certificates ([`acme`]).
//!
//! Never touches the application router or its connections: `server` binds
//! the sockets and runs `net::serve` over [`listener::start`]; a
//! certificate swap affects only handshakes that start after it.

pub mod acme;
mod certs;
mod files;
pub mod listener;
mod records;
mod redirect;
mod renewal;
mod resolver;
pub mod settings;
pub mod stream;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;

pub use certs::{CertError, Loaded, load_pem};
pub use redirect::Http01Tokens;
pub use resolver::{ACME_TLS_ALPN, CertResolver};
pub use settings::{TlsConfigError, TlsMode, TlsSettings};

use crate::shutdown::Shutdown;
use settings::AcmeChallenge;

/// The one rustls crypto provider of roomcast (ring).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A rustls client config trusting the Mozilla roots (compiled in, so it
/// works in a scratch container) plus `extra` roots.
pub fn client_config(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in extra {
        roots.add(root.clone())?;
    }
    client_config_from(roots)
}

/// A rustls client config trusting only the certificates of `pem` (a
/// private CA), for `--mqtt-ca-file`.
pub fn client_config_trusting(pem: &[u8]) -> Result<rustls::ClientConfig, rustls::Error> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for root in CertificateDer::pem_slice_iter(pem) {
        let root = root.map_err(|e| rustls::Error::General(format!("bad PEM: {e}")))?;
        roots.add(root)?;
    }
    if roots.is_empty() {
        return Err(rustls::Error::General(
            "no certificate in the PEM file".into(),
        ));
    }
    client_config_from(roots)
}

fn client_config_from(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Config(#[from] TlsConfigError),
    #[error("HTTPS certificate files: {0}")]
    Files(#[from] files::FileError),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("ACME: {0}")]
    Acme(#[from] acme::AcmeError),
}

/// Whether HTTPS can serve: a certificate is loaded. `/readyz` consults it.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<CertResolver>);

impl Readiness {
    /// `Err(reason)` while no certificate is available.
    pub fn check(&self) -> Result<(), String> {
        if self.0.has_certificate() {
            return Ok(());
        }
        Err(self
            .0
            .last_error()
            .unwrap_or_else(|| "no TLS certificate yet (ACME issuance in progress)".into()))
    }
}

/// HTTPS prepared but not yet running: certificate loaded (files, or the
/// ACME cache), rustls configured.
pub struct Tls {
    settings: TlsSettings,
    resolver: Arc<CertResolver>,
    config: Arc<ServerConfig>,
    http01: Http01Tokens,
    files: Option<files::CertFiles>,
    acme: Option<acme::Manager>,
}

/// Controls of running HTTPS (tests use them).
#[derive(Clone)]
pub struct TlsHandle {
    resolver: Arc<CertResolver>,
    acme: Option<acme::Control>,
}

impl TlsHandle {
    pub fn readiness(&self) -> Readiness {
        Readiness(self.resolver.clone())
    }

    /// Starts an ACME renewal now (no-op for certificate files).
    pub fn renew_now(&self) {
        if let Some(acme) = &self.acme {
            acme.renew_now();
        }
    }

    /// Completed ACME issuances since start (0 for files).
    pub fn issued(&self) -> u64 {
        self.acme.as_ref().map_or(0, |a| a.issued())
    }
}

impl Tls {
    /// Loads what can be loaded before binding: the files (errors are
    /// fatal), or a cached ACME certificate (missing is fine: it is ordered
    /// once the listeners run).
    pub async fn prepare(settings: TlsSettings) -> Result<Tls, TlsError> {
        let resolver = Arc::new(CertResolver::new());
        let http01 = Http01Tokens::default();
        let mut alpn = vec![b"http/1.1".to_vec()];
        let (files, acme) = match &settings.mode {
            TlsMode::Files { cert, key } => {
                let (files, loaded) = files::CertFiles::load(cert, key).await?;
                resolver.set(&loaded, "file");
                tracing::info!(
                    cert = %cert.display(),
                    names = ?loaded.names,
                    serial = %loaded.serial,
                    "serving HTTPS with the certificate from disk"
                );
                (Some(files), None)
            }
            TlsMode::Acme(acme) => {
                if acme.challenge == AcmeChallenge::TlsAlpn01 {
                    alpn.push(ACME_TLS_ALPN.to_vec());
                }
                let manager = acme::Manager::new(acme.clone(), resolver.clone(), http01.clone())?;
                manager.load_cached().await;
                (None, Some(manager))
            }
        };
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn;
        Ok(Tls {
            settings,
            resolver,
            config: Arc::new(config),
            http01,
            files,
            acme,
        })
    }

    pub fn readiness(&self) -> Readiness {
        Readiness(self.resolver.clone())
    }

    /// The HTTPS listener's rustls configuration.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    pub fn http_listen(&self) -> Option<SocketAddr> {
        self.settings.http_listen
    }

    /// The plain-HTTP listener's router; redirects go to `https_port`.
    pub fn redirect_router(&self, https_port: u16) -> axum::Router {
        redirect::router(self.http01.clone(), https_port)
    }

    /// Starts the background work (file polling or ACME) once the
    /// listeners are bound, so ACME validations can reach them.
    pub fn run(self, shutdown: &Shutdown) -> TlsHandle {
        let mut handle = TlsHandle {
            resolver: self.resolver.clone(),
            acme: None,
        };
        if let Some(files) = self.files {
            let (resolver, interval, stop) = (
                self.resolver.clone(),
                self.settings.reload_interval,
                shutdown.clone(),
            );
            shutdown.spawn(files.watch(resolver, interval, stop));
        }
        if let Some(acme) = self.acme {
            handle.acme = Some(acme.control());
            shutdown.spawn(acme.run(shutdown.clone()));
        }
        handle
    }
}
