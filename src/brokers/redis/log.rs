//! The room log on Redis (docs/RECOVERY.md, "Single Redis" and "Redis
//! Cluster"): the `roomcast` library of Redis Functions (`roomcast_publish`
//! writes the room's stream and publishes an envelope on the log channel,
//! atomically; `roomcast_read` reads a room's stream after an id), where a
//! room's keys live ([`Layout`]), the envelope a node receives, and the
//! rules that tell a resumable gap from one that is not.
//!
//! Pure: the brokers (`mod.rs`, `cluster/`) load the library and run the
//! calls.

use bytes::Bytes;
use redis::Value;

use crate::brokers::REORDER_WINDOW_MS;

/// What roomcast names in Redis (the log's channels and keys) begins with:
/// no room may.
pub const RESERVED_PREFIX: &str = "roomcast:";

/// Prefix of a room's stream key and of its log channel.
pub const LOG_PREFIX: &str = "roomcast:log:";

/// [`REORDER_WINDOW_MS`] in a cluster id's units (ms in the high bits).
const CLUSTER_WINDOW: u64 = REORDER_WINDOW_MS << 16;

/// Where a room's log lives and how its ids are numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One Redis: `roomcast:log:<room>`, one id sequence and one epoch for
    /// every room (`roomcast:last`, `roomcast:epoch`).
    Single,
    /// A Redis Cluster: every key of a room in the room's slot
    /// (`roomcast:log:{<room>}`, or `roomcast:log::<room>` for a room with
    /// its own hashtag), ids per room, an epoch per room.
    Cluster,
}

impl Layout {
    /// The room's stream key, which is also its log channel. On a cluster,
    /// a room with braces that form no hashtag has no key in its own slot.
    pub fn key(self, room: &str) -> Result<String, String> {
        match self {
            Layout::Single => Ok(format!("{LOG_PREFIX}{room}")),
            // `{}` is no hashtag: the empty room's key would hash whole.
            Layout::Cluster if room.is_empty() => Err("an empty room name cannot be logged".into()),
            Layout::Cluster if !room.contains(['{', '}']) => Ok(format!("{LOG_PREFIX}{{{room}}}")),
            Layout::Cluster if has_hashtag(room) => Ok(format!("{LOG_PREFIX}:{room}")),
            Layout::Cluster => Err(format!(
                "room {room:?} cannot be logged on Redis Cluster: its braces form no hashtag \
                 (a non-empty {{tag}}), so no key of the room's slot can name it"
            )),
        }
    }

    /// The room a log channel carries, `None` for any other channel.
    pub fn room_of(self, channel: &str) -> Option<&str> {
        let rest = channel.strip_prefix(LOG_PREFIX)?;
        match self {
            Layout::Single => Some(rest),
            Layout::Cluster => match rest.strip_prefix(':') {
                Some(room) => Some(room),
                None => rest.strip_prefix('{')?.strip_suffix('}'),
            },
        }
    }

    /// The id a read starts after, for a client that saw `n` last: on a
    /// cluster, a window earlier (see [`Read::missed`]).
    pub fn read_after(self, n: u64) -> u64 {
        match self {
            Layout::Single => n,
            Layout::Cluster => n.saturating_sub(CLUSTER_WINDOW),
        }
    }
}

/// A non-empty `{tag}`: the part Redis Cluster hashes instead of the name.
fn has_hashtag(room: &str) -> bool {
    room.find('{')
        .is_some_and(|open| room[open + 1..].find('}').is_some_and(|len| len > 0))
}

/// The library's source, with the room logs' bounds and layout written in
/// (the last node to load it sets them for every publisher).
pub fn library(max_len: usize, ttl_ms: u64, layout: Layout) -> String {
    LIBRARY
        .replace("{MAXLEN}", &max_len.to_string())
        .replace("{TTL_MS}", &ttl_ms.to_string())
        .replace("{CLUSTER}", &(layout == Layout::Cluster).to_string())
}

