//! The SSE test clients: the `message` events of a `/sse` response body (a
//! hyper body, e.g. from `Server::client`), parsed as a browser's
//! `EventSource` would hand them out; and [`RawSse`], the bytes of a `/sse`
//! stream as they come.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

/// The next `message` event's data (JSON) within `limit`; `text` keeps what
/// was read past it (two events can come in one chunk).
pub async fn next_message(body: &mut Incoming, text: &mut String, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.starts_with("event: message") {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                return serde_json::from_str(&data.join("\n")).expect("JSON data");
            }
        }
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("an SSE event in time")
            .expect("stream open")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).expect("UTF-8 stream"));
        }
    }
}

/// The next `count` `message` events' data, each within 5 s.
pub async fn messages(body: &mut Incoming, count: usize) -> Vec<Value> {
    let mut text = String::new();
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        events.push(next_message(body, &mut text, Duration::from_secs(5)).await);
    }
    events
}

/// A raw `GET /sse?channel=ROOM` stream and what it has sent so far.
pub struct RawSse {
    stream: tokio::net::TcpStream,
    pub seen: Vec<u8>,
}

impl RawSse {
    pub async fn open(port: u16, room: &str) -> RawSse {
        Self::request(port, room, "").await
    }

    /// Opens the stream resuming after `last_event_id` (`Last-Event-ID`).
    pub async fn open_with(port: u16, room: &str, last_event_id: &str) -> RawSse {
        Self::request(port, room, &format!("Last-Event-ID: {last_event_id}\r\n")).await
    }

    async fn request(port: u16, room: &str, headers: &str) -> RawSse {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect for /sse");
        let request = format!("GET /sse?channel={room} HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        RawSse {
            stream,
            seen: Vec::new(),
        }
    }

    /// Reads until `marker` has arrived (`: connected`: the head and the
    /// stream's first chunk, the join confirmed), within 10 s per read.
    pub async fn until(&mut self, marker: &str) {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&self.seen).contains(marker) {
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{marker:?} within 10 s"))
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&self.seen));
            self.seen.extend_from_slice(&buf[..n]);
        }
    }

    /// What the stream sent so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }
}
