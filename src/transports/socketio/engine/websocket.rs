//! The websocket transport: one task per connection, owning the socket and
//! selecting over the socket's next frame, the outbox, one heartbeat timer
//! and shutdown. No separate reader or writer task.
//!
//! Owns the websocket handshake (straight to websocket, or the upgrade of a
//! polling session with `2probe`/`3probe`/`5`), the per-frame dispatch to the
//! upper layer, and closing with a reason. Buffers are kept small: a read
//! buffer of a few hundred bytes that grows only for large frames, a small
//! write buffer flushed per batch, and a capped write backlog.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use bytes::Bytes;
use futures_util::FutureExt;
use tokio::time::Instant;

use super::heartbeat::{Beat, Heartbeat};
use super::packet::{Packet, Version};
use super::session::Session;
use super::{Engine, Link, Sid, Upper, log_close};
use crate::disconnect::DisconnectReason;
use crate::hub::Frame;
use crate::security::Permit;
use crate::transports::websocket::{self, Close, write_failed};

/// Read buffer per connection; tungstenite grows it for larger frames.
const READ_BUFFER: usize = 256;
/// Write buffer: frames are flushed per batch, so keep it small.
const WRITE_BUFFER: usize = 1024;
/// How long a close frame may take to leave.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

fn configure(upgrade: WebSocketUpgrade, max_payload: usize) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // A backlog beyond one maximal message plus slack means the peer does
        // not read: the write fails and the connection closes.
        .max_write_buffer_size(max_payload.saturating_mul(2).max(64 * 1024))
        .max_message_size(max_payload)
        .max_frame_size(max_payload)
}

/// A client connecting straight over websocket.
pub fn handshake<U: Upper>(
    engine: &Arc<Engine<U>>,
    upgrade: WebSocketUpgrade,
    version: Version,
    query: Vec<(String, String)>,
    permit: Option<Permit>,
) -> Response {
    let engine = engine.clone();
    let max = engine.config.max_payload;
    let shutdown = engine.shutdown.clone();
    configure(upgrade, max).on_upgrade(move |socket| {
        // axum runs this callback on its own short-lived task; the
        // connection gets one tracked task, so shutdown waits for it.
        shutdown.spawn(fresh(engine, socket, version, query, permit));
        std::future::ready(())
    })
}

/// The task of a fresh websocket connection. A block, not an `async fn`: an
/// `async fn` keeps each by-value argument in its future twice (as passed,
/// and as the local it becomes), so every idle connection carried its socket
/// twice; the block uses what it captured in place.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn fresh<U: Upper>(
    engine: Arc<Engine<U>>,
    mut socket: WebSocket,
    version: Version,
    query: Vec<(String, String)>,
    permit: Option<Permit>,
) -> impl Future<Output = ()> {
    async move {
        let _live = engine.track();
        let sid = Sid::random();
        let outbox = engine.new_outbox();
        let open = engine.open_packet(&sid, version, false);
        if send_frame(&mut socket, version, open).await.is_err() {
            return;
        }
        let link = Link {
            sid: sid.as_str(),
            version,
            outbox: &outbox,
        };
        let mut conn = engine.upper.open(&link, &query, permit);
        drop(query);
        let reason = run(&engine, &mut socket, &link, &mut conn).await;
        finish(&engine, &mut socket, &link, &mut conn, reason).await;
    }
}

/// A websocket for an existing polling session: the upgrade. A session that
/// is already upgraded (or upgrading) gets its socket accepted then closed.
pub fn upgrade_session<U: Upper>(
    engine: &Arc<Engine<U>>,
    upgrade: WebSocketUpgrade,
    session: Arc<Session<U::Conn>>,
) -> Response {
    let engine = engine.clone();
    let max = engine.config.max_payload;
    let shutdown = engine.shutdown.clone();
    let claimed = session.claim_upgrade();
    configure(upgrade, max).on_upgrade(move |socket| {
        shutdown.spawn(upgraded(engine, socket, session, claimed));
        std::future::ready(())
    })
}

