//! MQTT ingest against a real Mosquitto started here on free ports: topic →
//! room mapping to /ws, /sse and Socket.IO clients, password files, TLS with a
//! throwaway CA, a Mosquitto restart while a device keeps publishing QoS 1,
//! two roomcast nodes on one Redis ingesting each message once (shared
//! subscription, or a lease that survives `kill -9` of its holder), retained
//! messages as rooms' latest values (`--mqtt-retained`), and bad
//! filters/templates refused at start.
//!
//! Needs `mosquitto`, `mosquitto_pub`, `mosquitto_passwd` (Debian packages
//! `mosquitto`, `mosquitto-clients`) and `redis-server`; ./scripts/test
//! installs them.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use support::redis::RedisServer;
use support::server::ServerProcess;
use support::{Server, free_port, init_logs, next_json, wait_until};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(20);

/// A `mosquitto` this test started, with its own config, password file,
/// certificates and persistence in a temp dir. Killed on drop.
struct Mosquitto {
    port: u16,
    tls_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

#[derive(Default)]
struct MosquittoOptions<'a> {
    /// Only this user may connect (a `mosquitto_passwd` file).
    password: Option<(&'a str, &'a str)>,
    /// A TLS listener with this (certificate, key, CA) PEM.
    tls: Option<(String, String, String)>,
}

