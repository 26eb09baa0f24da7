//! The `/ws` JSON protocol: parsing client requests and encoding replies.
//!
//! Client → server (text frames): `{"op":"subscribe"|"unsubscribe","channel":"c","id":n?}`,
//! `{"op":"publish","channel":"c","data":any,"id":n?}`, `{"op":"ping","id":n?}`.
//! Server → client: `{"type":"message",...}` (see `transports::json`),
//! `{"type":"ok","id":n}`, `{"type":"pong","id":n}`,
//! `{"type":"error","id":n,"code":"...","message":"..."}`. `id` is echoed as sent.

use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::hub::Since;
use crate::refusal::Refusal;

/// A request the connection acts on.
#[derive(Debug, PartialEq)]
pub enum Request {
    /// `since`: resume after this message id (from this node's history, or
    /// for a logged message's id from the room's log: docs/RECOVERY.md).
    Subscribe {
        channel: String,
        since: Option<Since>,
    },
    Unsubscribe {
        channel: String,
    },
    Publish {
        channel: String,
        payload: Vec<u8>,
    },
    Ping,
}

/// A refused frame: a stable code and a message for the client, the
/// [`Refusal`] every transport and the HTTP API use (status 400).
fn bad(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, code, message)
}

#[derive(Deserialize)]
struct RawRequest {
    op: Option<String>,
    channel: Option<Value>,
    data: Option<Value>,
    id: Option<Value>,
    since: Option<Value>,
}

/// Parses one text frame. The request id comes back even when the request
/// is refused, so the error reply can carry it.
pub fn parse(text: &str) -> (Option<Value>, Result<Request, Refusal>) {
    let raw: RawRequest = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let code = if e.is_data() {
                "bad_request"
            } else {
                "bad_json"
            };
            return (
                None,
                Err(bad(
                    code,
                    format!("expected a JSON object with \"op\": {e}"),
                )),
            );
        }
    };
    let id = raw.id.filter(|id| id.is_number() || id.is_string());
    (id, request(raw.op, raw.channel, raw.data, raw.since))
}

fn request(
    op: Option<String>,
    channel: Option<Value>,
    data: Option<Value>,
    since: Option<Value>,
) -> Result<Request, Refusal> {
    let op = op.ok_or_else(|| bad("missing_field", "missing field \"op\""))?;
    match op.as_str() {
        "subscribe" => Ok(Request::Subscribe {
            channel: channel_field(channel)?,
            since: since.map(since_field).transpose()?,
        }),
        "unsubscribe" => Ok(Request::Unsubscribe {
            channel: channel_field(channel)?,
        }),
        "publish" => {
            let channel = channel_field(channel)?;
            let data = data.ok_or_else(|| bad("missing_field", "missing field \"data\""))?;
            // A string is published as its characters, anything else as JSON text
            // (the same rule as POST /api/publish).
            let payload = match data {
                Value::String(text) => text.into_bytes(),
                other => other.to_string().into_bytes(),
            };
            Ok(Request::Publish { channel, payload })
        }
        "ping" => Ok(Request::Ping),
        other => Err(bad(
            "unknown_op",
            format!("unknown op {other:?}; expected subscribe, unsubscribe, publish or ping"),
        )),
    }
}

/// A message id as the server sent it (a decimal string), or a number.
fn since_field(since: Value) -> Result<Since, Refusal> {
    let parsed = match &since {
        Value::String(text) => Since::parse(text),
        Value::Number(number) => number.as_u64().map(Since::Local),
        _ => None,
    };
    parsed.ok_or_else(|| bad("bad_since", "\"since\" must be a message id"))
}

fn channel_field(channel: Option<Value>) -> Result<String, Refusal> {
    match channel {
        Some(Value::String(channel)) => Ok(channel),
        Some(_) => Err(bad("bad_channel", "\"channel\" must be a string")),
        None => Err(bad("missing_field", "missing field \"channel\"")),
    }
}

/// `{"type":"ok","id":..}` or `{"type":"pong","id":..}`.
pub fn reply(kind: &str, id: Option<&Value>) -> String {
    let mut reply = serde_json::json!({ "type": kind });
    if let Some(id) = id {
        reply["id"] = id.clone();
    }
    reply.to_string()
}

/// `{"type":"error","id":..,"code":..,"message":..}`.
pub fn error(id: Option<&Value>, error: &Refusal) -> String {
    let mut reply =
        serde_json::json!({ "type": "error", "code": error.code, "message": error.message });
    if let Some(id) = id {
        reply["id"] = id.clone();
    }
    reply.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(text: &str) -> &'static str {
        parse(text).1.unwrap_err().code
    }

    #[test]
    fn requests_parse() {
        assert_eq!(
            parse(r#"{"op":"subscribe","channel":"a","id":1}"#),
            (
                Some(json!(1)),
                Ok(Request::Subscribe {
                    channel: "a".into(),
                    since: None
                })
            )
        );
        assert_eq!(
            parse(r#"{"op":"unsubscribe","channel":"a"}"#).1,
            Ok(Request::Unsubscribe {
                channel: "a".into()
            })
        );
        assert_eq!(
            parse(r#"{"op":"publish","channel":"a","data":{"x":[1]}}"#).1,
            Ok(Request::Publish {
                channel: "a".into(),
                payload: br#"{"x":[1]}"#.to_vec()
            })
        );
        assert_eq!(
            parse(r#"{"op":"publish","channel":"a","data":"raw text"}"#).1,
            Ok(Request::Publish {
                channel: "a".into(),
                payload: b"raw text".to_vec()
            })
        );
        assert_eq!(
            parse(r#"{"op":"ping","id":"x"}"#),
            (Some(json!("x")), Ok(Request::Ping))
        );
    }

    #[test]
    fn bad_requests_get_specific_codes() {
        assert_eq!(code("{nope"), "bad_json");
        assert_eq!(code("[1,2]"), "bad_request");
        assert_eq!(code(r#"{"channel":"a"}"#), "missing_field");
        assert_eq!(code(r#"{"op":"subscribe"}"#), "missing_field");
        assert_eq!(code(r#"{"op":"subscribe","channel":5}"#), "bad_channel");
        assert_eq!(code(r#"{"op":"publish","channel":"a"}"#), "missing_field");
        assert_eq!(code(r#"{"op":"dance"}"#), "unknown_op");
        assert_eq!(
            code(r#"{"op":"subscribe","channel":"a","since":"x1"}"#),
            "bad_since"
        );
        assert_eq!(
            parse(r#"{"op":"subscribe","channel":"a","since":"42"}"#).1,
            Ok(Request::Subscribe {
                channel: "a".into(),
                since: Some(Since::Local(42))
            })
        );
        let (id, result) = parse(r#"{"op":"dance","id":7}"#);
        assert_eq!(id, Some(json!(7)), "the id survives a refusal");
        let reply: Value = serde_json::from_str(&error(id.as_ref(), &result.unwrap_err())).unwrap();
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["id"], 7);
        assert_eq!(reply["code"], "unknown_op");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = parse(&text);
        }
    }
}