/// The task of a session's websocket: takes the session over once probed,
/// or closes a duplicate. A block, not an `async fn`, as [`fresh`].
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn upgraded<U: Upper>(
    engine: Arc<Engine<U>>,
    mut socket: WebSocket,
    session: Arc<Session<U::Conn>>,
    claimed: bool,
) -> impl Future<Output = ()> {
    async move {
        if !claimed {
            tracing::debug!(sid = %session.sid, "duplicate websocket for upgraded session");
            session.upgrade_settled(probe_deadline(&engine)).await;
            close(&mut socket, DisconnectReason::TransportReplaced).await;
            return;
        }
        let version = session.version;
        let Some(mut conn) = probe(&engine, &mut socket, &session).await else {
            session.abort_upgrade();
            close(&mut socket, DisconnectReason::TransportError).await;
            return;
        };
        let _live = engine.track();
        tracing::debug!(sid = %session.sid, "engine.io session upgraded to websocket");
        let outbox = engine.upgraded_outbox(&session.outbox);
        let link = Link {
            sid: session.sid.as_str(),
            version,
            outbox: &outbox,
        };
        let reason = run(&engine, &mut socket, &link, &mut conn).await;
        engine.remove_session(&session.sid);
        finish(&engine, &mut socket, &link, &mut conn, reason).await;
    }
}

/// The probe exchange; returns the connection state once the client sent `5`.
async fn probe<U: Upper>(
    engine: &Engine<U>,
    socket: &mut WebSocket,
    session: &Session<U::Conn>,
) -> Option<U::Conn> {
    let deadline = probe_deadline(engine);
    // A polling request asked us to handle what has already arrived before
    // it decides (see `Session::catch_up`): read without waiting until the
    // socket has nothing buffered.
    let mut catching_up = false;
    loop {
        let message = if catching_up {
            match socket.recv().now_or_never() {
                Some(message) => message?.ok()?,
                None => {
                    catching_up = false;
                    session.caught_up();
                    continue;
                }
            }
        } else {
            tokio::select! {
                message = socket.recv() => message?.ok()?,
                () = session.catch_up_wanted() => {
                    // Lets the runtime poll for I/O first: bytes the kernel
                    // holds count as received only once readiness is seen.
                    tokio::task::yield_now().await;
                    catching_up = true;
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => return None,
                () = engine.shutdown.requested() => return None,
            }
        };
        let packet = match message {
            Message::Text(text) => Packet::decode_text(Bytes::from(text)).ok()?,
            Message::Binary(_) | Message::Close(_) => return None,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        match packet {
            Packet::Ping(data) if &data[..] == b"probe" => {
                let pong = Packet::Pong(data).encode();
                send_frame(socket, session.version, pong).await.ok()?;
                session.probed();
            }
            Packet::Upgrade => return session.complete_upgrade(),
            Packet::Noop => {}
            _ => return None,
        }
    }
}

/// How long a client may take to probe and complete an upgrade.
fn probe_deadline<U: Upper>(engine: &Engine<U>) -> Instant {
    Instant::now() + engine.config.ping_interval + engine.config.ping_timeout
}

/// The connection's loop; returns why it ended.
async fn run<U: Upper>(
    engine: &Engine<U>,
    socket: &mut WebSocket,
    link: &Link<'_>,
    conn: &mut U::Conn,
) -> DisconnectReason {
    let config = &engine.config;
    let mut heartbeat = Heartbeat::new(
        link.version,
        config.ping_interval,
        config.ping_timeout,
        config.connect_timeout,
        Instant::now(),
    );
    let timer = tokio::time::sleep_until(heartbeat.next_wake());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            () = engine.shutdown.requested() => return DisconnectReason::ServerShutdown,
            message = socket.recv() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    // The peer hung up without a close frame.
                    None => return DisconnectReason::ClientClosed,
                    Some(Err(error)) => return websocket::read_error(error).reason,
                };
                match receive(engine, link, conn, &mut heartbeat, message) {
                    Ok(None) => {}
                    Ok(Some(reply)) => {
                        if let Err(reason) = send_frame(socket, link.version, reply).await {
                            return reason;
                        }
                    }
                    Err(reason) => return reason,
                }
            }
            () = link.outbox.ready() => {
                if let Some(reason) = link.outbox.closed() {
                    return reason;
                }
                if let Err(reason) = write(engine, socket, link, conn, &mut heartbeat, timer.as_mut()).await {
                    return reason;
                }
            }
            () = &mut timer => {
                match heartbeat.fire(Instant::now()) {
                    Beat::SendPing => {
                        // A quiet connection gives its queue's buffer back.
                        link.outbox.release_idle();
                        let ping = Packet::Ping(Bytes::new()).encode();
                        if let Err(reason) = send_frame(socket, link.version, ping).await {
                            return reason;
                        }
                    }
                    Beat::TimedOut => return DisconnectReason::PingTimeout,
                    Beat::CheckConnect => {
                        if !engine.upper.connected(conn) {
                            return DisconnectReason::ConnectTimeout;
                        }
                    }
                    Beat::Idle => {}
                }
            }
        }
        timer.as_mut().reset(heartbeat.next_wake());
    }
}

