//! Wires config, broker, hub, transports and HTTP together and runs them until
//! shutdown.
