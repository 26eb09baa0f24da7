//! roomcast: a real-time messaging server.
//!
//! A message's path: a **broker** (memory, Redis, ...) delivers what back-end
//! applications publish to the **hub**; the hub owns rooms and fans each message
//! out, encoded once per wire format, to the bounded outboxes of the clients of
//! the **transports** (Socket.IO, SSE); the **emitter** module takes the
//! Socket.IO Redis emitter's channels aside before the hub; **ingest** brings
//! messages in from outside systems (MQTT) through the broker; **http** mounts the transports beside the
//! publish API, the web page and the health endpoints, over **net** (accept
//! loops, write deadlines, the hyper server); a **refusal** is the one error
//! shape every layer answers with; **config** layers file < env < flags;
//! **server** wires it all together and shuts it down.
//!
//! See ARCHITECTURE.md for the module map, the invariants and who may import
//! whom (checked by `tests/import_rules.rs`).

pub mod backoff;
pub mod brokers;
pub mod config;
pub mod disconnect;
pub mod emitter;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod net;
pub mod refusal;
pub mod security;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod transports;