/// Handles one websocket message; returns a frame to answer with (a v3
/// pong). Synchronous on purpose: an `.await` in here would add its state to
/// every connection's task.
fn receive<U: Upper>(
    engine: &Engine<U>,
    link: &Link<'_>,
    conn: &mut U::Conn,
    heartbeat: &mut Heartbeat,
    message: Message,
) -> Result<Option<Frame>, DisconnectReason> {
    let packet = match message {
        Message::Text(text) => Packet::decode_text_frame(link.version, Bytes::from(text)),
        Message::Binary(data) => Packet::decode_binary(link.version, data),
        // tungstenite answers pings itself.
        Message::Ping(_) | Message::Pong(_) => return Ok(None),
        Message::Close(_) => return Err(DisconnectReason::ClientClosed),
    };
    let packet = packet.map_err(|error| {
        tracing::debug!(sid = link.sid, %error, "bad engine.io packet");
        DisconnectReason::BadInput
    })?;
    match packet {
        Packet::Message(frame) => engine.upper.message(conn, link, frame)?,
        Packet::Pong(_) => heartbeat.pong(Instant::now()),
        Packet::Ping(data) if link.version == Version::V3 => {
            heartbeat.ping(Instant::now());
            return Ok(Some(Packet::Pong(data).encode()));
        }
        // A late probe or a stray upgrade/noop after the upgrade is harmless.
        Packet::Ping(_) | Packet::Noop | Packet::Upgrade => {}
        Packet::Close => return Err(DisconnectReason::ClientClosed),
        Packet::Open(_) => return Err(DisconnectReason::BadInput),
    }
    Ok(None)
}

