//! Socket.IO recovery sessions on a Redis Cluster, so a client recovers on
//! any node as on one Redis: each session's key (`roomcast:session:<pid>`,
//! no hashtag: any slot) lives on the master that serves its slot, written
//! and taken through that master's publishing connection.
//!
//! A batch of ops is split by master, each part one pipeline in the
//! batch's order (every op of a session is on its one key, so its order
//! holds), the parts at once. What Redis redirects (the slot moved: a
//! failover, a resharding) is sent once more after the slot map is read.

use std::sync::Arc;
use std::time::Duration;

use super::{ClusterBroker, Shard};
use crate::brokers::redis::sessions::{self, key};
use crate::brokers::redis::{bounded, failed};
use crate::brokers::sessions::{SessionBackend, SessionOp};
use crate::brokers::{BoxFuture, BrokerError};

impl ClusterBroker {
    /// Writes `ops` on their keys' masters; -> the ops Redis redirected.
    async fn write_sessions_once<'o>(
        &self,
        ops: &[&'o SessionOp],
        ttl: Duration,
    ) -> Result<Vec<&'o SessionOp>, BrokerError> {
        let mut parts: Vec<(Arc<Shard>, Vec<&SessionOp>)> = Vec::new();
        for &op in ops {
            let shard = self.master_of(&key(op.pid()))?;
            match parts.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &shard)) {
                Some((_, part)) => part.push(op),
                None => parts.push((shard, vec![op])),
            }
        }
        let timeout = self.cluster.options.op_timeout;
        let writes = parts.iter().map(|(shard, part)| async move {
            let mut conn = shard.publisher.connection();
            bounded(
                timeout,
                sessions::write(&mut conn, part.iter().copied(), ttl),
            )
            .await
        });
        let written = futures_util::future::join_all(writes).await;
        let mut redirected = Vec::new();
        for (result, (shard, part)) in written.into_iter().zip(&parts) {
            match result {
                Ok(()) => {}
                Err(error) if error.is_cluster_error() => redirected.extend(part.iter().copied()),
                Err(error) => {
                    return Err(failed(&format!("Redis sessions on {}", shard.node), error));
                }
            }
        }
        Ok(redirected)
    }

    /// Takes the session of `pid` from its key's master; `Ok(None)` inside:
    /// Redis redirected it.
    async fn take_session_once(&self, pid: &str) -> Result<Option<Option<Vec<u8>>>, BrokerError> {
        let shard = self.master_of(&key(pid))?;
        let mut conn = shard.publisher.connection();
        let timeout = self.cluster.options.op_timeout;
        match bounded(timeout, sessions::take(&mut conn, pid)).await {
            Ok(value) => Ok(Some(value)),
            Err(error) if error.is_cluster_error() => Ok(None),
            Err(error) => Err(failed(
                &format!("Redis session take on {}", shard.node),
                error,
            )),
        }
    }
}

/// Once more after a redirection, as the log's reads and publishes.
impl SessionBackend for ClusterBroker {
    fn engine(&self) -> &'static str {
        "Redis Cluster"
    }

    fn write_sessions<'a>(
        &'a self,
        ops: &'a [SessionOp],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let all: Vec<&SessionOp> = ops.iter().collect();
            let redirected = self.write_sessions_once(&all, ttl).await?;
            if redirected.is_empty() {
                return Ok(());
            }
            let _ = self.cluster.refresh_now().await;
            match self.write_sessions_once(&redirected, ttl).await?.len() {
                0 => Ok(()),
                n => Err(BrokerError::Unavailable(format!(
                    "{n} session writes redirected twice: their slots are moving between Redis Cluster masters"
                ))),
            }
        })
    }

    fn take_session<'a>(
        &'a self,
        pid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BrokerError>> {
        Box::pin(async move {
            if let Some(taken) = self.take_session_once(pid).await? {
                return Ok(taken);
            }
            let _ = self.cluster.refresh_now().await;
            self.take_session_once(pid).await?.ok_or_else(|| {
                BrokerError::Unavailable(
                    "the session's slot is moving between Redis Cluster masters".into(),
                )
            })
        })
    }
}
