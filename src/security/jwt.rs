//! Connection tokens: JWT verification with keys from `--jwt-secret`
//! (HS256/384/512), `--jwt-public-key` (an RSA, EC or Ed25519 PEM) and
//! `--jwks-file` (reloaded when the file changes), and the roomcast claims
//! (`sub`, `channels`, `publish`).
//!
//! The accepted algorithms come from each key's type, never from the token:
//! an HMAC secret accepts only HS*, an RSA key only RS*/PS*, and so on, so
//! `alg: none` (not an algorithm the library knows) and algorithm confusion
//! (an RS256 public key used as an HS256 secret) are refused. Never logs a
//! token or a key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use crate::shutdown::Shutdown;

/// Longest token accepted, bytes (checked before any decoding).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How often the JWKS file's modification time is checked.
const JWKS_POLL: Duration = Duration::from_secs(1);

/// Settings of the verifier (from `config`).
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    pub secret: Option<String>,
    pub public_key: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub audience: Vec<String>,
    pub issuer: Vec<String>,
    pub leeway_s: u64,
}

/// A key and the validation that goes with its type.
struct KeyEntry {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

/// What a valid token says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    /// Room names or globs the token may subscribe to, `{sub}` expanded.
    pub channels: Vec<String>,
    /// Room names or globs the token may publish to.
    pub publish: Vec<String>,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// Why a token was refused: a stable code and a message for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Missing,
    Invalid,
    Expired,
    NotYetValid,
    Signature,
    Algorithm,
    Audience,
    Issuer,
    UnknownKey,
}

impl TokenError {
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Invalid => "token_invalid",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::Signature => "token_bad_signature",
            TokenError::Algorithm => "token_bad_algorithm",
            TokenError::Audience => "token_bad_audience",
            TokenError::Issuer => "token_bad_issuer",
            TokenError::UnknownKey => "token_unknown_key",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            TokenError::Missing => "a connection token is required",
            TokenError::Invalid => "the token is not a valid JWT with roomcast claims",
            TokenError::Expired => "the token has expired",
            TokenError::NotYetValid => "the token is not valid yet (nbf)",
            TokenError::Signature => "the token's signature does not verify",
            TokenError::Algorithm => "the token's algorithm is not accepted for the server's keys",
            TokenError::Audience => "the token's audience (aud) is not accepted",
            TokenError::Issuer => "the token's issuer (iss) is not accepted",
            TokenError::UnknownKey => "no key for the token's key id (kid)",
        }
    }
}

fn token_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => TokenError::Algorithm,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        _ => TokenError::Invalid,
    }
}

/// Why the keys could not be loaded at startup.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("--auth jwt needs --jwt-secret, --jwt-public-key or --jwks-file")]
    NoKey,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an RSA, EC (P-256/P-384) or Ed25519 public key in PEM form")]
    BadPem { path: PathBuf },
    #[error("{path}: not a JWKS document with usable keys: {reason}")]
    BadJwks { path: PathBuf, reason: String },
}

/// Verifies tokens. Shared; the JWKS keys swap atomically on reload.
pub struct Verifier {
    fixed: Vec<KeyEntry>,
    jwks: RwLock<Arc<Vec<KeyEntry>>>,
    settings: JwtSettings,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        f.debug_struct("Verifier")
            .field("fixed_keys", &self.fixed.len())
            .field("jwks_file", &self.settings.jwks_file)
            .finish()
    }
}

