//! A polling session: the state a connection keeps between HTTP requests,
//! its heartbeat timer task, and the hand-over to a websocket on upgrade.
//!
//! Owns the session's lifecycle (open → polling → upgrading → websocket, or
//! closed) and its deadlines. Never parses payloads or writes HTTP: the
//! polling handlers and the websocket task call in here. The state lock is a
//! std mutex held only for short synchronous steps (the upper layer's
//! callbacks included), never across an `.await`.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::heartbeat::{Beat, Heartbeat};
use super::packet::{Packet, Version};
use super::{Engine, Link, LiveGuard, Sid, Upper, log_close};
use crate::disconnect::DisconnectReason;
use crate::hub::{Frame, Outbox};

/// Which transport carries the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Polling,
    /// A websocket asked to take over; polling continues until its probe.
    UpgradeClaimed,
    /// The websocket answered the probe: pending and new GETs get a noop.
    Upgrading,
    /// The websocket owns the connection; polling requests are refused.
    Websocket,
}

/// What a pending GET answers when the session closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `1`: the server closed the session.
    Close,
    /// `6`: the client closed it (its POST `1` released the poll).
    Noop,
}

pub struct Session<C> {
    pub sid: Sid,
    pub version: Version,
    /// v3 client that accepts binary payloads (no `b64=1`).
    pub binary: bool,
    pub outbox: Arc<Outbox>,
    state: Mutex<State<C>>,
    /// Wakes the pending GET: a control packet, an upgrade, a close.
    pub poll_wake: Notify,
    /// Wakes the timer task: a close or an upgrade.
    timer_wake: Notify,
    /// Wakes whoever waits for a claimed upgrade to end, either way, or for
    /// the upgrading websocket to catch up.
    upgrade_settled: Notify,
    /// Asks the upgrading websocket task to catch up (see [`Session::catch_up`]).
    catch_up: Notify,
}

pub struct State<C> {
    /// The upper layer's state; moves to the websocket task on upgrade.
    conn: Option<C>,
    pub transport: Transport,
    /// A GET is waiting for data.
    pub poll_active: bool,
    heartbeat: Heartbeat,
    /// Control packets for the next GET (written by us, not queued in the
    /// outbox, so a full outbox never blocks the heartbeat).
    pub ping: bool,
    pub pong: Option<Bytes>,
    pub closed: Option<Reply>,
    /// Closed by the client's POST `1` while no GET was pending: the GET the
    /// client sent just before (it may arrive after the POST) still gets its
    /// noop instead of an error; see [`Session::take_linger`].
    linger: bool,
}

