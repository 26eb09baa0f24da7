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
use super::session::{Reply, Session, Transport, run_timer};
use super::{Engine, EngineError, Link, Sid, Upper};
use crate::disconnect::DisconnectReason;
use crate::hub::Frame;
use crate::security::Permit;

/// Most frames one GET carries (also bounded in bytes by
/// `Engine::poll_batch_bytes`); the rest wait for the next poll.
const MAX_FRAMES_PER_POLL: usize = 4096;
/// Longest a GET waits for an upgrading websocket to catch up.
const CATCH_UP_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

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
    let conn = engine.upper.open(&link, &query, permit);
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
    ));
    engine.sessions().insert(sid, session.clone());
    let live = engine.track();
    engine
        .shutdown
        .spawn(run_timer(engine.clone(), session.clone(), live));
    session.outbox.drain_into(&mut frames, MAX_FRAMES_PER_POLL);
    tracing::debug!(%sid, ?version, "engine.io polling session opened");
    payload_response(engine, &session, &frames)
}

/// The long-poll GET: answers as soon as there is something to send.
pub async fn poll<U: Upper>(engine: &Arc<Engine<U>>, session: Arc<Session<U::Conn>>) -> Response {
    if session.take_linger() {
        engine.remove_session(&session.sid);
        return payload_response(engine, &session, &[Packet::Noop.encode()]);
    }
    if !session.check_alive(engine) {
        return EngineError::UnknownSid.into_response();
    }
    // A websocket claimed this session: it first handles what it has already
    // received, so a client that sent `2probe` and `5` before this GET is
    // refused; the in-flight GET of an upgrading client gets its noop.
    if session.upgrading() {
        session.catch_up(CATCH_UP_LIMIT).await;
    }
    {
        let mut state = session.lock();
        match state.transport {
            Transport::Websocket => return EngineError::BadRequest.into_response(),
            Transport::Upgrading => {
                drop(state);
                return payload_response(engine, &session, &[Packet::Noop.encode()]);
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
    // Every pass either answers or awaits. The one `continue` follows a
    // `close`, after which the session is closed or upgraded, and both are
    // answered at the top.
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
            // The websocket answered the probe, or has taken over already
            // (`2probe` and `5` handled while this GET waited): the outbox is
            // the websocket's now, so this GET only releases the client, and
            // passes on any outbox wake-up it took.
            if matches!(state.transport, Transport::Upgrading | Transport::Websocket) {
                frames.push(Packet::Noop.encode());
                session.outbox.wake_owner();
                break;
            }
            Session::take_control(&mut state, &mut frames);
        }
        if let Some(reason) = session.outbox.closed() {
            session.close(engine, reason, Reply::Close);
            continue;
        }
        session
            .outbox
            .drain_up_to(&mut frames, MAX_FRAMES_PER_POLL, engine.poll_batch_bytes());
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
    payload_response(engine, &session, &frames)
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

/// Call without the session's lock (it counts the bytes under it).
fn payload_response<U: Upper>(
    engine: &Engine<U>,
    session: &Session<U::Conn>,
    frames: &[Frame],
) -> Response {
    let encoding = Encoding::choose(session.version, session.binary);
    let body = payload::encode(encoding, frames);
    session.sent(engine, body.len());
    ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
}

#[cfg(test)]
mod tests {
    //! The poll/upgrade interleavings, driven step by step: the pending GET
    //! is polled by hand, so each state change lands exactly between two of
    //! its steps. Each GET runs on its own thread's runtime so a busy loop
    //! fails the test (a timeout) instead of hanging it.

    use std::sync::mpsc;
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;
    use crate::hub::OutboxLimits;
    use crate::shutdown::Shutdown;
    use crate::transports::socketio::engine::EngineConfig;

    struct Silent;

    impl Upper for Silent {
        type Conn = ();
        const TRANSPORT: &'static str = "silent";
        fn open(&self, _link: &Link<'_>, _query: &[(String, String)], _permit: Option<Permit>) {}
        fn message(&self, _: &mut (), _: &Link<'_>, _: Frame) -> Result<(), DisconnectReason> {
            Ok(())
        }
        fn close(&self, _: &mut (), _: &Link<'_>, _: DisconnectReason) {}
    }

    fn engine() -> Arc<Engine<Silent>> {
        let config = EngineConfig {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 100_000,
            connect_timeout: None,
            outbox: OutboxLimits::default(),
            security: None,
        };
        Engine::new(config, Silent, Shutdown::new())
    }

    /// A polling session with a GET pending on it (polled once, not done).
    async fn pending_get(
        engine: &Arc<Engine<Silent>>,
    ) -> (
        Arc<Session<()>>,
        std::pin::Pin<Box<impl std::future::Future<Output = Response> + '_>>,
    ) {
        let _ = handshake(engine, Version::V4, false, Vec::new(), None);
        let session = engine.sessions().values().next().cloned();
        let session = session.unwrap_or_else(|| panic!("the handshake made no session"));
        let mut get = Box::pin(poll(engine, session.clone()));
        assert!(get.as_mut().now_or_never().is_none(), "the GET waits");
        (session, get)
    }

    /// Runs `scenario` on a fresh runtime in its own thread; fails if it has
    /// not finished within a few seconds (a task that never yields).
    fn within_deadline<F>(scenario: impl FnOnce() -> F + Send + 'static) -> String
    where
        F: std::future::Future<Output = String>,
    {
        let (done, result) = mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                let _ = done.send(runtime.block_on(scenario()));
            }
        });
        match result.recv_timeout(Duration::from_secs(5)) {
            Ok(body) => body,
            Err(_) => panic!("the pending GET never ended (a loop that does not yield)"),
        }
    }

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()
    }

    /// The whole upgrade, `2probe` and `5` handled back to back: a GET
    /// pending meanwhile never sees `Upgrading`.
    fn upgrade(session: &Session<()>) {
        assert!(session.claim_upgrade());
        session.probed();
        assert!(session.complete_upgrade().is_some());
    }

    /// What a GET pending across a whole upgrade answers once `then` has run.
    fn answer_after_upgrade(then: fn(&Engine<Silent>, &Session<()>)) -> String {
        within_deadline(move || async move {
            let engine = engine();
            let (session, get) = pending_get(&engine).await;
            upgrade(&session);
            then(&engine, &session);
            body(get.await).await
        })
    }

    #[test]
    fn a_get_pending_across_a_whole_upgrade_gets_a_noop() {
        assert_eq!(answer_after_upgrade(|_, _| {}), "6");
    }

    #[test]
    fn a_get_pending_when_the_upgraded_websocket_closes_ends() {
        // The websocket ends (its outbox closes) before the GET runs again:
        // `Session::close` does nothing for an upgraded session, and the GET
        // used to loop on the closed outbox for ever.
        let answer =
            answer_after_upgrade(|_, session| session.outbox.close(DisconnectReason::ClientClosed));
        assert_eq!(answer, "6");
    }

    #[test]
    fn a_get_pending_at_shutdown_of_an_upgraded_session_ends() {
        let answer = answer_after_upgrade(|engine, _| engine.shutdown.trigger());
        assert_eq!(answer, "6");
    }

    #[test]
    fn a_get_pending_across_an_upgrade_leaves_outbox_wake_ups_to_the_websocket() {
        // The GET and the websocket both wait on the outbox for a moment; a
        // frame queued then must still wake the websocket. (Which of its two
        // wake-ups the GET's select takes is random: try often.)
        for _ in 0..32 {
            let woken = within_deadline(|| async {
                let engine = engine();
                let (session, get) = pending_get(&engine).await;
                upgrade(&session);
                let mut websocket = Box::pin(session.outbox.ready());
                assert!(websocket.as_mut().now_or_never().is_none());
                let _ = session.outbox.push(Frame::Text("4hello".into()));
                assert_eq!(body(get.await).await, "6");
                format!("{:?}", websocket.now_or_never())
            });
            assert_eq!(woken, "Some(())", "the websocket missed its wake-up");
        }
    }

    #[test]
    fn a_get_pending_when_the_session_closes_gets_a_close() {
        let answer = within_deadline(|| async {
            let engine = engine();
            let (session, get) = pending_get(&engine).await;
            session.outbox.close(DisconnectReason::SlowConsumer);
            body(get.await).await
        });
        assert_eq!(answer, "1");
    }
}