/// Writes a batch of queued frames. A peer that stops reading blocks the
/// write: then the socket's write deadline fails it, the hub closes its
/// outbox, or the heartbeat runs out, whichever comes first, all as
/// `slow_consumer` (the ping that falls due meanwhile goes out after the write).
/// The heartbeat timer is shared with the main loop so a connection carries
/// one timer, not two.
async fn write<U: Upper>(
    engine: &Engine<U>,
    socket: &mut WebSocket,
    link: &Link<'_>,
    // `&mut`: a shared reference would require `Conn: Sync` to stay `Send`.
    conn: &mut U::Conn,
    heartbeat: &mut Heartbeat,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Result<(), DisconnectReason> {
    let mut ping_owed = false;
    {
        let batch = write_batch(socket, link);
        tokio::pin!(batch);
        loop {
            tokio::select! {
                written = &mut batch => {
                    if let Some(bytes) = written? {
                        engine.upper.sent(conn, bytes);
                    }
                    break;
                }
                reason = link.outbox.wait_closed() => return Err(reason),
                () = &mut timer => {
                    match heartbeat.fire(Instant::now()) {
                        Beat::SendPing => ping_owed = true,
                        Beat::TimedOut => return Err(DisconnectReason::SlowConsumer),
                        Beat::CheckConnect if !engine.upper.connected(conn) => {
                            return Err(DisconnectReason::ConnectTimeout);
                        }
                        Beat::CheckConnect | Beat::Idle => {}
                    }
                    timer.as_mut().reset(heartbeat.next_wake());
                }
            }
        }
    }
    if ping_owed {
        let ping = Packet::Ping(Bytes::new()).encode();
        send_frame(socket, link.version, ping).await?;
    }
    Ok(())
}

/// Writes one batch of queued frames (then the task looks at reads and
/// timers again); the bytes written, if any.
async fn write_batch(
    socket: &mut WebSocket,
    link: &Link<'_>,
) -> Result<Option<usize>, DisconnectReason> {
    let version = link.version;
    websocket::write_batch(socket, link.outbox, |frame| to_message(version, frame)).await
}

async fn send_frame(
    socket: &mut WebSocket,
    version: Version,
    frame: Frame,
) -> Result<(), DisconnectReason> {
    match to_message(version, frame) {
        Some(message) => socket.send(message).await.map_err(|e| write_failed(&e)),
        None => Ok(()),
    }
}

/// Text frames go as they are (shared buffer, no copy); v3 binary frames get
/// their message type byte in front.
fn to_message(version: Version, frame: Frame) -> Option<Message> {
    match frame {
        Frame::Text(bytes) => websocket::text(bytes),
        Frame::Binary(data) => Some(Message::Binary(match version {
            Version::V4 => data,
            Version::V3 => {
                let mut out = Vec::with_capacity(1 + data.len());
                out.push(4);
                out.extend_from_slice(&data);
                Bytes::from(out)
            }
        })),
    }
}

async fn finish<U: Upper>(
    engine: &Engine<U>,
    socket: &mut WebSocket,
    link: &Link<'_>,
    conn: &mut U::Conn,
    reason: DisconnectReason,
) {
    link.outbox.close(reason);
    engine.upper.close(conn, link, reason);
    if let Some(sid) = Sid::parse(link.sid) {
        log_close(&sid, "websocket", reason);
    }
    if !matches!(
        reason,
        DisconnectReason::ClientClosed | DisconnectReason::TransportError
    ) {
        close(socket, reason).await;
    }
}

/// Sends a close frame carrying the reason, briefly; the caller drops the
/// socket.
async fn close(socket: &mut WebSocket, reason: DisconnectReason) {
    let mut close = Close::because(reason);
    if matches!(reason, DisconnectReason::ServerShutdown) {
        // 1001, not /ws's 1012: the `ws` inside socket.io-client 1.x throws
        // on 1012 ("invalid error code") instead of reconnecting. Socket.IO
        // clients reconnect after any close, so nothing is lost by it.
        close.code = 1001;
    }
    let sent = websocket::send_close(socket, close);
    let _ = tokio::time::timeout(CLOSE_GRACE, sent).await;
}

#[cfg(test)]
mod task_size {
    use super::*;
    use crate::transports::socketio::layer::{Conn, Layer};

    fn fresh_size<A, B, C, D, E, F: Future>(_: fn(A, B, C, D, E) -> F) -> usize {
        size_of::<F>()
    }

    fn run_size<A, B, C, D, F: Future>(_: fn(A, B, C, D) -> F) -> usize {
        size_of::<F>()
    }

    #[test]
    fn the_task_holds_one_copy_of_its_socket() {
        // While it runs, the task holds its socket, the connection state and
        // the loop; the socket a second time as an `async fn` argument would
        // make it at least this large (debug build: 1,984 bytes before).
        let twice = 2 * size_of::<WebSocket>() + size_of::<Conn>() + run_size(run::<Layer>);
        assert!(fresh_size(fresh::<Layer>) < twice);
    }
}
