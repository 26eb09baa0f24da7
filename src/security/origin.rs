//! Origin checks for browser transports (Socket.IO polling and websocket
//! handshakes, `/ws` upgrades, `/sse`) and the CORS answers that go with
//! them.
//!
//! A request without `Origin` is not from a browser page and passes (native
//! clients, curl, server-to-server). With `Origin`, it passes when it is the
//! same origin as the request's `Host`, a `localhost`/loopback origin, or one
//! of `--allowed-origins` (exact `scheme://host[:port]`, `*.example.com`
//! subdomain globs, or `*` for any). Owns the decision only.

use http::HeaderMap;
use http::header;

/// The allowed origins.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    allowed: Vec<String>,
    any: bool,
}

impl Origins {
    pub fn new(allowed: &[String]) -> Self {
        let allowed: Vec<String> = allowed
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        Origins {
            any: allowed.iter().any(|o| o == "*"),
            allowed,
        }
    }

    /// Any origin passes (`--allowed-origins '*'`).
    pub fn allows_any(&self) -> bool {
        self.any
    }

    /// Checks the request's `Origin`. `Ok(Some(origin))` when a browser
    /// origin passed (reflect it in CORS answers), `Ok(None)` when there
    /// was none, `Err(origin)` when refused.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<String>, String> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(None);
        };
        let Ok(origin) = origin.to_str() else {
            return Err(String::from_utf8_lossy(origin.as_bytes()).into_owned());
        };
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if self.allows(origin, host) {
            Ok(Some(origin.to_owned()))
        } else {
            Err(origin.to_owned())
        }
    }

    fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if self.any {
            return true;
        }
        let origin_lc = origin.trim_end_matches('/').to_ascii_lowercase();
        let Some((_scheme, authority)) = origin_lc.split_once("://") else {
            // `null` (sandboxed iframes, file://) and garbage.
            return false;
        };
        if host.is_some_and(|host| host.eq_ignore_ascii_case(authority)) {
            return true;
        }
        let hostname = hostname(authority);
        if matches!(hostname, "localhost" | "127.0.0.1" | "[::1]")
            || hostname.ends_with(".localhost")
        {
            return true;
        }
        self.allowed.iter().any(|allowed| {
            if allowed == &origin_lc {
                return true;
            }
            // `https://*.example.com` matches subdomains (not the apex).
            match allowed.split_once("://*.") {
                Some((scheme, suffix)) => origin_lc
                    .strip_prefix(scheme)
                    .and_then(|rest| rest.strip_prefix("://"))
                    .is_some_and(|rest| rest.ends_with(&format!(".{suffix}"))),
                None => false,
            }
        })
    }
}

/// The host part of `host[:port]` (IPv6 kept in brackets).
fn hostname(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.split(':').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(origin) = origin {
            h.insert(header::ORIGIN, origin.parse().unwrap());
        }
        h.insert(header::HOST, host.parse().unwrap());
        h
    }

    #[test]
    fn default_is_same_origin_plus_localhost() {
        let o = Origins::new(&[]);
        assert_eq!(o.check(&headers(None, "rc.example.com")), Ok(None));
        assert!(
            o.check(&headers(Some("https://rc.example.com"), "rc.example.com"))
                .is_ok()
        );
        assert!(
            o.check(&headers(Some("http://localhost:3000"), "rc.example.com"))
                .is_ok()
        );
        assert!(
            o.check(&headers(Some("http://127.0.0.1:5173"), "rc.example.com"))
                .is_ok()
        );
        assert!(o.check(&headers(Some("http://[::1]:8080"), "x")).is_ok());
        assert_eq!(
            o.check(&headers(Some("https://evil.example"), "rc.example.com")),
            Err("https://evil.example".into())
        );
        assert!(o.check(&headers(Some("null"), "rc.example.com")).is_err());
        assert!(
            o.check(&headers(Some("http://localhost.evil.com"), "x"))
                .is_err()
        );
    }

    #[test]
    fn configured_origins_and_globs() {
        let o = Origins::new(&[
            "https://app.example.com/".into(),
            "https://*.corp.example".into(),
        ]);
        assert!(
            o.check(&headers(Some("https://app.example.com"), "rc"))
                .is_ok()
        );
        assert!(
            o.check(&headers(Some("http://app.example.com"), "rc"))
                .is_err()
        );
        assert!(
            o.check(&headers(Some("https://a.b.corp.example"), "rc"))
                .is_ok()
        );
        assert!(
            o.check(&headers(Some("https://corp.example"), "rc"))
                .is_err()
        );
        assert!(
            o.check(&headers(Some("https://evilcorp.example"), "rc"))
                .is_err()
        );
        let any = Origins::new(&["*".into()]);
        assert!(any.check(&headers(Some("https://anything"), "rc")).is_ok());
    }
}
