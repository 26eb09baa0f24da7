//! Decodes what the Socket.IO Redis emitter publishes, into hub terms.
//!
//! - A broadcast (channel `<key>#<nsp>#` or `<key>#<nsp>#<room>#`) is
//!   MessagePack `[uid, packet, opts]`: `packet = {type: 2 (EVENT) or 5,
//!   data: [event, ...args], nsp}`, `opts = {rooms: [..], except: [..],
//!   flags}`. Arguments become one JSON array as `JSON.stringify` would
//!   write them in Node.js, each binary value replaced by Socket.IO's
//!   `{"_placeholder":true,"num":N}` in depth-first order (socket.io-parser's
//!   numbering), the bytes kept aside as attachments.
//! - A request (channel `<key>-request#<nsp>#`) is JSON `{type, opts:
//!   {rooms, except}, rooms?, close?}`; types 2, 3 and 4 are `socketsJoin`,
//!   `socketsLeave` and `disconnectSockets`.
//!
//! Pure functions: no hub, no I/O; every refusal is a [`DecodeError`].
//! Called by the `emitter` module.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use rmpv::Value;

use crate::hub::Target;

/// Nesting deeper than this is refused (Node's own limit is far higher, but
/// no real event needs it and every level costs stack).
const MAX_DEPTH: usize = 64;

/// A decoded broadcast.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    pub nsp: String,
    pub target: Target,
    pub name: String,
    /// JSON array of the arguments, with binary placeholders.
    pub args: Bytes,
    pub binary: Vec<Bytes>,
}

/// A decoded server-side request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Join {
        target: Target,
        rooms: Vec<Arc<str>>,
    },
    Leave {
        target: Target,
        rooms: Vec<Arc<str>>,
    },
    Disconnect {
        target: Target,
    },
    /// A type roomcast has nothing to do for (fetchSockets, serverSideEmit,
    /// a Node server's own queries): its number.
    Other(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not MessagePack: {0}")]
    MessagePack(String),
    #[error("not JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Shape(&'static str),
}

fn shape(what: &'static str) -> DecodeError {
    DecodeError::Shape(what)
}

/// Decodes a broadcast message.
pub fn broadcast(payload: &[u8]) -> Result<Broadcast, DecodeError> {
    let mut reader = payload;
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, MAX_DEPTH)
        .map_err(|e| DecodeError::MessagePack(e.to_string()))?;
    if !reader.is_empty() {
        return Err(DecodeError::MessagePack(
            "bytes after the message".to_owned(),
        ));
    }
    let Value::Array(mut parts) = value else {
        return Err(shape("the message is not [uid, packet, opts]"));
    };
    if parts.len() != 3 {
        return Err(shape("the message is not [uid, packet, opts]"));
    }
    let opts = parts.pop().unwrap_or(Value::Nil);
    let packet = parts.pop().unwrap_or(Value::Nil);
    let Value::Map(packet) = packet else {
        return Err(shape("the packet is not a map"));
    };
    match field(&packet, "type").and_then(Value::as_u64) {
        Some(2 | 5) => {}
        _ => return Err(shape("the packet is not an EVENT")),
    }
    let nsp = match field(&packet, "nsp") {
        None | Some(Value::Nil) => "/".to_owned(),
        Some(Value::String(s)) => s.as_str().ok_or(shape("nsp is not UTF-8"))?.to_owned(),
        Some(_) => return Err(shape("nsp is not a string")),
    };
    let Some(Value::Array(data)) = field(&packet, "data") else {
        return Err(shape("the packet's data is not an array"));
    };
    let Some((Value::String(name), args)) = data.split_first() else {
        return Err(shape("the packet's data does not start with an event name"));
    };
    let name = name
        .as_str()
        .ok_or(shape("the event name is not UTF-8"))?
        .to_owned();
    let mut json = Vec::with_capacity(payload.len() + 16);
    let mut binary = Vec::new();
    write_array(args, &mut json, &mut binary, MAX_DEPTH)?;
    Ok(Broadcast {
        nsp,
        target: target(&opts)?,
        name,
        args: Bytes::from(json),
        binary,
    })
}

/// Decodes a request message.
pub fn request(payload: &[u8]) -> Result<Request, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| DecodeError::Json(e.to_string()))?;
    let kind = value
        .get("type")
        .and_then(serde_json::Value::as_u64)
        .ok_or(shape("the request has no numeric type"))?;
    let target = || -> Result<Target, DecodeError> {
        let opts = value.get("opts").ok_or(shape("the request has no opts"))?;
        Ok(Target {
            rooms: json_rooms(opts.get("rooms"))?,
            except: json_rooms(opts.get("except"))?,
        })
    };
    let rooms = || -> Result<Vec<Arc<str>>, DecodeError> {
        match value.get("rooms") {
            Some(rooms @ serde_json::Value::Array(_)) => json_rooms(Some(rooms)),
            _ => Err(shape("the request has no rooms array")),
        }
    };
    Ok(match kind {
        2 => Request::Join {
            target: target()?,
            rooms: rooms()?,
        },
        3 => Request::Leave {
            target: target()?,
            rooms: rooms()?,
        },
        4 => Request::Disconnect { target: target()? },
        other => Request::Other(other),
    })
}

