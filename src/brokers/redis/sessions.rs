//! Sessions kept in Redis for whoever comes back to any node (Socket.IO
//! connection state recovery): one key per session, `roomcast:session:<pid>`,
//! holding the caller's bytes with a TTL. Taking a session reads and deletes
//! it in one script, so two nodes never both get it.
//!
//! The ops are single-key, so on a Redis Cluster each goes to the master of
//! its key's slot (`SessionBackend`: one Redis, or the cluster's masters,
//! `cluster/sessions.rs`).
//!
//! Knows nothing of what a session holds; `transports::sessions` decides
//! what to write and when. Every command is bounded by the broker's
//! `op_timeout`.

use std::time::Duration;

use redis::RedisResult;
use redis::aio::ConnectionManager;

use crate::brokers::sessions::SessionOp;

/// Sessions' keys begin with this (room names under `roomcast:` are
/// reserved on Redis).
pub const PREFIX: &str = "roomcast:session:";

/// `KEYS[1]`: its value, deleted; nil if absent (`GETDEL` before 6.2).
const TAKE: &str = r"
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('DEL', KEYS[1])
end
return value
";

/// `KEYS[1]`, `ARGV[1]` the value, `ARGV[2]` the TTL in ms: renews the
/// session's TTL, or writes it if it is absent, never over another value
/// (the client may be back on another node, which wrote its own).
const KEEP: &str = r"
if redis.call('PEXPIRE', KEYS[1], ARGV[2]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX')
end
return 1
";

pub fn key(pid: &str) -> String {
    format!("{PREFIX}{pid}")
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Applies `ops` in order, each session for `ttl`, in one pipeline (the
/// caller bounds it in time).
pub(super) async fn write<'o>(
    conn: &mut ConnectionManager,
    ops: impl IntoIterator<Item = &'o SessionOp>,
    ttl: Duration,
) -> RedisResult<()> {
    let ttl = millis(ttl);
    let mut pipe = redis::pipe();
    for op in ops {
        match op {
            SessionOp::Put { pid, value } => {
                pipe.cmd("SET").arg(key(pid)).arg(value).arg("PX").arg(ttl)
            }
            SessionOp::Keep { pid, value } => pipe
                .cmd("EVAL")
                .arg(KEEP)
                .arg(1)
                .arg(key(pid))
                .arg(value)
                .arg(ttl),
            SessionOp::Renew { pid } => pipe.cmd("PEXPIRE").arg(key(pid)).arg(ttl),
            SessionOp::Delete { pid } => pipe.cmd("DEL").arg(key(pid)),
        }
        .ignore();
    }
    pipe.query_async(conn).await
}

/// Takes (reads and deletes) the session under `pid` (the caller bounds it
/// in time).
pub(super) async fn take(conn: &mut ConnectionManager, pid: &str) -> RedisResult<Option<Vec<u8>>> {
    let script = redis::Script::new(TAKE);
    script.key(key(pid)).invoke_async(conn).await
}