impl Verifier {
    pub fn new(settings: JwtSettings) -> Result<Arc<Self>, KeyError> {
        let mut fixed = Vec::new();
        if let Some(secret) = &settings.secret {
            if secret.len() < 32 {
                tracing::warn!(
                    bytes = secret.len(),
                    "--jwt-secret is shorter than 32 bytes; HMAC tokens are only as strong as it"
                );
            }
            let key = DecodingKey::from_secret(secret.as_bytes());
            let validation = validation(
                &settings,
                &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            );
            fixed.push(KeyEntry {
                kid: None,
                key,
                validation,
            });
        }
        if let Some(path) = &settings.public_key {
            let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                path: path.clone(),
                source,
            })?;
            let (key, algorithms) =
                pem_key(&pem).ok_or_else(|| KeyError::BadPem { path: path.clone() })?;
            fixed.push(KeyEntry {
                kid: None,
                key,
                validation: validation(&settings, algorithms),
            });
        }
        let jwks = match &settings.jwks_file {
            Some(path) => load_jwks(path, &settings)?,
            None => Vec::new(),
        };
        if fixed.is_empty() && settings.jwks_file.is_none() {
            return Err(KeyError::NoKey);
        }
        Ok(Arc::new(Verifier {
            fixed,
            jwks: RwLock::new(Arc::new(jwks)),
            settings,
        }))
    }

    /// Verifies `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // `alg: none` (or any unknown alg) fails to parse as a header.
            ErrorKind::Json(_) if token_alg_is_unknown(token) => TokenError::Algorithm,
            kind => token_error(kind),
        })?;
        let jwks = self.jwks_keys();
        let candidates =
            self.fixed
                .iter()
                .chain(jwks.iter())
                .filter(|entry| match (&header.kid, &entry.kid) {
                    (Some(wanted), Some(kid)) => wanted == kid,
                    _ => true,
                });
        let mut outcome = Err(if header.kid.is_some() && !jwks.is_empty() {
            TokenError::UnknownKey
        } else {
            TokenError::Algorithm
        });
        for entry in candidates {
            if !entry.validation.algorithms.contains(&header.alg) {
                continue;
            }
            match jsonwebtoken::decode::<RawClaims>(token, &entry.key, &entry.validation) {
                Ok(data) => return Ok(claims(data.claims)),
                Err(error) => outcome = Err(token_error(error.kind())),
            }
        }
        outcome
    }

    fn jwks_keys(&self) -> Arc<Vec<KeyEntry>> {
        self.jwks
            .read()
            .map(|keys| keys.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Watches the JWKS file (if any) and swaps in its keys when it changes;
    /// a broken file keeps the previous keys and logs why.
    pub fn watch(self: &Arc<Self>, shutdown: &Shutdown) {
        let Some(path) = self.settings.jwks_file.clone() else {
            return;
        };
        let verifier = self.clone();
        let stop = shutdown.clone();
        shutdown.spawn(async move {
            let mut seen = modified(&path).await;
            let mut tick = tokio::time::interval(JWKS_POLL);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.requested() => break,
                }
                let now = modified(&path).await;
                if now == seen {
                    continue;
                }
                seen = now;
                let settings = verifier.settings.clone();
                let path = path.clone();
                let loaded = tokio::task::spawn_blocking(move || load_jwks(&path, &settings)).await;
                match loaded {
                    Ok(Ok(keys)) => {
                        tracing::info!(keys = keys.len(), "JWKS file reloaded");
                        let mut slot = verifier
                            .jwks
                            .write()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        *slot = Arc::new(keys);
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "JWKS file not reloaded; keeping the previous keys")
                    }
                    Err(error) => tracing::warn!(%error, "JWKS reload task failed"),
                }
            }
        });
    }
}

async fn modified(path: &Path) -> Option<SystemTime> {
    tokio::fs::metadata(path).await.ok()?.modified().ok()
}

fn token_alg_is_unknown(token: &str) -> bool {
    use base64::Engine as _;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.trim_end_matches('='))
    else {
        return false;
    };
    #[derive(Deserialize)]
    struct Alg {
        alg: serde_json::Value,
    }
    serde_json::from_slice::<Alg>(&bytes).is_ok_and(|h| {
        h.alg
            .as_str()
            .is_none_or(|alg| alg.parse::<Algorithm>().is_err())
    })
}

fn claims(raw: RawClaims) -> Claims {
    let sub = raw.sub.unwrap_or_default();
    let expand = |patterns: Vec<String>| -> Vec<String> {
        patterns
            .into_iter()
            .filter_map(|p| {
                if p.contains("{sub}") {
                    // A `{sub}` pattern needs a subject; without one it grants
                    // nothing. Nor with a `*` in it: the expansion is a glob, so
                    // subject `u*` would be granted `user:u1`, `user:u2`, ...
                    let usable = !sub.is_empty() && !sub.contains('*');
                    if !usable && !sub.is_empty() {
                        tracing::debug!(pattern = %p, "`{{sub}}` grant ignored: the subject contains `*`");
                    }
                    usable.then(|| p.replace("{sub}", &sub))
                } else {
                    Some(p)
                }
            })
            .collect()
    };
    Claims {
        channels: expand(raw.channels),
        publish: expand(raw.publish),
        sub,
    }
}

