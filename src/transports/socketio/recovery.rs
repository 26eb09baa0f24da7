//! Socket.IO connection state recovery (socket.io ≥ 4.6), the protocol side:
//! the CONNECT answer on `/` carries a private session id `pid` beside the
//! socket id; every `message` carries its offset (the message id, a string)
//! as its last argument (`broadcast`); a client that lost its transport
//! sends `{pid, offset}` in its next CONNECT, and is `recovered` when the
//! answer carries the same `pid` again.
//!
//! What a lost connection leaves behind is a [`Session`] in the
//! [`SessionStore`] for the recovery window; what it missed comes from the
//! rooms' history after `offset` (`Connection::resume`). When either is gone
//! the client gets a new `pid`: a new session, `recovered === false`.
//!
//! Only on the default namespace (where rooms deliver) and only for protocol
//! v5 clients (3.x/4.x): protocol v4's CONNECT has no payload.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::engine::Sid;
use crate::disconnect::DisconnectReason;
use crate::hub::Since;
use crate::shutdown::Shutdown;
#[cfg(doc)]
use crate::transports::sessions::Session;
use crate::transports::sessions::SessionStore;

/// Recovery is on: sessions are kept for `window` in `store`.
#[derive(Clone)]
pub struct Recovery {
    pub window: Duration,
    pub store: Arc<dyn SessionStore>,
    /// Where a recovered session's broker confirmations are awaited.
    pub tasks: Shutdown,
}

/// What a CONNECT's payload asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Claim {
    /// No `pid`: a first connection.
    Fresh,
    /// The session `pid`, which received everything up to `since` (a
    /// message's wire id: `<n>`, or `<epoch>:<n>` for a logged one).
    Resume { pid: Sid, since: Since },
    /// A `pid` or `offset` we never sent (logged; a new session).
    Malformed(&'static str),
}

/// Reads `{pid, offset}` from a CONNECT payload. A client that received no
/// `message` since its session began sends no `offset`: nothing tells what
/// it has seen, so it starts a new session (as socket.io's own server does).
pub(super) fn claim(auth: &Value) -> Claim {
    let Some(pid) = auth.get("pid") else {
        return Claim::Fresh;
    };
    let Some(pid) = pid.as_str().and_then(Sid::parse) else {
        return Claim::Malformed("pid is not a session id");
    };
    match auth.get("offset").map(|offset| offset.as_str()) {
        None => Claim::Malformed("no offset: no message received yet"),
        Some(None) => Claim::Malformed("offset is not a string"),
        Some(Some(offset)) => match Since::parse(offset) {
            Some(since) => Claim::Resume { pid, since },
            // e.g. the last argument of a `hello` (its room): the client's
            // last event was not a message.
            None => Claim::Malformed("offset is not a message id"),
        },
    }
}

/// Whether a connection that ended for `reason` leaves a session to come
/// back to: the transport was lost (or the server went away), not a
/// goodbye or a punishment.
pub(super) fn recoverable(reason: DisconnectReason) -> bool {
    match reason {
        DisconnectReason::ClientClosed
        | DisconnectReason::TransportError
        | DisconnectReason::PingTimeout
        | DisconnectReason::SlowConsumer
        | DisconnectReason::PollingBufferFull
        | DisconnectReason::ServerShutdown => true,
        DisconnectReason::BadInput
        | DisconnectReason::TransportReplaced
        | DisconnectReason::ServerDisconnect
        | DisconnectReason::ConnectTimeout
        | DisconnectReason::MessageRate
        | DisconnectReason::TooLarge => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claims() {
        let pid = Sid::random();
        assert_eq!(claim(&json!({})), Claim::Fresh);
        assert_eq!(claim(&json!({"token": "t"})), Claim::Fresh);
        assert_eq!(
            claim(&json!({"pid": pid.as_str(), "offset": "42"})),
            Claim::Resume {
                pid,
                since: Since::Local(42)
            }
        );
        assert!(matches!(
            claim(&json!({"pid": pid.as_str(), "offset": "lh3k9q2w1c:42"})),
            Claim::Resume {
                since: Since::Log(_),
                ..
            }
        ));
        let malformed = [
            json!({"pid": 5, "offset": "1"}),
            json!({"pid": "short", "offset": "1"}),
            json!({"pid": "../../etc/passwd/xx.", "offset": "1"}),
            json!({"pid": pid.as_str()}),
            json!({"pid": pid.as_str(), "offset": 7}),
            json!({"pid": pid.as_str(), "offset": "room-1"}),
            json!({"pid": pid.as_str(), "offset": "-1"}),
            json!({"pid": pid.as_str(), "offset": "99999999999999999999999"}),
        ];
        for auth in malformed {
            assert!(matches!(claim(&auth), Claim::Malformed(_)), "{auth}");
        }
    }

    #[test]
    fn only_a_lost_transport_leaves_a_session() {
        assert!(recoverable(DisconnectReason::TransportError));
        assert!(recoverable(DisconnectReason::ServerShutdown));
        assert!(!recoverable(DisconnectReason::ServerDisconnect));
        assert!(!recoverable(DisconnectReason::BadInput));
    }
}
