//! Socket.IO recovery sessions in a JetStream key-value bucket,
//! `<stream name>_sessions` (`roomcast_roomcast_sessions` for the default
//! prefix), one key per session (its `pid`), for whoever comes back to any
//! node.
//!
//! The server here may be 2.9 (no per-message TTL): the bucket's `max_age`
//! is the recovery window, so a session lasts the window from its last
//! write, and renewing one is writing it again (`update` at the revision
//! read, so a renewal never puts back a value another node wrote or took
//! meanwhile). Taking one reads it and deletes it at the revision read
//! (`delete_expect_revision`): of two nodes, one gets it. The bucket is
//! made (or brought to this node's window: the last node to write first
//! wins) on a node's first write and again after a failure (e.g. it was
//! deleted).
//!
//! Knows nothing of what a session holds; every request is bounded by the
//! JetStream context's timeout.

use async_nats::jetstream;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::Mutex;

use super::log;
use crate::brokers::BrokerError;
use crate::brokers::sessions::SessionOp;

/// A take that keeps meeting a changed session (renewed by the node whose
/// connection still lives) gives up after this many reads.
const TAKE_TRIES: usize = 3;

pub(super) struct Bucket {
    js: jetstream::Context,
    name: String,
    /// The bucket once made, with the window it was made for.
    store: Mutex<Option<(kv::Store, Duration)>>,
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("NATS sessions: {what}: {error}"))
}

impl Bucket {
    pub fn new(js: jetstream::Context, prefix: &str) -> Bucket {
        Bucket {
            js,
            name: format!("{}_sessions", log::stream_name(prefix)),
            store: Mutex::new(None),
        }
    }

    /// The bucket, made or brought to `window` if this node has not yet.
    async fn store(&self, window: Duration) -> Result<kv::Store, BrokerError> {
        let mut store = self.store.lock().await;
        if let Some((kv, made_for)) = store.as_ref()
            && *made_for == window
        {
            return Ok(kv.clone());
        }
        let config = bucket_stream(&self.name, window);
        let failed = |e: &dyn std::fmt::Display| unavailable(&format!("bucket {}", self.name), e);
        let stream = self
            .js
            .get_or_create_stream(config.clone())
            .await
            .map_err(|e| failed(&e))?;
        if stream.cached_info().config.max_age != window {
            self.js
                .update_stream(&config)
                .await
                .map_err(|e| failed(&e))?;
        }
        let kv = self
            .js
            .get_key_value(self.name.clone())
            .await
            .map_err(|e| failed(&e))?;
        *store = Some((kv.clone(), window));
        Ok(kv)
    }

    /// The bucket if this node made it already (a take before any write:
    /// looked up, never made, so a lookup has no window to make it with).
    async fn existing(&self) -> Result<Option<kv::Store>, BrokerError> {
        if let Some((kv, _)) = self.store.lock().await.as_ref() {
            return Ok(Some(kv.clone()));
        }
        match self.js.get_key_value(self.name.clone()).await {
            Ok(kv) => Ok(Some(kv)),
            Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => Ok(None),
            Err(e) => Err(unavailable("bucket lookup", e)),
        }
    }

    /// Applies `ops` in order, each session kept `window` from its write.
    /// On a failure the bucket is looked up again next time.
    pub async fn write(&self, ops: &[SessionOp], window: Duration) -> Result<(), BrokerError> {
        let kv = self.store(window).await?;
        for op in ops {
            if let Err(error) = apply(&kv, op).await {
                *self.store.lock().await = None;
                return Err(error);
            }
        }
        Ok(())
    }

    /// Reads the session under `pid` and deletes it at the revision read.
    pub async fn take(&self, pid: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        let Some(kv) = self.existing().await? else {
            return Ok(None);
        };
        for _ in 0..TAKE_TRIES {
            let Some(entry) = current(&kv, pid).await? else {
                return Ok(None);
            };
            match kv.delete_expect_revision(pid, Some(entry.revision)).await {
                Ok(()) => return Ok(Some(entry.value.to_vec())),
                // Written or taken since the read: read again.
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(unavailable("take", e)),
            }
        }
        Ok(None)
    }
}

/// The stream of a key-value bucket as `create_key_value` makes it (one
/// value per key, `max_age` the window), made here because async-nats
/// 0.51's `create_key_value` first reads the account's JetStream info,
/// which it cannot parse from nats-server 2.9.
fn bucket_stream(bucket: &str, window: Duration) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: window,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    }
}

/// The key's value if it holds one (not deleted, not purged).
async fn current(kv: &kv::Store, pid: &str) -> Result<Option<kv::Entry>, BrokerError> {
    match kv.entry(pid).await {
        Ok(entry) => Ok(entry.filter(|e| e.operation == Operation::Put)),
        Err(e) => Err(unavailable("read", e)),
    }
}

/// Writes the session's value again at the revision read, so its age
/// starts over; false if there is none.
async fn renew(kv: &kv::Store, pid: &str) -> Result<bool, BrokerError> {
    let Some(entry) = current(kv, pid).await? else {
        return Ok(false);
    };
    match kv.update(pid, entry.value, entry.revision).await {
        Ok(_) => Ok(true),
        // Changed since the read: what is there now is newer than a renewal.
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(true),
        Err(e) => Err(unavailable("renew", e)),
    }
}

async fn apply(kv: &kv::Store, op: &SessionOp) -> Result<(), BrokerError> {
    match op {
        SessionOp::Put { pid, value } => kv
            .put(&**pid, Bytes::copy_from_slice(value))
            .await
            .map(drop)
            .map_err(|e| unavailable("put", e)),
        SessionOp::Keep { pid, value } => {
            if renew(kv, pid).await? {
                return Ok(());
            }
            match kv.create(&**pid, Bytes::copy_from_slice(value)).await {
                // Another node wrote it between our read and our create.
                Ok(_) => Ok(()),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(unavailable("keep", e)),
            }
        }
        SessionOp::Renew { pid } => renew(kv, pid).await.map(drop),
        SessionOp::Delete { pid } => kv
            .delete(&**pid)
            .await
            .map_err(|e| unavailable("delete", e)),
    }
}
