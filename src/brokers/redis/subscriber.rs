//! The subscribed connection, read by hand: as fast as the socket delivers.
//!
//! Owns: dialling Redis (TCP, TLS or a Unix socket, as the URL says; AUTH when
//! it carries credentials), the subscriptions ([`Receive`]: the seed's
//! `PSUBSCRIBE <pattern>`, or per room: every room the [`Interest`] tracker
//! lists, `SUBSCRIBE`d and `UNSUBSCRIBE`d in batches as rooms come and go,
//! each confirmation reported back), and the read loop: one large buffer,
//! replies parsed in place (`resp`), each `message`/`pmessage` whose channel
//! the sink wants copied once into the [`Inbox`], everything else discarded
//! without a copy. It pings when the socket has been quiet for a while and
//! reports why the connection ended ([`Lost`]). The connection is live (the
//! broker's `live` callback) once its first subscriptions are confirmed.
//!
//! On a Redis Cluster master ([`Receive::Shard`]) the rooms are shard
//! channels: `SSUBSCRIBE`/`SUNSUBSCRIBE` one slot per command (Redis refuses
//! a command whose channels span slots), `smessage`s delivered the same way;
//! a `sunsubscribe` we did not ask for (Redis moved the slot away) or a
//! `MOVED`/`ASK` reply drops those rooms back to the tracker and tells the
//! cluster broker (`Reader::moved`) to read the topology again.
//!
//! Never: delivers to the hub itself (the inbox's fan-out task does, so a
//! slow fan-out never slows reading), waits on anything but the socket and
//! its timers, or logs per message.
//!
//! Called by the broker's subscriber task in `redis/mod.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::log::Layout;
use super::resp::{self, Reply};
use crate::brokers::Sink;
use crate::brokers::inbox::{Inbox, Received};
use crate::brokers::interest::{Batch, Interest};
use crate::telemetry;

/// Bytes asked of the socket per read. Large, so a flood is read in few
/// system calls; it is one buffer per node, not per client.
const READ_BUFFER: usize = 1024 * 1024;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where and how to connect, resolved once from the URL.
pub struct Target {
    info: ConnectionInfo,
    /// `rediss://` only.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Target {
    /// `tls_roots`: PEM certificates that alone are trusted (else the Mozilla
    /// roots), as for the publishing connection.
    pub fn new(info: ConnectionInfo, tls_roots: Option<&[u8]>) -> Result<Target, String> {
        let tls = match info.addr() {
            ConnectionAddr::TcpTls { insecure: true, .. } => {
                return Err("rediss:// without certificate checks is not supported".into());
            }
            ConnectionAddr::TcpTls { .. } => Some(tls_connector(tls_roots)?),
            _ => None,
        };
        Ok(Target { info, tls })
    }
}

fn tls_connector(roots: Option<&[u8]>) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("invalid CA PEM: {e}"))?;
                store
                    .add(cert)
                    .map_err(|e| format!("unusable CA certificate: {e}"))?;
            }
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Why a subscription ended. `code()` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// Redis closed the connection: a restart, `CLIENT KILL`, or a subscriber
    /// that fell behind its `client-output-buffer-limit pubsub`.
    Closed,
    /// Reading or writing the socket failed (reset, TLS error).
    Io,
    /// Nothing came back within the health check's time.
    NoAnswer,
    /// Redis answered with an error on the subscribed connection.
    ErrorReply,
    /// Bytes that are not RESP as a subscriber receives it.
    Protocol,
}

impl LostReason {
    pub fn code(self) -> &'static str {
        match self {
            LostReason::Closed => "closed",
            LostReason::Io => "io_error",
            LostReason::NoAnswer => "no_answer",
            LostReason::ErrorReply => "error_reply",
            LostReason::Protocol => "protocol_error",
        }
    }
}

/// How a subscription ended.
pub struct Lost {
    pub reason: LostReason,
    /// What Redis or the socket said, for the log.
    pub detail: String,
    /// It delivered a message or answered a ping: Redis was there.
    pub had_worked: bool,
}

