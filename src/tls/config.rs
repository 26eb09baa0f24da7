//! Resolves the HTTPS flags of [`ServeArgs`] into one [`TlsSettings`]:
//! off, certificate files, or ACME with its challenge and DNS provider.
//! Every inconsistent combination is refused here, by flag name, before
//! anything is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{AcmeChallenge, DnsProviderKind, ServeArgs, TsigAlgorithmKind};

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

impl TlsSettings {
    /// `Ok(None)`: plain HTTP only.
    pub fn from_args(args: &ServeArgs) -> Result<Option<TlsSettings>, TlsConfigError> {
        let mut domains: Vec<String> = args
            .acme_domains
            .iter()
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        if domains.is_empty()
            && let Some(host) = args
                .rthost
                .as_deref()
                .map(str::trim)
                .filter(|h| !h.is_empty())
        {
            domains.push(host.trim_end_matches('.').to_ascii_lowercase());
        }
        domains.dedup();
        let files = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (Some(_), None) => return Err(TlsConfigError::HalfPair("--tls-key")),
            (None, Some(_)) => return Err(TlsConfigError::HalfPair("--tls-cert")),
            (None, None) => None,
        };
        let mode = match (files, domains.is_empty()) {
            (None, true) => return Ok(None),
            (Some(_), false) => return Err(TlsConfigError::BothModes),
            (Some((cert, key)), true) => TlsMode::Files { cert, key },
            (None, false) => TlsMode::Acme(acme_settings(args, domains)?),
        };
        let http_listen = match args.http_listen.trim() {
            "off" | "none" | "" => None,
            addr => Some(
                addr.parse()
                    .map_err(|_| TlsConfigError::BadHttpListen(addr.to_string()))?,
            ),
        };
        if let TlsMode::Acme(acme) = &mode
            && acme.challenge == AcmeChallenge::Http01
            && http_listen.is_none()
        {
            return Err(TlsConfigError::Http01WithoutListener);
        }
        Ok(Some(TlsSettings {
            mode,
            http_listen,
            reload_interval: Duration::from_millis(args.tls_reload_interval_ms.max(10)),
        }))
    }
}

fn acme_settings(args: &ServeArgs, domains: Vec<String>) -> Result<AcmeSettings, TlsConfigError> {
    for domain in &domains {
        let name = domain.strip_prefix("*.").unwrap_or(domain);
        let valid = name.contains('.')
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(TlsConfigError::BadDomain(domain.clone()));
        }
    }
    let directory = match args.acme_directory.trim() {
        "staging" => LETS_ENCRYPT_STAGING.to_string(),
        "production" => LETS_ENCRYPT_PRODUCTION.to_string(),
        url if url.starts_with("https://") => url.to_string(),
        other => return Err(TlsConfigError::BadDirectory(other.to_string())),
    };
    let dns = dns_settings(args)?;
    let challenge = args.acme_challenge.unwrap_or(if dns.is_some() {
        AcmeChallenge::Dns01
    } else {
        AcmeChallenge::Http01
    });
    if challenge == AcmeChallenge::Dns01 && dns.is_none() {
        return Err(TlsConfigError::NoDnsProvider(
            "set CLOUDFLARE_API_TOKEN (or CLOUDFLARE_EMAIL + CLOUDFLARE_API_KEY), or --rfc2136-server with --rfc2136-tsig-key and --rfc2136-tsig-secret",
        ));
    }
    if challenge != AcmeChallenge::Dns01
        && let Some(wildcard) = domains.iter().find(|d| d.starts_with("*."))
    {
        return Err(TlsConfigError::WildcardNeedsDns(wildcard.clone()));
    }
    Ok(AcmeSettings {
        domains,
        email: args.acme_email.clone().filter(|e| !e.trim().is_empty()),
        directory,
        cache_dir: args.acme_cache_dir.clone(),
        challenge,
        ca_root: args.acme_ca_root.clone(),
        dns: if challenge == AcmeChallenge::Dns01 {
            dns
        } else {
            None
        },
        dns_wait: Duration::from_secs(args.acme_dns_wait_s),
    })
}

