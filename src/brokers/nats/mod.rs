//! The NATS broker: room `R` is subject `<prefix>.R`; this node subscribes
//! every room with members here (the [`Interest`] tracker), and any NATS
//! client publishing to the subject reaches the room.
//!
//! With the room log on (`--history-size` > 0) and JetStream on the server,
//! one stream keeps every room subject ([`log`]) and republishes what it
//! stored: a node subscribes a room's republished subject, whose messages
//! carry their sequence (the id), and publishes through JetStream, answering
//! once the stream acknowledged. Without JetStream on the server: said once,
//! then plain core NATS (`PUB`, the room subject), as without the log.
//!
//! Owns: one `async-nats` client (a list of servers: it reconnects to another
//! one of the cluster when one dies; user/password or a token in the URL,
//! [`credentials`]; an optional CA, over rustls with ring), one reader task
//! per subscribed room feeding the sink,
//! and the task that sends the tracker's batches and confirms them with a
//! round trip through the server (a message to this client's own inbox
//! comes back only once the server processed the SUBs before it; `flush`
//! alone only writes the socket). After a reconnect every room is
//! subscribed again and confirmed before the broker is ready.
//!
//! Subjects: a room name maps to itself under the prefix, its dots making
//! NATS tokens. Names NATS subjects cannot hold are refused
//! (`room_not_served` for a join, `broker_refused` for a publish): empty,
//! whitespace, `*` or `>` anywhere, or an empty token (leading, trailing or
//! doubled `.`).
//!
//! Never: knows clients; panics on a lost server; acknowledges a publish
//! while this node's subscriptions are down.
//!
//! Called by `server`, which builds it with [`start`].

pub mod log;
mod sessions;
mod stream;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use super::interest::Interest;
use super::sessions::{SessionBackend, SessionOp};
use super::{BoxFuture, Broker, BrokerError, LogBounds, Sink};
use crate::shutdown::Shutdown;
use crate::telemetry;

/// `--nats-*` settings.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URLs (one cluster).
    pub urls: Vec<String>,
    /// Subject prefix: room R is `<prefix>.R`.
    pub prefix: String,
    /// PEM CA that alone is trusted for TLS servers.
    pub ca_file: Option<PathBuf>,
    /// The room log's bounds; `None`: no log (plain core NATS).
    pub log: Option<LogBounds>,
}

/// Why `room` cannot be a NATS subject token sequence, if it cannot.
pub fn check_room(room: &str) -> Result<(), String> {
    if room.is_empty() || room.split('.').any(str::is_empty) {
        return Err(format!(
            "room {room:?} has an empty NATS subject token (leading, trailing or doubled '.')"
        ));
    }
    if room
        .chars()
        .any(|c| c.is_whitespace() || c == '*' || c == '>')
    {
        return Err(format!(
            "room {room:?} holds whitespace, '*' or '>', which NATS subjects cannot carry"
        ));
    }
    Ok(())
}

/// What a NATS URL's user part says: `nats://user:password@host` or
/// `nats://token@host`.
#[derive(Debug, PartialEq)]
enum Credentials {
    UserPassword(String, String),
    Token(String),
}

/// The credentials of the server list. async-nats reads none from the URLs
/// (it sends only what the options say), so they are taken out here; the
/// servers of one cluster share them, and URLs that disagree are refused
/// rather than one of them silently winning.
fn credentials(addrs: &[async_nats::ServerAddr]) -> Result<Option<Credentials>, String> {
    let mut found: Option<Credentials> = None;
    for addr in addrs {
        let Some(user) = addr.username() else {
            continue;
        };
        // The URL parser keeps percent-escapes (`p%40ss`); the server wants the text.
        let decode = |text: &str| percent_decode(text);
        let these = match addr.password() {
            Some(password) => Credentials::UserPassword(decode(user)?, decode(password)?),
            None => Credentials::Token(decode(user)?),
        };
        match &found {
            Some(earlier) if *earlier != these => {
                return Err(
                    "the NATS URLs carry different credentials; one cluster has one set".into(),
                );
            }
            _ => found = Some(these),
        }
    }
    Ok(found)
}

/// `%XX` escapes of a URL's user part, decoded.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a NATS URL's credentials hold a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a NATS URL's credentials are not UTF-8".into())
}

/// `url` with its user part (credentials) replaced by `***`, for errors and logs.
fn without_credentials(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[authority_start..]
        .find('/')
        .map_or(url.len(), |i| authority_start + i);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}***{}",
            &url[..authority_start],
            &url[authority_start + at..]
        ),
        None => url.to_owned(),
    }
}