/// What the subscribed connection listens to.
pub enum Receive {
    /// `PSUBSCRIBE` one pattern: every matching message reaches this node.
    Pattern(String),
    /// `SUBSCRIBE` each room the tracker lists, and `PSUBSCRIBE` these few
    /// patterns besides (the Socket.IO emitter's channels).
    Rooms {
        interest: Interest,
        patterns: Vec<String>,
    },
    /// `SSUBSCRIBE` each room the tracker lists: the rooms whose slot this
    /// Redis Cluster master serves.
    Shard(Interest),
}

/// Rooms per SUBSCRIBE/UNSUBSCRIBE command: many joins cost one round trip,
/// and no command grows without bound.
const ROOMS_PER_COMMAND: usize = 1024;

/// A connection that is subscribing (per room: its first batch is sent and
/// may not be confirmed yet).
pub struct Subscribed {
    io: Box<dyn Io>,
    buf: BytesMut,
    /// Confirmations still due for the connection's first subscriptions;
    /// the connection is live once there are none.
    first_unconfirmed: usize,
    /// Shard channels ([`Receive::Shard`]): the first batch is followed by a
    /// PING, whose pong (replies come in order) says every subscription of it
    /// was answered, confirmed or redirected.
    sharded: bool,
    /// Our own SUNSUBSCRIBEs whose reply is still due, per room: any other
    /// `sunsubscribe` is Redis taking the room's slot away.
    unsubscribing: HashMap<Vec<u8>, u32>,
    /// Each room's log channel is subscribed too (just before the room, so
    /// the room's confirmation comes after its log channel's), named as
    /// this layout names it.
    log: Option<Layout>,
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("Redis refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Protocol(#[from] resp::ProtocolError),
    #[error("no answer from Redis within {0:?}")]
    Timeout(Duration),
}

/// Dials, authenticates and subscribes, all within `timeout` (per room: sends
/// the first batch, whose confirmations `run` reads).
pub async fn subscribe(
    target: &Target,
    receive: &Receive,
    log: Option<Layout>,
    timeout: Duration,
) -> Result<Subscribed, ConnectError> {
    match tokio::time::timeout(timeout, try_subscribe(target, receive, log)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}

async fn try_subscribe(
    target: &Target,
    receive: &Receive,
    log: Option<Layout>,
) -> Result<Subscribed, ConnectError> {
    let io: Box<dyn Io> = match target.info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            Box::new(stream)
        }
        ConnectionAddr::TcpTls { host, port, .. } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| ConnectError::Refused(format!("invalid TLS server name: {e}")))?;
            let connector = target.tls.as_ref().ok_or_else(|| {
                ConnectError::Refused("TLS is not set up for this URL".to_string())
            })?;
            Box::new(connector.connect(name, stream).await?)
        }
        #[cfg(unix)]
        ConnectionAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        #[allow(unreachable_patterns)]
        _ => return Err(ConnectError::Refused("unsupported Redis address".into())),
    };
    let mut connection = Subscribed {
        io,
        buf: BytesMut::with_capacity(READ_BUFFER),
        first_unconfirmed: 0,
        sharded: matches!(receive, Receive::Shard(_)),
        unsubscribing: HashMap::new(),
        log,
    };
    let settings = target.info.redis_settings();
    if let Some(password) = settings.password() {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = settings.username() {
            auth.arg(user);
        }
        auth.arg(password);
        connection.command(&auth).await?;
    }
    match receive {
        Receive::Pattern(pattern) => {
            connection
                .command(redis::cmd("PSUBSCRIBE").arg(pattern))
                .await?;
            if log.is_some() {
                let logs = format!("{}{pattern}", super::log::LOG_PREFIX);
                connection
                    .command(redis::cmd("PSUBSCRIBE").arg(logs))
                    .await?;
            }
        }
        Receive::Rooms { interest, patterns } => {
            // Everything the tracker holds is sent again: this is a new connection.
            interest.lost();
            let batch = interest.batch();
            connection.first_unconfirmed = batch.subscribe.len() + patterns.len();
            let mut commands = connection.pack(&batch);
            if !patterns.is_empty() {
                commands.extend(redis::cmd("PSUBSCRIBE").arg(patterns).get_packed_command());
            }
            connection.write(&commands).await?;
        }
        Receive::Shard(interest) => {
            interest.lost();
            let batch = interest.batch();
            let mut commands = connection.pack(&batch);
            commands.extend_from_slice(PING);
            connection.first_unconfirmed = 1;
            connection.write(&commands).await?;
        }
    }
    Ok(connection)
}

