//! Server-Sent Events at `/sse?channel=a&channel=b`.
