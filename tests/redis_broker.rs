//! The Redis broker against a real `redis-server` (started per test on a free
//! port): delivery byte for byte, the pattern, publishing through Redis,
//! Redis absent at start, Redis killed and restarted while running, Redis
//! frozen and resumed (no acknowledged publish lost), a password in the URL,
//! and `rediss://` with a private CA.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use roomcast::brokers::redis::{RedisBroker, RedisOptions, start, start_with};
use roomcast::brokers::{Broker, BrokerError, Sink};
use roomcast::shutdown::Shutdown;
use tokio::sync::mpsc;

use support::redis::RedisServer;
use support::{free_port, init_logs, wait_until};

/// Long enough for the 5 s backoff cap plus a reconnect, on a slow CI box.
const READY_LIMIT: Duration = Duration::from_secs(20);
const RECEIVE_LIMIT: Duration = Duration::from_secs(5);

/// A sink that forwards what the broker delivers to the test.
fn collecting_sink() -> (Sink, mpsc::UnboundedReceiver<(String, Bytes)>) {
    init_logs();
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = Sink::new(move |channel: &str, payload: Bytes| {
        let _ = tx.send((channel.to_string(), payload));
    });
    (sink, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(String, Bytes)>) -> (String, Bytes) {
    tokio::time::timeout(RECEIVE_LIMIT, rx.recv())
        .await
        .expect("no message reached the sink in time")
        .expect("sink dropped")
}

/// PUBLISH from a plain client, as `redis-cli PUBLISH` would; returns the
/// number of subscribers Redis delivered to.
async fn redis_publish(url: &str, channel: &str, payload: &[u8]) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn ready_broker(
    redis: &RedisServer,
    pattern: &str,
) -> (
    RedisBroker,
    Shutdown,
    mpsc::UnboundedReceiver<(String, Bytes)>,
) {
    let shutdown = Shutdown::new();
    let (sink, rx) = collecting_sink();
    let broker = start(&redis.url(), pattern, sink, &shutdown).unwrap();
    wait_until(READY_LIMIT, "the broker is ready", || broker.is_ready()).await;
    (broker, shutdown, rx)
}

async fn stop(shutdown: Shutdown) {
    shutdown.trigger();
    assert!(
        shutdown.wait(Duration::from_secs(2)).await,
        "the subscriber task did not end promptly on shutdown"
    );
}

#[tokio::test]
async fn external_publish_reaches_the_sink_byte_for_byte() {
    let redis = RedisServer::start().await;
    let (broker, shutdown, mut rx) = ready_broker(&redis, "*").await;
    assert_eq!(broker.name(), "redis");

    // Invalid UTF-8, NUL, CR LF and a lone continuation byte: nothing may be
    // decoded, trimmed or replaced on the way.
    let payload: &[u8] = b"\xff\x00hello\r\n\x80\xc3\x28 caf\xc3\xa9";
    assert_eq!(redis_publish(&redis.url(), "device01", payload).await, 1);
    let (channel, got) = next(&mut rx).await;
    assert_eq!(channel, "device01");
    assert_eq!(got.as_ref(), payload);

    // An empty payload and a large one arrive as they are, in order.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    redis_publish(&redis.url(), "room:a", b"").await;
    redis_publish(&redis.url(), "room:a", &big).await;
    assert_eq!(next(&mut rx).await, ("room:a".to_string(), Bytes::new()));
    assert_eq!(
        next(&mut rx).await,
        ("room:a".to_string(), Bytes::from(big))
    );

    // A channel name that is not UTF-8 cannot name a room: it is skipped,
    // and the subscription carries on.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg(&b"bad\xff"[..])
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    redis_publish(&redis.url(), "good", b"y").await;
    assert_eq!(
        next(&mut rx).await,
        ("good".to_string(), Bytes::from_static(b"y"))
    );
    assert!(broker.is_ready());
    stop(shutdown).await;
}

#[tokio::test]
async fn the_pattern_is_honoured() {
    let redis = RedisServer::start().await;
    let (_broker, shutdown, mut rx) = ready_broker(&redis, "device*").await;

    assert_eq!(redis_publish(&redis.url(), "other", b"no").await, 0);
    assert_eq!(redis_publish(&redis.url(), "device01", b"yes").await, 1);
    // Redis delivers in order, so had `other` been delivered it would come first.
    assert_eq!(
        next(&mut rx).await,
        ("device01".to_string(), Bytes::from_static(b"yes"))
    );
    redis_publish(&redis.url(), "xdevice01", b"no").await;
    redis_publish(&redis.url(), "device", b"yes2").await;
    assert_eq!(
        next(&mut rx).await,
        ("device".to_string(), Bytes::from_static(b"yes2"))
    );
    assert!(rx.try_recv().is_err(), "nothing else may arrive");
    stop(shutdown).await;
}

#[tokio::test]
async fn broker_publish_goes_through_redis_to_the_sink() {
    let redis = RedisServer::start().await;
    let (broker, shutdown, mut rx) = ready_broker(&redis, "*").await;

    // A plain subscriber sees it too: the message really went through Redis.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut watcher = client.get_async_pubsub().await.unwrap();
    watcher.subscribe("room").await.unwrap();

    let payload = Bytes::from_static(b"\x00\xfehi");
    broker.publish("room", payload.clone()).await.unwrap();
    assert_eq!(next(&mut rx).await, ("room".to_string(), payload.clone()));
    let seen = tokio::time::timeout(
        RECEIVE_LIMIT,
        futures_util::StreamExt::next(&mut watcher.on_message()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(seen.get_payload_bytes(), payload.as_ref());
    stop(shutdown).await;
}

#[tokio::test]
async fn redis_down_at_start_then_up_becomes_ready_and_receives() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let shutdown = Shutdown::new();
    let (sink, mut rx) = collecting_sink();
    let broker =
        start(&url, "*", sink, &shutdown).expect("an unreachable Redis is not a start error");

    assert!(!broker.is_ready());
    let error = broker
        .publish("room", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(error, BrokerError::Unavailable(_)), "{error:?}");
    // Let a few reconnect attempts fail; it must stay not ready and alive.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!broker.is_ready());

    let redis = RedisServer::start_on(port).await;
    let took = wait_until(READY_LIMIT, "the broker is ready", || broker.is_ready()).await;
    eprintln!(
        "ready {took:?} after redis-server answered PING (broker started while Redis was down)"
    );

    assert_eq!(redis_publish(&redis.url(), "device01", b"late").await, 1);
    assert_eq!(
        next(&mut rx).await,
        ("device01".to_string(), Bytes::from_static(b"late"))
    );
    broker
        .publish("device01", Bytes::from_static(b"mine"))
        .await
        .unwrap();
    assert_eq!(
        next(&mut rx).await,
        ("device01".to_string(), Bytes::from_static(b"mine"))
    );
    stop(shutdown).await;
}

#[tokio::test]
async fn redis_killed_and_restarted_while_running_resumes_delivery() {
    let mut redis = RedisServer::start().await;
    let (broker, shutdown, mut rx) = ready_broker(&redis, "*").await;
    redis_publish(&redis.url(), "room", b"before").await;
    assert_eq!(
        next(&mut rx).await,
        ("room".to_string(), Bytes::from_static(b"before"))
    );

    redis.kill();
    let killed = Instant::now();
    let took = wait_until(READY_LIMIT, "the broker notices Redis is gone", || {
        !broker.is_ready()
    })
    .await;
    eprintln!("not ready {took:?} after SIGKILL");
    let error = broker
        .publish("room", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(error, BrokerError::Unavailable(_)), "{error:?}");

    // Stay down long enough for the backoff to grow past its first steps.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!broker.is_ready());
    redis.restart().await;
    let took = wait_until(READY_LIMIT, "the broker is ready again", || {
        broker.is_ready()
    })
    .await;
    eprintln!(
        "ready again {took:?} after redis-server answered PING ({:?} after the kill)",
        killed.elapsed()
    );

    assert_eq!(redis_publish(&redis.url(), "room", b"after").await, 1);
    assert_eq!(
        next(&mut rx).await,
        ("room".to_string(), Bytes::from_static(b"after"))
    );
    broker
        .publish("room", Bytes::from_static(b"mine"))
        .await
        .unwrap();
    assert_eq!(
        next(&mut rx).await,
        ("room".to_string(), Bytes::from_static(b"mine"))
    );
    stop(shutdown).await;
}

/// Short health-check timings so a silent Redis is noticed quickly;
/// production uses 5 s for both.
fn quick_health_checks() -> RedisOptions {
    RedisOptions {
        health_interval: Duration::from_millis(200),
        op_timeout: Duration::from_millis(300),
        ..RedisOptions::default()
    }
}

#[tokio::test]
async fn a_redis_that_stops_answering_is_noticed_by_the_health_check() {
    let redis = RedisServer::start().await;
    let shutdown = Shutdown::new();
    let (sink, mut rx) = collecting_sink();
    let options = quick_health_checks();
    let broker = start_with(&redis.url(), "*", options, sink, &shutdown).unwrap();
    wait_until(READY_LIMIT, "the broker is ready", || broker.is_ready()).await;

    // SIGSTOP: the socket stays open, so only an unanswered PING reveals it.
    redis.freeze(true);
    let took = wait_until(READY_LIMIT, "the broker notices the silence", || {
        !broker.is_ready()
    })
    .await;
    eprintln!("not ready {took:?} after SIGSTOP");
    let error = broker
        .publish("room", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(error, BrokerError::Unavailable(_)), "{error:?}");

    redis.freeze(false);
    let took = wait_until(READY_LIMIT, "the broker is ready again", || {
        broker.is_ready()
    })
    .await;
    eprintln!("ready again {took:?} after SIGCONT");
    // Drain what the frozen server may still deliver (the unanswered publish
    // above can be executed once it thaws), then check fresh delivery.
    redis_publish(&redis.url(), "room", b"after").await;
    loop {
        let (channel, payload) = next(&mut rx).await;
        if payload.as_ref() == b"after" {
            assert_eq!(channel, "room");
            break;
        }
    }
    stop(shutdown).await;
}

/// Frozen long enough for the subscriber to be between two attempts when
/// Redis thaws (short timings make its backoff the larger part of the time):
/// the publishing connection is back first, and every publish it had
/// acknowledged must still reach the sink.
#[tokio::test]
async fn a_frozen_then_resumed_redis_loses_no_acknowledged_publish() {
    let redis = RedisServer::start().await;
    let shutdown = Shutdown::new();
    let (sink, mut rx) = collecting_sink();
    let options = quick_health_checks();
    let broker = Arc::new(start_with(&redis.url(), "*", options, sink, &shutdown).unwrap());
    wait_until(READY_LIMIT, "the broker is ready", || broker.is_ready()).await;

    let stop_publishing = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (broker, stop) = (broker.clone(), stop_publishing.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let payload = Bytes::from(n.to_string());
                if broker.publish("frozen", payload).await.is_ok() {
                    acknowledged.push(n);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.freeze(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    redis.freeze(false);
    wait_until(READY_LIMIT, "the broker is ready again", || {
        broker.is_ready()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_publishing.store(true, Ordering::Relaxed);
    let acknowledged = publishing.await.unwrap();

    let mut received = std::collections::BTreeSet::new();
    while let Ok(Some((_, payload))) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await
    {
        if let Ok(n) = std::str::from_utf8(&payload).unwrap_or("").parse::<u64>() {
            received.insert(n);
        }
    }
    let lost: Vec<u64> = acknowledged
        .iter()
        .filter(|n| !received.contains(n))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged publishes never reached the sink: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    stop(shutdown).await;
}

#[tokio::test]
async fn a_password_in_the_url_authenticates_both_connections() {
    let redis = RedisServer::start().await;
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .query_async(&mut admin)
        .await
        .unwrap();
    let with_password = format!("redis://:s3cret@127.0.0.1:{}", redis.port);

    let shutdown = Shutdown::new();
    let (sink, mut rx) = collecting_sink();
    let wrong = format!("redis://:wrong@127.0.0.1:{}", redis.port);
    let refused = start(&wrong, "*", sink.clone(), &shutdown).unwrap();
    let broker = start(&with_password, "*", sink, &shutdown).unwrap();
    wait_until(READY_LIMIT, "the broker is ready", || broker.is_ready()).await;
    broker
        .publish("room", Bytes::from_static(b"authenticated"))
        .await
        .unwrap();
    assert_eq!(
        next(&mut rx).await,
        ("room".to_string(), Bytes::from_static(b"authenticated"))
    );
    assert!(!refused.is_subscribed(), "a wrong password subscribed");
    stop(shutdown).await;
}

#[tokio::test]
async fn rediss_with_a_private_ca_delivers_and_a_stranger_ca_is_refused() {
    let ca = support::tls::TestCa::new();
    let (cert, key) = ca.leaf(&["127.0.0.1"]);
    let redis = RedisServer::start_tls(&cert, &key).await;
    let trusting = |root_pem: &str| RedisOptions {
        tls_roots: Some(root_pem.as_bytes().to_vec()),
        ..RedisOptions::default()
    };

    let shutdown = Shutdown::new();
    let (sink, mut rx) = collecting_sink();
    let broker = start_with(&redis.url(), "*", trusting(&ca.root_pem), sink, &shutdown).unwrap();
    wait_until(READY_LIMIT, "the broker is ready over TLS", || {
        broker.is_ready()
    })
    .await;
    let payload = Bytes::from_static(b"over tls");
    broker.publish("secure", payload.clone()).await.unwrap();
    assert_eq!(next(&mut rx).await, ("secure".to_string(), payload.clone()));
    stop(shutdown).await;

    // Trusting another CA: every handshake fails, the broker never gets ready.
    let stranger = support::tls::TestCa::new();
    let shutdown = Shutdown::new();
    let (sink, _rx) = collecting_sink();
    let broker = start_with(
        &redis.url(),
        "*",
        trusting(&stranger.root_pem),
        sink,
        &shutdown,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!broker.is_ready(), "a server with an untrusted certificate");
    assert!(broker.publish("secure", payload).await.is_err());
    stop(shutdown).await;

    // A CA file only makes sense for TLS.
    let (sink, _rx) = collecting_sink();
    let refused = start_with(
        "redis://127.0.0.1:1",
        "*",
        trusting(&ca.root_pem),
        sink,
        &Shutdown::new(),
    );
    assert!(matches!(refused, Err(BrokerError::Config(_))));
}
