//! Publishes numbered, timestamped payloads to the rooms of a run, through
//! Redis `PUBLISH`, Redis Cluster `SPUBLISH` (on the slot's master), NATS
//! (subject `<prefix>.<room>`), roomcast's
//! `POST /api/publish` or an MQTT broker (QoS 1, topic = room) that roomcast
//! ingests from, either at a fixed rate
//! or saturating with a bounded window.
//!
//! Rooms are spread over a few *lanes*, each one connection publishing in
//! order, so a room's sequence numbers leave in order and any reordering a
//! receiver sees is the server's. The saturating window bounds deliveries in
//! flight (published × members − received, from the workers' progress), so
//! the publisher runs as fast as the receivers keep up and never buries the
//! server's per-client queues.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::payload::{self, Stamp};
use crate::protocol::room_name;

/// Where messages are published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Via {
    /// `logged`: `FCALL roomcast_publish` (the room log) rather than `PUBLISH`.
    Redis {
        url: String,
        logged: bool,
    },
    /// A seed node of a Redis Cluster that `--broker redis-cluster` nodes use.
    RedisCluster {
        seed: String,
    },
    /// A NATS server that `--broker nats` nodes subscribe on; room R is `<prefix>.R`.
    Nats {
        url: String,
        prefix: String,
    },
    Http {
        server: SocketAddr,
        key: String,
    },
    Mqtt {
        broker: SocketAddr,
    },
}

impl Via {
    pub fn name(&self) -> &'static str {
        match self {
            Via::Redis { logged: false, .. } => "redis",
            Via::Redis { logged: true, .. } => "redis-log",
            Via::Nats { .. } => "nats",
            Via::RedisCluster { .. } => "redis-cluster",
            Via::Http { .. } => "http",
            Via::Mqtt { .. } => "mqtt",
        }
    }
}

/// How fast.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Pace {
    /// Messages per second over all rooms.
    Rate(f64),
    /// As fast as receivers keep up, at most `window` messages per room
    /// ahead of the average receiver.
    Saturate { window: u64 },
}

#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub via: Via,
    pub pace: Pace,
    pub rooms: u32,
    pub room_prefix: String,
    pub payload_bytes: usize,
    pub duration: Duration,
    /// Receivers per room (connections / rooms), for the window.
    pub members_per_room: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishOutcome {
    pub published: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    /// Messages per second actually published.
    pub rate: f64,
    /// The window saw no receiver progress for a while and gave up early.
    pub stalled: bool,
    /// Last sequence number per room (what receivers should have seen).
    pub last_seq: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("http publish to {server}: {error}")]
    Http { server: SocketAddr, error: String },
    #[error("mqtt publish: {0}")]
    Mqtt(String),
    #[error("nats: {0}")]
    Nats(String),
    #[error("redis cluster: {0}")]
    RedisCluster(String),
}

/// Rooms per lane grow beyond this; one ordered connection each.
const MAX_LANES: usize = 4;
/// Jobs queued per lane before the dispatcher waits.
const LANE_QUEUE: usize = 32;
/// No receiver progress for this long ends a saturating run.
const STALL: Duration = Duration::from_secs(3);