impl Mosquitto {
    async fn start(options: MosquittoOptions<'_>) -> Mosquitto {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "roomcast-mosquitto-{}-{port}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create mosquitto dir");
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        let mut config = format!(
            "per_listener_settings false\n\
             user {user}\n\
             persistence true\n\
             persistence_location {dir}/\n\
             log_dest file {dir}/mosquitto.log\n\
             log_type all\n\
             listener {port} 127.0.0.1\n",
            dir = dir.display()
        );
        match options.password {
            Some((name, password)) => {
                let file = dir.join("passwd");
                let status = Command::new("mosquitto_passwd")
                    .arg("-c")
                    .arg("-b")
                    .arg(&file)
                    .args([name, password])
                    .status()
                    .expect("run mosquitto_passwd (package mosquitto)");
                assert!(status.success());
                config += &format!("allow_anonymous false\npassword_file {}\n", file.display());
            }
            None => config += "allow_anonymous true\n",
        }
        let mut tls_port = None;
        if let Some((cert, key, ca)) = &options.tls {
            let port = free_port();
            for (name, pem) in [("server.pem", cert), ("server.key", key), ("ca.pem", ca)] {
                std::fs::write(dir.join(name), pem).unwrap();
            }
            config += &format!(
                "listener {port} 127.0.0.1\ncertfile {d}/server.pem\nkeyfile {d}/server.key\ncafile {d}/ca.pem\n",
                d = dir.display()
            );
            tls_port = Some(port);
        }
        std::fs::write(dir.join("mosquitto.conf"), config).unwrap();
        let mut mosquitto = Mosquitto {
            port,
            tls_port,
            dir,
            child: None,
        };
        mosquitto.spawn().await;
        mosquitto
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        // Debian's package puts the broker in /usr/sbin (not on a user's PATH).
        let program = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(program)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto (package mosquitto)");
        self.child = Some(child);
        let port = self.port;
        wait_until(WAIT, "mosquitto listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
    }

    /// SIGTERM (Mosquitto writes its persistence file), wait, start again
    /// on the same ports.
    async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            child.wait().unwrap();
        }
        self.spawn().await;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// `mosquitto_pub` with `args` (plus host and port), to completion.
    async fn publish(&self, args: &[&str], stdin: Option<String>) {
        let mut command = tokio::process::Command::new("mosquitto_pub");
        command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = command
            .spawn()
            .expect("spawn mosquitto_pub (package mosquitto-clients)");
        if let Some(text) = stdin {
            use tokio::io::AsyncWriteExt;
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).await.unwrap();
        }
        let status = tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("mosquitto_pub finishes")
            .unwrap();
        assert!(status.success(), "mosquitto_pub {args:?}: {status}");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// roomcast with `args` after the MQTT URL; returns once it is subscribed.
async fn roomcast(url: &str, args: &[&str]) -> Server {
    let mut all = vec!["--mqtt-url", url];
    all.extend_from_slice(args);
    let server = Server::start(&all).await;
    let mqtt = server.running.mqtt.clone().expect("MQTT configured");
    wait_until(WAIT, "the MQTT ingest is subscribed", || mqtt.is_up()).await;
    server
}

async fn ws_subscribe(server: &Server, room: &str) -> Ws {
    ws_subscribe_at(server.running.local_addr.port(), room).await
}

async fn ws_subscribe_at(port: u16, room: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut ws = tokio::time::timeout(WAIT, connect_async(url))
        .await
        .expect("websocket handshake in time")
        .expect("websocket handshake")
        .0;
    let request = json!({"op": "subscribe", "channel": room, "id": 1});
    ws.send(Message::text(request.to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await, json!({"type": "ok", "id": 1}));
    ws
}

/// A Socket.IO (EIO4 websocket) client in `room`.
async fn socketio_join(server: &Server, room: &str) -> Ws {
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket",
        server.running.local_addr
    );
    let mut ws = tokio::time::timeout(WAIT, connect_async(url))
        .await
        .expect("socket.io handshake in time")
        .expect("socket.io handshake")
        .0;
    assert!(socketio_text(&mut ws).await.starts_with("0{"));
    ws.send(Message::text("40")).await.unwrap();
    assert!(socketio_text(&mut ws).await.starts_with("40{"));
    let join = format!(r#"421["channel","{room}"]"#);
    ws.send(Message::text(join)).await.unwrap();
    assert_eq!(socketio_text(&mut ws).await, r#"431[{"ok":true}]"#);
    ws
}

async fn socketio_text(ws: &mut Ws) -> String {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a Socket.IO frame in time")
            .expect("open")
            .expect("valid frame");
        match frame {
            Message::Text(text) if text.as_str() == "2" => {
                ws.send(Message::text("3")).await.unwrap();
            }
            Message::Text(text) => return text.to_string(),
            _ => continue,
        }
    }
}

/// A `/sse` request for `room`, returned once the stream is a member (its
/// response head may wait for the first event).
async fn sse_open(
    server: &Server,
    room: &str,
) -> tokio::task::JoinHandle<hyper::Response<hyper::body::Incoming>> {
    let hub = server.running.hub.clone();
    let before = hub.room_size(room);
    let request = hyper::Request::get(server.url(&format!("/sse?channel={room}")))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = tokio::spawn(server.client().request(request));
    wait_until(WAIT, "the SSE client joined", || {
        hub.room_size(room) > before
    })
    .await;
    let response = async move { response.await.unwrap().expect("SSE response") };
    tokio::spawn(response)
}

#[tokio::test]
async fn mosquitto_pub_reaches_ws_sse_and_socketio_through_the_room_template() {
    init_logs();
    let mosquitto = Mosquitto::start(MosquittoOptions::default()).await;
    let server = roomcast(
        &mosquitto.url(),
        &[
            "--mqtt-topic",
            "devices/+/telemetry",
            "--mqtt-topic",
            "plants/+/lines/+/#",
            "--mqtt-room",
            "device-{1}",
        ],
    )
    .await;
    let (status, body) = tokio::time::timeout(WAIT, server.json("GET", "/readyz", None, ""))
        .await
        .expect("readyz in time");
    assert_eq!((status, &body["mqtt"]), (200, &json!("up")), "{body}");
    let published = tokio::time::timeout(
        WAIT,
        server.metric("roomcast_mqtt_messages_total{outcome=\"published\"}"),
    )
    .await
    .expect("metrics in time");

    let mut ws = ws_subscribe(&server, "device-42").await;
    let sse = sse_open(&server, "device-42").await;
    let mut sio = socketio_join(&server, "device-42").await;
    // Not subscribed: never delivered. Then a QoS 1 and a QoS 0 message.
    mosquitto
        .publish(&["-q", "1", "-t", "devices/42/status", "-m", "x"], None)
        .await;
    let telemetry = r#"{"temp":21.5,"hum":40}"#;
    mosquitto
        .publish(
            &["-q", "1", "-t", "devices/42/telemetry", "-m", telemetry],
            None,
        )
        .await;
    mosquitto
        .publish(
            &["-q", "0", "-t", "plants/42/lines/7/x/y", "-m", "plain text"],
            None,
        )
        .await;

    let response = tokio::time::timeout(WAIT, sse).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let (mut sse, mut sse_text) = (response.into_body(), String::new());
    for expected in [json!({"temp":21.5,"hum":40}), json!("plain text")] {
        let message = next_json(&mut ws).await;
        assert_eq!(
            (&message["channel"], &message["data"]),
            (&json!("device-42"), &expected)
        );
        let event = support::sse::next_message(&mut sse, &mut sse_text, WAIT).await;
        assert_eq!(
            (&event["channel"], &event["data"]),
            (&json!("device-42"), &expected)
        );
    }
    // Socket.IO: the payload string, byte for byte, as the first argument.
    for expected in [telemetry, "plain text"] {
        let text = socketio_text(&mut sio).await;
        let event: Value = serde_json::from_str(&text[2..]).unwrap();
        assert_eq!(
            (&event[0], &event[1]),
            (&json!("message"), &json!(expected)),
            "{text}"
        );
        assert_eq!(event[2]["room"], "device-42");
    }
    let after = tokio::time::timeout(
        WAIT,
        server.metric("roomcast_mqtt_messages_total{outcome=\"published\"}"),
    )
    .await
    .expect("metrics in time (after)");
    assert!(after >= published + 2.0, "{published} → {after}");
}

#[tokio::test]
async fn a_password_file_admits_the_right_credentials_only() {
    init_logs();
    let mosquitto = Mosquitto::start(MosquittoOptions {
        password: Some(("roomcast", "s3cret pass")),
        ..Default::default()
    })
    .await;
    // Wrong password first: it must stay down, and say so on /readyz.
    let wrong = Server::start(&[
        "--mqtt-url",
        &mosquitto.url(),
        "--mqtt-username",
        "roomcast",
        "--mqtt-password",
        "nope",
        "--mqtt-client-id",
        "wrong-password",
    ])
    .await;
    // (Mosquitto logs no client id for a refused CONNECT; only this node
    // has tried yet.)
    wait_until(WAIT, "Mosquitto refused the wrong password", || {
        mosquitto.log().contains("disconnected, not authorised")
    })
    .await;
    let right = roomcast(
        &mosquitto.url(),
        &[
            "--mqtt-username",
            "roomcast",
            "--mqtt-password",
            "s3cret pass",
        ],
    )
    .await;
    let mut ws = ws_subscribe(&right, "a/b").await;
    mosquitto
        .publish(
            &[
                "-u",
                "roomcast",
                "-P",
                "s3cret pass",
                "-q",
                "1",
                "-t",
                "a/b",
                "-m",
                "hi",
            ],
            None,
        )
        .await;
    assert_eq!(next_json(&mut ws).await["data"], "hi");
    assert!(!wrong.running.mqtt.as_ref().unwrap().is_up());
    let (status, body) = wrong.json("GET", "/readyz", None, "").await;
    assert_eq!(
        (status, &body["status"]),
        (503, &json!("mqtt_disconnected")),
        "{body}"
    );
    assert_eq!(body["mqtt"], "down");
}

#[tokio::test]
async fn mqtts_with_a_private_ca_is_trusted_only_through_the_ca_file() {
    init_logs();
    let ca = support::tls::TestCa::new();
    let (cert, key) = ca.leaf(&["localhost"]);
    let mosquitto = Mosquitto::start(MosquittoOptions {
        tls: Some((cert, key, ca.root_pem.clone())),
        ..Default::default()
    })
    .await;
    let ca_file = mosquitto.dir.join("roomcast-ca.pem");
    std::fs::write(&ca_file, &ca.root_pem).unwrap();
    let url = format!("mqtts://localhost:{}", mosquitto.tls_port.unwrap());
    // Without the CA file the Mozilla roots do not know this CA.
    let untrusting = Server::start(&["--mqtt-url", &url, "--mqtt-client-id", "untrusting"]).await;
    let server = roomcast(&url, &["--mqtt-ca-file", ca_file.to_str().unwrap()]).await;
    let mut ws = ws_subscribe(&server, "secure/1").await;
    mosquitto
        .publish(&["-q", "1", "-t", "secure/1", "-m", "over tls"], None)
        .await;
    assert_eq!(next_json(&mut ws).await["data"], "over tls");
    wait_until(WAIT, "Mosquitto saw the failed handshake", || {
        mosquitto.log().contains("OpenSSL Error")
    })
    .await;
    assert!(!untrusting.running.mqtt.as_ref().unwrap().is_up());
}

/// A device on its own persistent MQTT session publishing QoS 1 messages
/// `0..count`; reconnects by itself.
async fn device(
    port: u16,
    topic: &str,
    count: u32,
    restart_at: u32,
) -> tokio::sync::mpsc::Receiver<u32> {
    use rumqttc::v5::{AsyncClient, MqttOptions, mqttbytes::QoS};
    let mut options = MqttOptions::new("device-7", "127.0.0.1", port);
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(300));
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    // Tells the test when to restart the broker.
    let (sent, progress) = tokio::sync::mpsc::channel(1);
    let topic = topic.to_owned();
    tokio::spawn(async move {
        for seq in 0..count {
            client
                .publish(&topic, QoS::AtLeastOnce, false, seq.to_string())
                .await
                .expect("queue the publish");
            if seq == restart_at {
                let _ = sent.send(seq).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    progress
}

/// A device publishes `COUNT` QoS 1 messages while Mosquitto restarts;
/// returns how many times each arrived at a /ws client, and how many the
/// restarted Mosquitto itself acknowledged with "no matching subscribers"
/// (reason code 16) instead of queueing them for roomcast.
async fn across_a_mosquitto_restart(share_group: &str) -> (HashMap<u32, u32>, usize) {
    const COUNT: u32 = 300;
    let mut mosquitto = Mosquitto::start(MosquittoOptions::default()).await;
    let group = format!("--mqtt-share-group={share_group}");
    let server = roomcast(&mosquitto.url(), &["--mqtt-topic", "sensors/#", &group]).await;
    let reconnects = server.metric("roomcast_mqtt_reconnects_total").await;
    let mut ws = ws_subscribe(&server, "sensors/7").await;
    let mut progress = device(mosquitto.port, "sensors/7", COUNT, 100).await;
    progress
        .recv()
        .await
        .expect("the device got to the restart point");
    mosquitto.restart().await;

    let no_subscribers = || mosquitto.log().matches(", rc16)").count();
    let mut seen: HashMap<u32, u32> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() + no_subscribers() < COUNT as usize {
        let soon = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
        let Some(message) = json_until(&mut ws, soon).await else {
            if tokio::time::Instant::now() < deadline {
                continue;
            }
            let missing: Vec<u32> = (0..COUNT).filter(|s| !seen.contains_key(s)).collect();
            panic!("lost across the restart: {missing:?}");
        };
        let seq: u32 = message["data"].as_u64().expect("a number") as u32;
        *seen.entry(seq).or_default() += 1;
    }
    assert!(server.metric("roomcast_mqtt_reconnects_total").await > reconnects);
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{COUNT} QoS 1 messages across a Mosquitto restart: {} received, {duplicates} of them twice; {} refused by Mosquitto for want of a subscriber",
        seen.len(),
        no_subscribers()
    );
    (seen, no_subscribers())
}

#[tokio::test]
async fn mosquitto_restarted_while_a_device_publishes_qos1_loses_nothing() {
    // A plain persistent subscription (one node): Mosquitto restores it from
    // its persistence file and queues every message for roomcast.
    init_logs();
    let (seen, no_subscribers) = across_a_mosquitto_restart("").await;
    assert_eq!(no_subscribers, 0);
    assert_eq!(seen.len(), 300, "every message arrives at least once");
}

#[tokio::test]
async fn with_a_shared_subscription_only_what_mosquitto_refused_is_missing() {
    // Mosquitto 2.0 does not restore *shared* subscriptions from its
    // persistence file: until roomcast re-subscribes (within its first
    // reconnect delay), a message has no subscriber and Mosquitto answers
    // the device "no matching subscribers". Everything else must arrive.
    init_logs();
    let (seen, no_subscribers) = across_a_mosquitto_restart("roomcast").await;
    assert_eq!(seen.len() + no_subscribers, 300);
}

/// The next JSON text frame, or `None` at `deadline`.
async fn json_until(ws: &mut Ws, deadline: tokio::time::Instant) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        if let Some(Ok(Message::Text(text))) = frame {
            return Some(serde_json::from_str(text.as_str()).expect("JSON frame"));
        }
    }
}

/// Two roomcast nodes on one Redis, each with a /ws client in the room;
/// `lines` MQTT messages; returns what each client received before `end`.
async fn two_nodes(share_group: &str, lines: usize) -> [Vec<String>; 2] {
    let redis = RedisServer::start().await;
    let mosquitto = Mosquitto::start(MosquittoOptions::default()).await;
    let group = format!("--mqtt-share-group={share_group}");
    let node = |id: &'static str| {
        let (url, redis, group) = (mosquitto.url(), redis.url(), group.clone());
        async move {
            roomcast(
                &url,
                &[
                    "--redis-url",
                    &redis,
                    "--mqtt-client-id",
                    id,
                    &group,
                    "--mqtt-topic",
                    "room/+",
                ],
            )
            .await
        }
    };
    let (a, b) = (node("node-a").await, node("node-b").await);
    for server in [&a, &b] {
        wait_until(WAIT, "redis broker ready", || {
            server.running.broker.is_ready()
        })
        .await;
    }
    let mut clients = [
        ws_subscribe(&a, "room/1").await,
        ws_subscribe(&b, "room/1").await,
    ];
    let text: String = (0..lines).map(|i| format!("m{i}\n")).collect();
    mosquitto
        .publish(&["-q", "1", "-t", "room/1", "-l"], Some(text))
        .await;
    mosquitto
        .publish(&["-q", "1", "-t", "room/1", "-m", "end"], None)
        .await;
    let mut received = [Vec::new(), Vec::new()];
    for (client, got) in clients.iter_mut().zip(&mut received) {
        loop {
            let data = next_json(client).await["data"].as_str().unwrap().to_owned();
            if data == "end" {
                break;
            }
            got.push(data);
        }
    }
    received
}

#[tokio::test]
async fn two_nodes_on_one_redis_ingest_each_message_once() {
    init_logs();
    let lines = 40;
    let expected: Vec<String> = (0..lines).map(|i| format!("m{i}")).collect();
    for got in two_nodes("roomcast", lines).await {
        let mut sorted = got.clone();
        sorted.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
        assert_eq!(sorted, expected, "each message exactly once: {got:?}");
    }
}

#[tokio::test]
async fn without_a_shared_subscription_every_node_ingests_every_message() {
    // The control for the test above: plain subscriptions double everything.
    init_logs();
    for got in two_nodes("", 10).await {
        assert_eq!(got.len(), 20, "{got:?}");
    }
}

#[tokio::test]
async fn bad_filters_templates_and_urls_are_config_errors_at_start() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--mqtt-topic", "devices/#/x"],
            "`#` must be the last level",
        ),
        (&["--mqtt-topic", ""], "--mqtt-topic must not be empty"),
        (&["--mqtt-topic", "a+/b"], "must fill a whole level"),
        (
            &["--mqtt-topic", "$share/g/a"],
            "roomcast adds `$share/<group>/` itself",
        ),
        (
            &["--mqtt-topic", "devices/+/t", "--mqtt-room", "{1}-{3}"],
            "--mqtt-room `{1}-{3}` uses {3} but --mqtt-topic `devices/+/t` has only 1 `+` wildcard(s)",
        ),
        (
            &["--mqtt-room", "x-{1}"],
            "--mqtt-topic `#` has only 0 `+` wildcard(s)",
        ),
        (
            &["--mqtt-topic", "+", "--mqtt-room", "dev-{a}"],
            "must start a placeholder",
        ),
        (
            &["--mqtt-topic", "+", "--mqtt-room", ""],
            "--mqtt-room must not be empty",
        ),
        (
            &["--mqtt-retained"],
            "--mqtt-retained keeps retained messages as rooms' latest values: it needs a [[rules]] table with cache = \"last\"",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec![
            "roomcast",
            "--listen",
            "127.0.0.1:0",
            "--mqtt-url",
            "mqtt://127.0.0.1:1",
        ];
        all.extend_from_slice(args);
        let cli =
            roomcast::config::parse_with_file(all.iter().map(Into::into).collect(), None).unwrap();
        let error = roomcast::server::start(&cli.serve, roomcast::shutdown::Shutdown::new())
            .await
            .err()
            .unwrap_or_else(|| panic!("{args:?} must be refused"));
        assert!(error.to_string().contains(message), "{args:?}: {error}");
    }
    for url in ["http://h:1883", "mqtt://user:pw@h", "mqtt://"] {
        let all = ["roomcast", "--listen", "127.0.0.1:0", "--mqtt-url", url];
        let cli =
            roomcast::config::parse_with_file(all.iter().map(Into::into).collect(), None).unwrap();
        let error = roomcast::server::start(&cli.serve, roomcast::shutdown::Shutdown::new())
            .await
            .err()
            .unwrap_or_else(|| panic!("{url} must be refused"));
        assert!(
            error.to_string().starts_with("MQTT ingest: --mqtt-url"),
            "{url}: {error}"
        );
    }
    let qos2 = ["roomcast", "--mqtt-url", "mqtt://h", "--mqtt-qos", "2"];
    assert!(
        roomcast::config::parse_with_file(qos2.iter().map(Into::into).collect(), None).is_err()
    );
}

