//! HTTPS: certificate files or ACME (domains, directory, challenge, DNS
//! provider), and the plain-HTTP listener beside HTTPS.
//!
//! Turned into one `tls::TlsSettings` here only ([`TlsArgs::settings`]):
//! off, certificate files, or ACME with its challenge and DNS provider.
//! Every inconsistent combination is refused here, by flag name, before
//! anything is bound.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::tls::settings::{
    AcmeChallenge, AcmeSettings, CloudflareAuth, DnsProviderKind, DnsSettings,
    LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING, TlsConfigError, TlsMode, TlsSettings,
    TsigAlgorithmKind,
};

#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// HTTPS from files: PEM certificate chain (reloaded when it changes on disk). Needs --tls-key.
    #[arg(
        long,
        env = "ROOMCAST_TLS_CERT",
        value_name = "PEM",
        help_heading = "HTTPS"
    )]
    pub tls_cert: Option<PathBuf>,

    /// HTTPS from files: PEM private key (PKCS#8, PKCS#1 or SEC1), reloaded with the certificate.
    #[arg(
        long,
        env = "ROOMCAST_TLS_KEY",
        value_name = "PEM",
        help_heading = "HTTPS"
    )]
    pub tls_key: Option<PathBuf>,

    /// Plain-HTTP listener when HTTPS is on: ACME HTTP-01 answers, /healthz, and a redirect to
    /// https:// for everything else. `off` disables it.
    #[arg(
        long,
        env = "ROOMCAST_HTTP_LISTEN",
        default_value = "0.0.0.0:80",
        value_name = "ADDR|off",
        help_heading = "HTTPS"
    )]
    pub http_listen: String,

    /// How often --tls-cert/--tls-key are checked for changes, milliseconds.
    #[arg(
        long,
        env = "ROOMCAST_TLS_RELOAD_INTERVAL_MS",
        default_value_t = 5_000,
        hide = true
    )]
    pub tls_reload_interval_ms: u64,

    /// HTTPS over ACME: a domain to obtain a certificate for (repeatable, or comma-separated).
    #[arg(
        long = "acme-domain",
        env = "ROOMCAST_ACME_DOMAIN",
        value_delimiter = ',',
        value_name = "DOMAIN",
        help_heading = "HTTPS"
    )]
    pub acme_domains: Vec<String>,

    /// Seed compatibility: the domain to obtain a certificate for (used when --acme-domain is not set).
    #[arg(long, env = "RTHOST", hide_short_help = true, help_heading = "HTTPS")]
    pub rthost: Option<String>,

    /// Contact e-mail for the ACME account (expiry notices from the CA).
    #[arg(long, env = "ROOMCAST_ACME_EMAIL", help_heading = "HTTPS")]
    pub acme_email: Option<String>,

    /// ACME directory: `staging` (Let's Encrypt staging, untrusted test certificates), `production`
    /// (Let's Encrypt), or any directory URL.
    #[arg(
        long,
        env = "ROOMCAST_ACME_DIRECTORY",
        default_value = "staging",
        help_heading = "HTTPS"
    )]
    pub acme_directory: String,

    /// Where the ACME account key and certificates are kept (0600). Mount it as a volume in containers.
    #[arg(
        long,
        env = "ROOMCAST_ACME_CACHE_DIR",
        default_value = "roomcast-acme",
        help_heading = "HTTPS"
    )]
    pub acme_cache_dir: PathBuf,

    /// ACME challenge. Default: dns-01 when DNS provider credentials are given, else http-01.
    #[arg(
        long,
        env = "ROOMCAST_ACME_CHALLENGE",
        value_enum,
        help_heading = "HTTPS"
    )]
    pub acme_challenge: Option<AcmeChallenge>,

    /// Extra PEM root CA trusted for the ACME directory (a private or test CA such as pebble).
    #[arg(
        long,
        env = "ROOMCAST_ACME_CA_ROOT",
        value_name = "PEM",
        help_heading = "HTTPS"
    )]
    pub acme_ca_root: Option<PathBuf>,

    /// DNS-01: seconds to wait after the TXT record is set before asking the CA to validate.
    #[arg(
        long,
        env = "ROOMCAST_ACME_DNS_WAIT_S",
        default_value_t = 30,
        help_heading = "HTTPS"
    )]
    pub acme_dns_wait_s: u64,

    /// DNS-01 provider. Default: whichever provider's settings are given.
    #[arg(
        long,
        env = "ROOMCAST_DNS_PROVIDER",
        value_enum,
        help_heading = "HTTPS"
    )]
    pub dns_provider: Option<DnsProviderKind>,

    /// Cloudflare API token with Zone:DNS:Edit permission.
    #[arg(
        long,
        env = "CLOUDFLARE_API_TOKEN",
        hide_env_values = true,
        help_heading = "HTTPS"
    )]
    pub cloudflare_api_token: Option<String>,

    /// Seed compatibility: Cloudflare account e-mail for the global API key.
    #[arg(long, env = "CLOUDFLARE_EMAIL", help_heading = "HTTPS")]
    pub cloudflare_email: Option<String>,

    /// Seed compatibility: Cloudflare global API key (with CLOUDFLARE_EMAIL).
    #[arg(
        long,
        env = "CLOUDFLARE_API_KEY",
        hide_env_values = true,
        help_heading = "HTTPS"
    )]
    pub cloudflare_api_key: Option<String>,

    /// Cloudflare API base URL.
    #[arg(
        long,
        env = "CLOUDFLARE_API_URL",
        default_value = "https://api.cloudflare.com/client/v4",
        hide = true
    )]
    pub cloudflare_api_url: String,

    /// RFC 2136: primary name server that accepts dynamic updates, host:port.
    #[arg(long, env = "RFC2136_NAMESERVER", help_heading = "HTTPS")]
    pub rfc2136_server: Option<String>,

    /// RFC 2136: the zone to update (e.g. example.com). Default: the domain's parent.
    #[arg(long, env = "RFC2136_ZONE", help_heading = "HTTPS")]
    pub rfc2136_zone: Option<String>,

    /// RFC 2136: TSIG key name.
    #[arg(long, env = "RFC2136_TSIG_KEY", help_heading = "HTTPS")]
    pub rfc2136_tsig_key: Option<String>,

    /// RFC 2136: TSIG secret, base64.
    #[arg(
        long,
        env = "RFC2136_TSIG_SECRET",
        hide_env_values = true,
        help_heading = "HTTPS"
    )]
    pub rfc2136_tsig_secret: Option<String>,

    /// RFC 2136: TSIG algorithm.
    #[arg(
        long,
        env = "RFC2136_TSIG_ALGORITHM",
        value_enum,
        default_value = "hmac-sha256",
        help_heading = "HTTPS"
    )]
    pub rfc2136_tsig_algorithm: TsigAlgorithmKind,
}