pub struct NatsBroker {
    client: async_nats::Client,
    prefix: String,
    live: Arc<AtomicBool>,
    log: Option<Arc<stream::Log>>,
    sessions: sessions::Bucket,
}

/// Connects (in the background: an unreachable server is not an error here)
/// and spawns the subscription task on `shutdown`.
pub async fn start(
    options: NatsOptions,
    interest: Interest,
    sink: Sink,
    shutdown: &Shutdown,
) -> Result<NatsBroker, BrokerError> {
    let config = |e: String| BrokerError::Config(e);
    let addrs: Vec<async_nats::ServerAddr> = options
        .urls
        .iter()
        .map(|url| {
            url.trim().parse().map_err(|e| {
                config(format!(
                    "invalid NATS URL {:?}: {e}",
                    without_credentials(url.trim())
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        return Err(config("--nats-url names no server".into()));
    }
    let live = Arc::new(AtomicBool::new(false));
    let (events, mut event_rx) = tokio::sync::mpsc::channel::<async_nats::Event>(64);
    let mut connect = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                // Full: the task is behind on events; it rechecks the state anyway.
                let _ = events.try_send(event);
            }
        });
    connect = match credentials(&addrs).map_err(config)? {
        Some(Credentials::UserPassword(user, password)) => {
            connect.user_and_password(user, password)
        }
        Some(Credentials::Token(token)) => connect.token(token),
        None => connect,
    };
    if let Some(path) = &options.ca_file {
        connect = connect
            .add_root_certificates(path.clone())
            .require_tls(true);
    }
    let client = connect
        .connect(addrs)
        .await
        .map_err(|e| config(format!("NATS: {e}")))?;
    let log = options
        .log
        .map(|bounds| Arc::new(stream::Log::new(&client, &options.prefix, bounds)));
    if let Some(log) = &log {
        log.remake_when_deleted(shutdown);
    }
    let task = Subscriptions {
        client: client.clone(),
        prefix: options.prefix.clone(),
        log: log.clone(),
        interest,
        sink,
        live: live.clone(),
        readers: HashMap::new(),
        echo: None,
        echo_seq: 0,
        shutdown: shutdown.clone(),
    };
    let stop = shutdown.clone();
    shutdown.spawn(async move {
        let mut task = task;
        tokio::select! {
            _ = stop.requested() => {}
            _ = task.run(&mut event_rx) => {}
        }
        task.live.store(false, Ordering::SeqCst);
    });
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(stream::TIMEOUT);
    Ok(NatsBroker {
        sessions: sessions::Bucket::new(js, &options.prefix),
        client,
        prefix: options.prefix,
        live,
        log,
    })
}

/// The subscription task's state.
struct Subscriptions {
    client: async_nats::Client,
    prefix: String,
    /// The room log, when on: checked (made) before the rooms are
    /// subscribed, which says which subject each room is received on.
    log: Option<Arc<stream::Log>>,
    interest: Interest,
    sink: Sink,
    live: Arc<AtomicBool>,
    /// One reader task per subscribed room; aborting it drops (unsubscribes) it.
    readers: HashMap<Arc<str>, tokio::task::AbortHandle>,
    /// This client's own inbox, subscribed once, and the last token sent to
    /// it: the round trip that confirms a batch (see [`Self::round_trip`]).
    echo: Option<(async_nats::Subscriber, async_nats::Subject)>,
    echo_seq: u64,
    shutdown: Shutdown,
}

impl Subscriptions {
    async fn run(&mut self, events: &mut tokio::sync::mpsc::Receiver<async_nats::Event>) {
        loop {
            if !self.live.load(Ordering::SeqCst)
                && self.client.connection_state() == async_nats::connection::State::Connected
            {
                self.resubscribe().await;
            }
            let linger_ends = self.interest.next_expiry().map_or(
                tokio::time::Instant::now() + Duration::from_secs(3600),
                tokio::time::Instant::from_std,
            );
            tokio::select! {
                event = events.recv() => match event {
                    Some(async_nats::Event::Disconnected) => {
                        tracing::warn!("nats: disconnected; reconnecting to the cluster");
                        telemetry::broker_disconnected("nats", "closed");
                        self.down();
                    }
                    Some(async_nats::Event::Connected) => {
                        tracing::info!("nats: connected");
                    }
                    // A refused login or TLS handshake shows here, retried forever:
                    // say it, or the node would sit unready without a word.
                    Some(event @ (async_nats::Event::ServerError(_) | async_nats::Event::ClientError(_))) => {
                        tracing::warn!(%event, "nats: error");
                    }
                    Some(other) => tracing::debug!(event = %other, "nats: event"),
                    None => return,
                },
                _ = self.interest.changed() => {
                    self.send_batch().await;
                }
                _ = tokio::time::sleep_until(linger_ends) => {
                    self.send_batch().await;
                }
                // The state can change without an event reaching us in time.
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    if self.live.load(Ordering::SeqCst)
                        && self.client.connection_state() != async_nats::connection::State::Connected
                    {
                        self.down();
                    }
                }
            }
        }
    }

    /// Not live: every room is subscribed again once connected.
    fn down(&mut self) {
        if self.live.swap(false, Ordering::SeqCst) {
            telemetry::broker_up("nats", false);
        }
        for (_, reader) in self.readers.drain() {
            reader.abort();
        }
        self.interest.lost();
    }

    async fn resubscribe(&mut self) {
        if let Some(log) = &self.log
            && let Err(error) = log.ensure().await
        {
            tracing::warn!(%error, "nats: cannot set up the room log stream; retrying");
            return;
        }
        if self.send_batch().await {
            self.live.store(true, Ordering::SeqCst);
            telemetry::broker_up("nats", true);
            tracing::info!(rooms = self.readers.len(), "nats: subscribed; ready");
        }
    }

    /// Sends the tracker's batch and confirms it; false if it failed (the
    /// rooms are sent again after the next reconnect).
    async fn send_batch(&mut self) -> bool {
        let batch = self.interest.batch();
        for room in batch.unsubscribe {
            if let Some(reader) = self.readers.remove(&room) {
                reader.abort();
            }
        }
        let logged = self.log.as_ref().filter(|log| log.is_on()).cloned();
        for room in &batch.subscribe {
            let subject = match &logged {
                Some(_) => log::live_subject(&self.prefix, room),
                None => format!("{}.{room}", self.prefix),
            };
            let mut subscriber = match self.client.subscribe(subject).await {
                Ok(subscriber) => subscriber,
                Err(error) => {
                    tracing::warn!(%error, room = &**room, "nats: subscribe failed");
                    self.down();
                    return false;
                }
            };
            let (sink, prefix) = (self.sink.clone(), self.prefix.clone());
            let stop = self.shutdown.clone();
            let logged = logged.clone();
            let reader = self.shutdown.spawn(async move {
                loop {
                    // Ends on shutdown too, so the drain does not wait for it.
                    let message = tokio::select! {
                        _ = stop.requested() => return,
                        message = subscriber.next() => message,
                    };
                    let Some(message) = message else { return };
                    telemetry::messages_received("nats", 1);
                    match &logged {
                        Some(log) => log.deliver(&sink, message),
                        None => {
                            if let Some(room) = message.subject.as_str().get(prefix.len() + 1..) {
                                sink.deliver(room, message.payload);
                            }
                        }
                    }
                }
            });
            self.readers.insert(room.clone(), reader.abort_handle());
        }
        if batch.subscribe.is_empty() {
            return true;
        }
        match tokio::time::timeout(Duration::from_secs(5), self.round_trip()).await {
            Ok(true) => {
                for room in &batch.subscribe {
                    self.interest.confirmed(room.as_bytes());
                }
                true
            }
            _ => {
                tracing::warn!("nats: the server did not confirm the subscriptions");
                self.down();
                false
            }
        }
    }
}

impl Subscriptions {
    /// True once the server answered everything this client sent before:
    /// NATS handles one connection's messages in order, so a message to our
    /// own inbox (echo is on) comes back only after the SUBs sent earlier
    /// took effect, and a publish from any client after that reaches them.
    async fn round_trip(&mut self) -> bool {
        if self.echo.is_none() {
            let inbox = async_nats::Subject::from(self.client.new_inbox());
            match self.client.subscribe(inbox.clone()).await {
                Ok(subscriber) => self.echo = Some((subscriber, inbox)),
                Err(_) => return false,
            }
        }
        let Some((subscriber, inbox)) = self.echo.as_mut() else {
            return false;
        };
        self.echo_seq += 1;
        let token = Bytes::from(self.echo_seq.to_string());
        if self
            .client
            .publish(inbox.clone(), token.clone())
            .await
            .is_err()
        {
            return false;
        }
        // Tokens of round trips that timed out may still arrive: skip them.
        while let Some(message) = subscriber.next().await {
            if message.payload == token {
                return true;
            }
        }
        false
    }
}

impl Broker for NatsBroker {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            check_room(channel).map_err(BrokerError::Refused)?;
            if !self.is_ready() {
                return Err(BrokerError::Unavailable(
                    "this node's NATS subscriptions are down; its clients would not receive the message".into(),
                ));
            }
            let subject = format!("{}.{channel}", self.prefix);
            let confirmed = match self.log.as_ref().filter(|log| log.is_on()) {
                // Acknowledged = stored in the room's log.
                Some(log) => log.publish(subject, payload).await,
                None => {
                    self.client
                        .publish(subject, payload)
                        .await
                        .map_err(|e| BrokerError::Unavailable(format!("NATS publish: {e}")))?;
                    match tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await {
                        Ok(Ok(())) => Ok(()),
                        _ => Err(BrokerError::Unavailable(
                            "NATS did not confirm the publish".into(),
                        )),
                    }
                }
            };
            match confirmed {
                Ok(()) if self.is_ready() => Ok(()),
                Ok(()) => Err(BrokerError::Unavailable(
                    "NATS did not confirm the publish while this node was subscribed".into(),
                )),
                Err(error) => Err(error),
            }
        })
    }

    fn is_ready(&self) -> bool {
        self.live.load(Ordering::SeqCst)
            && self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn name(&self) -> &'static str {
        "nats"
    }
}

