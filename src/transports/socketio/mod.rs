//! Socket.IO (Engine.IO v3/v4, Socket.IO v4/v5) server layer. Being written.
