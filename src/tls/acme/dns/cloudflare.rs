//! Cloudflare DNS through its v4 API: find the zone (`GET /zones?name=`),
//! create the TXT record (`POST /zones/{zone}/dns_records`), delete it
//! (`DELETE /zones/{zone}/dns_records/{id}`). Auth with an API token
//! (`Authorization: Bearer`) or, as the seed did, the account e-mail and
//! global API key (`X-Auth-Email` + `X-Auth-Key`).

use bytes::Bytes;
use futures_util::future::BoxFuture;
use instant_acme::BodyWrapper;
use serde::Deserialize;

use super::{DnsError, DnsProvider, TxtRecord, zone_candidates};
use crate::tls::acme::http_client::HttpsClient;
use crate::tls::settings::CloudflareAuth;

const NAME: &str = "cloudflare";

pub struct Cloudflare {
    client: HttpsClient,
    api_url: String,
    auth: CloudflareAuth,
}

/// Cloudflare's response envelope.
#[derive(Deserialize)]
struct Envelope<T> {
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    result: Option<T>,
}

#[derive(Deserialize)]
struct ApiMessage {
    code: i64,
    message: String,
}

#[derive(Deserialize)]
struct Zone {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct Record {
    id: String,
}

fn fail(message: impl Into<String>) -> DnsError {
    DnsError {
        provider: NAME,
        message: message.into(),
    }
}

impl Cloudflare {
    pub fn new(client: HttpsClient, api_url: String, auth: CloudflareAuth) -> Self {
        Cloudflare {
            client,
            api_url,
            auth,
        }
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, DnsError> {
        let url = format!("{}{path}", self.api_url);
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(&url)
            .header("content-type", "application/json");
        request = match &self.auth {
            CloudflareAuth::Token(token) => {
                request.header("authorization", format!("Bearer {token}"))
            }
            CloudflareAuth::GlobalKey { email, key } => request
                .header("x-auth-email", email)
                .header("x-auth-key", key),
        };
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let request = request
            .body(BodyWrapper::from(body))
            .map_err(|e| fail(format!("{method} {url}: {e}")))?;
        let (status, bytes): (_, Bytes) = self
            .client
            .send(request)
            .await
            .map_err(|e| fail(format!("{method} {url}: {e}")))?;
        let envelope: Envelope<T> = serde_json::from_slice(&bytes).map_err(|e| {
            fail(format!(
                "{method} {url}: HTTP {status}, not a Cloudflare API answer ({e}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        if !envelope.success || !status.is_success() {
            let errors: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{} (code {})", e.message, e.code))
                .collect();
            return Err(fail(format!(
                "{method} {path}: HTTP {status}: {}",
                if errors.is_empty() {
                    "unsuccessful, no error given".to_string()
                } else {
                    errors.join("; ")
                }
            )));
        }
        envelope
            .result
            .ok_or_else(|| fail(format!("{method} {path}: answer without a result")))
    }

    /// The zone holding `fqdn`: the longest candidate Cloudflare knows.
    async fn zone_of(&self, fqdn: &str) -> Result<Zone, DnsError> {
        for candidate in zone_candidates(fqdn).into_iter().skip(1) {
            let zones: Vec<Zone> = self
                .call(http::Method::GET, &format!("/zones?name={candidate}"), None)
                .await?;
            if let Some(zone) = zones.into_iter().find(|z| z.name == candidate) {
                return Ok(zone);
            }
        }
        Err(fail(format!(
            "no zone for {fqdn} in this Cloudflare account (or the token may not read it)"
        )))
    }
}

impl DnsProvider for Cloudflare {
    fn name(&self) -> &'static str {
        NAME
    }

    fn add_txt<'a>(
        &'a self,
        fqdn: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<TxtRecord, DnsError>> {
        Box::pin(async move {
            let zone = self.zone_of(fqdn).await?;
            let record: Record = self
                .call(
                    http::Method::POST,
                    &format!("/zones/{}/dns_records", zone.id),
                    Some(serde_json::json!({
                        "type": "TXT",
                        "name": fqdn,
                        "content": value,
                        "ttl": 60,
                        "comment": "roomcast ACME DNS-01 challenge",
                    })),
                )
                .await?;
            Ok(TxtRecord {
                fqdn: fqdn.to_string(),
                value: value.to_string(),
                handle: vec![zone.id, record.id],
            })
        })
    }

    fn remove_txt<'a>(&'a self, record: &'a TxtRecord) -> BoxFuture<'a, Result<(), DnsError>> {
        Box::pin(async move {
            let [zone, id] = record.handle.as_slice() else {
                return Err(fail("record handle without zone and record ids"));
            };
            let _: serde_json::Value = self
                .call(
                    http::Method::DELETE,
                    &format!("/zones/{zone}/dns_records/{id}"),
                    None,
                )
                .await?;
            Ok(())
        })
    }
}
