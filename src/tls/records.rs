//! rustls's unbuffered server connection driven over buffers the caller owns.
//!
//! rustls's buffered `ServerConnection` keeps a 4 KiB record buffer per
//! connection for as long as it lives, idle or not (docs/TLS.md). With
//! `UnbufferedServerConnection` the caller hands in the received ciphertext
//! and gets the TLS to send appended to its own buffer, so [`super::stream`]
//! can hold nothing between records. This module is only the state machine's
//! loop: no I/O, no buffers of its own.

use std::io;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};

/// The largest TLS record on the wire: the 5-byte header and TLS 1.2's
/// ciphertext bound (2^14 + 2048), which rustls accepts from a peer.
pub const MAX_RECORD: usize = 5 + 16_384 + 2_048;

/// What the caller wants done once the connection has nothing else to do.
#[derive(Clone, Copy, Debug)]
pub enum Goal<'a> {
    /// Only process what was received.
    Read,
    /// Encrypt this application data.
    Write(&'a [u8]),
    /// Queue close_notify.
    Close,
}

/// Where [`advance`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reached {
    /// No whole record left to process: more bytes from the peer are needed
    /// (also after the peer's close_notify, which `peer_closed` tells).
    NeedData,
    /// This many bytes of [`Goal::Write`] are encrypted into `outgoing`.
    Wrote(usize),
    /// close_notify is in `outgoing`.
    CloseQueued,
    /// Both sides sent close_notify.
    Closed,
}

/// The connection's side of one [`advance`]: what to send and what arrived.
pub struct Buffers<'a, F: FnMut(&[u8])> {
    /// TLS to send is appended here, in order.
    pub outgoing: &'a mut Vec<u8>,
    /// Called with each record's application data, in order.
    pub plaintext: F,
    /// Set once the peer's close_notify has been processed.
    pub peer_closed: &'a mut bool,
}

/// Runs `conn` over `incoming` (received bytes not yet processed) until it
/// needs more bytes or `goal` is done. Returns how many bytes at the front of
/// `incoming` are processed (the caller removes them before the next call,
/// also after an error) and where it stopped.
pub fn advance<F: FnMut(&[u8])>(
    conn: &mut UnbufferedServerConnection,
    incoming: &mut [u8],
    io: &mut Buffers<'_, F>,
    goal: Goal<'_>,
) -> (usize, io::Result<Reached>) {
    let mut discarded = 0;
    loop {
        let UnbufferedStatus { discard, state } =
            conn.process_tls_records(&mut incoming[discarded..]);
        let step = match state {
            Ok(state) => step(state, io, goal),
            Err(error) => {
                discarded += discard;
                queue_alert(conn, &mut incoming[discarded..], io.outgoing);
                return (discarded, Err(tls_error(error)));
            }
        };
        discarded += discard;
        match step {
            Ok(None) => continue,
            Ok(Some(reached)) => return (discarded, Ok(reached)),
            Err(error) => return (discarded, Err(error)),
        }
    }
}

/// rustls queues a fatal alert for the peer when it refuses its bytes; it
/// comes out of the next call first, and nothing more is asked of the
/// connection.
fn queue_alert(conn: &mut UnbufferedServerConnection, incoming: &mut [u8], outgoing: &mut Vec<u8>) {
    if let Ok(ConnectionState::EncodeTlsData(mut encode)) = conn.process_tls_records(incoming).state
    {
        let _ = append(outgoing, 0, |buf| encode.encode(buf).map_err(encode_needs));
    }
}

/// Handles one state; `None` means call `process_tls_records` again.
fn step<F: FnMut(&[u8])>(
    state: ConnectionState<'_, '_, rustls::server::ServerConnectionData>,
    io: &mut Buffers<'_, F>,
    goal: Goal<'_>,
) -> io::Result<Option<Reached>> {
    match state {
        ConnectionState::ReadTraffic(mut traffic) => {
            while let Some(record) = traffic.next_record() {
                let record = record.map_err(tls_error)?;
                (io.plaintext)(record.payload);
            }
            Ok(None)
        }
        ConnectionState::EncodeTlsData(mut encode) => {
            append(io.outgoing, 0, |buf| {
                encode.encode(buf).map_err(encode_needs)
            })?;
            Ok(None)
        }
        // The bytes stay in `outgoing` behind what was queued before them;
        // the stream sends them in order before it waits for the peer.
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            Ok(None)
        }
        ConnectionState::PeerClosed => {
            *io.peer_closed = true;
            Ok(None)
        }
        ConnectionState::Closed => Ok(Some(Reached::Closed)),
        ConnectionState::BlockedHandshake => Ok(Some(Reached::NeedData)),
        ConnectionState::WriteTraffic(mut traffic) => match goal {
            Goal::Read => Ok(Some(Reached::NeedData)),
            Goal::Write(data) => {
                append(io.outgoing, sealed_len(data.len()), |buf| {
                    traffic.encrypt(data, buf).map_err(encrypt_needs)
                })?;
                Ok(Some(Reached::Wrote(data.len())))
            }
            Goal::Close => {
                append(io.outgoing, 64, |buf| {
                    traffic.queue_close_notify(buf).map_err(encrypt_needs)
                })?;
                Ok(Some(Reached::CloseQueued))
            }
        },
        // Early data is never accepted (the config's max_early_data_size is
        // 0), so rustls never offers it; any state a later rustls adds is
        // refused rather than guessed at.
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected TLS connection state",
        )),
    }
}

/// Appends what `write` puts into a buffer of at least `guess` bytes to
/// `out`, growing it to the size `write` asks for (`Err(Some(n))`) and
/// trying again. Returns the bytes appended.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> io::Result<usize> {
    let start = out.len();
    let mut room = guess;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(n);
            }
            Err(Some(required)) if required > room => room = required,
            Err(_) => {
                out.truncate(start);
                return Err(io::Error::other(
                    "TLS record not sealed (traffic keys exhausted)",
                ));
            }
        }
    }
}

/// What an encryption needs beyond the plaintext: per record (up to 2^14
/// bytes each) the header, TLS 1.3's content type and the AEAD tag (TLS
/// 1.2's explicit nonce and tag fit too). A key update rustls queues first is
/// asked for through `InsufficientSize`.
fn sealed_len(plaintext: usize) -> usize {
    plaintext + plaintext.div_ceil(16_384).max(1) * 64
}

/// `AlreadyEncoded` cannot happen: each state is encoded once.
fn encode_needs(error: EncodeError) -> Option<usize> {
    match error {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(required_size)
        }
        EncodeError::AlreadyEncoded => None,
    }
}

fn encrypt_needs(error: EncryptError) -> Option<usize> {
    match error {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(required_size)
        }
        EncryptError::EncryptExhausted => None,
    }
}

/// A TLS error from the peer's bytes or the protocol: the connection ends.
pub fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}