/// In subscribed mode PING answers `["pong", ""]`, else `+PONG`.
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// `SUBSCRIBE` and `UNSUBSCRIBE` of up to [`ROOMS_PER_COMMAND`] rooms each
/// (with `log`, each room's log channel just before it: a room the layout
/// cannot log was refused at its join).
fn pack_rooms(bytes: &mut Vec<u8>, command: &str, rooms: &[&Arc<str>], log: Option<Layout>) {
    for chunk in rooms.chunks(ROOMS_PER_COMMAND) {
        let mut cmd = redis::cmd(command);
        for room in chunk {
            if let Some(Ok(channel)) = log.map(|layout| layout.key(room)) {
                cmd.arg(channel);
            }
            cmd.arg(room.as_bytes());
        }
        bytes.extend(cmd.get_packed_command());
    }
}

/// The rooms of `rooms` grouped by cluster slot.
fn by_slot(rooms: &[Arc<str>]) -> BTreeMap<u16, Vec<&Arc<str>>> {
    let mut slots: BTreeMap<u16, Vec<&Arc<str>>> = BTreeMap::new();
    for room in rooms {
        slots
            .entry(super::slots::slot(room.as_bytes()))
            .or_default()
            .push(room);
    }
    slots
}

/// One reply to the first subscriptions came: live once all did.
fn first_answered(unconfirmed: &mut usize, live: &(dyn Fn() + Sync)) {
    if *unconfirmed > 0 {
        *unconfirmed -= 1;
        if *unconfirmed == 0 {
            live();
        }
    }
}

/// A `sunsubscribe` for `room`: the reply to one of ours, or Redis taking
/// the room's slot away (true).
fn taken_away(unsubscribing: &mut HashMap<Vec<u8>, u32>, room: &[u8]) -> bool {
    match unsubscribing.get_mut(room) {
        Some(pending) => {
            *pending -= 1;
            if *pending == 0 {
                unsubscribing.remove(room);
            }
            false
        }
        None => true,
    }
}

/// A `MOVED <slot> <address>` or `ASK <slot> <address>` reply's slot.
fn redirected_slot(error: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(error).ok()?;
    let rest = text
        .strip_prefix("MOVED ")
        .or_else(|| text.strip_prefix("ASK "))?;
    rest.split(' ').next()?.parse().ok()
}

impl Subscribed {
    /// The commands of a batch, packed (in one write: one round trip); shard
    /// channels one slot per command, our SUNSUBSCRIBEs remembered.
    fn pack(&mut self, batch: &Batch) -> Vec<u8> {
        let mut bytes = Vec::new();
        if !self.sharded {
            fn all(rooms: &[Arc<str>]) -> Vec<&Arc<str>> {
                rooms.iter().collect()
            }
            pack_rooms(&mut bytes, "SUBSCRIBE", &all(&batch.subscribe), self.log);
            pack_rooms(
                &mut bytes,
                "UNSUBSCRIBE",
                &all(&batch.unsubscribe),
                self.log,
            );
            return bytes;
        }
        for rooms in by_slot(&batch.subscribe).values() {
            pack_rooms(&mut bytes, "SSUBSCRIBE", rooms, self.log);
        }
        for rooms in by_slot(&batch.unsubscribe).values() {
            pack_rooms(&mut bytes, "SUNSUBSCRIBE", rooms, self.log);
        }
        for room in &batch.unsubscribe {
            let log = self.log.and_then(|layout| layout.key(room).ok());
            for channel in log.iter().map(String::as_bytes).chain([room.as_bytes()]) {
                *self.unsubscribing.entry(channel.to_vec()).or_default() += 1;
            }
        }
        bytes
    }