/// Lua 5.1 numbers are doubles: exact below 2^53, which the milliseconds
/// and microseconds here stay far below. Ids are strings `<ms>-<seq>`.
const LIBRARY: &str = r#"#!lua name=roomcast
local MAXLEN = {MAXLEN}
local TTL_MS = {TTL_MS}
local CLUSTER = {CLUSTER}
local PREFIX = 'roomcast:log:'

-- The room's stream key (also its log channel) and epoch key; on a cluster
-- both in the room's slot (Layout::key), nil for a room that has none.
local function keys_of(room)
  if not CLUSTER then return PREFIX .. room, 'roomcast:epoch' end
  local tag
  if room == '' then return nil end
  if not string.find(room, '[{}]') then
    tag = '{' .. room .. '}'
  else
    local open = string.find(room, '{', 1, true)
    local close = open and string.find(room, '}', open + 1, true)
    if not close or close == open + 1 then return nil end
    tag = ':' .. room
  end
  return PREFIX .. tag, 'roomcast:epoch:' .. tag
end

local function no_key(room)
  return redis.error_reply('roomcast: room ' .. room ..
    ' is empty or has braces that form no hashtag: it cannot be logged on Redis Cluster')
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function base36(value)
  local digits = '0123456789abcdefghijklmnopqrstuvwxyz'
  local out = ''
  repeat
    local d = math.fmod(value, 36)
    out = string.sub(digits, d + 1, d + 1) .. out
    value = math.floor(value / 36)
  until value == 0
  return out
end

local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function last_entry(key)
  local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if top[1] then return top[1][1] end
  return nil
end

-- The log's epoch (its birth in microseconds), created when absent (a new
-- log, or the old one lost).
local function epoch(epoch_key)
  local e = redis.call('GET', epoch_key)
  if not e then
    local t = redis.call('TIME')
    e = base36(tonumber(t[1]) * 1000000 + tonumber(t[2]))
    redis.call('SET', epoch_key, e)
  end
  return e
end

local function publish(keys, args)
  local key, epoch_key = keys_of(keys[1])
  if not key then return no_key(keys[1]) end
  local e = epoch(epoch_key)
  -- One sequence for all rooms on one Redis (after roomcast:last), per
  -- room on a cluster; after the room's own last entry in both.
  local lms, lseq = 0, 0
  local last = (not CLUSTER) and redis.call('GET', 'roomcast:last')
  if last then lms, lseq = split(last) end
  local prev = last_entry(key)
  if prev then
    local pms, pseq = split(prev)
    if pms > lms or (pms == lms and pseq > lseq) then lms, lseq = pms, pseq end
  else
    prev = '0-0'
  end
  local ms, seq = now_ms(), 0
  if ms <= lms then
    ms, seq = lms, lseq + 1
    if seq >= 65536 then ms, seq = ms + 1, 0 end
  end
  local id = string.format('%.0f-%.0f', ms, seq)
  redis.call('XADD', key, 'MAXLEN', '~', MAXLEN, id, 'd', args[1], 'p', prev)
  redis.call('PEXPIRE', key, TTL_MS)
  local envelope = e .. ' ' .. id .. ' ' .. prev .. '\n' .. args[1]
  if CLUSTER then
    -- The room's epoch lives as long as its stream.
    redis.call('PEXPIRE', epoch_key, TTL_MS)
    redis.call('SPUBLISH', key, envelope)
  else
    redis.call('SET', 'roomcast:last', id)
    redis.call('PUBLISH', key, envelope)
  end
  return id
end

local function read(keys, args)
  local key, epoch_key = keys_of(keys[1])
  if not key then return no_key(keys[1]) end
  local e = redis.call('GET', epoch_key) or ''
  local entries = redis.call('XRANGE', key, '(' .. args[1], '+')
  return {e, string.format('%.0f', now_ms()), string.format('%.0f', TTL_MS),
          redis.call('EXISTS', key), last_entry(key) or '0-0', entries}