#[tokio::test]
async fn messages_held_during_a_redis_outage_survive_a_roomcast_restart() {
    // QoS 1 messages are acknowledged to Mosquitto only once published to
    // roomcast's broker: a node stopped while Redis is down leaves them in
    // its MQTT session, and the node that takes the session over gets them.
    init_logs();
    let mut redis = RedisServer::start().await;
    let mosquitto = Mosquitto::start(MosquittoOptions::default()).await;
    let args = [
        "--redis-url",
        &redis.url(),
        "--mqtt-client-id",
        "holder",
        "--mqtt-share-group=",
    ];
    let first = roomcast(&mosquitto.url(), &args).await;
    wait_until(WAIT, "redis broker ready", || {
        first.running.broker.is_ready()
    })
    .await;
    redis.kill();
    wait_until(WAIT, "redis broker down", || {
        !first.running.broker.is_ready()
    })
    .await;
    let text: String = (0..5).map(|i| format!("held{i}\n")).collect();
    mosquitto
        .publish(&["-q", "1", "-t", "held", "-l"], Some(text))
        .await;
    wait_until(WAIT, "Mosquitto sent all five to roomcast", || {
        mosquitto.log().matches("Sending PUBLISH to holder").count() >= 5
    })
    .await;
    first.shutdown.trigger();
    assert!(first.shutdown.wait(Duration::from_secs(5)).await);
    drop(first);

    redis.restart().await;
    let watcher = Server::start(&["--redis-url", &redis.url()]).await;
    wait_until(WAIT, "redis broker ready", || {
        watcher.running.broker.is_ready()
    })
    .await;
    let mut ws = ws_subscribe(&watcher, "held").await;
    let _second = roomcast(&mosquitto.url(), &args).await;
    for i in 0..5 {
        assert_eq!(next_json(&mut ws).await["data"], format!("held{i}"));
    }
}