struct Counters {
    published: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

/// Publishes for `plan.duration`; `received()` returns deliveries so far.
pub async fn run(
    plan: &PublishPlan,
    received: impl Fn() -> u64,
) -> Result<PublishOutcome, PublishError> {
    let lanes_n = (plan.rooms as usize).clamp(1, MAX_LANES);
    let counters = Arc::new(Counters {
        published: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
    });
    let mut lanes = Vec::with_capacity(lanes_n);
    let mut lane_tasks = tokio::task::JoinSet::new();
    for _ in 0..lanes_n {
        let publisher = Publisher::connect(&plan.via).await?;
        let (tx, rx) = mpsc::channel::<Stamp>(LANE_QUEUE);
        lanes.push(tx);
        lane_tasks.spawn(lane(
            publisher,
            rx,
            plan.room_prefix.clone(),
            plan.payload_bytes,
            counters.clone(),
        ));
    }

    let mut last_seq = vec![0u64; plan.rooms.max(1) as usize];
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut dispatched: u64 = 0;
    let mut stalled = false;
    let mut last_progress = (received(), Instant::now());
    let mut room: u32 = 0;
    'publishing: while Instant::now() < deadline {
        match plan.pace {
            Pace::Rate(rate) => {
                let due = (started.elapsed().as_secs_f64() * rate) as u64;
                if dispatched >= due {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            }
            Pace::Saturate { window } => {
                let limit = window as f64 * plan.members_per_room;
                loop {
                    let now_received = received();
                    if now_received != last_progress.0 {
                        last_progress = (now_received, Instant::now());
                    }
                    let in_flight = dispatched as f64 * plan.members_per_room - now_received as f64;
                    if in_flight <= limit {
                        break;
                    }
                    if last_progress.1.elapsed() > STALL {
                        stalled = true;
                        break 'publishing;
                    }
                    if Instant::now() >= deadline {
                        break 'publishing;
                    }
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
            }
        }
        let r = room as usize;
        last_seq[r] += 1;
        let stamp = Stamp {
            room,
            seq: last_seq[r],
            sent_us: 0,
        };
        if lanes[r % lanes_n].send(stamp).await.is_err() {
            break; // the lane ended; its error is counted
        }
        dispatched += 1;
        room = (room + 1) % plan.rooms.max(1);
    }
    drop(lanes);
    while lane_tasks.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    let published = counters.published.load(Ordering::Relaxed);
    let first_error = counters.first_error.lock().ok().and_then(|e| e.clone());
    Ok(PublishOutcome {
        published,
        errors: counters.errors.load(Ordering::Relaxed),
        first_error,
        seconds,
        rate: published as f64 / seconds.max(1e-9),
        stalled,
        last_seq,
    })
}

/// One ordered connection: stamps the send time right before sending.
async fn lane(
    mut publisher: Publisher,
    mut jobs: mpsc::Receiver<Stamp>,
    room_prefix: String,
    payload_bytes: usize,
    counters: Arc<Counters>,
) {
    while let Some(mut stamp) = jobs.recv().await {
        stamp.sent_us = payload::now_micros();
        let channel = room_name(&room_prefix, stamp.room);
        let body = payload::encode(stamp, payload_bytes);
        match publisher.publish(&channel, &body).await {
            Ok(()) => {
                counters.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = counters.first_error.lock()
                    && first.is_none()
                {
                    *first = Some(error.to_string());
                }
            }
        }
    }
}

enum Publisher {
    /// The connection, and whether it publishes through the room log.
    Redis(redis::aio::MultiplexedConnection, bool),
    RedisCluster(crate::redis_cluster::ClusterPublisher),
    /// The client and the subject prefix (with its trailing dot).
    Nats(async_nats::Client, String),
    Http(HttpPublisher),
    /// The client; its event loop runs in a task of its own.
    Mqtt(rumqttc::v5::AsyncClient),
}

impl Publisher {
    async fn connect(via: &Via) -> Result<Publisher, PublishError> {
        Ok(match via {
            Via::Redis { url, logged } => {
                let client = redis::Client::open(url.as_str())?;
                Publisher::Redis(client.get_multiplexed_async_connection().await?, *logged)
            }
            Via::RedisCluster { seed } => Publisher::RedisCluster(
                crate::redis_cluster::ClusterPublisher::connect(seed)
                    .await
                    .map_err(PublishError::RedisCluster)?,
            ),
            Via::Nats { url, prefix } => {
                let client = async_nats::connect(url.as_str())
                    .await
                    .map_err(|e| PublishError::Nats(format!("connect {url}: {e}")))?;
                Publisher::Nats(client, format!("{prefix}."))
            }
            Via::Http { server, key } => {
                crate::net::check_loopback(*server).map_err(|e| PublishError::Http {
                    server: *server,
                    error: e.to_string(),
                })?;
                Publisher::Http(HttpPublisher {
                    server: *server,
                    key: key.clone(),
                    stream: None,
                    buffer: Vec::with_capacity(1024),
                })
            }
            Via::Mqtt { broker } => {
                use rumqttc::v5::{AsyncClient, MqttOptions};
                let id = format!("roomcast-bench-{}", std::process::id());
                let mut options = MqttOptions::new(id, broker.ip().to_string(), broker.port());
                options.set_keep_alive(Duration::from_secs(30));
                let mut network = rumqttc::NetworkOptions::new();
                network.set_tcp_nodelay(true);
                options.set_network_options(network);
                let (client, mut eventloop) = AsyncClient::new(options, 10_000);
                tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
                Publisher::Mqtt(client)
            }
        })
    }

    async fn publish(&mut self, channel: &str, body: &str) -> Result<(), PublishError> {
        match self {
            Publisher::Redis(connection, false) => {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(body)
                    .query_async::<i64>(connection)
                    .await?;
                Ok(())
            }
            // Answers the entry's id, which the bench does not need.
            Publisher::Redis(connection, true) => {
                redis::cmd("FCALL")
                    .arg("roomcast_publish")
                    .arg(1)
                    .arg(channel)
                    .arg(body)
                    .query_async::<redis::Value>(connection)
                    .await?;
                Ok(())
            }
            Publisher::RedisCluster(cluster) => cluster
                .publish(channel, body)
                .await
                .map_err(PublishError::RedisCluster),
            Publisher::Nats(client, prefix) => client
                .publish(
                    format!("{prefix}{channel}"),
                    bytes::Bytes::copy_from_slice(body.as_bytes()),
                )
                .await
                .map_err(|e| PublishError::Nats(e.to_string())),
            Publisher::Mqtt(client) => {
                use rumqttc::v5::mqttbytes::QoS;
                let body = body.to_owned();
                client
                    .publish(channel, QoS::AtLeastOnce, false, body)
                    .await
                    .map_err(|e| PublishError::Mqtt(e.to_string()))
            }
            Publisher::Http(http) => http.publish(channel, body).await.map_err(|error| {
                http.stream = None; // reconnect on the next message
                PublishError::Http {
                    server: http.server,
                    error,
                }
            }),
        }
    }
}

/// A minimal HTTP/1.1 keep-alive client for `POST /api/publish`.
struct HttpPublisher {
    server: SocketAddr,
    key: String,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl HttpPublisher {
    async fn publish(&mut self, channel: &str, body: &str) -> Result<(), String> {
        let json = serde_json::json!({ "channel": channel, "data": body }).to_string();
        let request = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            self.server,
            self.key,
            json.len(),
            json
        );
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.server)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err("not connected".into());
        };
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.buffer.clear();
        // Read the head, then exactly Content-Length bytes of body.
        let head_end = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = stream
                .read_buf(&mut self.buffer)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while self.buffer.len() < head_end + 4 + length {
            let n = stream
                .read_buf(&mut self.buffer)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
        }
        if !head.starts_with("http/1.1 200") {
            let body = String::from_utf8_lossy(&self.buffer[head_end + 4..]).into_owned();
            let status = head.lines().next().unwrap_or("").to_owned();
            return Err(format!("{status}: {body}"));
        }
        Ok(())
    }
}
