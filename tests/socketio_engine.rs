//! Engine.IO over the wire: handshakes, error codes, polling, upgrade,
//! heartbeats, CORS. Raw HTTP and websocket against a server on a free port.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::conformance::Conformance;
use support::http::*;
use support::socketio::*;

async fn server() -> Server {
    start(config(), Arc::new(Conformance::with_test_extras())).await
}

#[tokio::test]
async fn v4_polling_handshake_has_every_open_field() {
    let s = server().await;
    let (sid, response) = poll_handshake(s.addr, 4, "").await;
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    let open: Value = serde_json::from_str(&response.text()[1..]).unwrap();
    assert_eq!(open["sid"], sid);
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(open["pingInterval"], 300);
    assert_eq!(open["pingTimeout"], 200);
    assert_eq!(open["maxPayload"], 100_000);
    assert_eq!(s.io.connections(), 1);
}

#[tokio::test]
async fn v3_polling_handshake_text_and_binary_framing() {
    let s = server().await;
    // b64=1: length-prefixed text, and Socket.IO v4's `40` follows at once.
    let (sid, response) = poll_handshake(s.addr, 3, "&b64=1").await;
    let text = response.text();
    let open_len = text.find(':').unwrap();
    let open: &str = &text[open_len + 1..open_len + 1 + text[..open_len].parse::<usize>().unwrap()];
    let open: Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(open["sid"], sid);
    assert!(open.get("maxPayload").is_none(), "v3 has no maxPayload");
    assert!(text.ends_with("2:4013:42[\"auth\",{}]"), "{text}");
    // Without b64 (XHR2 browsers, client 1.x): binary framing.
    let (_, response) = poll_handshake(s.addr, 3, "").await;
    assert_eq!(
        response.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(response.body[0], 0, "a string packet");
    let auth = br#"42["auth",{}]"#;
    let mut tail = vec![0, 2, 0xff, b'4', b'0', 0, 1, 3, 0xff];
    tail.extend_from_slice(auth);
    assert!(response.body.ends_with(&tail));
}

#[tokio::test]
async fn bad_requests_get_the_protocol_codes() {
    let s = server().await;
    let cases = [
        ("GET", "EIO=4&transport=carrier", 0, "Transport unknown"),
        ("GET", "EIO=4", 0, "Transport unknown"),
        (
            "GET",
            "EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA",
            1,
            "Session ID unknown",
        ),
        (
            "GET",
            "EIO=4&transport=polling&sid=nope",
            1,
            "Session ID unknown",
        ),
        ("POST", "EIO=4&transport=polling", 2, "Bad handshake method"),
        ("PUT", "EIO=4&transport=polling", 2, "Bad handshake method"),
        ("GET", "EIO=4&transport=websocket", 3, "Bad request"),
        (
            "GET",
            "EIO=5&transport=polling",
            5,
            "Unsupported protocol version",
        ),
        (
            "GET",
            "transport=polling",
            5,
            "Unsupported protocol version",
        ),
    ];
    for (method, query, code, message) in cases {
        let r = http(s.addr, method, &format!("/socket.io/?{query}"), &[], b"").await;
        assert_eq!(r.status, 400, "{method} {query}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"code": code, "message": message}),
            "{query}"
        );
    }
}

#[tokio::test]
async fn cors_reflects_the_origin_with_credentials() {
    let s = server().await;
    let origin = [("Origin", "https://app.example")];
    let r = http(
        s.addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        &origin,
        b"",
    )
    .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let preflight = [
        ("Origin", "https://app.example"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type"),
    ];
    let r = http(
        s.addr,
        "OPTIONS",
        "/socket.io/?EIO=4&transport=polling",
        &preflight,
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
}

#[tokio::test]
async fn post_answers_ok_and_a_second_get_closes_the_session() {
    let s = server().await;
    let (sid, _) = poll_handshake(s.addr, 4, "").await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    let r = post(s.addr, &q, b"40").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = get(s.addr, &q).await;
    let text = r.text();
    assert!(text.starts_with("40{\"sid\":"), "{text}");
    assert!(text.ends_with("\x1e42[\"auth\",{}]"), "{text}");

    let first = tokio::spawn({
        let (addr, q) = (s.addr, q.clone());
        async move { get(addr, &q).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = get(s.addr, &q).await;
    assert_eq!(second.status, 400);
    let first = first.await.unwrap();
    assert_eq!((first.status, first.text().as_str()), (200, "1"));
    assert_eq!(get(s.addr, &q).await.status, 400, "the session is gone");
}

#[tokio::test]
async fn oversize_post_is_413_and_the_session_lives() {
    let s = server().await;
    let (sid, _) = poll_handshake(s.addr, 4, "").await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    let big = vec![b'4'; 100_001];
    assert_eq!(post(s.addr, &q, &big).await.status, 413);
    assert_eq!(post(s.addr, &q, b"40").await.status, 200);
}

#[tokio::test]
async fn garbage_post_closes_only_that_session() {
    let s = server().await;
    let (bad, _) = poll_handshake(s.addr, 4, "").await;
    let (good, _) = poll_handshake(s.addr, 4, "").await;
    let bad_q = format!("EIO=4&transport=polling&sid={bad}");
    let good_q = format!("EIO=4&transport=polling&sid={good}");
    assert_eq!(post(s.addr, &bad_q, b"\xff\xfe").await.status, 400);
    assert_eq!(get(s.addr, &bad_q).await.status, 400);
    assert_eq!(post(s.addr, &good_q, b"40").await.status, 200);
    assert!(get(s.addr, &good_q).await.text().starts_with("40"));
}

#[tokio::test]
async fn websocket_handshake_v4_and_v3() {
    let s = server().await;
    let mut w = ws(s.addr, "EIO=4&transport=websocket").await;
    let open: Value = serde_json::from_str(&w.text().await[1..]).unwrap();
    assert_eq!(open["upgrades"], serde_json::json!([]));
    assert_eq!(open["maxPayload"], 100_000);

    let mut w3 = ws(s.addr, "EIO=3&transport=websocket").await;
    let open = w3.text().await;
    assert!(
        open.starts_with("0{") && !open.contains("maxPayload"),
        "{open}"
    );
    assert_eq!(w3.text().await, "40", "protocol v4 connects / at once");
    assert_eq!(w3.text().await, r#"42["auth",{}]"#);
    // v3: the client pings, the server pongs.
    w3.send("2").await;
    assert_eq!(w3.text().await, "3");
    w3.send("2probe").await;
    assert_eq!(w3.text().await, "3probe");
}

#[tokio::test]
async fn upgrade_from_polling_to_websocket() {
    let s = server().await;
    let (sid, _) = poll_handshake(s.addr, 4, "").await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    assert_eq!(post(s.addr, &q, b"40").await.status, 200);
    let pending = tokio::spawn({
        let (addr, q) = (s.addr, q.clone());
        async move { get(addr, &q).await }
    });
    // The pending GET takes the `40` and `auth`; then a GET waits again.
    let first = pending.await.unwrap().text();
    assert!(first.starts_with("40"), "{first}");
    let pending = tokio::spawn({
        let (addr, q) = (s.addr, q.clone());
        async move { get(addr, &q).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut w = ws(s.addr, &format!("EIO=4&transport=websocket&sid={sid}")).await;
    w.send("2probe").await;
    assert_eq!(w.text().await, "3probe");
    assert_eq!(pending.await.unwrap().text(), "6", "noop releases the poll");
    w.send("5").await;
    w.send(r#"42["message","over ws"]"#).await;
    assert_eq!(w.text().await, r#"42["message-back","over ws"]"#);
    assert_eq!(
        get(s.addr, &q).await.status,
        400,
        "polling refused after upgrade"
    );
    let mut second = ws(s.addr, &format!("EIO=4&transport=websocket&sid={sid}")).await;
    assert!(
        matches!(second.next().await, Got::Closed(_)),
        "second websocket closed"
    );
    w.send(r#"42["message","still"]"#).await;
    assert_eq!(w.text().await, r#"42["message-back","still"]"#);
    assert_eq!(s.io.connections(), 1);
}

#[tokio::test]
async fn v4_websocket_peer_without_pongs_is_dropped() {
    let s = server().await;
    let mut w = ws(s.addr, "EIO=4&transport=websocket").await;
    let start = Instant::now();
    assert!(w.next().await != Got::Closed(None));
    w.send("40").await;
    assert!(matches!(w.next().await, Got::Text(t) if t.starts_with("40{")));
    loop {
        match w.next().await {
            Got::Closed(_) => break,
            Got::Text(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

#[tokio::test]
async fn heartbeats_keep_a_live_peer_and_drop_a_silent_v3_one() {
    let s = server().await;
    // A v4 client that answers pings stays past several intervals.
    let mut live = Ws::connect_v5(s.addr).await;
    let mut pings = 0;
    let until = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < until {
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(100), live.next()).await {
            assert_eq!(got, Got::Text("2".into()));
            pings += 1;
            live.send("3").await;
        }
    }
    assert!(pings >= 3, "{pings} pings");
    // A v3 client that never pings is dropped at interval + timeout.
    let mut silent = ws(s.addr, "EIO=3&transport=websocket").await;
    let start = Instant::now();
    silent.closed().await;
    assert!(start.elapsed() >= Duration::from_millis(450));
    // The polling session of a silent client is gone the same way.
    let (sid, _) = poll_handshake(s.addr, 4, "").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = get(s.addr, &format!("EIO=4&transport=polling&sid={sid}")).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn client_close_over_polling_releases_the_poll_with_a_noop() {
    let s = server().await;
    // GET pending, then POST `1`: the GET answers `6`.
    let (sid, _) = poll_handshake(s.addr, 4, "").await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    let pending = tokio::spawn({
        let (addr, q) = (s.addr, q.clone());
        async move { get(addr, &q).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(post(s.addr, &q, b"1").await.status, 200);
    assert_eq!(pending.await.unwrap().text(), "6");
    assert_eq!(get(s.addr, &q).await.status, 400);
    // POST `1` first (a GET sent before it may arrive after it): one noop,
    // then the session is unknown.
    let (sid, _) = poll_handshake(s.addr, 4, "").await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    assert_eq!(post(s.addr, &q, b"1").await.status, 200);
    assert_eq!(get(s.addr, &q).await.text(), "6");
    assert_eq!(get(s.addr, &q).await.status, 400);
    assert_eq!(post(s.addr, &q, b"3").await.status, 400);
}