impl NatsBroker {
    /// Reads `room`'s log after sequence `after`. A node whose server has
    /// no JetStream (or with the log off) has no log: the read finds no
    /// stream, which tells every resuming client reset.
    pub async fn read_log(&self, room: &str, after: u64) -> Result<log::Read, BrokerError> {
        check_room(room).map_err(BrokerError::Refused)?;
        match self.log.as_ref().filter(|log| log.is_on()) {
            Some(log) => log
                .read(room, after)
                .await
                .map_err(BrokerError::Unavailable),
            None => Ok(log::Read::default()),
        }
    }
}

/// Sessions in a JetStream key-value bucket (`sessions.rs`), kept while
/// the room log is on or not known to be off: a server without JetStream
/// keeps none, and the caller keeps them in its process.
impl SessionBackend for NatsBroker {
    fn engine(&self) -> &'static str {
        "NATS"
    }

    fn keeps_sessions(&self) -> bool {
        self.log.as_ref().is_some_and(|log| !log.has_no_jetstream())
    }

    fn write_sessions<'a>(
        &'a self,
        ops: &'a [SessionOp],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.sessions.write(ops, ttl))
    }

    fn take_session<'a>(
        &'a self,
        pid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BrokerError>> {
        Box::pin(self.sessions.take(pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_refuse_what_nats_cannot_hold() {
        for ok in ["device01", "a.b", "ünï:1", "x-y_z/w#1"] {
            assert_eq!(check_room(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "a\tb", "a*", "a.>", ">"] {
            assert!(check_room(bad).is_err(), "{bad:?}");
        }
    }

    fn addrs(urls: &[&str]) -> Vec<async_nats::ServerAddr> {
        urls.iter().map(|u| u.parse().unwrap()).collect()
    }

    #[test]
    fn credentials_come_from_the_urls() {
        assert_eq!(credentials(&addrs(&["nats://a:4222"])), Ok(None));
        assert_eq!(
            credentials(&addrs(&["nats://a:4222", "nats://u:p%40ss@b:4222"])),
            Ok(Some(Credentials::UserPassword("u".into(), "p@ss".into())))
        );
        assert_eq!(
            credentials(&addrs(&["nats://s3cr3t@a:4222", "nats://s3cr3t@b:4222"])),
            Ok(Some(Credentials::Token("s3cr3t".into())))
        );
        assert!(credentials(&addrs(&["nats://u:p@a:4222", "nats://u:q@b:4222"])).is_err());
    }

    #[test]
    fn errors_never_show_credentials() {
        assert_eq!(
            without_credentials("nats://u:secret@host:4222"),
            "nats://***@host:4222"
        );
        assert_eq!(
            without_credentials("tls://token@h:1/x@y"),
            "tls://***@h:1/x@y"
        );
        assert_eq!(without_credentials("nats://h:4222"), "nats://h:4222");
        assert_eq!(without_credentials("h:4222"), "h:4222");
    }
}