fn json_rooms(value: Option<&serde_json::Value>) -> Result<Vec<Arc<str>>, DecodeError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => room_names(items.iter().map(|i| i.as_str())),
        Some(_) => Err(shape("rooms is not an array")),
    }
}

/// Room names, each of which must be a string (msgpack or JSON alike).
fn room_names<'a>(
    items: impl Iterator<Item = Option<&'a str>>,
) -> Result<Vec<Arc<str>>, DecodeError> {
    items
        .map(|item| item.map(Arc::from).ok_or(shape("a room is not a string")))
        .collect()
}

fn field<'a>(map: &'a [(Value, Value)], name: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(key, _)| key.as_str() == Some(name))
        .map(|(_, value)| value)
}

/// `opts.rooms` and `opts.except` (each absent or an array of strings).
fn target(opts: &Value) -> Result<Target, DecodeError> {
    let Value::Map(opts) = opts else {
        return Err(shape("opts is not a map"));
    };
    let rooms = |name| -> Result<Vec<Arc<str>>, DecodeError> {
        match field(opts, name) {
            None | Some(Value::Nil) => Ok(Vec::new()),
            Some(Value::Array(items)) => room_names(items.iter().map(|i| i.as_str())),
            Some(_) => Err(shape("rooms or except is not an array")),
        }
    };
    Ok(Target {
        rooms: rooms("rooms")?,
        except: rooms("except")?,
    })
}

fn write_array(
    items: &[Value],
    out: &mut Vec<u8>,
    binary: &mut Vec<Bytes>,
    depth: usize,
) -> Result<(), DecodeError> {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_value(item, out, binary, depth)?;
    }
    out.push(b']');
    Ok(())
}

/// Writes `value` as `JSON.stringify` would after notepack decoded it.
fn write_value(
    value: &Value,
    out: &mut Vec<u8>,
    binary: &mut Vec<Bytes>,
    depth: usize,
) -> Result<(), DecodeError> {
    let depth = depth.checked_sub(1).ok_or(shape("nested too deeply"))?;
    // Writes to a Vec cannot fail.
    match value {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(n) => {
            let _ = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => write!(out, "{i}"),
                (None, Some(u)) => write!(out, "{u}"),
                (None, None) => write!(out, "null"),
            };
        }
        Value::F32(f) => write_float(f64::from(*f), out),
        Value::F64(f) => write_float(*f, out),
        Value::String(s) => write_string(&String::from_utf8_lossy(s.as_bytes()), out),
        Value::Binary(data) => {
            let _ = write!(out, r#"{{"_placeholder":true,"num":{}}}"#, binary.len());
            binary.push(Bytes::copy_from_slice(data));
        }
        Value::Array(items) => write_array(items, out, binary, depth)?,
        Value::Map(entries) => {
            out.push(b'{');
            for (i, (key, item)) in js_object(entries)?.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(&key, out);
                out.push(b':');
                write_value(item, out, binary, depth)?;
            }
            out.push(b'}');
        }
        // notepack's Date: the MessagePack timestamp, as Date's toJSON.
        Value::Ext(-1, data) => write_string(&iso_time(data)?, out),
        Value::Ext(..) => return Err(shape("an extension type other than a timestamp")),
    }
    Ok(())
}