impl TlsArgs {
    /// `Ok(None)`: plain HTTP only.
    pub fn settings(&self) -> Result<Option<TlsSettings>, TlsConfigError> {
        let mut domains: Vec<String> = self
            .acme_domains
            .iter()
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        if domains.is_empty()
            && let Some(host) = self
                .rthost
                .as_deref()
                .map(str::trim)
                .filter(|h| !h.is_empty())
        {
            domains.push(host.trim_end_matches('.').to_ascii_lowercase());
        }
        domains.dedup();
        let files = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (Some(_), None) => return Err(TlsConfigError::HalfPair("--tls-key")),
            (None, Some(_)) => return Err(TlsConfigError::HalfPair("--tls-cert")),
            (None, None) => None,
        };
        let mode = match (files, domains.is_empty()) {
            (None, true) => return Ok(None),
            (Some(_), false) => return Err(TlsConfigError::BothModes),
            (Some((cert, key)), true) => TlsMode::Files { cert, key },
            (None, false) => TlsMode::Acme(acme_settings(self, domains)?),
        };
        let http_listen = match self.http_listen.trim() {
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
            reload_interval: Duration::from_millis(self.tls_reload_interval_ms.max(10)),
        }))
    }
}

fn acme_settings(args: &TlsArgs, domains: Vec<String>) -> Result<AcmeSettings, TlsConfigError> {
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

fn dns_settings(args: &TlsArgs) -> Result<Option<DnsSettings>, TlsConfigError> {
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
        cli.serve.tls.settings()
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
