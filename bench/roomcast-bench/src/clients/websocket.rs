//! WebSocket clients: Socket.IO over Engine.IO v4 (`sio4`) and v3 (`sio3`),
//! and roomcast's `/ws` JSON protocol. Small tungstenite buffers, so tens of
//! thousands of clients fit in one process.
//!
//! Engine.IO v4: the server sends `0{open}`, the client `40`, the server
//! `40{sid}`; the server pings `2`, the client answers `3`. Engine.IO v3: the
//! server sends `0{open}` and `40` by itself; the client pings `2` every
//! `pingInterval`. Joining is `420["channel","ROOM"]`, acknowledged `430[…]`.
//!
//! Socket.IO connection state recovery (v4, as socket.io-client ≥ 4.6 does
//! it): the CONNECT answer `40{"sid":..,"pid":..}` names the session; a
//! reconnect sends `40{"pid":..,"offset":..}` and is recovered (its room
//! given back, what it missed replayed) when the answer names the same
//! `pid`; otherwise it joins again, a reset (the stock client's
//! `recovered === false`).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::{ClientError, ConnectSpec, End, Transport};
use crate::tls::Stream;

pub struct WsClient {
    socket: WebSocketStream<Stream>,
    transport: Transport,
    /// Engine.IO v3 only: the client pings at this interval.
    client_ping: Option<Duration>,
    /// Socket.IO: the session the server gave (recovery on), to recover later.
    pid: Option<String>,
    /// Socket.IO: asked to recover a session and did not get it back.
    not_recovered: bool,
    /// Socket.IO events that came before the handshake ended (a recovered
    /// session's replay may precede the CONNECT answer), handed out first.
    early: Vec<String>,
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

impl WsClient {
    pub async fn open(spec: &ConnectSpec) -> Result<WsClient, ClientError> {
        let stream = spec.connect().await?;
        let path = match spec.transport {
            Transport::Sio4 => "/socket.io/?EIO=4&transport=websocket",
            Transport::Sio3 => "/socket.io/?EIO=3&transport=websocket",
            Transport::Ws | Transport::Sse => "/ws",
        };
        let scheme = if spec.tls.is_some() { "wss" } else { "ws" };
        let url = format!("{scheme}://{}{}", spec.server, path);
        let (socket, _response) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(config())).await?;
        let mut client = WsClient {
            socket,
            transport: spec.transport,
            client_ping: None,
            pid: None,
            not_recovered: false,
            early: Vec::new(),
        };
        client.handshake(spec).await?;
        Ok(client)
    }

    /// Socket.IO: the session this connection may be recovered into.
    pub fn pid(&self) -> Option<&str> {
        self.pid.as_deref()
    }

    /// Socket.IO: asked to recover a session and was given a new one.
    pub fn not_recovered(&self) -> bool {
        self.not_recovered
    }