/// roomcast (memory broker) ingesting `devices/+/status` into `device-{1}`,
/// a cached room, with `flags`.
async fn cached_devices(mosquitto: &Mosquitto, flags: &[&str]) -> (Server, support::TempDir) {
    let dir = support::TempDir::new("mqtt-retained");
    let rules = "[[rules]]\nmatch = \"device-*\"\ncache = \"last\"\n";
    std::fs::write(dir.path("roomcast.toml"), rules).unwrap();
    let config = dir.str("roomcast.toml");
    let mut args = vec![
        "--config",
        &config,
        "--mqtt-topic",
        "devices/+/status",
        "--mqtt-room",
        "device-{1}",
    ];
    args.extend_from_slice(flags);
    (roomcast(&mosquitto.url(), &args).await, dir)
}

/// The `data` of the next `/ws` message.
async fn next_data(ws: &mut Ws) -> Value {
    let message = next_json(ws).await;
    assert_eq!(message["type"], "message", "{message}");
    message["data"].clone()
}

/// Retained messages become the rooms' values: each joiner gets the
/// device's retained status first, once, and a live message after it; they
/// are not news (not published to roomcast's broker). After a Mosquitto
/// restart the retained message comes again and does not replace the newer
/// live value. With the default shared subscription (which Mosquitto sends
/// no retained messages) and with a plain one.
async fn retained_messages_are_rooms_latest_values(share_group: &str) {
    init_logs();
    let mut mosquitto = Mosquitto::start(MosquittoOptions::default()).await;
    for (topic, status) in [
        ("devices/1/status", "online"),
        ("devices/2/status", "asleep"),
    ] {
        mosquitto
            .publish(&["-r", "-q", "1", "-t", topic, "-m", status], None)
            .await;
    }
    let group = format!("--mqtt-share-group={share_group}");
    let (server, _dir) = cached_devices(&mosquitto, &["--mqtt-retained", &group]).await;
    // The value arrives as the first message whether it came before this
    // join (the value) or after it (news to a room without one).
    let mut first = ws_subscribe(&server, "device-1").await;
    assert_eq!(next_data(&mut first).await, "online");
    let mut second = ws_subscribe(&server, "device-1").await;
    assert_eq!(next_data(&mut second).await, "online");
    let mut other = ws_subscribe(&server, "device-2").await;
    assert_eq!(next_data(&mut other).await, "asleep");
    mosquitto
        .publish(&["-q", "1", "-t", "devices/1/status", "-m", "busy"], None)
        .await;
    for ws in [&mut first, &mut second] {
        assert_eq!(next_data(ws).await, "busy", "once, after the value");
    }

    // The retained "online" comes again on the re-subscribe; "busy" is newer.
    let retained_before = server
        .metric("roomcast_mqtt_messages_total{outcome=\"retained\"}")
        .await;
    mosquitto.restart().await;
    let mqtt = server.running.mqtt.clone().expect("MQTT configured");
    wait_until(WAIT, "the ingest is back", || mqtt.is_up()).await;
    support::eventually(WAIT, || async {
        let retained = server
            .metric("roomcast_mqtt_messages_total{outcome=\"retained\"}")
            .await;
        (retained >= retained_before + 2.0).then_some(())
    })
    .await
    .expect("the retained messages again after the restart");
    let mut late = ws_subscribe(&server, "device-1").await;
    assert_eq!(next_data(&mut late).await, "busy");
    mosquitto
        .publish(&["-q", "1", "-t", "devices/1/status", "-m", "idle"], None)
        .await;
    for ws in [&mut first, &mut second, &mut late] {
        assert_eq!(next_data(ws).await, "idle", "nothing in between");
    }
}

