//! Turning PEM into something rustls can serve: a [`Loaded`] certificate is
//! the `CertifiedKey` plus the facts we schedule and report on (names,
//! validity window, serial).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::provider;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no PEM certificate found in {0}")]
    NoCertificate(String),
    #[error("cannot parse the PEM certificates in {what}: {source}")]
    BadCertificatePem {
        what: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("no usable PEM private key in {what}: {source}")]
    BadKey {
        what: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the private key in {what} is not usable for TLS: {source}")]
    UnsupportedKey { what: String, source: rustls::Error },
    #[error("the certificate and private key from {what} do not match: {source}")]
    Mismatch { what: String, source: rustls::Error },
    #[error("cannot parse the X.509 certificate in {what}: {message}")]
    BadX509 { what: String, message: String },
}

/// A certificate ready to serve, with its metadata.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// DNS names (subjectAltName), lowercased.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Serial number, hex.
    pub serial: String,
}

impl Loaded {
    /// Whether the certificate is valid now and covers every one of `domains`.
    pub fn covers(&self, domains: &[String], now: SystemTime) -> bool {
        now < self.not_after
            && domains
                .iter()
                .all(|d| self.names.iter().any(|n| n.eq_ignore_ascii_case(d)))
    }
}

/// Parses a PEM certificate chain and its PEM private key. `what` names the
/// source in errors (file paths, cache entry).
pub fn load_pem(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<Loaded, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|source| CertError::BadCertificatePem {
            what: what.to_string(),
            source,
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate(what.to_string()));
    };
    let (names, not_before, not_after, serial) = describe(leaf, what)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| CertError::BadKey {
        what: what.to_string(),
        source,
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| CertError::UnsupportedKey {
            what: what.to_string(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|source| CertError::Mismatch {
            what: what.to_string(),
            source,
        })?;
    Ok(Loaded {
        key: Arc::new(certified),
        names,
        not_before,
        not_after,
        serial,
    })
}

type Description = (Vec<String>, SystemTime, SystemTime, String);

fn describe(leaf: &CertificateDer<'_>, what: &str) -> Result<Description, CertError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let bad = |message: String| CertError::BadX509 {
        what: what.to_string(),
        message,
    };
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| bad(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    let to_time = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let validity = cert.validity();
    Ok((
        names,
        to_time(validity.not_before.timestamp()),
        to_time(validity.not_after.timestamp()),
        cert.raw_serial_as_string().replace(':', ""),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn loads_a_matching_pair_and_reads_its_names() {
        let (cert, key) = self_signed(&["a.example", "B.example"]);
        let loaded = load_pem(cert.as_bytes(), key.as_bytes(), "test").unwrap();
        assert_eq!(loaded.names, vec!["a.example", "b.example"]);
        assert!(loaded.not_after > SystemTime::now());
        assert!(!loaded.serial.is_empty());
        let now = SystemTime::now();
        assert!(loaded.covers(&["b.example".into()], now));
        assert!(!loaded.covers(&["c.example".into()], now));
    }

    #[test]
    fn a_key_from_another_pair_is_refused_by_name() {
        let (cert, _) = self_signed(&["a.example"]);
        let (_, other_key) = self_signed(&["a.example"]);
        let err = load_pem(cert.as_bytes(), other_key.as_bytes(), "cert.pem").unwrap_err();
        assert!(matches!(err, CertError::Mismatch { .. }), "{err}");
        let err = load_pem(b"", other_key.as_bytes(), "cert.pem").unwrap_err();
        assert!(err.to_string().contains("cert.pem"), "{err}");
    }
}
