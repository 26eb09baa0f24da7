//! `/sse` client over a raw HTTP/1.1 connection: sends the GET, checks the
//! 200, decodes chunked transfer encoding and splits the stream into events
//! (blank-line separated). Buffers start small and grow only with the data.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{ClientError, ConnectSpec, End};
use crate::tls::Stream;

pub struct SseClient {
    stream: Stream,
    /// Raw bytes read and not yet decoded.
    raw: Vec<u8>,
    /// Decoded body bytes not yet forming a whole event.
    body: Vec<u8>,
    chunked: bool,
    /// Bytes left in the current chunk (chunked encoding).
    chunk_left: usize,
}

impl SseClient {
    pub async fn open(spec: &ConnectSpec) -> Result<SseClient, ClientError> {
        let mut stream = spec.connect().await?;
        let room = percent_encode(&spec.room);
        // EventSource sends the last id it saw when it reconnects.
        let last_event_id = spec
            .since
            .as_ref()
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET /sse?channel={room} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{last_event_id}\r\n",
            spec.server
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::with_capacity(512);
        let header_end = loop {
            if let Some(end) = find(&raw, b"\r\n\r\n") {
                break end;
            }
            if raw.len() > 16 * 1024 {
                return Err(ClientError::Protocol("response headers too long".into()));
            }
            if stream.read_buf(&mut raw).await? == 0 {
                return Err(ClientError::Closed);
            }
        };
        let head = String::from_utf8_lossy(&raw[..header_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            let status = head.lines().next().unwrap_or("").to_owned();
            return Err(ClientError::Protocol(format!("sse refused: {status}")));
        }
        let chunked = head.contains("transfer-encoding: chunked");
        raw.drain(..header_end + 4);
        Ok(SseClient {
            stream,
            raw,
            body: Vec::new(),
            chunked,
            chunk_left: 0,
        })
    }

    pub async fn pump(
        &mut self,
        cancel: &CancellationToken,
        on_data: &mut (dyn FnMut(&str) + Send),
    ) -> End {
        loop {
            if let Err(error) = self.decode(on_data) {
                return End::Lost(error);
            }
            if self.raw.capacity() - self.raw.len() < 256 {
                self.raw.reserve(2048);
            }
            tokio::select! {
                _ = cancel.cancelled() => return End::Cancelled,
                read = self.stream.read_buf(&mut self.raw) => match read {
                    Ok(0) => return End::Lost(ClientError::Closed),
                    Ok(_) => {}
                    Err(error) => return End::Lost(error.into()),
                }
            }
        }
    }

    /// Moves what `raw` holds into `body`, then hands out whole events.
    fn decode(&mut self, on_data: &mut (dyn FnMut(&str) + Send)) -> Result<(), ClientError> {
        if !self.chunked {
            self.body.append(&mut self.raw);
        } else {
            let mut at = 0;
            while at < self.raw.len() {
                if self.chunk_left > 0 {
                    let take = self.chunk_left.min(self.raw.len() - at);
                    self.body.extend_from_slice(&self.raw[at..at + take]);
                    self.chunk_left -= take;
                    at += take;
                    continue;
                }
                // Expect "\r\n" after a chunk, then "<hex size>\r\n".
                let rest = &self.raw[at..];
                if rest.starts_with(b"\r\n") {
                    at += 2;
                    continue;
                }
                let Some(line_end) = find(rest, b"\r\n") else {
                    break;
                };
                let size_text = String::from_utf8_lossy(&rest[..line_end]);
                let size_text = size_text.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| ClientError::Protocol(format!("bad chunk size {size_text:?}")))?;
                if size == 0 {
                    return Err(ClientError::Closed);
                }
                self.chunk_left = size;
                at += line_end + 2;
            }
            self.raw.drain(..at);
        }
        let mut consumed = 0;
        while let Some(end) = find(&self.body[consumed..], b"\n\n") {
            let event = &self.body[consumed..consumed + end];
            if let Ok(text) = std::str::from_utf8(event)
                && text.contains("data:")
            {
                on_data(text);
            }
            consumed += end + 2;
        }
        self.body.drain(..consumed);
        if self.body.is_empty() && self.body.capacity() > 4096 {
            self.body = Vec::new();
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
