//! Compatibility with the Socket.IO Redis emitter (`@socket.io/redis-emitter`
//! and its ports): what a Node.js back end publishes for a Socket.IO cluster
//! reaches roomcast's clients as a Node.js server would deliver it.
//!
//! Owns: recognising the emitter's channels among everything a broker
//! delivers (`<key>#<nsp>#…` broadcasts, `<key>-request#<nsp>#` requests,
//! `<key>-response#…` answers between Node servers, which roomcast ignores),
//! and turning them into hub calls; the `roomcast_emitter_messages_total`
//! counts. Decoding is in `decode.rs`.
//!
//! Never: touches a client or a wire format of ours (the hub's formats
//! encode); delivers anything for a malformed message (a log line and a
//! count, nothing else); slows plain messages by more than one prefix
//! comparison.
//!
//! Only `/` is served: roomcast's rooms are the rooms of Socket.IO's default
//! namespace, so events and requests for other namespaces reach no one and
//! are counted as `ignored`.
//!
//! Called by `server`, in the broker's sink, before the hub (and for the
//! sink's early "is anyone interested" filter and a start-up check of
//! `--pattern`); `/ws` asks [`is_emitter_channel`] before a client publishes.

pub mod decode;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::hub::Hub;
use crate::telemetry;
use decode::Request;
pub use decode::{Broadcast, DecodeError};

/// The emitter's channels under one key (the emitter's `key` option).
pub struct Emitter {
    hub: Arc<Hub>,
    key: String,
    /// Malformed messages so far (logged on the 1st, 2nd, 4th, 8th...).
    malformed: AtomicU64,
}

/// Which of the emitter's channels a message came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Broadcast,
    Request,
    Response,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Broadcast => "broadcast",
            Kind::Request => "request",
            Kind::Response => "response",
        }
    }
}

/// True when the emitter (under `key`, empty: off) takes `channel`: a
/// client must not publish there, or it could act as the back end.
/// What follows the key in each kind of emitter channel.
const KINDS: [&str; 3] = ["#", "-request#", "-response#"];

/// The patterns that cover every emitter channel of `key` (none when the
/// emitter is off), for a broker that subscribes per room.
pub fn patterns(key: &str) -> Vec<String> {
    if key.is_empty() {
        return Vec::new();
    }
    KINDS.iter().map(|kind| format!("{key}{kind}*")).collect()
}

/// Whether [`patterns`] match `channel` (so it needs no subscription of its own).
pub fn covered_by_patterns(key: &str, channel: &str) -> bool {
    !key.is_empty()
        && channel
            .strip_prefix(key)
            .is_some_and(|rest| KINDS.iter().any(|kind| rest.starts_with(kind)))
}

pub fn is_emitter_channel(key: &str, channel: &str) -> bool {
    !key.is_empty() && channel_kind(key, channel).is_some()
}

/// True when a Redis `PSUBSCRIBE` on `pattern` surely misses the emitter's
/// broadcast channel `<key>#/#` (then its messages never arrive). Patterns
/// with `?`, `[` or `\` are not judged.
pub fn pattern_misses(pattern: &str, key: &str) -> bool {
    !key.is_empty()
        && !pattern.contains(['?', '[', '\\'])
        && !crate::security::rules::glob_match(pattern, &format!("{key}#/#"))
}

/// Which emitter channel `channel` is, and its namespace: `<key>#<nsp>#…`,
/// `<key>-request#<nsp>#` or `<key>-response#<nsp>#…`.
fn channel_kind<'a>(key: &str, channel: &'a str) -> Option<(Kind, &'a str)> {
    let rest = channel.strip_prefix(key)?;
    let (kind, rest) = if let Some(rest) = rest.strip_prefix('#') {
        (Kind::Broadcast, rest)
    } else if let Some(rest) = rest.strip_prefix("-request#") {
        (Kind::Request, rest)
    } else {
        (Kind::Response, rest.strip_prefix("-response#")?)
    };
    let (nsp, _) = rest.split_once('#')?;
    Some((kind, nsp))
}