/// A map's entries as the JavaScript object notepack builds from it: keys
/// are strings (a number key is its decimal string), a repeated key keeps
/// its first place and its last value, and array-index keys ("0", "1", ...)
/// come first in ascending order, as `JSON.stringify` writes them.
fn js_object(entries: &[(Value, Value)]) -> Result<Vec<(String, &Value)>, DecodeError> {
    let mut object: Vec<(String, &Value)> = Vec::with_capacity(entries.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    for (key, item) in entries {
        let key = match key {
            Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            Value::Integer(n) => n.to_string(),
            _ => return Err(shape("a map key is neither a string nor a number")),
        };
        match index.get(&key) {
            Some(&at) => object[at].1 = item,
            None => {
                index.insert(key.clone(), object.len());
                object.push((key, item));
            }
        }
    }
    // Stable: the other keys keep their order.
    object.sort_by_key(|(key, _)| array_index(key).map_or((1, 0), |n| (0, n)));
    Ok(object)
}

/// `key` as an array index (a canonical decimal below 2^32 - 1).
fn array_index(key: &str) -> Option<u32> {
    let n: u32 = key.parse().ok()?;
    (n != u32::MAX && n.to_string() == key).then_some(n)
}

/// `JSON.stringify` writes NaN and the infinities as `null`.
fn write_float(f: f64, out: &mut Vec<u8>) {
    if f.is_finite() {
        let _ = serde_json::to_writer(&mut *out, &f);
    } else {
        out.extend_from_slice(b"null");
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A MessagePack timestamp (4, 8 or 12 bytes) as `Date.prototype.toJSON`
/// writes it: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn iso_time(data: &[u8]) -> Result<String, DecodeError> {
    let bad = || shape("a malformed timestamp");
    let (seconds, nanos): (i64, u32) = match data.len() {
        4 => (
            i64::from(u32::from_be_bytes(data.try_into().map_err(|_| bad())?)),
            0,
        ),
        8 => {
            let raw = u64::from_be_bytes(data.try_into().map_err(|_| bad())?);
            ((raw & 0x3_ffff_ffff) as i64, (raw >> 34) as u32)
        }
        12 => {
            let nanos = u32::from_be_bytes(data[..4].try_into().map_err(|_| bad())?);
            let seconds = i64::from_be_bytes(data[4..].try_into().map_err(|_| bad())?);
            (seconds, nanos)
        }
        _ => return Err(bad()),
    };
    // Four-digit years only (toJSON writes others with a sign and six digits).
    if !(-62_167_219_200..=253_402_300_799).contains(&seconds) || nanos >= 1_000_000_000 {
        return Err(shape("a timestamp outside years 0000-9999"));
    }
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    Ok(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        nanos / 1_000_000
    ))
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::from(text)
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (s(k), v)).collect())
    }

    fn rooms(names: &[&str]) -> Value {
        Value::Array(names.iter().map(|n| s(n)).collect())
    }

    fn encode(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    /// What `io.to(to).except(except).emit(data[0], ...data[1..])` publishes.
    fn emitted(data: Vec<Value>, to: &[&str], except: &[&str]) -> Vec<u8> {
        encode(&Value::Array(vec![
            s("emitter"),
            map(vec![
                ("type", Value::from(2)),
                ("data", Value::Array(data)),
                ("nsp", s("/")),
            ]),
            map(vec![
                ("rooms", rooms(to)),
                ("flags", map(vec![])),
                ("except", rooms(except)),
            ]),
        ]))
    }

    #[test]
    fn an_event_with_arguments_and_binary() {
        let payload = emitted(
            vec![
                s("price"),
                Value::from(1),
                Value::F64(21.5),
                map(vec![
                    ("img", Value::Binary(vec![1, 2])),
                    ("n", Value::Nil),
                    ("ok", Value::Boolean(true)),
                ]),
                Value::Binary(vec![3]),
                Value::F64(f64::NAN),
            ],
            &["r1"],
            &["r2"],
        );
        let decoded = broadcast(&payload).unwrap();
        assert_eq!(decoded.name, "price");
        assert_eq!(decoded.nsp, "/");
        assert_eq!(
            std::str::from_utf8(&decoded.args).unwrap(),
            r#"[1,21.5,{"img":{"_placeholder":true,"num":0},"n":null,"ok":true},{"_placeholder":true,"num":1},null]"#
        );
        assert_eq!(
            decoded.binary,
            vec![Bytes::from_static(&[1, 2]), Bytes::from_static(&[3])]
        );
        assert_eq!(decoded.target.rooms, vec![Arc::from("r1")]);
        assert_eq!(decoded.target.except, vec![Arc::from("r2")]);
    }

    #[test]
    fn maps_become_objects_as_javascript_orders_them() {
        let object = Value::Map(vec![
            (s("b"), Value::from(1)),
            (Value::from(2), s("two")),
            (s("a"), Value::Binary(vec![9])),
            (s("1"), Value::Nil),
            (s("01"), Value::from(3)),
            (s("a"), Value::from(4)),
        ]);
        let decoded = broadcast(&emitted(vec![s("e"), object], &[], &[])).unwrap();
        assert_eq!(
            std::str::from_utf8(&decoded.args).unwrap(),
            r#"[{"1":null,"2":"two","b":1,"a":4,"01":3}]"#
        );
        assert!(
            decoded.binary.is_empty(),
            "the overwritten Buffer is not sent"
        );
    }

    #[test]
    fn timestamps_become_iso_strings() {
        // notepack encodes new Date('2000-06-13T00:00:00.000Z') as d6 ff 39 45 79 80.
        assert_eq!(
            iso_time(&[0x39, 0x45, 0x79, 0x80]).unwrap(),
            "2000-06-13T00:00:00.000Z"
        );
        let nanos: u64 = 123_000_000;
        let eight = ((nanos << 34) | 1_700_000_000).to_be_bytes();
        assert_eq!(iso_time(&eight).unwrap(), "2023-11-14T22:13:20.123Z");
        let mut twelve = 0u32.to_be_bytes().to_vec();
        twelve.extend_from_slice(&(-86_400i64).to_be_bytes());
        assert_eq!(iso_time(&twelve).unwrap(), "1969-12-31T00:00:00.000Z");
        assert!(iso_time(&[1, 2, 3]).is_err());
        let mut far = 0u32.to_be_bytes().to_vec();
        far.extend_from_slice(&i64::MAX.to_be_bytes());
        assert!(iso_time(&far).is_err());
    }

    #[test]
    fn bad_broadcasts_are_refused() {
        let event = |packet: Value, opts: Value| encode(&Value::Array(vec![s("u"), packet, opts]));
        let ok_packet = || {
            map(vec![
                ("type", Value::from(2)),
                ("data", Value::Array(vec![s("e")])),
            ])
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("not msgpack", vec![0xc1]),
            ("truncated", emitted(vec![s("e")], &[], &[])[..10].to_vec()),
            (
                "trailing bytes",
                [emitted(vec![s("e")], &[], &[]), vec![0]].concat(),
            ),
            ("not an array", encode(&s("x"))),
            (
                "two parts",
                encode(&Value::Array(vec![s("u"), ok_packet()])),
            ),
            ("packet not a map", event(s("p"), map(vec![]))),
            (
                "an ACK",
                event(
                    map(vec![
                        ("type", Value::from(3)),
                        ("data", Value::Array(vec![s("e")])),
                    ]),
                    map(vec![]),
                ),
            ),
            (
                "no data",
                event(map(vec![("type", Value::from(2))]), map(vec![])),
            ),
            (
                "no event name",
                event(
                    map(vec![
                        ("type", Value::from(2)),
                        ("data", Value::Array(vec![Value::from(1)])),
                    ]),
                    map(vec![]),
                ),
            ),
            ("opts not a map", event(ok_packet(), Value::Nil)),
            (
                "rooms not strings",
                event(
                    ok_packet(),
                    map(vec![("rooms", Value::Array(vec![Value::from(1)]))]),
                ),
            ),
            (
                "an unknown extension",
                event(
                    map(vec![
                        ("type", Value::from(2)),
                        ("data", Value::Array(vec![s("e"), Value::Ext(5, vec![1])])),
                    ]),
                    map(vec![]),
                ),
            ),
            (
                "a map key that is an array",
                event(
                    map(vec![
                        ("type", Value::from(2)),
                        (
                            "data",
                            Value::Array(vec![
                                s("e"),
                                Value::Map(vec![(Value::Array(vec![]), Value::Nil)]),
                            ]),
                        ),
                    ]),
                    map(vec![]),
                ),
            ),
        ];
        for (what, payload) in cases {
            assert!(
                broadcast(&payload).is_err(),
                "{what}: {:?}",
                broadcast(&payload)
            );
        }
        let mut deep = Value::Nil;
        for _ in 0..100 {
            deep = Value::Array(vec![deep]);
        }
        assert!(
            broadcast(&emitted(vec![s("e"), deep], &[], &[])).is_err(),
            "too deep"
        );
    }

    #[test]
    fn requests() {
        let join = br#"{"type":2,"opts":{"rooms":["a"],"except":["b"]},"rooms":["c","d"]}"#;
        assert_eq!(
            request(join).unwrap(),
            Request::Join {
                target: Target {
                    rooms: vec![Arc::from("a")],
                    except: vec![Arc::from("b")]
                },
                rooms: vec![Arc::from("c"), Arc::from("d")],
            }
        );
        assert_eq!(
            request(br#"{"type":4,"opts":{"rooms":[],"except":[]},"close":true}"#).unwrap(),
            Request::Disconnect {
                target: Target::default()
            }
        );
        assert_eq!(
            request(br#"{"type":6,"data":[1]}"#).unwrap(),
            Request::Other(6)
        );
        for bad in [
            &b""[..],
            b"[]",
            br#"{"type":"2"}"#,
            br#"{"type":2,"opts":{}}"#,
            br#"{"type":3,"rooms":["a"]}"#,
            br#"{"type":2,"opts":{"rooms":"a"},"rooms":["a"]}"#,
            br#"{"type":2,"opts":{},"rooms":[1]}"#,
        ] {
            assert!(request(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
