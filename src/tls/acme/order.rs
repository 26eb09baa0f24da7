//! One issuance: new order, answer each authorization's challenge, wait
//! for the CA to validate, finalize with a fresh key's CSR, download the
//! chain. Challenge answers are removed afterwards whatever happened.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::AcmeError;
use super::dns::{DnsProvider, TxtRecord, challenge_name};
use crate::tls::provider;
use crate::tls::redirect::Http01Tokens;
use crate::tls::resolver::CertResolver;
use crate::tls::settings::{AcmeChallenge, AcmeSettings};

/// How a challenge is answered.
pub struct Responder {
    pub http01: Http01Tokens,
    pub resolver: Arc<CertResolver>,
    pub dns: Option<Arc<dyn DnsProvider>>,
}

/// What was put in place for one authorization, to take down afterwards.
enum Installed {
    Http01(String),
    TlsAlpn01(String),
    Dns01(TxtRecord),
}

pub fn challenge_label(challenge: AcmeChallenge) -> &'static str {
    match challenge {
        AcmeChallenge::Http01 => "http-01",
        AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        AcmeChallenge::Dns01 => "dns-01",
    }
}

fn challenge_type(challenge: AcmeChallenge) -> ChallengeType {
    match challenge {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Dns01 => ChallengeType::Dns01,
    }
}

/// Runs one order to the end: (certificate chain PEM, private key PEM).
pub async fn issue(
    account: &Account,
    settings: &AcmeSettings,
    responder: &Responder,
) -> Result<(String, String), AcmeError> {
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|source| AcmeError::Order {
            domains: settings.domains.join(", "),
            source,
        })?;
    tracing::info!(order = order.url(), domains = ?settings.domains, "ACME order created");
    let mut installed = Vec::new();
    let result = validate(&mut order, settings, responder, &mut installed).await;
    for item in installed {
        remove(responder, item).await;
    }
    result?;

    let key = rcgen::KeyPair::generate().map_err(AcmeError::Csr)?;
    let mut params =
        rcgen::CertificateParams::new(settings.domains.clone()).map_err(AcmeError::Csr)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(AcmeError::Csr)?;
    let finalize = |source| AcmeError::Finalize {
        domains: settings.domains.join(", "),
        source,
    };
    order.finalize_csr(csr.der()).await.map_err(finalize)?;
    let chain = order
        .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(120)))
        .await
        .map_err(finalize)?;
    Ok((chain, key.serialize_pem()))
}

async fn validate(
    order: &mut instant_acme::Order,
    settings: &AcmeSettings,
    responder: &Responder,
    installed: &mut Vec<Installed>,
) -> Result<(), AcmeError> {
    let kind = challenge_type(settings.challenge);
    let label = challenge_label(settings.challenge);
    // Pass 1: put every answer in place.
    let mut pending = 0;
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(|source| AcmeError::Order {
            domains: settings.domains.join(", "),
            source,
        })?;
        let domain = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(AcmeError::Challenge {
                    domain,
                    challenge: label,
                    detail: format!("authorization is {status:?} before we answered"),
                });
            }
        }
        let challenge =
            authorization
                .challenge(kind.clone())
                .ok_or_else(|| AcmeError::Challenge {
                    domain: domain.clone(),
                    challenge: label,
                    detail: "the CA does not offer this challenge for this name".into(),
                })?;
        let key_authorization = challenge.key_authorization();
        let item = match settings.challenge {
            AcmeChallenge::Http01 => {
                responder
                    .http01
                    .insert(&challenge.token, key_authorization.as_str());
                Installed::Http01(challenge.token.clone())
            }
            AcmeChallenge::TlsAlpn01 => {
                let certificate = alpn_certificate(&domain, key_authorization.digest().as_ref())
                    .map_err(|detail| AcmeError::Challenge {
                        domain: domain.clone(),
                        challenge: label,
                        detail,
                    })?;
                responder.resolver.add_challenge(&domain, certificate);
                Installed::TlsAlpn01(domain.clone())
            }
            AcmeChallenge::Dns01 => {
                let provider = responder.dns.as_ref().ok_or_else(|| AcmeError::Challenge {
                    domain: domain.clone(),
                    challenge: label,
                    detail: "no DNS provider configured".into(),
                })?;
                let fqdn = challenge_name(&domain);
                let record = provider
                    .add_txt(&fqdn, &key_authorization.dns_value())
                    .await
                    .map_err(|e| AcmeError::Challenge {
                        domain: domain.clone(),
                        challenge: label,
                        detail: format!("cannot set TXT {fqdn}: {e}"),
                    })?;
                tracing::info!(%domain, record = %fqdn, provider = provider.name(), "DNS-01 TXT record set");
                Installed::Dns01(record)
            }
        };
        installed.push(item);
        pending += 1;
    }
    if pending == 0 {
        return Ok(());
    }
    if settings.challenge == AcmeChallenge::Dns01 && !settings.dns_wait.is_zero() {
        tracing::info!(wait = ?settings.dns_wait, "waiting for the TXT records to propagate");
        tokio::time::sleep(settings.dns_wait).await;
    }
    // Pass 2: tell the CA to validate.
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(|source| AcmeError::Order {
            domains: settings.domains.join(", "),
            source,
        })?;
        if authorization.status != AuthorizationStatus::Pending {
            continue;
        }
        let domain = authorization.identifier().to_string();
        if let Some(mut challenge) = authorization.challenge(kind.clone()) {
            challenge
                .set_ready()
                .await
                .map_err(|e| AcmeError::Challenge {
                    domain,
                    challenge: label,
                    detail: e.to_string(),
                })?;
        }
    }
    let status = order
        .poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(120)))
        .await
        .map_err(|e| AcmeError::Challenge {
            domain: settings.domains.join(", "),
            challenge: label,
            detail: e.to_string(),
        })?;
    if status == OrderStatus::Ready {
        return Ok(());
    }
    // Say which name failed and what the CA saw.
    let mut problems = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        for challenge in &authorization.challenges {
            if let Some(error) = &challenge.error {
                problems.push(format!("{}: {error}", authorization.identifier()));
            }
        }
    }
    Err(AcmeError::Challenge {
        domain: settings.domains.join(", "),
        challenge: label,
        detail: if problems.is_empty() {
            format!("order is {status:?}")
        } else {
            problems.join("; ")
        },
    })
}

async fn remove(responder: &Responder, item: Installed) {
    match item {
        Installed::Http01(token) => responder.http01.remove(&token),
        Installed::TlsAlpn01(domain) => responder.resolver.remove_challenge(&domain),
        Installed::Dns01(record) => {
            if let Some(provider) = &responder.dns
                && let Err(error) = provider.remove_txt(&record).await
            {
                tracing::warn!(record = %record.fqdn, %error, "cannot remove the DNS-01 TXT record; remove it by hand");
            }
        }
    }
}

/// The self-signed certificate TLS-ALPN-01 validates (RFC 8737 §3).
fn alpn_certificate(domain: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}