#[tokio::test]
async fn retained_messages_are_rooms_latest_values_with_a_shared_subscription() {
    retained_messages_are_rooms_latest_values("roomcast").await;
}

#[tokio::test]
async fn retained_messages_are_rooms_latest_values_with_a_plain_subscription() {
    retained_messages_are_rooms_latest_values("").await;
}

/// Without `--mqtt-retained` retained messages are not asked for: a cached
/// room's first joiner gets the first live message first.
#[tokio::test]
async fn without_mqtt_retained_retained_messages_are_not_ingested() {
    init_logs();
    let mosquitto = Mosquitto::start(MosquittoOptions::default()).await;
    mosquitto
        .publish(
            &["-r", "-q", "1", "-t", "devices/1/status", "-m", "old"],
            None,
        )
        .await;
    for group in ["--mqtt-share-group=roomcast", "--mqtt-share-group="] {
        let (server, _dir) = cached_devices(&mosquitto, &[group]).await;
        let mut ws = ws_subscribe(&server, "device-1").await;
        mosquitto
            .publish(&["-q", "1", "-t", "devices/1/status", "-m", "live"], None)
            .await;
        assert_eq!(next_data(&mut ws).await, "live", "{group}");
    }
}

/// The MQTT state a node's `/readyz` reports (`up`, `standby`, `down`).
async fn mqtt_state(node: &ServerProcess) -> String {
    let (_, body) = support::http::http_get(node.port, "/readyz").await;
    let body: Value = serde_json::from_str(&body).unwrap_or_default();
    body["mqtt"].as_str().unwrap_or("").to_owned()
}

