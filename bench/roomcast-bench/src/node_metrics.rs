//! Reads one counter of each roomcast node from its Prometheus `/metrics`:
//! `roomcast_messages_received_total` (every label summed), the messages the
//! node's broker handed it, so the cluster scenario can show how much of the
//! total traffic each node reads. A plain HTTP/1.0 GET on loopback: the bench
//! needs no HTTP client crate for one request per node and phase.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RECEIVED: &str = "roomcast_messages_received_total";

/// The sum of `roomcast_messages_received_total` on `node`.
pub async fn messages_received(node: SocketAddr) -> Result<u64, String> {
    let text = get_metrics(node).await?;
    Ok(sum_counter(&text, RECEIVED))
}

async fn get_metrics(node: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect(node)
        .await
        .map_err(|e| format!("{node}: connect: {e}"))?;
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {node}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("{node}: write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("{node}: read: {e}"))?;
    let text = String::from_utf8_lossy(&response).into_owned();
    if !text.starts_with("HTTP/1.0 200") && !text.starts_with("HTTP/1.1 200") {
        let status = text.lines().next().unwrap_or("no answer");
        return Err(format!("{node}: GET /metrics: {status}"));
    }
    Ok(text)
}

/// Sums every sample of `name` (any labels) in a Prometheus text page.
fn sum_counter(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next())
        .filter_map(|value| value.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_label_and_skips_lookalikes() {
        let page = "# TYPE roomcast_messages_received_total counter\n\
                    roomcast_messages_received_total{broker=\"redis\"} 120\n\
                    roomcast_messages_received_total{broker=\"memory\"} 3\n\
                    roomcast_messages_received_totals 999\n\
                    roomcast_messages_sent_total 7\n";
        assert_eq!(sum_counter(page, RECEIVED), 123);
        assert_eq!(sum_counter("", RECEIVED), 0);
    }
}
