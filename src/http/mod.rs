//! HTTP: one axum router with the transports, the publish API, the web page
//! and the health endpoints.
