//! Members and a wire format for unit tests of the hub and of what drives
//! it (`server/gaps.rs`): each frame reads as the message's wire id, or
//! `reset:<room>`.

use std::sync::Arc;

use bytes::Bytes;

use super::{Event, Format, Frame, Hub, LogPosition, Member, Message, Outbox, OutboxLimits};

/// A new member of `format` with its own outbox.
pub(crate) fn member(hub: &Hub, format: &'static Format, limits: OutboxLimits) -> Member {
    Member {
        client: hub.client_id(),
        outbox: Arc::new(Outbox::new(limits)),
        format,
    }
}

/// The bytes of a text frame.
pub(crate) fn payload(frame: Option<Frame>) -> Bytes {
    match frame {
        Some(Frame::Text(b)) => b,
        other => panic!("expected a text frame, got {other:?}"),
    }
}

fn encode_ids(event: &Event<'_>) -> Option<Frame> {
    match event {
        Event::Message(m) => Some(Frame::Text(Bytes::from(m.wire_id().to_string()))),
        Event::Reset { room } => Some(Frame::Text(Bytes::from(format!("reset:{room}")))),
        _ => None,
    }
}

/// Messages as their wire id (`<epoch>:<n>` when logged), resets as
/// `reset:<room>`; nothing else.
pub(crate) static IDS: Format = Format {
    id: 2,
    name: "ids",
    encode: encode_ids,
    separate_attachments: false,
};

/// Everything queued to `member`, as text.
pub(crate) fn drain(member: &Member) -> Vec<String> {
    std::iter::from_fn(|| member.outbox.pop())
        .map(|f| String::from_utf8(payload(Some(f)).to_vec()).unwrap())
        .collect()
}

/// Logged message `n` of room "r" (previous in the room: `prev`), epoch 1,
/// as a log read returns it.
pub(crate) fn entry(n: u64, prev: u64) -> Message {
    Message {
        room: Arc::from("r"),
        payload: Bytes::new(),
        id: n,
        ts: 0,
        log: Some(LogPosition { epoch: 1, prev }),
    }
}
