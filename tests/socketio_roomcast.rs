//! roomcast's Socket.IO behaviour: `channel`/`leave` with acks and errors,
//! `hello`, broadcasts as `message` (with the recovery offset only when
//! recovery is on), an event right after CONNECT, and slow
//! consumers disconnected while others keep receiving in order.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roomcast::hub::OutboxLimits;
use roomcast::transports::socketio::RoomcastHandler;
use serde_json::Value;
use support::socketio::*;

async fn server() -> Server {
    start(config(), Arc::new(RoomcastHandler::default())).await
}

async fn connect(s: &Server) -> Ws {
    let mut w = ws(s.addr, "EIO=4&transport=websocket").await;
    w.text().await;
    w.send("40").await;
    assert!(w.text().await.starts_with("40{"));
    w
}

/// Waits until `room` has `n` members (joins are processed by the
/// connection task after the frame arrives).
async fn members(s: &Server, room: &str, n: usize) {
    for _ in 0..500 {
        if s.hub.room_size(room) == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("room {room} never had {n} members");
}

#[tokio::test]
async fn a_lone_surrogate_in_a_room_name_gets_an_error_and_the_connection_stays() {
    let s = server().await;
    let mut a = connect(&s).await;
    // JavaScript's JSON.stringify("\ud800") sends the lone surrogate escaped.
    a.send(r#"421["channel","\ud800"]"#).await;
    let reply = a.text().await;
    assert!(reply.starts_with("431["), "{reply}");
    let reply: Value = serde_json::from_str(&reply[3..]).unwrap();
    assert_eq!(reply[0]["ok"], false);
    assert_eq!(reply[0]["code"], "bad_utf16");
    // Without an ack: an `error` event.
    a.send(r#"42["channel","x\udc00"]"#).await;
    let event = a.text().await;
    assert!(
        event.starts_with(r#"42["error",{"code":"bad_utf16""#),
        "{event}"
    );
    // The connection is still there and works.
    a.send(r#"422["channel","fine"]"#).await;
    assert_eq!(a.text().await, r#"432[{"ok":true}]"#);
}

#[tokio::test]
async fn channel_joins_with_ack_and_hello_goes_to_the_others() {
    let s = server().await;
    let mut a = connect(&s).await;
    a.send(r#"421["channel","device01"]"#).await;
    assert_eq!(a.text().await, r#"431[{"ok":true}]"#);
    let mut b = connect(&s).await;
    b.send(r#"42["channel",["device01","other"]]"#).await;
    // The seed's frame: this server keeps no sessions (with recovery on it
    // ends with `null`, `broadcast.rs`).
    assert_eq!(a.text().await, r#"42["hello","device01"]"#);
    members(&s, "other", 1).await;
    s.hub.deliver("device01", Bytes::from_static(b"on \"1\""));
    for w in [&mut a, &mut b] {
        let text = w.text().await;
        let value: Value = serde_json::from_str(&text[2..]).unwrap();
        assert_eq!(value[0], "message");
        assert_eq!(value[1], "on \"1\"");
        assert_eq!(value[2]["room"], "device01");
        assert!(value[2]["id"].is_string() && value[2]["ts"].is_u64());
    }
    b.send(r#"422["leave","device01"]"#).await;
    assert_eq!(b.text().await, r#"432[{"ok":true}]"#);
    s.hub.deliver("device01", Bytes::from_static(b"only a"));
    s.hub.deliver("other", Bytes::from_static(b"only b"));
    assert!(a.text().await.contains("only a"));
    assert!(b.text().await.contains("only b"), "no leak after leave");
}

/// With recovery on, a `message` ends with its offset (the id again) and the
/// CONNECT answer names a `pid`; with `--recovery-window-s 0`, neither: the
/// seed's `message` event, which socket.io-client hands to listeners as is.
#[tokio::test]
async fn a_message_carries_its_offset_only_when_recovery_is_on() {
    for window in [Duration::ZERO, Duration::from_secs(120)] {
        let mut cfg = config();
        cfg.recovery_window = window;
        let s = start(cfg, Arc::new(RoomcastHandler::default())).await;
        let mut w = ws(s.addr, "EIO=4&transport=websocket").await;
        w.text().await;
        w.send("40").await;
        let answer: Value = serde_json::from_str(&w.text().await[2..]).unwrap();
        assert_eq!(answer["pid"].is_string(), !window.is_zero(), "{answer}");
        w.send(r#"421["channel","r"]"#).await;
        assert_eq!(w.text().await, r#"431[{"ok":true}]"#);
        s.hub.deliver("r", Bytes::from_static(b"m"));
        let text = w.text().await;
        let value: Value = serde_json::from_str(&text[2..]).unwrap();
        let args = value.as_array().unwrap();
        assert_eq!(args[..2], ["message", "m"], "{text}");
        if window.is_zero() {
            assert_eq!(args.len(), 3, "no offset: {text}");
        } else {
            assert_eq!(args.len(), 4, "{text}");
            assert_eq!(args[3], args[2]["id"], "the offset is the id");
        }
    }
}

#[tokio::test]
async fn bad_room_names_get_errors_and_the_connection_stays() {
    let s = server().await;
    let mut w = connect(&s).await;
    w.send(r#"423["channel",""]"#).await;
    assert_eq!(
        w.text().await,
        r#"433[{"code":"room_empty","error":"channel \"\": room name is empty","ok":false}]"#
    );
    w.send(r#"424["channel",5]"#).await;
    let reply = w.text().await;
    assert!(
        reply.starts_with(r#"434[{"code":"bad_room","error":"room name must be"#),
        "{reply}"
    );
    let long = "x".repeat(201);
    w.send(&format!(r#"42["channel","{long}"]"#)).await;
    let event = w.text().await;
    assert!(
        event.starts_with(r#"42["error",{"code":"room_too_long""#),
        "{event}"
    );
    w.send(r#"42["channel",{"a":1}]"#).await;
    assert!(
        w.text()
            .await
            .starts_with(r#"42["error",{"code":"bad_room""#)
    );
    w.send(r#"42["unknown-event",1]"#).await;
    w.send(r#"425["channel","fine"]"#).await;
    assert_eq!(w.text().await, r#"435[{"ok":true}]"#);
}

#[tokio::test]
async fn an_event_right_after_connect_is_never_lost() {
    let s = server().await;
    for round in 0..50 {
        let room = format!("r{round}");
        let mut w = ws(s.addr, "EIO=4&transport=websocket").await;
        w.text().await;
        // CONNECT and the join in one breath, as the seed's page does.
        w.send("40").await;
        w.send(&format!(r#"42["channel","{room}"]"#)).await;
        assert!(w.text().await.starts_with("40{"));
        members(&s, &room, 1).await;
        s.hub.deliver(&room, Bytes::from_static(b"first"));
        assert!(w.text().await.contains("first"));
    }
    // Engine.IO v3: `40` comes unasked and the client may emit at once.
    let mut w3 = ws(s.addr, "EIO=3&transport=websocket").await;
    w3.send(r#"42["channel","v3"]"#).await;
    w3.text().await;
    assert_eq!(w3.text().await, "40");
    members(&s, "v3", 1).await;
    s.hub.deliver("v3", Bytes::from_static(b"to v3"));
    assert!(w3.text().await.contains("to v3"));
}

#[tokio::test]
async fn broadcasts_reach_polling_clients_v4_and_v3() {
    let s = server().await;
    let (sid4, _) = poll_handshake(s.addr, 4, "").await;
    let q4 = format!("EIO=4&transport=polling&sid={sid4}");
    post(s.addr, &q4, br#"40"#).await;
    post(s.addr, &q4, br#"42["channel","p"]"#).await;
    let (sid3, _) = poll_handshake(s.addr, 3, "&b64=1").await;
    let q3 = format!("EIO=3&transport=polling&sid={sid3}&b64=1");
    post(s.addr, &q3, br#"17:42["channel","p"]"#).await;
    members(&s, "p", 2).await;
    assert!(get(s.addr, &q4).await.text().starts_with("40{"));
    s.hub.deliver("p", Bytes::from("€uro"));
    let v4 = get(s.addr, &q4).await.text();
    assert!(v4.starts_with(r#"42["message","€uro",{"room":"p""#), "{v4}");
    let v3 = get(s.addr, &q3).await.text();
    let frame = &v4;
    // Length in UTF-16 units: "€" counts once though it is 3 bytes.
    assert_eq!(v3, format!("{}:{frame}", frame.chars().count()));
}

#[tokio::test]
async fn slow_consumer_is_closed_and_the_others_receive_everything_in_order() {
    let mut cfg = config();
    cfg.outbox = OutboxLimits {
        max_frames: 4,
        max_bytes: 1 << 20,
    };
    cfg.ping_interval = Duration::from_secs(10);
    cfg.ping_timeout = Duration::from_secs(10);
    let s = start(cfg, Arc::new(RoomcastHandler::default())).await;
    // A polling client that never polls again: its outbox fills.
    let (sid, _) = poll_handshake(s.addr, 4, "").await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    post(s.addr, &q, br#"40"#).await;
    post(s.addr, &q, br#"42["channel","busy"]"#).await;
    let mut fast = connect(&s).await;
    fast.send(r#"42["channel","busy"]"#).await;
    members(&s, "busy", 2).await;
    let mut slow_seen = 0;
    for i in 0..200 {
        slow_seen += s
            .hub
            .deliver("busy", Bytes::from(format!("m{i}")))
            .slow_consumers;
        // The fast one keeps up.
        let text = fast.text().await;
        assert!(text.contains(&format!("\"m{i}\"")), "{text}");
    }
    assert_eq!(slow_seen, 1, "counted once");
    // The slow session is closed: its next poll says so, then it is gone.
    let r = get(s.addr, &q).await;
    assert_eq!(r.text(), "1");
    assert_eq!(get(s.addr, &q).await.status, 400);
    members(&s, "busy", 1).await;
}

#[tokio::test]
async fn slow_websocket_reader_is_dropped_with_a_close_frame() {
    let mut cfg = config();
    cfg.outbox = OutboxLimits {
        max_frames: 8,
        max_bytes: 1 << 20,
    };
    cfg.ping_interval = Duration::from_secs(10);
    cfg.ping_timeout = Duration::from_secs(10);
    let s = start(cfg, Arc::new(RoomcastHandler::default())).await;
    let mut slow = connect(&s).await;
    slow.send(r#"42["channel","big"]"#).await;
    members(&s, "big", 1).await;
    // Big frames fill the kernel buffers, then the outbox; nobody reads.
    let payload = Bytes::from(vec![b'x'; 64 * 1024]);
    let mut slow_seen = 0;
    for _ in 0..2000 {
        slow_seen += s.hub.deliver("big", payload.clone()).slow_consumers;
        if slow_seen > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(slow_seen, 1);
    members(&s, "big", 0).await;
    // Reading now drains what was in flight and ends with the close frame.
    assert_eq!(slow.closed().await, Some(1008));
}