    async fn handshake(&mut self, spec: &ConnectSpec) -> Result<(), ClientError> {
        let since = spec.since.as_deref();
        let room_json =
            serde_json::to_string(&spec.room).map_err(|e| ClientError::Protocol(e.to_string()))?;
        match self.transport {
            Transport::Sio4 | Transport::Sio3 => {
                let open = self.next_text().await?;
                let Some(open_json) = open.strip_prefix('0') else {
                    return Err(ClientError::Protocol(format!(
                        "expected the open packet, got {open:?}"
                    )));
                };
                let claim = match (&spec.pid, since) {
                    (Some(pid), Some(offset)) if self.transport == Transport::Sio4 => {
                        Some(serde_json::json!({ "pid": pid, "offset": offset }))
                    }
                    _ => None,
                };
                if self.transport == Transport::Sio3 {
                    let interval = serde_json::from_str::<serde_json::Value>(open_json)
                        .ok()
                        .and_then(|v| v["pingInterval"].as_u64())
                        .unwrap_or(25_000);
                    self.client_ping = Some(Duration::from_millis(interval));
                } else {
                    let auth = claim.as_ref().map(|c| c.to_string()).unwrap_or_default();
                    self.send(format!("40{auth}")).await?;
                }
                let answer = self.wait_for(|t| t.starts_with("40")).await?;
                self.pid = serde_json::from_str::<serde_json::Value>(&answer[2..])
                    .ok()
                    .and_then(|v| v["pid"].as_str().map(str::to_owned));
                if claim.is_some() {
                    if self.pid.is_some() && self.pid == spec.pid {
                        return Ok(()); // recovered: in its room again
                    }
                    self.not_recovered = true;
                }
                self.send(format!(r#"420["channel",{room_json}]"#)).await?;
                let ack = self.wait_for(|t| t.starts_with("430")).await?;
                if ack.contains("false") {
                    return Err(ClientError::Protocol(format!("join refused: {ack}")));
                }
            }
            Transport::Ws | Transport::Sse => {
                let since = match since {
                    Some(id) => format!(
                        r#","since":{}"#,
                        serde_json::to_string(id)
                            .map_err(|e| ClientError::Protocol(e.to_string()))?
                    ),
                    None => String::new(),
                };
                self.send(format!(
                    r#"{{"op":"subscribe","channel":{room_json},"id":1{since}}}"#
                ))
                .await?;
                let reply = self
                    .wait_for(|t| t.contains(r#""type":"ok""#) || t.contains(r#""type":"error""#))
                    .await?;
                if reply.contains(r#""type":"error""#) {
                    return Err(ClientError::Protocol(format!("subscribe refused: {reply}")));
                }
            }
        }
        Ok(())
    }

    async fn send(&mut self, text: String) -> Result<(), ClientError> {
        self.socket.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// The next text frame, answering Engine.IO v4 pings on the way.
    async fn next_text(&mut self) -> Result<String, ClientError> {
        loop {
            match self.socket.next().await {
                None => return Err(ClientError::Closed),
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(Message::Text(text))) => {
                    if self.transport == Transport::Sio4 && text.as_str() == "2" {
                        self.send("3".to_owned()).await?;
                        continue;
                    }
                    return Ok(text.as_str().to_owned());
                }
                Some(Ok(Message::Close(_))) => return Err(ClientError::Closed),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next text frame `wanted` accepts; Socket.IO events before it are
    /// kept for [`Self::pump`].
    async fn wait_for(&mut self, wanted: impl Fn(&str) -> bool) -> Result<String, ClientError> {
        loop {
            let text = self.next_text().await?;
            if wanted(&text) {
                return Ok(text);
            }
            if self.transport != Transport::Ws && text.starts_with("42") {
                self.early.push(text);
            }
        }
    }

    pub async fn pump(
        &mut self,
        cancel: &CancellationToken,
        on_data: &mut (dyn FnMut(&str) + Send),
    ) -> End {
        for text in std::mem::take(&mut self.early) {
            on_data(&text);
        }
        // Engine.IO v3 clients ping; the interval never fires for the others.
        let period = self.client_ping.unwrap_or(Duration::from_secs(3600));
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return End::Cancelled,
                _ = ping.tick(), if self.client_ping.is_some() => {
                    if let Err(error) = self.send("2".to_owned()).await {
                        return End::Lost(error);
                    }
                }
                frame = self.socket.next() => match frame {
                    None => return End::Lost(ClientError::Closed),
                    Some(Err(error)) => return End::Lost(error.into()),
                    Some(Ok(Message::Text(text))) => {
                        let text = text.as_str();
                        match self.transport {
                            Transport::Sio4 | Transport::Sio3 => {
                                if text.starts_with("42") {
                                    on_data(text);
                                } else if text == "2" {
                                    if let Err(error) = self.send("3".to_owned()).await {
                                        return End::Lost(error);
                                    }
                                } else if text == "1" {
                                    return End::Lost(ClientError::Closed);
                                }
                            }
                            Transport::Ws | Transport::Sse => on_data(text),
                        }
                    }
                    Some(Ok(Message::Close(_))) => return End::Lost(ClientError::Closed),
                    Some(Ok(_)) => {}
                }
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
