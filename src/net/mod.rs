//! Sockets, below HTTP: the accept loop of every listener (`accept`), the
//! write deadline every accepted socket carries (`deadline`), the listener
//! fed by an accept loop that prepares connections first (`handoff`: the TLS
//! handshakes, the SSE routing) and the hyper HTTP/1 server that serves a
//! router on each connection (`serve`).
//!
//! Knows no route, no transport and no certificate: `http` builds the router,
//! `tls` and `transports::sse` prepare connections and hand them over, and
//! `server` runs the listeners. So everything above may import `net`, and
//! `net` imports only `security` (the connection limits), `shutdown` and
//! `telemetry`.

pub mod accept;
pub mod deadline;
mod handoff;
pub mod serve;

pub use deadline::WriteDeadline;
pub use handoff::Handoff;