    /// Sends one command and reads its one reply (before anything else can
    /// arrive: only during the handshake).
    async fn command(&mut self, command: &redis::Cmd) -> Result<(), ConnectError> {
        self.write(&command.get_packed_command()).await?;
        loop {
            if let Some((reply, used)) = resp::parse(&self.buf)? {
                let result = match reply {
                    Reply::Error(text) => Err(ConnectError::Refused(
                        String::from_utf8_lossy(text).into_owned(),
                    )),
                    _ => Ok(()),
                };
                self.buf.advance(used);
                return result;
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(ConnectError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        // TLS may hold written bytes until flushed.
        self.io.flush().await
    }

    /// Reads until the connection ends: wanted messages go to `inbox`, the
    /// rest is dropped here; per room, sends the tracker's batches as rooms
    /// come and go. Calls `live` once the first subscriptions are confirmed.
    /// Pings after `quiet` without a byte from Redis and gives up `timeout`
    /// later.
    pub async fn run(
        mut self,
        reader: Reader<'_>,
        live: &(dyn Fn() + Sync),
        quiet: Duration,
        timeout: Duration,
    ) -> Lost {
        let interest = reader.interest;
        if self.first_unconfirmed == 0 {
            live();
        }
        let mut had_worked = false;
        let mut last_read = Instant::now();
        let mut pinged = false;
        let lost = |reason, detail: String, had_worked| Lost {
            reason,
            detail,
            had_worked,
        };
        loop {
            let deadline = last_read + if pinged { quiet + timeout } else { quiet };
            let linger_ends = interest
                .and_then(Interest::next_expiry)
                .map_or(deadline + timeout, Instant::from_std);
            tokio::select! {
                _ = async {
                    match interest {
                        Some(interest) => interest.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Err(error) = self.send_batch(interest).await {
                        return lost(LostReason::Io, error.to_string(), had_worked);
                    }
                }
                _ = tokio::time::sleep_until(linger_ends), if interest.is_some() => {
                    if let Err(error) = self.send_batch(interest).await {
                        return lost(LostReason::Io, error.to_string(), had_worked);
                    }
                }
                read = self.io.read_buf(&mut self.buf) => match read {
                    Ok(0) => return lost(LostReason::Closed, "Redis closed the connection".into(), had_worked),
                    Err(error) => return lost(LostReason::Io, error.to_string(), had_worked),
                    Ok(_) => {
                        last_read = Instant::now();
                        pinged = false;
                        match self.take_replies(reader, live) {
                            Ok(any) => had_worked |= any,
                            Err(lost_now) => return Lost { had_worked, ..lost_now },
                        }
                        if self.buf.capacity() - self.buf.len() < READ_BUFFER / 4 {
                            self.buf.reserve(READ_BUFFER);
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if pinged {
                        return lost(LostReason::NoAnswer, format!("no answer from Redis within {timeout:?}"), had_worked);
                    }
                    if let Err(error) = self.write(PING).await {
                        return lost(LostReason::Io, error.to_string(), had_worked);
                    }
                    pinged = true;
                }
            }
        }
    }

    /// Sends what the tracker has for Redis now, if anything.
    async fn send_batch(&mut self, interest: Option<&Interest>) -> std::io::Result<()> {
        let Some(interest) = interest else {
            return Ok(());
        };
        let batch = interest.batch();
        if batch.is_empty() {
            return Ok(());
        }
        let commands = self.pack(&batch);
        self.write(&commands).await
    }

    /// Parses every complete reply in the buffer. `Ok(true)` if Redis sent
    /// something that shows it works (a message or a pong).
    fn take_replies(&mut self, reader: Reader<'_>, live: &(dyn Fn() + Sync)) -> Result<bool, Lost> {
        let Reader {
            sink,
            inbox,
            stats,
            interest,
            moved,
        } = reader;
        let mut used = 0;
        let mut batch = Vec::new();
        let mut read = 0u64;
        let mut worked = false;
        let result = loop {
            match resp::parse(&self.buf[used..]) {
                Ok(Some((reply, size))) => {
                    used += size;
                    match reply {
                        Reply::Array(items) => match items.as_slice() {
                            [kind, pattern, channel, payload] if *kind == b"pmessage" => {
                                read += 1;
                                worked = true;
                                // A log channel the user's pattern matches too
                                // comes again through the log pattern.
                                if !is_log(channel) || is_log(pattern) {
                                    take_message(channel, payload, sink, &mut batch, stats);
                                }
                            }
                            [kind, channel, payload]
                                if *kind == b"message" || *kind == b"smessage" =>
                            {
                                read += 1;
                                worked = true;
                                take_message(channel, payload, sink, &mut batch, stats);
                            }
                            // The room's own confirmation, which follows, counts.
                            [kind, channel, _count]
                                if (*kind == b"subscribe" || *kind == b"ssubscribe")
                                    && self.log.is_some()
                                    && is_log(channel) =>
                            {
                                worked = true;
                            }
                            [kind, channel, _count]
                                if *kind == b"subscribe"
                                    || *kind == b"psubscribe"
                                    || *kind == b"ssubscribe" =>
                            {
                                worked = true;
                                if *kind != b"psubscribe"
                                    && let Some(interest) = interest
                                {
                                    interest.confirmed(channel);
                                }
                                if !self.sharded {
                                    first_answered(&mut self.first_unconfirmed, live);
                                }
                            }
                            [kind, channel, _count]
                                if *kind == b"sunsubscribe"
                                    && taken_away(&mut self.unsubscribing, channel) =>
                            {
                                if let Some(interest) = interest {
                                    interest.dropped_where(|room| room.as_bytes() == *channel);
                                }
                                moved();
                            }
                            [kind, ..] if *kind == b"pong" => {
                                worked = true;
                                if self.sharded {
                                    first_answered(&mut self.first_unconfirmed, live);
                                }
                            }
                            _ => {}
                        },
                        // PING outside subscribed mode (no room subscribed).
                        Reply::Simple(b"PONG") => {
                            worked = true;
                            if self.sharded {
                                first_answered(&mut self.first_unconfirmed, live);
                            }
                        }
                        // A shard channel whose slot another master serves
                        // now: subscribed there once the topology is read.
                        Reply::Error(text)
                            if self.sharded
                                && let Some(slot) = redirected_slot(text) =>
                        {
                            if let Some(interest) = interest {
                                interest.dropped_where(|room| {
                                    super::slots::slot(room.as_bytes()) == slot
                                });
                            }
                            moved();
                        }
                        Reply::Error(text) => {
                            break Err(Lost {
                                reason: LostReason::ErrorReply,
                                detail: String::from_utf8_lossy(text).into_owned(),
                                had_worked: false,
                            });
                        }
                        _ => {}
                    }
                }
                Ok(None) => break Ok(worked),
                Err(error) => {
                    break Err(Lost {
                        reason: LostReason::Protocol,
                        detail: error.to_string(),
                        had_worked: false,
                    });
                }
            }
        };
        self.buf.advance(used);
        if read > 0 {
            telemetry::messages_received(inbox.broker(), read);
        }
        inbox.push(batch);
        result
    }
}

/// A log channel's name (or a pattern of them).
fn is_log(channel: &[u8]) -> bool {
    channel.starts_with(super::log::LOG_PREFIX.as_bytes())
}

/// One pmessage: copied into the batch if its channel is wanted.
fn take_message(
    channel: &[u8],
    payload: &[u8],
    sink: &Sink,
    batch: &mut Vec<Received>,
    stats: &ReadStats,
) {
    let Ok(channel) = std::str::from_utf8(channel) else {
        // Room names are strings; a non-UTF-8 channel cannot name one.
        // Logged on the 1st, 2nd, 4th, 8th... drop, not per message.
        let dropped = stats.undeliverable.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped.is_power_of_two() {
            tracing::warn!(
                dropped,
                "redis: dropped message(s) whose channel name is not UTF-8"
            );
        }
        return;
    };
    if sink.wants(channel) {
        batch.push(Received::copy(channel, payload));
    }
}

/// What the read loop hands messages to and learns rooms from.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    pub sink: &'a Sink,
    pub inbox: &'a Inbox,
    pub stats: &'a ReadStats,
    /// Per-room mode's tracker.
    pub interest: Option<&'a Interest>,
    /// Called when Redis says a room's slot moved (Redis Cluster).
    pub moved: &'a (dyn Fn() + Sync),
}

/// Counters of the read loop, kept across connections.
#[derive(Default)]
pub struct ReadStats {
    /// pmessages dropped because their channel name is not UTF-8.
    pub undeliverable: AtomicU64,
}
