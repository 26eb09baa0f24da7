//! Connections that hold resources without using them: a request head
//! trickled byte by byte (slowloris) is cut by `--header-timeout-s`, an idle
//! kept-alive connection by `--keepalive-timeout-s`, a flood of idle sockets
//! from one address is held to `--max-connections-per-ip` from accept on,
//! and a server out of file descriptors still answers `/healthz` and keeps
//! serving the clients it admitted, without flooding its log.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{Server, next_json};

/// Connects from `local` (any 127.0.0.0/8 address is loopback on Linux).
async fn connect_from(local: [u8; 4], server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((local, 0)))?;
    socket.connect(server).await
}

/// Reads until the server closes the connection; how long that took.
async fn until_closed(io: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        let read = tokio::time::timeout_at(start + limit, io.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("still open after {limit:?}"));
        if !matches!(read, Ok(n) if n > 0) {
            return start.elapsed();
        }
    }
}

/// One `GET /healthz` on a kept-alive connection; true when answered 200.
async fn healthz(io: &mut TcpStream) -> bool {
    if io
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    // The body is a small JSON object: its closing brace ends the answer.
    while !seen.ends_with(b"}") {
        match tokio::time::timeout(Duration::from_secs(5), io.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buffer[..n]),
            _ => return false,
        }
    }
    seen.starts_with(b"HTTP/1.1 200")
}

#[tokio::test]
async fn slowloris_heads_are_cut_by_the_header_timeout() {
    let server = Server::start(&["--header-timeout-s", "1"]).await;
    let addr = server.running.local_addr;
    // A request line, and a whole line then headers, one byte per 100 ms:
    // each would take longer than 3 s to finish.
    let heads = [
        "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
    ];
    let mut trickles = Vec::new();
    for (i, head) in heads.into_iter().enumerate() {
        let mut io = TcpStream::connect(addr).await.unwrap();
        let sent = if i == 0 { 0 } else { 23 };
        io.write_all(&head.as_bytes()[..sent]).await.unwrap();
        trickles.push(tokio::spawn(async move {
            let (mut reader, mut writer) = io.into_split();
            let trickle = async move {
                for byte in &head.as_bytes()[sent..] {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if writer.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                }
                std::future::pending::<()>().await;
            };
            let start = Instant::now();
            let mut buffer = [0u8; 1024];
            tokio::select! {
                () = trickle => unreachable!(),
                read = reader.read(&mut buffer) => {
                    let head = String::from_utf8_lossy(&buffer[..*read.as_ref().unwrap_or(&0)]);
                    assert!(matches!(read, Ok(0) | Err(_)), "the whole head went through: {head}");
                }
            }
            start.elapsed()
        }));
    }
    for trickle in trickles {
        let took = trickle.await.unwrap();
        // Main: the request line had 30 s, the rest of the head no limit.
        assert!(took < Duration::from_secs(3), "closed after {took:?}");
    }
}

#[tokio::test]
async fn idle_kept_alive_connections_are_closed() {
    let server = Server::start(&["--keepalive-timeout-s", "1"]).await;
    let mut io = TcpStream::connect(server.running.local_addr).await.unwrap();
    assert!(healthz(&mut io).await);
    // Main: kept open for as long as the client liked.
    until_closed(&mut io, Duration::from_secs(4)).await;
}

#[tokio::test]
async fn a_flood_of_idle_sockets_from_one_address_locks_nobody_else_out() {
    let server = Server::start(&[
        "--limit-loopback",
        "--max-connections",
        "15",
        "--max-connections-per-ip",
        "5",
        "--connect-burst-per-ip",
        "1000",
    ])
    .await;
    let addr = server.running.local_addr;
    let mut flood = Vec::new();
    let mut answered = 0;
    for _ in 0..40 {
        let Ok(mut io) = connect_from([127, 0, 0, 1], addr).await else {
            continue;
        };
        if healthz(&mut io).await {
            answered += 1;
        }
        flood.push(io);
    }
    // Main: every one of them answered and held open (only upgraded
    // connections counted). Now two sockets per client (a polling client's
    // GET and POST).
    assert_eq!(
        answered, 10,
        "the per-IP limit counts sockets from accept on"
    );

    let other = connect_from([127, 0, 0, 2], addr).await.unwrap();
    let url = format!("ws://{addr}/ws");
    let (mut ws, _) = tokio_tungstenite::client_async(url, other).await.unwrap();
    let subscribe = json!({"op": "subscribe", "channel": "news", "id": 1});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "ok");
    server
        .running
        .broker
        .publish("news", Bytes::from_static(b"\"still here\""))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["data"], "still here");
    drop(flood);
}