fn dns_settings(args: &ServeArgs) -> Result<Option<DnsSettings>, TlsConfigError> {
    let cloudflare = match (
        &args.cloudflare_api_token,
        &args.cloudflare_email,
        &args.cloudflare_api_key,
    ) {
        (Some(token), _, _) => Some(CloudflareAuth::Token(token.clone())),
        (None, Some(email), Some(key)) => Some(CloudflareAuth::GlobalKey {
            email: email.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let provider = match args.dns_provider {
        Some(kind) => Some(kind),
        None if cloudflare.is_some() => Some(DnsProviderKind::Cloudflare),
        None if args.rfc2136_server.is_some() => Some(DnsProviderKind::Rfc2136),
        None => None,
    };
    match provider {
        None => Ok(None),
        Some(DnsProviderKind::Cloudflare) => {
            let auth = cloudflare.ok_or_else(|| {
                TlsConfigError::Provider(
                    "--dns-provider cloudflare needs CLOUDFLARE_API_TOKEN, or CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY".into(),
                )
            })?;
            Ok(Some(DnsSettings::Cloudflare {
                api_url: args.cloudflare_api_url.trim_end_matches('/').to_string(),
                auth,
            }))
        }
        Some(DnsProviderKind::Rfc2136) => {
            let missing = |flag: &str| {
                TlsConfigError::Provider(format!("--dns-provider rfc2136 needs {flag}"))
            };
            Ok(Some(DnsSettings::Rfc2136 {
                server: args
                    .rfc2136_server
                    .clone()
                    .ok_or_else(|| missing("--rfc2136-server (RFC2136_NAMESERVER)"))?,
                zone: args.rfc2136_zone.clone(),
                key_name: args
                    .rfc2136_tsig_key
                    .clone()
                    .ok_or_else(|| missing("--rfc2136-tsig-key (RFC2136_TSIG_KEY)"))?,
                secret_base64: args
                    .rfc2136_tsig_secret
                    .clone()
                    .ok_or_else(|| missing("--rfc2136-tsig-secret (RFC2136_TSIG_SECRET)"))?,
                algorithm: args.rfc2136_tsig_algorithm,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<Option<TlsSettings>, TlsConfigError> {
        let args = std::iter::once("roomcast")
            .chain(args.iter().copied())
            .map(std::ffi::OsString::from)
            .collect();
        let cli = crate::config::parse_from(args, |_| None).unwrap();
        TlsSettings::from_args(&cli.serve)
    }

    fn acme(args: &[&str]) -> AcmeSettings {
        match settings(args).unwrap().unwrap().mode {
            TlsMode::Acme(acme) => acme,
            other => panic!("expected ACME, got {other:?}"),
        }
    }

    #[test]
    fn off_by_default_and_files_need_both_halves() {
        assert!(settings(&[]).unwrap().is_none());
        let err = settings(&["--tls-cert", "c.pem"]).unwrap_err();
        assert!(err.to_string().contains("--tls-key"), "{err}");
        let files = settings(&["--tls-cert", "c.pem", "--tls-key", "k.pem"])
            .unwrap()
            .unwrap();
        assert!(matches!(files.mode, TlsMode::Files { .. }));
        assert_eq!(files.http_listen, Some("0.0.0.0:80".parse().unwrap()));
        let err = settings(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--acme-domain",
            "a.example",
        ])
        .unwrap_err();
        assert!(matches!(err, TlsConfigError::BothModes));
    }

    #[test]
    fn acme_defaults_to_staging_and_http01() {
        let acme = acme(&["--acme-domain", "A.example.com.,b.example.com"]);
        assert_eq!(acme.domains, vec!["a.example.com", "b.example.com"]);
        assert_eq!(acme.directory, LETS_ENCRYPT_STAGING);
        assert_eq!(acme.challenge, AcmeChallenge::Http01);
        let acme = self::acme(&[
            "--acme-domain",
            "a.example.com",
            "--acme-directory",
            "production",
        ]);
        assert_eq!(acme.directory, LETS_ENCRYPT_PRODUCTION);
        let err =
            settings(&["--acme-domain", "a.example.com", "--acme-directory", "x"]).unwrap_err();
        assert!(matches!(err, TlsConfigError::BadDirectory(_)));
        let err = settings(&["--acme-domain", "localhost"]).unwrap_err();
        assert!(matches!(err, TlsConfigError::BadDomain(_)));
        let err =
            settings(&["--acme-domain", "a.example.com", "--http-listen", "off"]).unwrap_err();
        assert!(matches!(err, TlsConfigError::Http01WithoutListener));
    }

    #[test]
    fn the_seed_rthost_and_cloudflare_keys_mean_dns01_via_cloudflare() {
        let acme = acme(&[
            "--rthost",
            "rt.example.com",
            "--cloudflare-email",
            "ops@example.com",
            "--cloudflare-api-key",
            "key",
        ]);
        assert_eq!(acme.domains, vec!["rt.example.com"]);
        assert_eq!(acme.challenge, AcmeChallenge::Dns01);
        assert!(matches!(
            acme.dns,
            Some(DnsSettings::Cloudflare {
                auth: CloudflareAuth::GlobalKey { .. },
                ..
            })
        ));
    }

    #[test]
    fn dns01_needs_a_provider_and_wildcards_need_dns01() {
        let err = settings(&[
            "--acme-domain",
            "a.example.com",
            "--acme-challenge",
            "dns-01",
        ])
        .unwrap_err();
        assert!(matches!(err, TlsConfigError::NoDnsProvider(_)));
        let err = settings(&["--acme-domain", "*.example.com"]).unwrap_err();
        assert!(matches!(err, TlsConfigError::WildcardNeedsDns(_)));
        let err = settings(&[
            "--acme-domain",
            "a.example.com",
            "--rfc2136-server",
            "127.0.0.1:53",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("--rfc2136-tsig-key"), "{err}");
        let acme = acme(&[
            "--acme-domain",
            "*.example.com",
            "--rfc2136-server",
            "127.0.0.1:53",
            "--rfc2136-tsig-key",
            "k",
            "--rfc2136-tsig-secret",
            "c2VjcmV0",
        ]);
        assert_eq!(acme.challenge, AcmeChallenge::Dns01);
        assert!(matches!(acme.dns, Some(DnsSettings::Rfc2136 { .. })));
    }
}
