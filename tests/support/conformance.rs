//! The Socket.IO handler the official protocol test suites expect, shared by
//! `examples/protocol-conformance.rs` (which includes this file) and the
//! wire tests (`tests/support`), so both run the same behaviour.
//!
//! On connect it emits `auth` with the handshake auth; `message` comes back
//! as `message-back` (same args, binary included); `message-with-ack` is
//! acked with its args; `request-ack` emits `ack-request` asking for an ack,
//! whose args come back as `ack-received`; `disconnect-me` disconnects the
//! socket server-side.
//!
//! [`Conformance::with_test_extras`] adds what only roomcast's wire tests
//! use: an `auth` with `refuse` is refused, a handshake query is emitted back
//! as `query`, and `join` joins the room it names. The example leaves them
//! off: the suites' clients send a query (`t=…`) the suites do not expect
//! back.

use roomcast::transports::socketio::{AckId, Args, ConnectError, Handler, Handshake, Socket};
use serde_json::Value;

#[derive(Debug, Default)]
pub struct Conformance {
    test_extras: bool,
}

impl Conformance {
    /// What the official suites expect, and nothing more.
    pub fn suites() -> Conformance {
        Conformance { test_extras: false }
    }

    /// The suites' behaviour plus the wire tests' extras (see the module).
    pub fn with_test_extras() -> Conformance {
        Conformance { test_extras: true }
    }
}

impl Handler for Conformance {
    fn on_connect(
        &self,
        socket: &mut Socket<'_>,
        handshake: &Handshake<'_>,
    ) -> Result<(), ConnectError> {
        let auth = handshake.auth;
        if self.test_extras && auth.get("refuse").is_some() {
            return Err(ConnectError {
                message: "refused".into(),
                data: Some(serde_json::json!({"why": "asked"})),
            });
        }
        let _ = socket.emit("auth", Args::new(vec![auth.clone()]));
        if self.test_extras && !handshake.query.is_empty() {
            let query: serde_json::Map<String, Value> = handshake
                .query
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let _ = socket.emit("query", Args::new(vec![Value::Object(query)]));
        }
        Ok(())
    }

    fn on_event(&self, socket: &mut Socket<'_>, event: &str, args: Args, ack: Option<AckId>) {
        match event {
            "message" => {
                let _ = socket.emit("message-back", args);
            }
            "message-with-ack" => {
                if let Some(ack) = ack {
                    let _ = socket.ack(ack, args);
                }
            }
            "request-ack" => {
                let _ = socket.emit_with_ack("ack-request", args);
            }
            "disconnect-me" => socket.disconnect(),
            "join" if self.test_extras => {
                if let Some(Value::String(room)) = args.values.first() {
                    socket.join(room);
                }
            }
            _ => {}
        }
    }

    fn on_ack(&self, socket: &mut Socket<'_>, _id: u64, args: Args) {
        let _ = socket.emit("ack-received", args);
    }
}
