//! Socket.IO over the wire: CONNECT (auth, namespaces, refusals), events and
//! acks both ways, binary attachments, DISCONNECT, and bad input closing
//! only its own connection.

mod support;

use std::sync::Arc;

use support::conformance::Conformance;
use support::socketio::*;

async fn server() -> Server {
    start(config(), Arc::new(Conformance::with_test_extras())).await
}

#[tokio::test]
async fn v5_connect_with_auth_and_custom_namespace() {
    let s = server().await;
    let mut w = ws(s.addr, "EIO=4&transport=websocket").await;
    w.text().await;
    w.send(r#"40{"token":"123"}"#).await;
    assert!(w.text().await.starts_with(r#"40{"sid":""#));
    assert_eq!(w.text().await, r#"42["auth",{"token":"123"}]"#);
    w.send(r#"40/custom,{"k":1}"#).await;
    assert!(w.text().await.starts_with(r#"40/custom,{"sid":""#));
    assert_eq!(w.text().await, r#"42/custom,["auth",{"k":1}]"#);
    w.send(r#"42/custom,["message","x"]"#).await;
    assert_eq!(w.text().await, r#"42/custom,["message-back","x"]"#);
}

#[tokio::test]
async fn unknown_namespace_and_refused_connect() {
    let s = server().await;
    let mut w = ws(s.addr, "EIO=4&transport=websocket").await;
    w.text().await;
    w.send("40/random,").await;
    assert_eq!(
        w.text().await,
        r#"44/random,{"message":"Invalid namespace"}"#
    );
    w.send(r#"40{"refuse":true}"#).await;
    assert_eq!(
        w.text().await,
        r#"44{"data":{"why":"asked"},"message":"refused"}"#
    );
    // v4 (Engine.IO v3 clients): the error is a bare string.
    let mut w3 = ws(s.addr, "EIO=3&transport=websocket").await;
    w3.text().await;
    assert_eq!(w3.text().await, "40");
    w3.text().await;
    w3.send("40/random,").await;
    assert_eq!(w3.text().await, r#"44/random,"Invalid namespace""#);
    w3.send("40/custom?token=abc,").await;
    assert_eq!(w3.text().await, "40/custom,");
    assert_eq!(w3.text().await, r#"42/custom,["auth",{}]"#);
    assert_eq!(w3.text().await, r#"42/custom,["query",{"token":"abc"}]"#);
}

#[tokio::test]
async fn handshake_query_reaches_on_connect() {
    let s = server().await;
    let mut w3 = ws(s.addr, "EIO=3&transport=websocket&token=q1").await;
    w3.text().await;
    assert_eq!(w3.text().await, "40");
    assert_eq!(w3.text().await, r#"42["auth",{}]"#);
    assert_eq!(w3.text().await, r#"42["query",{"token":"q1"}]"#);
    let mut w = ws(s.addr, "EIO=4&transport=websocket&room=a%20b").await;
    w.text().await;
    w.send(r#"40/custom,{"t":1}"#).await;
    assert!(w.text().await.starts_with("40/custom,"));
    assert_eq!(w.text().await, r#"42/custom,["auth",{"t":1}]"#);
    assert_eq!(w.text().await, r#"42/custom,["query",{"room":"a b"}]"#);
}

#[tokio::test]
async fn events_and_acks_both_ways() {
    let s = server().await;
    let mut w = Ws::connect_v5(s.addr).await;
    w.send(r#"42["message",1,"2",{"3":[true]}]"#).await;
    assert_eq!(w.text().await, r#"42["message-back",1,"2",{"3":[true]}]"#);
    w.send(r#"4217["message-with-ack","a"]"#).await;
    assert_eq!(w.text().await, r#"4317["a"]"#);
    // Server → client ack.
    w.send(r#"42["request-ack","q"]"#).await;
    assert_eq!(w.text().await, r#"420["ack-request","q"]"#);
    w.send(r#"430["answer"]"#).await;
    assert_eq!(w.text().await, r#"42["ack-received","answer"]"#);
    w.send(r#"42["request-ack"]"#).await;
    assert_eq!(w.text().await, r#"421["ack-request"]"#);
}

#[tokio::test]
async fn binary_attachments_both_ways() {
    let s = server().await;
    let mut w = Ws::connect_v5(s.addr).await;
    w.send(
        r#"452-9["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
    )
    .await;
    w.send_binary(&[1, 2, 3]).await;
    w.send_binary(&[4, 5]).await;
    assert_eq!(
        w.text().await,
        r#"462-9[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(w.next().await, Got::Binary(vec![1, 2, 3]));
    assert_eq!(w.next().await, Got::Binary(vec![4, 5]));

    // Engine.IO v3 binary frames carry a type byte.
    let mut w3 = ws(s.addr, "EIO=3&transport=websocket").await;
    w3.text().await;
    w3.text().await;
    w3.text().await;
    w3.send(r#"451-["message",{"_placeholder":true,"num":0}]"#)
        .await;
    w3.send_binary(&[4, 9, 9]).await;
    assert_eq!(
        w3.text().await,
        r#"451-["message-back",{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(w3.next().await, Got::Binary(vec![4, 9, 9]));
    // Clients without binary support (1.x in Node) send `b4<base64>` text.
    w3.send(r#"451-["message",{"_placeholder":true,"num":0}]"#)
        .await;
    w3.send("b4AQID").await;
    w3.text().await;
    assert_eq!(w3.next().await, Got::Binary(vec![4, 1, 2, 3]));
}

#[tokio::test]
async fn binary_over_polling_v4_and_v3() {
    let s = server().await;
    let (sid, _) = poll_handshake(s.addr, 4, "").await;
    let q = format!("EIO=4&transport=polling&sid={sid}");
    post(s.addr, &q, b"40").await;
    get(s.addr, &q).await;
    let body = b"451-[\"message\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID";
    assert_eq!(post(s.addr, &q, body).await.status, 200);
    assert_eq!(
        get(s.addr, &q).await.text(),
        "451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID"
    );

    let (sid, _) = poll_handshake(s.addr, 3, "&b64=1").await;
    let q = format!("EIO=3&transport=polling&sid={sid}&b64=1");
    let packet = r#"451-["message",{"_placeholder":true,"num":0}]"#;
    let body = format!("{}:{packet}6:b4AQID", packet.len());
    assert_eq!(post(s.addr, &q, body.as_bytes()).await.status, 200);
    let back = get(s.addr, &q).await.text();
    let expected = r#"451-["message-back",{"_placeholder":true,"num":0}]"#;
    assert_eq!(back, format!("{}:{expected}6:b4AQID", expected.len()));
}

#[tokio::test]
async fn disconnect_from_client_and_from_server() {
    let s = server().await;
    let mut w = Ws::connect_v5(s.addr).await;
    w.send("41").await;
    // The connection stays open (the reference server pings next).
    assert_eq!(w.next().await, Got::Text("2".into()));
    w.send("3").await;
    w.send("40").await;
    assert!(w.text().await.starts_with("40{"));
    w.text().await;
    w.send(r#"42["disconnect-me"]"#).await;
    assert_eq!(w.text().await, "41");
    // Talking to a namespace it left closes the connection.
    w.send(r#"42["message"]"#).await;
    assert!(matches!(w.closed().await, Some(1002)));
}

#[tokio::test]
async fn garbage_closes_only_that_connection() {
    let s = server().await;
    let mut good = Ws::connect_v5(s.addr).await;
    for garbage in ["abc", "4abc", "42{}", r#"42abc["x"]"#, "4", "451-[\"x\"]"] {
        let mut bad = Ws::connect_v5(s.addr).await;
        bad.send(garbage).await;
        if garbage.starts_with("451") {
            bad.send("42[\"text while waiting for binary\"]").await;
        }
        assert_eq!(bad.closed().await, Some(1002), "{garbage:?}");
    }
    let mut bad = Ws::connect_v5(s.addr).await;
    bad.send_binary(&[1]).await;
    assert_eq!(bad.closed().await, Some(1002), "stray attachment");
    good.send(r#"42["message","alive"]"#).await;
    assert_eq!(good.text().await, r#"42["message-back","alive"]"#);
}

#[tokio::test]
async fn no_connect_within_the_timeout_closes() {
    let s = server().await;
    let mut w = ws(s.addr, "EIO=4&transport=websocket").await;
    w.text().await;
    let start = std::time::Instant::now();
    // Answer pings so only the connect timeout can end it.
    loop {
        match w.next().await {
            Got::Text(t) if t == "2" => w.send("3").await,
            Got::Closed(_) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(start.elapsed() >= std::time::Duration::from_millis(900));
}