end

redis.register_function('roomcast_publish', publish)
redis.register_function{function_name = 'roomcast_read', callback = read, flags = {'no-writes'}}
"#;

/// `<ms>-<seq>` as one number: `ms × 65536 + seq` (the hub's id shape).
pub fn parse_stream_id(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let (ms, seq) = text.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    (seq < 1 << 16 && ms < 1 << 47).then_some(ms << 16 | seq)
}

/// The stream id of number `n`.
pub fn stream_id(n: u64) -> String {
    format!("{}-{}", n >> 16, n & 0xffff)
}

/// A logged message as the log channel carries it:
/// `<epoch> <id> <prev>\n<payload>`. The epoch stays text: its meaning is
/// the hub's (a base-36 number).
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub epoch: &'a str,
    pub id: u64,
    pub prev: u64,
    /// Where the payload starts in the envelope.
    pub payload_at: usize,
}

impl Envelope<'_> {
    pub fn parse(bytes: &[u8]) -> Option<Envelope<'_>> {
        let end = bytes.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&bytes[..end]).ok()?;
        let mut fields = head.split(' ');
        let epoch = fields.next().filter(|e| is_epoch(e))?;
        let id = parse_stream_id(fields.next()?.as_bytes())?;
        let prev = parse_stream_id(fields.next()?.as_bytes())?;
        if fields.next().is_some() {
            return None;
        }
        Some(Envelope {
            epoch,
            id,
            prev,
            payload_at: end + 1,
        })
    }
}

/// One entry of a room's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub prev: u64,
    pub payload: Bytes,
}

/// What `roomcast_read` returned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Read {
    pub epoch: Option<String>,
    pub now_ms: u64,
    pub ttl_ms: u64,
    pub exists: bool,
    /// The room's newest entry (0: none).
    pub newest: u64,
    /// The entries after the id asked for, oldest first.
    pub entries: Vec<Entry>,
}

impl Read {
    /// Parses the reply of `roomcast_read`.
    pub fn from_reply(reply: Value) -> Result<Read, String> {
        let bad = |what: &str| format!("unexpected roomcast_read reply: {what}");
        let Value::Array(items) = reply else {
            return Err(bad("not an array"));
        };
        let [epoch, now, ttl, exists, newest, entries] = <[Value; 6]>::try_from(items)
            .map_err(|items| bad(&format!("{} items", items.len())))?;
        let text = |value: &Value| match value {
            Value::BulkString(bytes) => Some(bytes.clone()),
            Value::SimpleString(text) => Some(text.clone().into_bytes()),
            _ => None,
        };
        let number = |value: &Value| {
            text(value).and_then(|bytes| std::str::from_utf8(&bytes).ok()?.parse::<u64>().ok())
        };
        let epoch = match text(&epoch).map(String::from_utf8) {
            Some(Ok(epoch)) if epoch.is_empty() => None,
            Some(Ok(epoch)) if is_epoch(&epoch) => Some(epoch),
            _ => return Err(bad("epoch")),
        };
        let Value::Array(entries) = entries else {
            return Err(bad("entries"));
        };
        let entries = entries
            .into_iter()
            .map(entry)
            .collect::<Option<Vec<Entry>>>()
            .ok_or_else(|| bad("entry"))?;
        Ok(Read {
            epoch,
            now_ms: number(&now).ok_or_else(|| bad("time"))?,
            ttl_ms: number(&ttl).ok_or_else(|| bad("ttl"))?,
            exists: matches!(exists, Value::Int(1)),
            newest: text(&newest)
                .and_then(|id| parse_stream_id(&id))
                .ok_or_else(|| bad("newest"))?,
            entries,
        })
    }

