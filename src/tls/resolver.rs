//! The certificate rustls serves, swappable at run time: file reloads and
//! ACME renewals call [`CertResolver::set`]; handshakes already under way
//! keep the `Arc` they got, open connections are never touched.
//!
//! Also answers TLS-ALPN-01 (RFC 8737): a ClientHello offering only
//! `acme-tls/1` gets the challenge certificate for its SNI name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::Loaded;
use crate::telemetry;

/// ALPN protocol id of TLS-ALPN-01 validation handshakes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Debug, Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    has_certificate: AtomicBool,
    /// Lowercased domain -> TLS-ALPN-01 challenge certificate.
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// The latest issuance/reload problem, for logs and /readyz.
    last_error: Mutex<Option<String>>,
}

impl CertResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `loaded` from the next handshake on.
    pub fn set(&self, loaded: &Loaded, label: &str) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(loaded.key.clone());
        self.has_certificate.store(true, Ordering::Release);
        telemetry::tls_certificate_expiry(label, loaded.not_after);
    }

    pub fn has_certificate(&self) -> bool {
        self.has_certificate.load(Ordering::Acquire)
    }

    pub fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn add_challenge(&self, domain: &str, key: Arc<CertifiedKey>) {
        self.challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(domain.to_ascii_lowercase(), key);
    }

    pub fn remove_challenge(&self, domain: &str) {
        self.challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&domain.to_ascii_lowercase());
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .challenges
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .cloned();
        }
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