impl<C> Session<C> {
    pub fn new(
        sid: Sid,
        version: Version,
        binary: bool,
        outbox: Arc<Outbox>,
        conn: C,
        heartbeat: Heartbeat,
    ) -> Self {
        Session {
            sid,
            version,
            binary,
            outbox,
            state: Mutex::new(State {
                conn: Some(conn),
                transport: Transport::Polling,
                poll_active: false,
                heartbeat,
                ping: false,
                pong: None,
                closed: None,
                linger: false,
            }),
            poll_wake: Notify::new(),
            timer_wake: Notify::new(),
            upgrade_settled: Notify::new(),
            catch_up: Notify::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State<C>> {
        // Every step leaves the state consistent, so a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn link(&self) -> Link<'_> {
        Link {
            sid: self.sid.as_str(),
            version: self.version,
            outbox: &self.outbox,
        }
    }

    /// Closes the session once: the upper layer hears about it, the pending
    /// GET answers `reply`, later requests get "Session ID unknown". An
    /// upgraded session belongs to its websocket task, which closes it: then
    /// this does nothing, so no caller may wait for `closed` to be set.
    pub fn close<U: Upper<Conn = C>>(
        &self,
        engine: &Engine<U>,
        reason: DisconnectReason,
        reply: Reply,
    ) {
        let conn = {
            let mut state = self.lock();
            if state.closed.is_some() || state.transport == Transport::Websocket {
                return;
            }
            state.closed = Some(reply);
            state.linger = reply == Reply::Noop && !state.poll_active;
            if !state.linger {
                engine.remove_session(&self.sid);
            }
            state.conn.take()
        };
        self.outbox.close(reason);
        if let Some(mut conn) = conn {
            engine.upper.close(&mut conn, &self.link(), reason);
        }
        self.poll_wake.notify_one();
        self.timer_wake.notify_one();
        self.upgrade_settled.notify_waiters();
        log_close(&self.sid, "polling", reason);
    }

    /// `bytes` were written to the client for this session: the upper
    /// layer counts them (while the connection is open; a closed session's
    /// last packet is not its connection's any more).
    pub fn sent<U: Upper<Conn = C>>(&self, engine: &Engine<U>, bytes: usize) {
        if let Some(conn) = self.lock().conn.as_ref() {
            engine.upper.sent(conn, bytes);
        }
    }

    /// Closes the session if its peer missed a heartbeat deadline; true if
    /// the session is (now) closed. Checked on every request so a late poll
    /// never revives a dead session.
    pub fn check_alive<U: Upper<Conn = C>>(&self, engine: &Engine<U>) -> bool {
        let expired = {
            let state = self.lock();
            if state.closed.is_some() {
                return false;
            }
            state.transport == Transport::Polling && state.heartbeat.expired(Instant::now())
        };
        if expired {
            self.close(engine, DisconnectReason::PingTimeout, Reply::Close);
            return false;
        }
        true
    }

    /// Handles one packet of a POST body. `Err` means the session closed.
    pub fn receive<U: Upper<Conn = C>>(
        &self,
        engine: &Engine<U>,
        packet: Packet,
    ) -> Result<(), DisconnectReason> {
        let mut state = self.lock();
        if state.closed.is_some() {
            return Err(DisconnectReason::ClientClosed);
        }
        let outcome = match packet {
            Packet::Message(frame) => match state.conn.as_mut() {
                Some(conn) => engine.upper.message(conn, &self.link(), frame),
                None => Ok(()),
            },
            Packet::Ping(data) if self.version == Version::V3 => {
                state.heartbeat.ping(Instant::now());
                state.pong = Some(data);
                self.poll_wake.notify_one();
                Ok(())
            }
            Packet::Pong(_) => {
                state.heartbeat.pong(Instant::now());
                Ok(())
            }
            Packet::Noop | Packet::Ping(_) => Ok(()),
            Packet::Close => {
                drop(state);
                self.close(engine, DisconnectReason::ClientClosed, Reply::Noop);
                return Err(DisconnectReason::ClientClosed);
            }
            Packet::Open(_) | Packet::Upgrade => Err(DisconnectReason::BadInput),
        };
        drop(state);
        if let Err(reason) = outcome {
            self.close(engine, reason, Reply::Close);
        }
        outcome
    }

    /// True once for a session the client closed with no GET pending: that
    /// GET is answered with a noop (the reference server answers it only if
    /// it arrived first; concurrent requests may be handled in any order
    /// here). Later requests get "Session ID unknown".
    pub fn take_linger(&self) -> bool {
        std::mem::take(&mut self.lock().linger)
    }

    /// A websocket wants to take over. Only one may, and only from polling.
    pub fn claim_upgrade(&self) -> bool {
        let mut state = self.lock();
        if state.closed.is_none() && state.transport == Transport::Polling {
            state.transport = Transport::UpgradeClaimed;
            true
        } else {
            false
        }
    }

    /// The websocket answered `3probe`: release the pending GET with a noop.
    pub fn probed(&self) {
        let mut state = self.lock();
        if state.transport == Transport::UpgradeClaimed {
            state.transport = Transport::Upgrading;
        }
        drop(state);
        self.poll_wake.notify_one();
    }

    /// The websocket sent `5`: it now owns the connection state.
    pub fn complete_upgrade(&self) -> Option<C> {
        let mut state = self.lock();
        if state.closed.is_some() || state.transport != Transport::Upgrading {
            return None;
        }
        state.transport = Transport::Websocket;
        let conn = state.conn.take();
        drop(state);
        self.poll_wake.notify_one();
        self.timer_wake.notify_one();
        self.upgrade_settled.notify_waiters();
        conn
    }

    /// The websocket went away before completing the upgrade: back to polling.
    pub fn abort_upgrade(&self) {
        let mut state = self.lock();
        if matches!(
            state.transport,
            Transport::UpgradeClaimed | Transport::Upgrading
        ) {
            state.transport = Transport::Polling;
        }
        drop(state);
        self.upgrade_settled.notify_waiters();
    }

    /// Waits (at most `limit`) until the websocket that claimed the upgrade
    /// has handled every frame it had already received, or the upgrade ended.
    /// A GET that arrives mid-upgrade calls this first, so it is judged after
    /// the `2probe`/`5` its client sent before it, as a single-threaded
    /// server would; frames and requests race on separate connections here.
    pub async fn catch_up(&self, limit: std::time::Duration) {
        // Lets the runtime poll for I/O first, so the websocket task sees
        // (and is woken for) the frames that arrived before this request.
        tokio::task::yield_now().await;
        let settled = self.upgrade_settled.notified();
        tokio::pin!(settled);
        // Registered before the check, so a change in between still wakes us.
        settled.as_mut().enable();
        if !self.upgrading() {
            return;
        }
        self.catch_up.notify_one();
        let _ = tokio::time::timeout(limit, settled).await;
    }

    /// A websocket has claimed the session and not yet taken over or given up.
    pub fn upgrading(&self) -> bool {
        let state = self.lock();
        state.closed.is_none()
            && matches!(
                state.transport,
                Transport::UpgradeClaimed | Transport::Upgrading
            )
    }

    /// Resolves when a request asked the upgrading websocket to catch up.
    pub async fn catch_up_wanted(&self) {
        self.catch_up.notified().await;
    }

    /// The upgrading websocket has handled everything it had received.
    pub fn caught_up(&self) {
        self.upgrade_settled.notify_waiters();
    }

    /// Waits until no upgrade is in progress (done, aborted or the session
    /// closed), at most until `deadline`. A second websocket for the same
    /// session waits here before it is refused, so the first one's probe
    /// answer leaves before the refusal, as in a single-threaded server.
    pub async fn upgrade_settled(&self, deadline: Instant) {
        loop {
            let settled = self.upgrade_settled.notified();
            tokio::pin!(settled);
            // Registered before the check, so a change in between still wakes us.
            settled.as_mut().enable();
            if !self.upgrading() {
                return;
            }
            tokio::select! {
                () = settled => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Takes what the next GET should carry besides the outbox.
    pub fn take_control(state: &mut State<C>, out: &mut Vec<Frame>) {
        if std::mem::take(&mut state.ping) {
            out.push(Packet::Ping(Bytes::new()).encode());
        }
        if let Some(data) = state.pong.take() {
            out.push(Packet::Pong(data).encode());
        }
    }
}

/// The session's heartbeat task: pings (v4), checks deadlines, and closes the
/// session on timeout or shutdown. Ends when the session closes or upgrades;
/// holds the session's place in the live count until then.
pub async fn run_timer<U: Upper>(
    engine: Arc<Engine<U>>,
    session: Arc<Session<U::Conn>>,
    live: LiveGuard<U>,
) {
    loop {
        let wake = {
            let state = session.lock();
            if state.closed.is_some() || state.transport == Transport::Websocket {
                break;
            }
            state.heartbeat.next_wake()
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = session.timer_wake.notified() => continue,
            () = engine.shutdown.requested() => {
                session.close(&engine, DisconnectReason::ServerShutdown, Reply::Close);
                break;
            }
        }
        let now = Instant::now();
        let mut state = session.lock();
        match state.heartbeat.fire(now) {
            Beat::SendPing if state.transport == Transport::Polling => {
                state.ping = true;
                drop(state);
                session.poll_wake.notify_one();
            }
            // Mid-upgrade no poll will come: the websocket starts its own
            // heartbeat when it takes over, so skip this round.
            Beat::SendPing => state.heartbeat.pong(now),
            Beat::TimedOut => {
                drop(state);
                session.close(&engine, DisconnectReason::PingTimeout, Reply::Close);
            }
            Beat::CheckConnect => {
                let connected = state
                    .conn
                    .as_ref()
                    .is_none_or(|c| engine.upper.connected(c));
                drop(state);
                if !connected {
                    session.close(&engine, DisconnectReason::ConnectTimeout, Reply::Close);
                }
            }
            Beat::Idle => {}
        }
    }
    // A lingering session leaves the map after a grace period if no GET
    // came for its noop.
    if session.lock().linger {
        tokio::select! {
            () = tokio::time::sleep(engine.config.ping_timeout) => {}
            () = engine.shutdown.requested() => {}
        }
        engine.remove_session(&session.sid);
    }
    drop(live);
}