    /// Whether a client that saw `n` of `epoch` last cannot be given exactly
    /// what it missed from these entries (docs/RECOVERY.md, the gap rules).
    pub fn is_gap(&self, epoch: &str, n: u64) -> bool {
        if self.epoch.as_deref() != Some(epoch) {
            return true;
        }
        let since_ms = n >> 16;
        match self.entries.first() {
            Some(first) if first.prev > n => true,
            // A stream created again after it expired: its old entries were
            // all written a TTL or more before this one.
            Some(first) if first.prev == 0 => {
                since_ms <= (first.id >> 16).saturating_sub(self.ttl_ms)
            }
            Some(_) => false,
            None if !self.exists => since_ms <= self.now_ms.saturating_sub(self.ttl_ms),
            None => false,
        }
    }

    /// What a client that saw `n` of `epoch` last missed, read after
    /// `layout.read_after(n)`; `None` when that cannot be known exactly (the
    /// client is told to reset).
    ///
    /// On one Redis, ids are one sequence for every room: the gap rules
    /// ([`Read::is_gap`]) hold for any room. On a cluster, ids are per room
    /// and per master clock: `n` is exact for its own room (the entry `n` is
    /// in this log, of this epoch); for another room, only if this log was
    /// born before the window that precedes `n` and holds no entry within
    /// the window either side of `n` (one of those may have reached the
    /// client before or after `n` did), so that every entry is clearly
    /// before (seen) or after (missed).
    pub fn missed(&self, epoch: &str, n: u64, layout: Layout) -> Option<&[Entry]> {
        if layout == Layout::Single {
            return (!self.is_gap(epoch, n)).then_some(&self.entries[..]);
        }
        if self.epoch.as_deref() == Some(epoch)
            && let Some(at) = self.entries.iter().position(|entry| entry.id == n)
        {
            return Some(&self.entries[at + 1..]);
        }
        let after = layout.read_after(n);
        let unsure = n.saturating_add(CLUSTER_WINDOW);
        let born_ms = self.epoch.as_deref().map(epoch_ms)?;
        if born_ms >= after >> 16 || self.entries.iter().any(|entry| entry.id <= unsure) {
            return None;
        }
        let own = self.epoch.as_deref()?;
        (!self.is_gap(own, after)).then_some(&self.entries[..])
    }
}

/// An epoch's time (its log's birth) in milliseconds.
fn epoch_ms(epoch: &str) -> u64 {
    u64::from_str_radix(epoch, 36).map_or(u64::MAX, |micros| micros / 1000)
}

