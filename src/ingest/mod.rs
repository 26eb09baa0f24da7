//! Ingest: messages that arrive from outside systems (not from roomcast's own
//! publishers) and enter roomcast through `Broker::publish`, so every node's
//! clients get them as if published over the HTTP API.
//!
//! Never delivers to the hub directly (the broker does, on every node) and
//! knows no clients. Started by `server` when configured.

pub mod mqtt;