/// The real binary with at most `files` open files, its log in a file.
struct Limited {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Limited {
    async fn start(files: u32, args: &[&str]) -> Limited {
        let port = support::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log =
            std::env::temp_dir().join(format!("roomcast-fds-{}-{port}.log", std::process::id()));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("prlimit")
            .arg(format!("--nofile={files}:{files}"))
            .arg(env!("CARGO_BIN_EXE_roomcast"))
            .args(["--listen", &addr.to_string(), "--api-key", "k"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn prlimit roomcast (util-linux)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "roomcast did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Limited { child, addr, log }
    }

    fn log_lines(&self, containing: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(containing))
            .count()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[tokio::test]
async fn out_of_file_descriptors_healthz_and_admitted_clients_still_work() {
    // 256 open files, and a connection limit far above that (the default).
    let server = Limited::start(256, &["--connect-burst-per-ip", "100000"]).await;
    let addr = server.addr;
    // Admitted before the flood: a /ws member and a kept-alive publisher.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let subscribe = json!({"op": "subscribe", "channel": "news", "id": 1});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "ok");
    let mut publisher = TcpStream::connect(addr).await.unwrap();
    assert!(healthz(&mut publisher).await);

    // Up to 400 idle sockets from many addresses (no per-IP limit is
    // reached), until connecting takes more than a second (main: the
    // server stopped accepting).
    let started = Instant::now();
    let mut flood = Vec::new();
    for i in 0..400u32 {
        let local = [127, 0, 1 + (i / 200) as u8, (i % 200) as u8 + 1];
        match tokio::time::timeout(Duration::from_secs(1), connect_from(local, addr)).await {
            Ok(Ok(io)) => flood.push(io),
            Ok(Err(_)) => {}
            Err(_) => break,
        }
    }
    // A health checker retries: the reserve slots past the limit free up
    // within a second of a socket sending nothing.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut probe =
            tokio::time::timeout(Duration::from_secs(5), connect_from([127, 0, 9, 9], addr))
                .await
                .expect("connecting still works")
                .unwrap();
        if healthz(&mut probe).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz answers under fd pressure"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let body = json!({"channel": "news", "data": "still here"}).to_string();
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer k\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    publisher.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(next_json(&mut ws).await["data"], "still here");

    // The open sockets stayed under the open-file limit minus the headroom.
    publisher
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut metrics = String::new();
    let sockets = loop {
        let mut buffer = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), publisher.read(&mut buffer))
            .await
            .expect("metrics in time")
            .unwrap();
        assert!(n > 0, "metrics answered");
        metrics.push_str(&String::from_utf8_lossy(&buffer[..n]));
        // A whole line: the value may be split across reads.
        let value = metrics
            .split_once("\nroomcast_sockets ")
            .and_then(|(_, rest)| rest.split_once('\n'))
            .and_then(|(value, _)| value.trim().parse::<f64>().ok());
        if let Some(value) = value {
            break value;
        }
    };
    assert!(
        (100.0..=184.0).contains(&sockets),
        "{sockets} sockets open with 256 files"
    );

    // At most one line per second of each kind: refused sockets, failed
    // accepts (each has its own throttle). Lines are read before the clock
    // so that every line counted was written within `seconds`.
    let refused = server.log_lines("sockets refused at accept");
    let failed = server.log_lines("accept failed");
    let seconds = started.elapsed().as_secs() as usize + 1;
    assert!(refused <= seconds, "{refused} refusal lines in {seconds} s");
    assert!(
        failed <= seconds,
        "{failed} accept failure lines in {seconds} s"
    );
    drop(flood);
}