/// What the library writes as an epoch: lowercase base-36 digits.
fn is_epoch(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// `[id, [field, value, ...]]` with fields `d` and `p`.
fn entry(value: Value) -> Option<Entry> {
    let Value::Array(parts) = value else {
        return None;
    };
    let [Value::BulkString(id), Value::Array(fields)] = <[Value; 2]>::try_from(parts).ok()? else {
        return None;
    };
    let (mut payload, mut prev) = (None, None);
    for pair in fields.chunks(2) {
        match pair {
            [Value::BulkString(name), Value::BulkString(value)] if name == b"d" => {
                payload = Some(Bytes::copy_from_slice(value))
            }
            [Value::BulkString(name), Value::BulkString(value)] if name == b"p" => {
                prev = parse_stream_id(value)
            }
            _ => {}
        }
    }
    Some(Entry {
        id: parse_stream_id(&id)?,
        prev: prev?,
        payload: payload?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_764_504_000_000;

    fn n(ms: u64, seq: u64) -> u64 {
        ms << 16 | seq
    }

    #[test]
    fn stream_ids_and_envelopes_parse() {
        assert_eq!(parse_stream_id(b"1764504000000-3"), Some(n(MS, 3)));
        assert_eq!(stream_id(n(MS, 3)), "1764504000000-3");
        assert_eq!(parse_stream_id(b"0-0"), Some(0));
        for bad in [
            &b"1-65536"[..],
            b"-1",
            b"1-",
            b"x-1",
            b"1",
            b"1-2-3",
            b"99999999999999999-0",
        ] {
            assert_eq!(
                parse_stream_id(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let envelope = b"hdgpy3j39c 1764504000000-3 1764504000000-1\n{\"a\":1}\n";
        let parsed = Envelope::parse(envelope).unwrap();
        assert_eq!(parsed.epoch, "hdgpy3j39c");
        assert_eq!((parsed.id, parsed.prev), (n(MS, 3), n(MS, 1)));
        assert_eq!(&envelope[parsed.payload_at..], b"{\"a\":1}\n");
        for bad in [
            &b"hdgpy3j39c 1764504000000-3 0-0"[..],
            b"hdgpy3j39c 1764504000000-3\nx",
            b"HDG 1-0 0-0\nx",
            b"e 1-0 0-0 extra\nx",
            b"\n",
        ] {
            assert_eq!(
                Envelope::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn read(entries: &[(u64, u64)], exists: bool) -> Read {
        Read {
            epoch: Some("7".into()),
            now_ms: MS + 1_000_000,
            ttl_ms: 300_000,
            exists,
            newest: entries.last().map_or(0, |e| e.0),
            entries: entries
                .iter()
                .map(|&(id, prev)| Entry {
                    id,
                    prev,
                    payload: Bytes::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn gaps_are_told_from_what_can_be_filled() {
        let since = n(MS, 5);
        // The next entry follows the client's id, or one before it (an id of
        // another room: one sequence for all).
        assert!(!read(&[(n(MS, 9), since)], true).is_gap("7", since));
        assert!(!read(&[(n(MS, 9), n(MS, 2))], true).is_gap("7", since));
        // Another epoch, or no log at all.
        assert!(read(&[(n(MS, 9), since)], true).is_gap("8", since));
        assert!(
            Read {
                epoch: None,
                ..read(&[], false)
            }
            .is_gap("7", since)
        );
        // The entry before the first one kept was trimmed.
        assert!(read(&[(n(MS, 9), n(MS, 7))], true).is_gap("7", since));
        // Nothing after the id in a stream that is there: nothing missed.
        assert!(!read(&[], true).is_gap("7", since));
        // The stream expired: it could have held something after the id,
        // unless the id is younger than the TTL.
        let now = MS + 1_000_000;
        assert!(read(&[], false).is_gap("7", since));
        assert!(!read(&[], false).is_gap("7", n(now - 299_999, 0)));
        assert!(read(&[], false).is_gap("7", n(now - 300_000, 0)));
        // Created again after it expired: as old as the TTL before the new
        // first entry, or older, is a gap.
        let first = n(MS + 500_000, 0);
        assert!(read(&[(first, 0)], true).is_gap("7", since));
        assert!(!read(&[(first, 0)], true).is_gap("7", n(MS + 200_001, 0)));
        assert!(read(&[(first, 0)], true).is_gap("7", n(MS + 200_000, 0)));
    }

    #[test]
    fn cluster_keys_are_in_the_room_slot_and_name_their_room() {
        use crate::brokers::redis::slots::slot;
        for room in ["device01", "{user}.feed", "a}b{c}", ":x", "ünï"] {
            let key = Layout::Cluster.key(room).unwrap();
            assert_eq!(slot(key.as_bytes()), slot(room.as_bytes()), "{room}");
            assert_eq!(Layout::Cluster.room_of(&key), Some(room), "{key}");
        }
        // `{a}` (a hashtag) and `a` are two rooms with two keys.
        assert_ne!(Layout::Cluster.key("{a}"), Layout::Cluster.key("a"));
        for bad in ["a{}b", "a{b", "a}b", "}{"] {
            let error = Layout::Cluster.key(bad).unwrap_err();
            assert!(error.contains("hashtag"), "{bad}: {error}");
        }
        assert!(Layout::Cluster.key("").is_err());
        assert_eq!(Layout::Single.key("a{}b").unwrap(), "roomcast:log:a{}b");
        assert_eq!(Layout::Single.room_of("roomcast:log:{a}"), Some("{a}"));
        assert_eq!(Layout::Cluster.room_of("roomcast:log:a"), None);
        assert_eq!(Layout::Cluster.room_of("a"), None);
    }

    #[test]
    fn a_cluster_offset_is_exact_for_its_room_and_unsure_near_it_for_others() {
        let window = CLUSTER_WINDOW;
        let since = n(MS, 5);
        let born = |ms: u64| base36(ms * 1000);
        let log = |epoch: &str, entries: &[(u64, u64)]| Read {
            epoch: Some(epoch.to_string()),
            ..read(entries, true)
        };
        let old = born(MS - 60_000);
        // Its own room: after the client's entry, whatever the others.
        let own = log(&old, &[(since, n(MS, 1)), (n(MS, 9), since)]);
        let missed = own.missed(&old, since, Layout::Cluster).unwrap();
        assert_eq!(missed.iter().map(|e| e.id).collect::<Vec<_>>(), [n(MS, 9)]);
        // The same entries under another epoch: that life of the log is gone.
        assert!(own.missed(&born(MS - 1), since, Layout::Cluster).is_none());
        // Another room of a log born before the window: nothing near the
        // offset, so what is before was seen and what is after was missed.
        let far = since + window + 1;
        let other = log(&old, &[(far, n(MS - 10_000, 0))]);
        assert_eq!(
            other
                .missed("x", since, Layout::Cluster)
                .map(<[Entry]>::len),
            Some(1)
        );
        assert_eq!(
            log(&old, &[])
                .missed("x", since, Layout::Cluster)
                .map(<[Entry]>::len),
            Some(0)
        );
        // An entry within the window either side: unsure, reset.
        for near in [since - window + 1, since - 1, since + window] {
            let prev = near - 1;
            assert!(
                log(&old, &[(near, prev)])
                    .missed("x", since, Layout::Cluster)
                    .is_none(),
                "{near}"
            );
        }
        // Born within the window or after, or no log at all: reset.
        assert!(
            log(&born(MS - 1_000), &[])
                .missed("x", since, Layout::Cluster)
                .is_none()
        );
        assert!(
            Read {
                epoch: None,
                ..read(&[], false)
            }
            .missed("x", since, Layout::Cluster)
            .is_none()
        );
        // The gap rules still hold from the window's start (trimmed).
        let trimmed = log(&old, &[(far, since - window + 1)]);
        assert!(trimmed.missed("x", since, Layout::Cluster).is_none());
        // One Redis: the single gap rules.
        assert!(
            log("7", &[(n(MS, 9), n(MS, 2))])
                .missed("7", since, Layout::Single)
                .is_some()
        );
        assert!(
            log("7", &[(n(MS, 9), n(MS, 7))])
                .missed("7", since, Layout::Single)
                .is_none()
        );
    }

    fn base36(mut value: u64) -> String {
        let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut out = Vec::new();
        loop {
            out.push(digits[(value % 36) as usize]);
            value /= 36;
            if value == 0 {
                break;
            }
        }
        out.reverse();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_read_reply_parses() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            bulk("hdgpy3j39c"),
            bulk("1764504001000"),
            bulk("300000"),
            Value::Int(1),
            bulk("1764504000000-3"),
            Value::Array(vec![Value::Array(vec![
                bulk("1764504000000-3"),
                Value::Array(vec![bulk("d"), bulk("hi"), bulk("p"), bulk("0-0")]),
            ])]),
        ]);
        let read = Read::from_reply(reply).unwrap();
        assert_eq!(read.epoch.as_deref(), Some("hdgpy3j39c"));
        assert_eq!(
            (read.now_ms, read.ttl_ms, read.exists),
            (MS + 1000, 300_000, true)
        );
        assert_eq!(
            read.entries,
            vec![Entry {
                id: n(MS, 3),
                prev: 0,
                payload: Bytes::from_static(b"hi")
            }]
        );
        assert!(Read::from_reply(Value::Array(vec![])).is_err());
        assert!(Read::from_reply(Value::Nil).is_err());
    }
}
