//! HTTP long-polling: the handshake GET, the long-poll GET that drains the
//! outbox, and the POST that carries client packets.
//!
//! Owns the request/response shapes of polling. Never keeps a request beyond
//! its handler; session state lives in `session`. A second concurrent GET
//! closes the session (the first one answers `1`), as the reference server
//! does.

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use tokio::time::Instant;

use super::heartbeat::Heartbeat;
use super::packet::{Packet, Version};
use super::payload::{self, Encoding};
use super::request::EngineError;
use super::session::{Reply, Session, Transport, run_timer};
use super::{Engine, Link, Sid, Upper};
use crate::disconnect::DisconnectReason;
use crate::hub::Frame;
use crate::security::Permit;

/// Most frames one GET carries; the rest wait for the next poll.
const MAX_FRAMES_PER_POLL: usize = 256;

/// Opens a session over polling: the response is the open packet plus what
/// the upper layer queued on open (Socket.IO v4's `40`).
pub fn handshake<U: Upper>(
    engine: &Arc<Engine<U>>,
    version: Version,
    accepts_binary: bool,
    query: Vec<(String, String)>,
    permit: Option<Permit>,
) -> Response {
    let sid = Sid::random();
    let outbox = engine.new_polling_outbox();
    let mut frames = vec![engine.open_packet(&sid, version, true)];
    let link = Link {
        sid: sid.as_str(),
        version,
        outbox: &outbox,
    };
    let conn = engine.upper.open(&link, &query);
    drop(query);
    let config = &engine.config;
    let heartbeat = Heartbeat::new(
        version,
        config.ping_interval,
        config.ping_timeout,
        config.connect_timeout,
        Instant::now(),
    );
    let session = Arc::new(Session::new(
        sid,
        version,
        accepts_binary,
        outbox,
        conn,
        heartbeat,
        permit,
    ));
    engine.sessions().insert(sid, session.clone());
    let live = engine.track();
    engine
        .shutdown
        .spawn(run_timer(engine.clone(), session.clone(), live));
    session.outbox.drain_into(&mut frames, MAX_FRAMES_PER_POLL);
    tracing::debug!(%sid, ?version, "engine.io polling session opened");
    payload_response(&session, &frames)
}

/// The long-poll GET: answers as soon as there is something to send.
pub async fn poll<U: Upper>(engine: &Arc<Engine<U>>, session: Arc<Session<U::Conn>>) -> Response {
    if session.take_linger() {
        engine.remove_session(&session.sid);
        return payload_response(&session, &[Packet::Noop.encode()]);
    }
    if !session.check_alive(engine) {
        return EngineError::UnknownSid.into_response();
    }
    {
        let mut state = session.lock();
        match state.transport {
            Transport::Websocket => return EngineError::BadRequest.into_response(),
            Transport::Upgrading => {
                drop(state);
                return payload_response(&session, &[Packet::Noop.encode()]);
            }
            Transport::Polling | Transport::UpgradeClaimed => {}
        }
        if state.poll_active {
            drop(state);
            tracing::debug!(sid = %session.sid, "overlapping poll");
            session.close(engine, DisconnectReason::BadInput, Reply::Close);
            return EngineError::BadRequest.into_response();
        }
        state.poll_active = true;
    }
    // Clears `poll_active` however this request ends (the client may hang up).
    let _active = ActivePoll(&session);
    let mut frames = Vec::new();
    loop {
        {
            let mut state = session.lock();
            if let Some(reply) = state.closed {
                frames.clear();
                frames.push(match reply {
                    Reply::Close => Packet::Close.encode(),
                    Reply::Noop => Packet::Noop.encode(),
                });
                break;
            }
            if state.transport == Transport::Upgrading {
                frames.push(Packet::Noop.encode());
                break;
            }
            Session::take_control(&mut state, &mut frames);
        }
        if let Some(reason) = session.outbox.closed() {
            session.close(engine, reason, Reply::Close);
            continue;
        }
        session.outbox.drain_into(&mut frames, MAX_FRAMES_PER_POLL);
        if !frames.is_empty() {
            break;
        }
        tokio::select! {
            () = session.poll_wake.notified() => {}
            () = session.outbox.ready() => {}
            () = engine.shutdown.requested() => {
                session.close(engine, DisconnectReason::ServerShutdown, Reply::Close);
            }
        }
    }
    payload_response(&session, &frames)
}

struct ActivePoll<'a, C>(&'a Session<C>);

impl<C> Drop for ActivePoll<'_, C> {
    fn drop(&mut self) {
        self.0.lock().poll_active = false;
    }
}

/// The POST: decodes the body and hands each packet to the session.
pub async fn post<U: Upper>(
    engine: &Arc<Engine<U>>,
    session: Arc<Session<U::Conn>>,
    binary: bool,
    content_length: Option<usize>,
    body: Body,
) -> Response {
    if !session.check_alive(engine) {
        return EngineError::UnknownSid.into_response();
    }
    if session.lock().transport == Transport::Websocket {
        return EngineError::BadRequest.into_response();
    }
    let max = engine.config.max_payload;
    // Oversize bodies get a bare 413 and the session lives on, as in the
    // reference server.
    if content_length.is_some_and(|len| len > max) {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    let Ok(bytes) = axum::body::to_bytes(body, max).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    if binary && session.version == Version::V4 {
        session.close(engine, DisconnectReason::BadInput, Reply::Close);
        return EngineError::BadRequest.into_response();
    }
    let packets = match payload::decode(session.version, bytes, binary) {
        Ok(packets) => packets,
        Err(error) => {
            tracing::debug!(sid = %session.sid, %error, "bad polling payload");
            session.close(engine, DisconnectReason::BadInput, Reply::Close);
            return EngineError::BadRequest.into_response();
        }
    };
    for packet in packets {
        match session.receive(engine, packet) {
            Ok(()) => {}
            Err(DisconnectReason::ClientClosed) => break,
            Err(_) => return EngineError::BadRequest.into_response(),
        }
    }
    ([(header::CONTENT_TYPE, "text/html")], "ok").into_response()
}

fn payload_response<C>(session: &Session<C>, frames: &[Frame]) -> Response {
    let encoding = Encoding::choose(session.version, session.binary);
    let body = payload::encode(encoding, frames);
    ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
}
