//! ACME (RFC 8555) with instant-acme: obtains, caches, reuses and renews
//! the certificate for `--acme-domain`, over HTTP-01, TLS-ALPN-01 or DNS-01.
//!
//! At start the cached certificate (if it covers the domains and has not
//! expired) is served at once and no order is made; otherwise the server
//! starts without one (`/readyz` says so) and orders it. The [`Manager`]
//! task then sleeps until 2/3 of the lifetime (jittered), renews, swaps the
//! new certificate in without a restart, and on failure logs the domain,
//! challenge and CA error, keeps serving what it has, and retries with
//! backoff. Account and certificates live in the cache dir (0600).

mod account;
mod cache;
pub mod dns;
pub mod http_client;
mod order;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, OnceCell};

use super::certs::{self, Loaded};
use super::redirect::Http01Tokens;
use super::renewal;
use super::resolver::CertResolver;
use super::settings::{AcmeSettings, DnsSettings};
use crate::shutdown::Shutdown;
use cache::Cache;
use dns::DnsProvider;
use http_client::HttpsClient;
use order::{Responder, challenge_label};

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error("HTTP client for the ACME directory: {0}")]
    Client(#[from] http_client::ClientError),
    #[error("ACME account at {directory}: {source}")]
    Account {
        directory: String,
        source: instant_acme::Error,
    },
    #[error(
        "the stored ACME account {path} is unreadable ({message}); move it away to register a new one"
    )]
    BadAccount { path: String, message: String },
    #[error("ACME order for {domains}: {source}")]
    Order {
        domains: String,
        source: instant_acme::Error,
    },
    #[error("{challenge} challenge for {domain} failed: {detail}")]
    Challenge {
        domain: String,
        challenge: &'static str,
        detail: String,
    },
    #[error("cannot make the certificate request: {0}")]
    Csr(rcgen::Error),
    #[error("finalizing the ACME order for {domains}: {source}")]
    Finalize {
        domains: String,
        source: instant_acme::Error,
    },
    #[error("the CA's certificate is unusable: {0}")]
    Certificate(#[from] certs::CertError),
    #[error("DNS provider: {0}")]
    Dns(#[from] dns::DnsError),
}

struct Shared {
    settings: AcmeSettings,
    resolver: Arc<CertResolver>,
    responder: Responder,
    client: HttpsClient,
    cache: Cache,
    account: OnceCell<instant_acme::Account>,
    current: std::sync::Mutex<Option<Loaded>>,
    renew: Notify,
    issued: AtomicU64,
}

/// Owns ACME for one set of domains.
pub struct Manager(Arc<Shared>);

/// A handle on a running [`Manager`].
#[derive(Clone)]
pub struct Control(Arc<Shared>);

impl Control {
    /// Renews now instead of waiting for the scheduled time.
    pub fn renew_now(&self) {
        self.0.renew.notify_one();
    }

    /// Certificates obtained since start.
    pub fn issued(&self) -> u64 {
        self.0.issued.load(Ordering::Acquire)
    }
}

impl Manager {
    pub fn new(
        settings: AcmeSettings,
        resolver: Arc<CertResolver>,
        http01: Http01Tokens,
    ) -> Result<Self, AcmeError> {
        let client = HttpsClient::new(settings.ca_root.as_deref())?;
        let dns: Option<Arc<dyn DnsProvider>> = match &settings.dns {
            None => None,
            Some(DnsSettings::Cloudflare { api_url, auth }) => Some(Arc::new(
                dns::cloudflare::Cloudflare::new(client.clone(), api_url.clone(), auth.clone()),
            )),
            Some(DnsSettings::Rfc2136 {
                server,
                zone,
                key_name,
                secret_base64,
                algorithm,
            }) => Some(Arc::new(dns::rfc2136::Rfc2136::new(
                server.clone(),
                zone.clone(),
                key_name,
                secret_base64,
                *algorithm,
            )?)),
        };
        let cache = Cache::new(&settings.cache_dir, &settings.directory, &settings.domains);
        Ok(Manager(Arc::new(Shared {
            responder: Responder {
                http01,
                resolver: resolver.clone(),
                dns,
            },
            settings,
            resolver,
            client,
            cache,
            account: OnceCell::new(),
            current: std::sync::Mutex::new(None),
            renew: Notify::new(),
            issued: AtomicU64::new(0),
        })))
    }

    pub fn control(&self) -> Control {
        Control(self.0.clone())
    }

    /// Serves the cached certificate if it is usable; logs why not otherwise.
    pub async fn load_cached(&self) {
        let shared = &self.0;
        let (cert_path, key_path) = (shared.cache.cert_path(), shared.cache.key_path());
        let pair = match (Cache::read(&cert_path).await, Cache::read(&key_path).await) {
            (Ok(Some(cert)), Ok(Some(key))) => (cert, key),
            (Ok(None), _) | (_, Ok(None)) => {
                tracing::info!(domains = ?shared.settings.domains, cache = %cert_path.display(), "no cached certificate; one will be ordered");
                return;
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot read the cached certificate; ordering a new one");
                return;
            }
        };
        let what = cert_path.display().to_string();
        match certs::load_pem(&pair.0, &pair.1, &what) {
            Ok(loaded) if loaded.covers(&shared.settings.domains, SystemTime::now()) => {
                tracing::info!(
                    domains = ?shared.settings.domains,
                    serial = %loaded.serial,
                    expires = %humantime(loaded.not_after),
                    "serving the cached ACME certificate (no new order)"
                );
                shared.resolver.set(&loaded, &shared.settings.domains[0]);
                *shared.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(loaded);
            }
            Ok(loaded) => tracing::info!(
                names = ?loaded.names,
                expires = %humantime(loaded.not_after),
                "the cached certificate has expired or does not cover every --acme-domain; ordering a new one"
            ),
            Err(error) => {
                tracing::warn!(%error, "the cached certificate is unusable; ordering a new one")
            }
        }
    }

    /// Issues and renews until shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        let shared = self.0;
        let label = challenge_label(shared.settings.challenge);
        let mut failures = 0u32;
        loop {
            let wait = if failures > 0 {
                renewal::retry_delay(failures, rand::random())
            } else {
                let current = shared
                    .current
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|c| (c.not_before, c.not_after));
                match current {
                    Some((from, until)) => {
                        renewal::until_renewal(from, until, SystemTime::now(), rand::random())
                    }
                    None => Duration::ZERO,
                }
            };
            if !wait.is_zero() {
                tracing::info!(
                    domains = ?shared.settings.domains,
                    at = %humantime(SystemTime::now() + wait),
                    "next ACME {} scheduled",
                    if failures > 0 { "retry" } else { "renewal" }
                );
                tokio::select! {
                    _ = shutdown.requested() => return,
                    _ = tokio::time::sleep(wait) => {}
                    _ = shared.renew.notified() => {}
                }
            }
            let attempt = tokio::select! {
                _ = shutdown.requested() => return,
                attempt = shared.obtain() => attempt,
            };
            match attempt {
                Ok(loaded) => {
                    failures = 0;
                    tracing::info!(
                        domains = ?shared.settings.domains,
                        challenge = label,
                        serial = %loaded.serial,
                        expires = %humantime(loaded.not_after),
                        "ACME certificate obtained and now served"
                    );
                    shared.resolver.set(&loaded, &shared.settings.domains[0]);
                    shared.resolver.set_error(None);
                    *shared.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(loaded);
                    shared.issued.fetch_add(1, Ordering::AcqRel);
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let serving = shared.resolver.has_certificate();
                    tracing::error!(
                        domains = ?shared.settings.domains,
                        challenge = label,
                        directory = %shared.settings.directory,
                        %error,
                        failures,
                        "ACME certificate issuance failed; {}",
                        if serving { "still serving the current certificate" } else { "HTTPS has no certificate yet" }
                    );
                    shared.resolver.set_error(Some(format!(
                        "ACME issuance for {} failed: {error}",
                        shared.settings.domains.join(", ")
                    )));
                }
            }
        }
    }
}

impl Shared {
    /// One issuance, stored in the cache before it is served.
    async fn obtain(&self) -> Result<Loaded, AcmeError> {
        let account = self
            .account
            .get_or_try_init(|| {
                account::load_or_create(&self.settings, &self.cache, self.client.clone())
            })
            .await?;
        let (chain, key) = order::issue(account, &self.settings, &self.responder).await?;
        let loaded = certs::load_pem(chain.as_bytes(), key.as_bytes(), "the ACME CA's answer")?;
        Cache::write(&self.cache.key_path(), key.as_bytes()).await?;
        Cache::write(&self.cache.cert_path(), chain.as_bytes()).await?;
        Ok(loaded)
    }
}

/// RFC 3339-ish UTC time for logs.
fn humantime(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    x509_parser::time::ASN1Time::from_timestamp(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("@{secs}"))
}