fn validation(settings: &JwtSettings, algorithms: &[Algorithm]) -> Validation {
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms.to_vec();
    validation.leeway = settings.leeway_s;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    // exp is checked when present; tokens without one never expire (as Centrifugo).
    validation.required_spec_claims.clear();
    if !settings.audience.is_empty() {
        validation.set_audience(&settings.audience);
        validation.required_spec_claims.insert("aud".into());
    } else {
        validation.validate_aud = false;
    }
    if !settings.issuer.is_empty() {
        validation.set_issuer(&settings.issuer);
        validation.required_spec_claims.insert("iss".into());
    }
    validation
}

const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// A public key PEM and the algorithms its type allows.
fn pem_key(pem: &[u8]) -> Option<(DecodingKey, &'static [Algorithm])> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Some((key, RSA_ALGS));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Some((key, &[Algorithm::EdDSA]));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Some((key, &[Algorithm::ES256, Algorithm::ES384]));
    }
    None
}

fn load_jwks(path: &Path, settings: &JwtSettings) -> Result<Vec<KeyEntry>, KeyError> {
    let bad = |reason: String| KeyError::BadJwks {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let set: JwkSet = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let algorithms: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA_ALGS,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => continue,
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                &[Algorithm::EdDSA]
            }
            // Symmetric keys do not belong in a published key set.
            _ => continue,
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        keys.push(KeyEntry {
            kid: jwk.common.key_id.clone(),
            key,
            validation: validation(settings, algorithms),
        });
    }
    if keys.is_empty() {
        return Err(bad("no RSA, EC or Ed25519 verification key".into()));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!";

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jwt")
            .join(name)
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    fn secret_verifier() -> Arc<Verifier> {
        Verifier::new(JwtSettings {
            secret: Some(SECRET.into()),
            leeway_s: 5,
            ..JwtSettings::default()
        })
        .unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn hmac_tokens_and_their_claims() {
        let v = secret_verifier();
        let token = hs(
            json!({"sub": "u1", "channels": ["device:*", "user:{sub}"], "publish": ["chat:{sub}"], "exp": now() + 60}),
        );
        assert_eq!(
            v.verify(&token),
            Ok(Claims {
                sub: "u1".into(),
                channels: vec!["device:*".into(), "user:u1".into()],
                publish: vec!["chat:u1".into()],
            })
        );
        // No sub: `{sub}` patterns grant nothing.
        let token = hs(json!({"channels": ["user:{sub}", "a"]}));
        assert_eq!(v.verify(&token).unwrap().channels, vec!["a"]);
    }

    #[test]
    fn a_subject_with_a_star_gets_no_sub_grants() {
        // Checked by the token_claims fuzz target: `user:{sub}` with subject
        // `u*` became the glob `user:u*`, granting every `user:u...` room.
        let v = secret_verifier();
        let token = hs(
            json!({"sub": "u*", "channels": ["user:{sub}", "device:*"], "publish": ["chat:{sub}"]}),
        );
        let claims = v.verify(&token).unwrap();
        assert_eq!(claims.sub, "u*");
        assert_eq!(claims.channels, vec!["device:*"]);
        assert!(claims.publish.is_empty());
    }

    #[test]
    fn time_claims_are_checked_with_leeway() {
        let v = secret_verifier();
        assert_eq!(
            v.verify(&hs(json!({"exp": now() - 60}))),
            Err(TokenError::Expired)
        );
        assert_eq!(
            v.verify(&hs(json!({"nbf": now() + 60}))),
            Err(TokenError::NotYetValid)
        );
        assert!(
            v.verify(&hs(json!({"exp": now() - 2}))).is_ok(),
            "5 s leeway"
        );
    }

    #[test]
    fn forged_malformed_and_none_tokens_are_refused() {
        let v = secret_verifier();
        let token = hs(json!({"sub": "u1"}));
        // Flip one character in the middle of the signature.
        let mut forged: Vec<char> = token.chars().collect();
        let i = token.rfind('.').unwrap() + 10;
        forged[i] = if forged[i] == 'A' { 'B' } else { 'A' };
        let forged: String = forged.into_iter().collect();
        assert_eq!(v.verify(&forged), Err(TokenError::Signature));
        let other = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "u1"}),
            &EncodingKey::from_secret(b"another secret another secret!!!"),
        )
        .unwrap();
        assert_eq!(v.verify(&other), Err(TokenError::Signature));
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(br#"{"sub":"admin","channels":["*"]}"#)
        );
        assert_eq!(v.verify(&none), Err(TokenError::Algorithm));
        assert_eq!(v.verify(""), Err(TokenError::Missing));
        assert_eq!(v.verify("a.b"), Err(TokenError::Invalid));
        assert_eq!(v.verify("not a token"), Err(TokenError::Invalid));
        assert_eq!(v.verify(&"a".repeat(20_000)), Err(TokenError::Invalid));
        // Claims of the wrong type.
        assert_eq!(
            v.verify(&hs(json!({"channels": "device:*"}))),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            v.verify(&hs(json!({"exp": "soon"}))),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn public_keys_fix_the_algorithm_family() {
        for (public, private, alg) in [
            ("rsa_public.pem", "rsa_private.pem", Algorithm::RS256),
            ("ec_public.pem", "ec_private.pem", Algorithm::ES256),
            ("ed_public.pem", "ed_private.pem", Algorithm::EdDSA),
        ] {
            let v = Verifier::new(JwtSettings {
                public_key: Some(fixture(public)),
                ..JwtSettings::default()
            })
            .unwrap();
            let pem = std::fs::read(fixture(private)).unwrap();
            let key = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
                _ => EncodingKey::from_ed_pem(&pem),
            }
            .unwrap();
            let token = encode(&Header::new(alg), &json!({"sub": "k"}), &key).unwrap();
            assert_eq!(v.verify(&token).unwrap().sub, "k", "{alg:?}");
            // Algorithm confusion: the public key's bytes used as an HMAC secret.
            let public_bytes = std::fs::read(fixture(public)).unwrap();
            let confused = encode(
                &Header::new(Algorithm::HS256),
                &json!({"sub": "evil"}),
                &EncodingKey::from_secret(&public_bytes),
            )
            .unwrap();
            assert_eq!(v.verify(&confused), Err(TokenError::Algorithm), "{alg:?}");
        }
    }

    #[test]
    fn audience_and_issuer_when_configured() {
        let v = Verifier::new(JwtSettings {
            secret: Some(SECRET.into()),
            audience: vec!["roomcast".into()],
            issuer: vec!["https://auth.example".into()],
            ..JwtSettings::default()
        })
        .unwrap();
        let ok = json!({"aud": "roomcast", "iss": "https://auth.example"});
        assert!(v.verify(&hs(ok)).is_ok());
        assert_eq!(
            v.verify(&hs(json!({"aud": "other", "iss": "https://auth.example"}))),
            Err(TokenError::Audience)
        );
        assert_eq!(
            v.verify(&hs(json!({"aud": "roomcast", "iss": "https://evil"}))),
            Err(TokenError::Issuer)
        );
        assert!(
            v.verify(&hs(json!({"iss": "https://auth.example"})))
                .is_err()
        );
    }

    #[test]
    fn no_key_is_a_startup_error() {
        assert!(matches!(
            Verifier::new(JwtSettings::default()),
            Err(KeyError::NoKey)
        ));
        assert!(matches!(
            Verifier::new(JwtSettings {
                public_key: Some(fixture("README.md")),
                ..JwtSettings::default()
            }),
            Err(KeyError::BadPem { .. })
        ));
    }

    fn jwks(kid: &str, private: &str) -> (String, EncodingKey) {
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = EncodingKey::from_rsa_pem(&pem).unwrap();
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
        jwk.common.key_id = Some(kid.into());
        let set = json!({ "keys": [jwk] });
        (set.to_string(), key)
    }

    #[tokio::test]
    async fn jwks_keys_by_kid_and_reload_on_change() {
        let dir = std::env::temp_dir().join(format!("roomcast-jwks-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        let (set, key) = jwks("k1", "rsa_private.pem");
        std::fs::write(&path, set).unwrap();
        let v = Verifier::new(JwtSettings {
            jwks_file: Some(path.clone()),
            ..JwtSettings::default()
        })
        .unwrap();
        let shutdown = Shutdown::new();
        v.watch(&shutdown);
        let token = |kid: &str| {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(kid.into());
            encode(&header, &json!({"sub": kid}), &key).unwrap()
        };
        assert_eq!(v.verify(&token("k1")).unwrap().sub, "k1");
        assert_eq!(v.verify(&token("k2")), Err(TokenError::UnknownKey));
        // Rotate: the same key under a new kid.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (set, _) = jwks("k2", "rsa_private.pem");
        std::fs::write(&path, set).unwrap();
        let file = std::fs::File::options().append(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while v.verify(&token("k2")).is_err() {
            assert!(std::time::Instant::now() < deadline, "JWKS reloaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(v.verify(&token("k1")), Err(TokenError::UnknownKey));
        // A broken file keeps the previous keys.
        std::fs::write(&path, "{not json").unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(v.verify(&token("k2")).is_ok());
        shutdown.trigger();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