impl Emitter {
    /// `key` is the emitter's channel prefix (`socket.io` unless the Node
    /// app set another); `None` when empty (compatibility off).
    pub fn new(key: &str, hub: Arc<Hub>) -> Option<Emitter> {
        (!key.is_empty()).then(|| Emitter {
            hub,
            key: key.to_owned(),
            malformed: AtomicU64::new(0),
        })
    }

    /// Handles `channel` if it is one of the emitter's and returns true;
    /// returns false for every other channel (a plain message for the hub).
    pub fn handle(&self, channel: &str, payload: &[u8]) -> bool {
        let Some((kind, nsp)) = channel_kind(&self.key, channel) else {
            return false;
        };
        let result = match kind {
            Kind::Broadcast => self.broadcast(payload),
            Kind::Request if nsp == "/" => self.request(payload),
            Kind::Request | Kind::Response => Ok("ignored"),
        };
        let result = result.unwrap_or_else(|error| {
            self.log_malformed(channel, kind, &error);
            "malformed"
        });
        telemetry::emitter_message(kind.label(), result);
        true
    }

    fn broadcast(&self, payload: &[u8]) -> Result<&'static str, DecodeError> {
        let event = decode::broadcast(payload)?;
        if event.nsp != "/" {
            tracing::debug!(nsp = %event.nsp, event = %event.name, "emitter: event for a namespace roomcast does not serve");
            return Ok("ignored");
        }
        self.hub
            .emit(&event.target, &event.name, event.args, event.binary);
        Ok("done")
    }

    fn request(&self, payload: &[u8]) -> Result<&'static str, DecodeError> {
        let sockets = match decode::request(payload)? {
            Request::Join { target, rooms } => self.hub.remote_join(&target, &rooms),
            Request::Leave { target, rooms } => self.hub.remote_leave(&target, &rooms),
            Request::Disconnect { target } => self.hub.remote_disconnect(&target),
            Request::Other(kind) => {
                tracing::debug!(kind, "emitter: request type roomcast does not handle");
                return Ok("ignored");
            }
        };
        tracing::debug!(sockets, "emitter: request applied");
        Ok("done")
    }

    fn log_malformed(&self, channel: &str, kind: Kind, error: &DecodeError) {
        let malformed = self.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        if malformed.is_power_of_two() {
            tracing::warn!(
                %channel, kind = kind.label(), %error, malformed,
                "emitter: dropped malformed message(s)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Member, Outbox, OutboxLimits};
    use crate::transports::socketio::FORMAT;

    #[test]
    fn only_the_emitter_channels_are_taken() {
        let hub = Arc::new(Hub::new());
        let emitter = Emitter::new("socket.io", hub.clone()).unwrap();
        let socket = Member {
            client: hub.client_id(),
            outbox: Arc::new(Outbox::new(OutboxLimits::default())),
            format: &FORMAT,
        };
        hub.register(socket.clone());
        for plain in [
            "device01",
            "socket.io",
            "socket.io#",
            "socket.iox#/#",
            "socket.io-other#/#",
        ] {
            assert!(!emitter.handle(plain, b"x"), "{plain}");
        }
        for (channel, payload) in [
            ("socket.io#/#", &b"\xc1"[..]),
            ("socket.io#/#room#", b""),
            ("socket.io-request#/#", b"{"),
            ("socket.io-request#/admin#", b"{}"),
            ("socket.io-response#/#", b"{}"),
        ] {
            assert!(emitter.handle(channel, payload), "{channel}");
        }
        assert!(socket.outbox.pop().is_none(), "nothing for a bad message");
        assert!(is_emitter_channel("socket.io", "socket.io-request#/#"));
        assert!(!is_emitter_channel("", "socket.io#/#"));
        assert!(!pattern_misses("*", "socket.io"));
        assert!(!pattern_misses("socket.io*", "socket.io"));
        assert!(pattern_misses("device*", "socket.io"));
        assert!(!pattern_misses("dev?ce*", "socket.io"), "not judged");
        assert!(!pattern_misses("device*", ""), "emitter off");
        assert!(Emitter::new("", hub).is_none());
    }
}
