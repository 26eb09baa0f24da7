//! The little of RESP2 a subscribed connection receives, parsed in place.
//!
//! Owns: [`parse`], which reads one reply from the front of a buffer without
//! copying: simple strings (`+OK`), errors (`-ERR ...`), integers, and the
//! short arrays of bulk strings or integers that subscribed mode sends
//! (`pmessage`, `message`, `psubscribe`, `pong`). Never: allocates, reads
//! nested arrays or arrays longer than [`MAX_ITEMS`] (Redis sends neither to a
//! subscriber), or accepts a bulk string over [`MAX_BULK`].
//!
//! Called by `subscriber`, on every chunk read from the socket.

/// Longest array a subscribed connection receives (`pmessage`: 4 items).
pub const MAX_ITEMS: usize = 4;

/// Largest bulk string accepted (a published payload), so a broken or
/// hostile peer cannot make the read buffer grow without bound.
pub const MAX_BULK: usize = 64 * 1024 * 1024;

/// One reply, borrowing from the buffer it was parsed from.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Integer(i64),
    /// An array's items; an integer item is kept as its digits, a nil bulk
    /// string as empty.
    Array(Items<'a>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Items<'a> {
    items: [&'a [u8]; MAX_ITEMS],
    len: usize,
}

impl<'a> Items<'a> {
    pub fn as_slice(&self) -> &[&'a [u8]] {
        &self.items[..self.len]
    }
}

/// The stream is not RESP2 as a subscriber receives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Redis protocol error: {0}")]
pub struct ProtocolError(pub &'static str);

/// Parses the reply at the front of `buf`: `Ok(None)` until it is complete,
/// then the reply and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, ProtocolError> {
    let Some((kind, line, mut at)) = line(buf, 0)? else {
        return Ok(None);
    };
    let reply = match kind {
        b'+' => Reply::Simple(line),
        b'-' => Reply::Error(line),
        b':' => Reply::Integer(integer(line)?),
        b'*' => {
            let count = integer(line)?;
            if !(0..=MAX_ITEMS as i64).contains(&count) {
                return Err(ProtocolError("unexpected array length"));
            }
            let mut items = Items {
                items: [&[]; MAX_ITEMS],
                len: count as usize,
            };
            for item in items.items.iter_mut().take(count as usize) {
                match element(buf, at)? {
                    Some((value, next)) => {
                        *item = value;
                        at = next;
                    }
                    None => return Ok(None),
                }
            }
            Reply::Array(items)
        }
        _ => return Err(ProtocolError("unexpected reply type")),
    };
    Ok(Some((reply, at)))
}

/// One array item: a bulk string or an integer.
fn element(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let Some((kind, line, start)) = line(buf, at)? else {
        return Ok(None);
    };
    match kind {
        b':' => Ok(Some((line, start))),
        b'$' => {
            let len = integer(line)?;
            if len == -1 {
                return Ok(Some((&[], start)));
            }
            if !(0..=MAX_BULK as i64).contains(&len) {
                return Err(ProtocolError("bulk string length out of range"));
            }
            let end = start + len as usize;
            match buf.get(end..end + 2) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some((&buf[start..end], end + 2))),
                Some(_) => Err(ProtocolError("bulk string not followed by CRLF")),
            }
        }
        _ => Err(ProtocolError("unexpected array item type")),
    }
}

/// A line: its type byte, the rest of it (without CRLF), where the next starts.
type Line<'a> = (u8, &'a [u8], usize);

/// The line starting at `at`.
fn line(buf: &[u8], at: usize) -> Result<Option<Line<'_>>, ProtocolError> {
    let Some(rest) = buf.get(at..) else {
        return Ok(None);
    };
    let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
        // A header line is short; a long one without LF is not RESP.
        return if rest.len() > 64 * 1024 {
            Err(ProtocolError("line too long"))
        } else {
            Ok(None)
        };
    };
    if newline < 2 || rest[newline - 1] != b'\r' {
        return Err(ProtocolError("line not terminated by CRLF"));
    }
    Ok(Some((rest[0], &rest[1..newline - 1], at + newline + 1)))
}

fn integer(digits: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtocolError("invalid integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items<'a>(reply: &Reply<'a>) -> Vec<&'a [u8]> {
        match reply {
            Reply::Array(items) => items.as_slice().to_vec(),
            other => panic!("not an array: {other:?}"),
        }
    }

    #[test]
    fn a_pmessage_is_parsed_in_place_and_needs_every_byte() {
        let wire = b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$4\r\nroom\r\n$5\r\nh\r\ni!\r\n+OK\r\n";
        let first = wire.len() - 5;
        for cut in 0..first {
            assert_eq!(parse(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        let (reply, used) = parse(wire).unwrap().unwrap();
        assert_eq!(used, first);
        assert_eq!(
            items(&reply),
            vec![&b"pmessage"[..], b"*", b"room", b"h\r\ni!"]
        );
        assert_eq!(parse(&wire[used..]), Ok(Some((Reply::Simple(b"OK"), 5))));
    }

    #[test]
    fn confirmations_pongs_errors_and_integers() {
        let (reply, _) = parse(b"*3\r\n$10\r\npsubscribe\r\n$1\r\n*\r\n:1\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(items(&reply), vec![&b"psubscribe"[..], b"*", b"1"]);
        let (reply, _) = parse(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n").unwrap().unwrap();
        assert_eq!(items(&reply), vec![&b"pong"[..], b""]);
        assert_eq!(
            parse(b"-NOAUTH Authentication required.\r\n"),
            Ok(Some((Reply::Error(b"NOAUTH Authentication required."), 34)))
        );
        assert_eq!(parse(b":-7\r\n"), Ok(Some((Reply::Integer(-7), 5))));
        let (reply, _) = parse(b"*1\r\n$-1\r\n").unwrap().unwrap();
        assert_eq!(items(&reply), vec![&b""[..]]);
    }

    #[test]
    fn garbage_is_an_error_not_a_wait_or_a_panic() {
        for bad in [
            &b"?\r\n"[..],
            b"+OK\n",
            b"*5\r\n",
            b"*-2\r\n",
            b"*1\r\n*1\r\n",
            b":x\r\n",
            b"*1\r\n$3\r\nabcd\r\n",
            b"*1\r\n$99999999999\r\n",
            b"\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(parse(&[b'+'; 70_000]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_handled(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(Some((_, used))) = parse(&bytes) {
                proptest::prop_assert!(used <= bytes.len());
            }
        }
    }
}
