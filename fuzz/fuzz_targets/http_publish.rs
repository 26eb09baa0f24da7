//! `POST /api/publish` bodies (`http::parse_publish`): never a panic; a
//! refusal is a 4xx with a stable code; an accepted body names a valid room,
//! fits the limit, and the same publish written back parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::http::parse_publish;

const MAX_PAYLOAD: usize = 256;

fuzz_target!(|data: &[u8]| {
    match parse_publish(data, MAX_PAYLOAD) {
        Ok((channel, payload)) => {
            assert!(roomcast::hub::validate_room_name(&channel).is_ok());
            assert!(payload.len() <= MAX_PAYLOAD);
            let text = std::str::from_utf8(&payload).expect("payloads are text");
            let body = serde_json::json!({"channel": channel, "data": text}).to_string();
            let again = parse_publish(body.as_bytes(), MAX_PAYLOAD).expect("round trip");
            assert_eq!(again, (channel, payload));
        }
        Err(error) => {
            assert!(error.status.is_client_error(), "{}", error.status);
            assert!(!error.code.is_empty() && !error.message.is_empty());
        }
    }
});
