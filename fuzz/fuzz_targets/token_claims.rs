//! Token claims handling: the input is a JWT's claims JSON, signed here
//! with the server's HS256 secret so it reaches claims parsing, then
//! verified, turned into an identity and asked about rooms. Never a panic;
//! a `{sub}` grant gives the subject its own room and nobody else's; a glob
//! grants what it matches.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use roomcast::security::jwt::{JwtSettings, Verifier};
use roomcast::security::rules::glob_match;
use roomcast::security::{Identity, Op, Security};
use serde_json::Value;

const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret!";

static SECURITY: LazyLock<Security> = LazyLock::new(|| {
    let settings = JwtSettings {
        secret: Some(SECRET.into()),
        ..JwtSettings::default()
    };
    Security {
        verifier: Some(Verifier::new(settings).expect("a valid secret")),
        allow_anonymous: false,
        ..Security::default()
    }
});

fn signed(claims: &[u8]) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let message = format!("{}.{}", b64(br#"{"alg":"HS256","typ":"JWT"}"#), b64(claims));
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
        .expect("HMAC signing cannot fail");
    format!("{message}.{signature}")
}

fn allowed(identity: &Identity, room: &str) -> bool {
    SECURITY
        .authorize("fuzz", identity, room, Op::Subscribe)
        .is_ok()
}

fuzz_target!(|data: &[u8]| {
    let token = signed(data);
    let Ok(identity) = SECURITY.authenticate("fuzz", Some(&token)) else {
        return;
    };
    let Identity::Token(claims) = &identity else {
        panic!("a signed token is never anonymous");
    };
    // serde skips unknown fields without checking their strings are UTF-8,
    // so accepted claims need not be JSON a strict parser takes.
    let Ok(raw) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let patterns: Vec<&str> = raw["channels"]
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let sub = claims.sub.as_str();
    for pattern in &patterns {
        let valid = |room: &str| SECURITY.check_room("fuzz", room).is_ok();
        let literal = !pattern.replace("{sub}", "").contains('*');
        if pattern.contains("{sub}") {
            if sub.is_empty() {
                continue;
            }
            let own = pattern.replace("{sub}", sub);
            if literal && !sub.contains('*') && valid(&own) {
                assert!(allowed(&identity, &own), "{raw}: {own:?} refused");
            }
            // Only grant: a longer subject's room is someone else's.
            let other = pattern.replace("{sub}", &format!("{sub}-other"));
            if literal && patterns.len() == 1 && valid(&other) {
                assert!(
                    !allowed(&identity, &other),
                    "{raw}: {pattern:?} grants {other:?}"
                );
            }
        } else {
            let filled = pattern.replace('*', "x-y");
            assert!(glob_match(pattern, &filled));
            if valid(&filled) {
                assert!(allowed(&identity, &filled), "{raw}: {filled:?} refused");
            }
        }
    }
});
