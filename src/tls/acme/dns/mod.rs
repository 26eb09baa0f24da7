//! DNS-01 providers: set and remove the `_acme-challenge` TXT record.
//! One trait, one file per provider, so users are not tied to one vendor.

pub mod cloudflare;
pub mod rfc2136;

use futures_util::future::BoxFuture;

/// A TXT record a provider created, with what it needs to remove it.
#[derive(Clone, Debug)]
pub struct TxtRecord {
    pub fqdn: String,
    pub value: String,
    /// Provider data: Cloudflare's zone and record ids, RFC 2136's zone.
    pub handle: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{provider}: {message}")]
pub struct DnsError {
    pub provider: &'static str,
    pub message: String,
}

pub trait DnsProvider: Send + Sync {
    fn name(&self) -> &'static str;

    /// Adds TXT `fqdn` = `value` (alongside any other values: a name with
    /// a wildcard and its base domain carries two at once).
    fn add_txt<'a>(
        &'a self,
        fqdn: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<TxtRecord, DnsError>>;

    /// Removes exactly that record.
    fn remove_txt<'a>(&'a self, record: &'a TxtRecord) -> BoxFuture<'a, Result<(), DnsError>>;
}

/// The name DNS-01 validates for `domain` (a wildcard's base name).
pub fn challenge_name(domain: &str) -> String {
    format!(
        "_acme-challenge.{}",
        domain.trim_start_matches("*.").trim_end_matches('.')
    )
}

/// `a.b.example.com` -> `a.b.example.com`, `b.example.com`, `example.com`.
pub fn zone_candidates(name: &str) -> Vec<String> {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    (0..labels.len().saturating_sub(1))
        .map(|i| labels[i..].join("."))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_zone_candidates() {
        assert_eq!(
            challenge_name("*.example.com"),
            "_acme-challenge.example.com"
        );
        assert_eq!(
            zone_candidates("www.example.com"),
            vec!["www.example.com", "example.com"]
        );
        assert!(zone_candidates("com").is_empty());
    }
}
