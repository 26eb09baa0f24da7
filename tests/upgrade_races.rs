//! The polling → websocket upgrade under racing requests, against the real
//! protocol-conformance server in its own process (so a busy loop shows as
//! a server that stops answering and burns CPU, and cannot hang the test):
//! the official engine.io-protocol suite's upgrade cases, each many times,
//! and several clients mixing upgrades, polls and closes at once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::{ServerProcess, conformance_bin};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Any single request or frame this long overdue means the server hangs.
const STEP: Duration = Duration::from_secs(10);

/// One Engine.IO v4 polling request (`query` after the fixed part).
async fn http(port: u16, method: &str, query: &str, body: &str) -> (u16, String) {
    let target = format!("/engine.io/?EIO=4&transport=polling{query}");
    let headers = [("Content-Type", "text/plain")];
    let addr = ([127, 0, 0, 1], port).into();
    let response = support::http::http(addr, method, &target, &headers, body.as_bytes()).await;
    (response.status, response.text())
}

/// Opens a polling session; returns its sid.
async fn handshake(port: u16) -> String {
    let (status, body) = http(port, "GET", "", "").await;
    assert_eq!(status, 200, "handshake: {body}");
    let open: serde_json::Value = serde_json::from_str(&body[1..]).expect("open packet JSON");
    open["sid"].as_str().expect("sid").to_string()
}

async fn websocket(port: u16, sid: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{port}/engine.io/?EIO=4&transport=websocket&sid={sid}");
    match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url)).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(error)) => panic!("websocket: {error}"),
        Err(_) => panic!("websocket: no answer within {STEP:?}"),
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send frame");
}

/// The next text frame other than a heartbeat ping (answered); `None` once
/// the socket closed.
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match tokio::time::timeout(STEP, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "2" => send(ws, "3").await,
            Ok(Some(Ok(Message::Text(text)))) => return Some(text.to_string()),
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => return None,
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("no frame within {STEP:?} (server hung?)"),
        }
    }
}

async fn conformance() -> ServerProcess {
    ServerProcess::start(&conformance_bin(), &[]).await
}

/// The server still answers, and sits idle: no worker left spinning.
async fn assert_answers_and_idle(server: &ServerProcess) {
    handshake(server.port).await;
    // Idle sessions cost no CPU beyond heartbeats (300 ms here); a spinning
    // worker would use the whole window.
    let before = server.cpu_time();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = server.cpu_time() - before;
    assert!(
        used < Duration::from_millis(600),
        "the idle server used {used:?} of CPU in 2 s: a task is busy-looping"
    );
}

/// engine.io-protocol "ignores HTTP requests with same sid after upgrade":
/// a GET sent after `2probe` and `5` is answered at once and never held
/// open: refused (400) once the server has seen the upgrade, a noop if its
/// request overtook the websocket frames (they travel on two connections, so
/// the server cannot always tell which came first). The upgraded websocket
/// goes on either way. (On the old code such a GET was held open, and spun a
/// worker for ever once the websocket closed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_after_probe_and_upgrade_is_answered_at_once() {
    let server = conformance().await;
    let mut refused = 0;
    for round in 0..100 {
        let sid = handshake(server.port).await;
        let mut ws = websocket(server.port, &sid).await;
        send(&mut ws, "2probe").await;
        send(&mut ws, "5").await;
        let answer = http(server.port, "GET", &format!("&sid={sid}"), "").await;
        match answer {
            (400, _) => refused += 1,
            (200, ref body) if body == "6" => {}
            other => panic!("round {round}: GET after upgrade answered {other:?}"),
        }
        assert_eq!(next_text(&mut ws).await.as_deref(), Some("3probe"));
        send(&mut ws, "4hello").await;
        assert_eq!(next_text(&mut ws).await.as_deref(), Some("4hello"));
        // The GET is over; closing the websocket must not wake anything up.
        let _ = ws.close(None).await;
    }
    eprintln!("GET after the upgrade refused in {refused} of 100 rounds");
    assert_answers_and_idle(&server).await;
}

/// engine.io-protocol "ignores WebSocket connection with same sid after
/// upgrade": a second websocket for the session is refused, but only once
/// the first one's upgrade is over, so the first one's `3probe` leaves
/// before the refusal (the suite reads the first socket's next message after
/// the second one closed, and must see its echo, not a late `3probe`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_websocket_is_refused_once_the_first_upgrade_is_over() {
    let server = conformance().await;
    for round in 0..20 {
        let sid = handshake(server.port).await;
        let mut first = websocket(server.port, &sid).await;
        let mut second = websocket(server.port, &sid).await;
        // The first one has claimed the upgrade but not probed: the second
        // one waits (it used to be closed at once, before any `3probe`).
        let early = tokio::time::timeout(Duration::from_millis(100), second.next()).await;
        assert!(
            early.is_err(),
            "round {round}: the second websocket ended mid-upgrade: {early:?}"
        );
        send(&mut first, "2probe").await;
        send(&mut first, "5").await;
        assert_eq!(next_text(&mut first).await.as_deref(), Some("3probe"));
        assert_eq!(next_text(&mut second).await, None, "round {round}");
        send(&mut first, "4hello").await;
        assert_eq!(next_text(&mut first).await.as_deref(), Some("4hello"));
    }
    assert_answers_and_idle(&server).await;
}

/// Several clients at once, each: a polling session with a long-poll GET
/// pending, a websocket upgrade with `2probe` and `5` back to back, another
/// GET, then closing in one of several ways. Every request must be answered
/// and the server must end idle (the pending GET used to spin a worker for
/// ever once the upgraded websocket closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_upgrades_polls_and_closes_leave_the_server_answering() {
    let server = conformance().await;
    let port = server.port;
    let rounds = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(4);
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let rounds = rounds.clone();
            tokio::spawn(async move {
                let mut round = 0usize;
                while Instant::now() < until {
                    let sid = handshake(port).await;
                    let query = format!("&sid={sid}");
                    let pending = tokio::spawn(async move { http(port, "GET", &query, "").await });
                    let mut ws = websocket(port, &sid).await;
                    send(&mut ws, "2probe").await;
                    send(&mut ws, "5").await;
                    let again = http(port, "GET", &format!("&sid={sid}"), "").await;
                    assert!(matches!(again.0, 200 | 400), "second GET: {again:?}");
                    match (client + round) % 3 {
                        // The client closes the websocket.
                        0 => {
                            let _ = ws.close(None).await;
                        }
                        // The client closes the session over polling.
                        1 => {
                            let _ = http(port, "POST", &format!("&sid={sid}"), "1").await;
                            drop(ws);
                        }
                        // The client vanishes.
                        _ => drop(ws),
                    }
                    let first = pending.await.expect("pending GET task");
                    assert!(matches!(first.0, 200 | 400), "pending GET: {first:?}");
                    round += 1;
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client task");
    }
    assert!(
        rounds.load(Ordering::Relaxed) >= 8,
        "every client finished a round"
    );
    assert_answers_and_idle(&server).await;
}
