//! HTTPS from `--tls-cert`/`--tls-key`: load at start, then poll the files
//! and swap in a new pair when their contents change (cert-manager, certbot).
//!
//! Polling the contents (not mtimes) is simple, portable and sees atomic
//! renames as well as in-place writes. A half-written pair (the certificate
//! renewed, the key not yet) fails to load: it is logged once and retried at
//! the next poll; the old certificate stays in service meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::certs::{self, CertError, Loaded};
use super::resolver::CertResolver;
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// The certificate files and what was last read from them.
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    seen: (Vec<u8>, Vec<u8>),
}

impl CertFiles {
    /// Reads and parses the pair once; errors name the files.
    pub async fn load(cert: &Path, key: &Path) -> Result<(Self, Loaded), FileError> {
        let seen = read_pair(cert, key).await?;
        let loaded = parse(cert, &seen)?;
        Ok((
            CertFiles {
                cert: cert.to_owned(),
                key: key.to_owned(),
                seen,
            },
            loaded,
        ))
    }

    /// Polls every `interval` until shutdown, serving each new valid pair.
    pub async fn watch(
        mut self,
        resolver: Arc<CertResolver>,
        interval: Duration,
        shutdown: Shutdown,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.requested() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let pair = match read_pair(&self.cert, &self.key).await {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "TLS certificate reload: keeping the current certificate");
                    continue;
                }
            };
            if pair == self.seen {
                continue;
            }
            match parse(&self.cert, &pair) {
                Ok(loaded) => {
                    resolver.set(&loaded, "file");
                    resolver.set_error(None);
                    tracing::info!(
                        cert = %self.cert.display(),
                        names = ?loaded.names,
                        serial = %loaded.serial,
                        "TLS certificate reloaded from disk"
                    );
                }
                Err(error) => {
                    // Logged once per new content; a half-written pair is fixed by the next write.
                    tracing::warn!(%error, "TLS certificate reload failed; keeping the current certificate");
                    resolver.set_error(Some(error.to_string()));
                }
            }
            self.seen = pair;
        }
    }
}

async fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), FileError> {
    let read = |path: &Path| {
        let path = path.to_owned();
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| FileError::Read { path, source })
        }
    };
    Ok((read(cert).await?, read(key).await?))
}

fn parse(cert: &Path, (cert_pem, key_pem): &(Vec<u8>, Vec<u8>)) -> Result<Loaded, FileError> {
    let what = format!("{} (with its --tls-key)", cert.display());
    Ok(certs::load_pem(cert_pem, key_pem, &what)?)
}
