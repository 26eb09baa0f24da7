//! `/ws` client frames (`transports::ws::protocol::parse`): never a panic;
//! every reply is JSON carrying the request id; an accepted request parses
//! the same from its own re-serialized JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::transports::ws::protocol::{self, Request};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 by the time they reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (id, request) = protocol::parse(text);
    if let Some(id) = &id {
        assert!(id.is_number() || id.is_string(), "echoed id {id}");
    }
    let reply = match &request {
        Ok(_) => protocol::reply("ok", id.as_ref()),
        Err(error) => protocol::error(id.as_ref(), error),
    };
    let reply: Value = serde_json::from_str(&reply).expect("replies are JSON");
    assert_eq!(reply.get("id"), id.as_ref());
    if let Err(error) = &request {
        assert_eq!(reply["code"], error.code);
    }
    if let Ok(parsed) = &request {
        if let Request::Publish { payload, .. } = parsed {
            assert!(std::str::from_utf8(payload).is_ok(), "payloads are text");
        }
        let value: Value = serde_json::from_str(text).expect("an accepted frame is JSON");
        let (again_id, again) = protocol::parse(&value.to_string());
        assert_eq!(again.as_ref(), Ok(parsed));
        assert_eq!(again_id, id);
    }
});
