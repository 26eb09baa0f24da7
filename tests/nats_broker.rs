//! `--broker nats` against real `nats-server`s, what is particular to NATS
//! (the transports, odd room names and publishing are in the engine suite,
//! `tests/engines.rs`): SIGTERM drains with rooms subscribed; in a 3-server
//! cluster with routes, roomcast reconnects
//! to a surviving server when the others die, and delivery resumes; a
//! server that wants a user/password or a token admits roomcast with the
//! credentials in `--nats-url` and refuses wrong ones; a TLS server is
//! reached with `--nats-ca-file` and refused under another CA.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use support::nats::NatsServer;
use support::{ServerProcess, next_json};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn ready(port: u16) -> bool {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri = format!("http://127.0.0.1:{port}/readyz");
    match client.get(uri.parse().unwrap()).await {
        Ok(response) => {
            let ok = response.status() == 200;
            let _ = response.into_body().collect().await;
            ok
        }
        Err(_) => false,
    }
}

async fn wait_ready(port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ready(port).await {
        assert!(tokio::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn roomcast(urls: &[String]) -> ServerProcess {
    let server = unready_roomcast(urls, &[]).await;
    wait_ready(server.port).await;
    server
}

/// A node that may never get ready (refused credentials or certificate).
async fn unready_roomcast(urls: &[String], extra: &[&str]) -> ServerProcess {
    let urls = urls.join(",");
    let mut args = vec!["--broker", "nats", "--nats-url", &urls];
    args.extend_from_slice(extra);
    ServerProcess::start(env!("CARGO_BIN_EXE_roomcast").as_ref(), &args).await
}

/// A `/ws` client of `node` in `room` receives what `publisher` sends to
/// the room's subject.
async fn delivers(node: &ServerProcess, publisher: &async_nats::Client, room: &str) {
    let mut client = ws(node.port).await;
    assert_eq!(
        subscribe(&mut client, room, 1).await,
        json!({"type": "ok", "id": 1})
    );
    publisher
        .publish(format!("roomcast.{room}"), "hello".into())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    let message = next_json(&mut client).await;
    assert_eq!(
        (&message["channel"], &message["data"]),
        (&json!(room), &json!("hello"))
    );
}

/// Two seconds without getting ready: a refused login or handshake.
async fn stays_unready(node: &ServerProcess) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!ready(node.port).await, "ready with refused credentials");
}

async fn subscribe(ws: &mut Ws, room: &str, id: u64) -> serde_json::Value {
    let request = json!({"op": "subscribe", "channel": room, "id": id});
    ws.send(Message::text(request.to_string())).await.unwrap();
    next_json(ws).await
}

async fn ws(port: u16) -> Ws {
    connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .unwrap()
        .0
}

/// SIGTERM drains in time with rooms subscribed: the per-room readers end
/// with the server.
#[tokio::test]
async fn sigterm_drains_in_time_with_rooms_subscribed() {
    let nats = NatsServer::start().await;
    let mut node = roomcast(&[nats.url()]).await;
    let publisher = async_nats::connect(nats.url()).await.unwrap();
    delivers(&node, &publisher, "r").await;
    delivers(&node, &publisher, "a.b").await;
    let status = node.terminate(Duration::from_secs(15)).expect("exits");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn in_a_cluster_roomcast_reconnects_to_a_survivor_and_delivery_resumes() {
    let mut cluster = NatsServer::cluster(3).await;
    let urls: Vec<String> = cluster.iter().map(NatsServer::url).collect();
    let node = roomcast(&urls).await;
    // The publisher sits on the server that survives.
    let publisher = async_nats::connect(cluster[2].url()).await.unwrap();
    let mut client = ws(node.port).await;
    assert_eq!(subscribe(&mut client, "c", 1).await["type"], json!("ok"));

    // Routes take a moment to carry the interest: publish until one arrives.
    let deliver = async |client: &mut Ws, tag: &str| {
        for attempt in 0..100 {
            let data = format!("{tag}-{attempt}");
            publisher
                .publish("roomcast.c", data.clone().into())
                .await
                .unwrap();
            publisher.flush().await.unwrap();
            // Earlier attempts may still arrive: only this tag counts.
            while let Ok(Some(Ok(Message::Text(text)))) =
                tokio::time::timeout(Duration::from_millis(200), client.next()).await
            {
                let message: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(message["channel"], json!("c"));
                if message["data"].as_str().is_some_and(|d| d.starts_with(tag)) {
                    return;
                }
            }
        }
        panic!("{tag}: nothing delivered");
    };
    deliver(&mut client, "before").await;
    cluster[0].kill();
    cluster[1].kill();
    deliver(&mut client, "after").await;
    wait_ready(node.port).await;
}

#[tokio::test]
async fn a_user_and_password_or_a_token_in_the_url_log_in_and_wrong_ones_do_not() {
    // A password with a character URLs must escape ('@' as %40).
    let nats = NatsServer::start_with(&["--user", "rc", "--pass", "p@ss"]).await;
    let url = |userinfo: &str| format!("nats://{userinfo}@127.0.0.1:{}", nats.port);
    let publisher = async_nats::ConnectOptions::with_user_and_password("rc".into(), "p@ss".into())
        .connect(nats.url())
        .await
        .unwrap();
    let node = roomcast(&[url("rc:p%40ss")]).await;
    delivers(&node, &publisher, "private").await;
    stays_unready(&unready_roomcast(&[url("rc:wrong")], &[]).await).await;
    stays_unready(&unready_roomcast(&[nats.url()], &[]).await).await;

    let nats = NatsServer::start_with(&["--auth", "s3cr3t"]).await;
    let publisher = async_nats::ConnectOptions::with_token("s3cr3t".into())
        .connect(nats.url())
        .await
        .unwrap();
    let token_url = format!("nats://s3cr3t@127.0.0.1:{}", nats.port);
    let node = roomcast(&[token_url]).await;
    delivers(&node, &publisher, "tokened").await;
    let wrong = format!("nats://guess@127.0.0.1:{}", nats.port);
    stays_unready(&unready_roomcast(&[wrong], &[]).await).await;
}

#[tokio::test]
async fn tls_with_nats_ca_file_delivers_and_a_stranger_ca_is_refused() {
    let ca = support::tls::TestCa::new();
    let (cert, key) = ca.leaf(&["127.0.0.1"]);
    let stranger = support::tls::TestCa::new();
    let dir = std::env::temp_dir().join(format!(
        "roomcast-nats-tls-{}-{}",
        std::process::id(),
        support::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let (cert, key) = (file("server.crt", &cert), file("server.key", &key));
    let (ca_file, stranger_file) = (
        file("ca.pem", &ca.root_pem),
        file("stranger.pem", &stranger.root_pem),
    );
    let nats = NatsServer::start_with(&["--tls", "--tlscert", &cert, "--tlskey", &key]).await;

    let publisher = async_nats::ConnectOptions::new()
        .add_root_certificates(ca_file.clone().into())
        .require_tls(true)
        .connect(nats.url())
        .await
        .unwrap();
    let node = unready_roomcast(&[nats.url()], &["--nats-ca-file", &ca_file]).await;
    wait_ready(node.port).await;
    delivers(&node, &publisher, "secure").await;

    let refused = unready_roomcast(&[nats.url()], &["--nats-ca-file", &stranger_file]).await;
    stays_unready(&refused).await;
    let _ = std::fs::remove_dir_all(&dir);
}