/// Two roomcast processes on one Redis with `--mqtt-lease-s 2`: one ingests,
/// the other stands by. A device publishes 300 QoS 1 messages at 100 msg/s;
/// at the 100th the holder is killed with SIGKILL. The other takes the
/// lease over, connects with the same client id and gets the session's
/// queued messages: its client ends with every message, counted by
/// sequence number (some twice: those the killed node had published but
/// not acknowledged).
#[tokio::test]
async fn a_lease_moves_to_the_other_node_when_its_holder_is_killed() {
    const COUNT: u32 = 300;
    init_logs();
    let redis = RedisServer::start().await;
    let mosquitto = Mosquitto::start(MosquittoOptions::default()).await;
    let (mqtt_url, redis_url) = (mosquitto.url(), redis.url());
    let args = [
        "--redis-url",
        &redis_url,
        "--mqtt-url",
        &mqtt_url,
        "--mqtt-lease-s",
        "2",
        "--mqtt-topic",
        "sensors/#",
    ];
    let bin: &std::path::Path = env!("CARGO_BIN_EXE_roomcast").as_ref();
    let mut nodes = vec![
        ServerProcess::start(bin, &args).await,
        ServerProcess::start(bin, &args).await,
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    let holder = loop {
        let states = [mqtt_state(&nodes[0]).await, mqtt_state(&nodes[1]).await];
        match (states[0].as_str(), states[1].as_str()) {
            ("up", "standby") => break 0,
            ("standby", "up") => break 1,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "one up, one standby: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let survivor_port = nodes[1 - holder].port;
    let mut ws = ws_subscribe_at(survivor_port, "sensors/7").await;
    let mut progress = device(mosquitto.port, "sensors/7", COUNT, 100).await;
    progress.recv().await.expect("the device got to the kill");
    let killed = nodes.remove(holder);
    drop(killed); // SIGKILL, and reaped
    let survivor = nodes.pop().expect("the other node");

    let mut seen: HashMap<u32, u32> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < COUNT as usize {
        let Some(message) = json_until(&mut ws, deadline).await else {
            let missing: Vec<u32> = (0..COUNT).filter(|s| !seen.contains_key(s)).collect();
            panic!("lost while the lease moved: {missing:?}");
        };
        let seq = message["data"].as_u64().expect("a number") as u32;
        *seen.entry(seq).or_default() += 1;
    }
    assert_eq!(mqtt_state(&survivor).await, "up");
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{COUNT} QoS 1 messages, the lease holder killed at the 100th: {} received, {duplicates} of them twice",
        seen.len()
    );
    assert!(
        duplicates <= 64,
        "at most the killed node's unacknowledged messages (Receive Maximum 64) come twice: {duplicates}"
    );
}

/// One node on the memory broker holds the lease at once and ingests.
#[tokio::test]
async fn a_single_node_holds_its_lease_and_ingests() {
    init_logs();
    let mosquitto = Mosquitto::start(MosquittoOptions::default()).await;
    let server = roomcast(
        &mosquitto.url(),
        &["--mqtt-lease-s", "2", "--mqtt-topic", "a/+"],
    )
    .await;
    let (_, body) = server.json("GET", "/readyz", None, "").await;
    assert_eq!(body["mqtt"], "up", "{body}");
    let mut ws = ws_subscribe(&server, "a/1").await;
    mosquitto
        .publish(&["-q", "1", "-t", "a/1", "-m", "leased"], None)
        .await;
    assert_eq!(next_data(&mut ws).await, "leased");
}

#[tokio::test]
async fn a_lease_needs_a_broker_that_keeps_leases() {
    let nats = support::nats::NatsServer::start().await;
    let url = nats.url();
    let all = [
        "roomcast",
        "--listen",
        "127.0.0.1:0",
        "--broker",
        "nats",
        "--nats-url",
        &url,
        "--mqtt-url",
        "mqtt://127.0.0.1:1",
        "--mqtt-lease-s",
        "5",
    ];
    let cli =
        roomcast::config::parse_with_file(all.iter().map(Into::into).collect(), None).unwrap();
    let error = roomcast::server::start(&cli.serve, roomcast::shutdown::Shutdown::new())
        .await
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("--mqtt-lease-s needs a broker that keeps leases (memory or redis); the nats engine does not yet"),
        "{error}"
    );
}
