//! A lease in Redis that one holder at a time has (the MQTT ingest's): a key
//! holding the holder's name with a TTL, taken when free and renewed only by
//! its holder, each in one script so no other node's write comes between
//! the check and the set. Nothing else: the caller decides what holding it
//! means and when to renew.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::answered;
use crate::brokers::BrokerError;

/// `KEYS[1]` the lease, `ARGV[1]` the holder, `ARGV[2]` the TTL in ms:
/// 1 if the holder has it now (taken or renewed), else 0.
const HOLD: &str = r"
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// Deletes the lease if `ARGV[1]` holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub(super) async fn hold(
    conn: &mut ConnectionManager,
    name: &str,
    holder: &str,
    ttl: Duration,
    timeout: Duration,
) -> Result<bool, BrokerError> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    let script = redis::Script::new(HOLD);
    let mut invocation = script.key(name);
    invocation.arg(holder).arg(ttl_ms);
    let held: i64 = answered("Redis lease", timeout, invocation.invoke_async(conn)).await?;
    Ok(held == 1)
}

pub(super) async fn release(
    conn: &mut ConnectionManager,
    name: &str,
    holder: &str,
    timeout: Duration,
) -> Result<(), BrokerError> {
    let script = redis::Script::new(RELEASE);
    let mut invocation = script.key(name);
    invocation.arg(holder);
    answered::<i64>("Redis lease", timeout, invocation.invoke_async(conn)).await?;
    Ok(())
}
