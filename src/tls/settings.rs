//! What HTTPS runs with: one [`TlsSettings`] (off, certificate files, or
//! ACME with its challenge and DNS provider), resolved from the flags by
//! `config::tls`, and the errors of an inconsistent combination.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

/// Let's Encrypt's directories.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("--tls-cert and --tls-key go together: {0} is missing")]
    HalfPair(&'static str),
    #[error("use either --tls-cert/--tls-key or --acme-domain, not both")]
    BothModes,
    #[error("--http-listen must be host:port or `off`, got `{0}`")]
    BadHttpListen(String),
    #[error("--acme-domain `{0}` is not a domain name")]
    BadDomain(String),
    #[error("--acme-directory must be `staging`, `production` or an https:// URL, got `{0}`")]
    BadDirectory(String),
    #[error(
        "--acme-challenge http-01 needs the plain-HTTP listener: set --http-listen (not `off`)"
    )]
    Http01WithoutListener,
    #[error("--acme-challenge dns-01 needs a DNS provider: {0}")]
    NoDnsProvider(&'static str),
    #[error("{0}")]
    Provider(String),
    #[error("wildcard domain `{0}` needs --acme-challenge dns-01")]
    WildcardNeedsDns(String),
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// The plain-HTTP listener (HTTP-01, /healthz, redirects); `None` when off.
    pub http_listen: Option<SocketAddr>,
    /// How often certificate files are checked for changes.
    pub reload_interval: Duration,
}

#[derive(Debug, Clone)]
pub enum TlsMode {
    Files { cert: PathBuf, key: PathBuf },
    Acme(AcmeSettings),
}

#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub domains: Vec<String>,
    pub email: Option<String>,
    pub directory: String,
    pub cache_dir: PathBuf,
    pub challenge: AcmeChallenge,
    pub ca_root: Option<PathBuf>,
    pub dns: Option<DnsSettings>,
    pub dns_wait: Duration,
}

#[derive(Debug, Clone)]
pub enum DnsSettings {
    Cloudflare {
        api_url: String,
        auth: CloudflareAuth,
    },
    Rfc2136 {
        server: String,
        zone: Option<String>,
        key_name: String,
        secret_base64: String,
        algorithm: TsigAlgorithmKind,
    },
}

#[derive(Clone)]
pub enum CloudflareAuth {
    Token(String),
    GlobalKey { email: String, key: String },
}

impl std::fmt::Debug for CloudflareAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloudflareAuth::Token(_) => f.write_str("Token(..)"),
            CloudflareAuth::GlobalKey { email, .. } => write!(f, "GlobalKey({email}, ..)"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcmeChallenge {
    /// A token served on the plain-HTTP listener (port 80 must reach it).
    #[value(name = "http-01")]
    Http01,
    /// A special certificate on the HTTPS listener itself (port 443 must reach it).
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
    /// A TXT record through a DNS provider (no inbound port needed; wildcards allowed).
    #[value(name = "dns-01")]
    Dns01,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DnsProviderKind {
    Cloudflare,
    Rfc2136,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TsigAlgorithmKind {
    #[value(name = "hmac-sha256")]
    HmacSha256,
    #[value(name = "hmac-sha384")]
    HmacSha384,
    #[value(name = "hmac-sha512")]
    HmacSha512,
}
