//! The ingest lease (`--mqtt-lease-s`): with several roomcast nodes, one at
//! a time holds a lease in roomcast's broker (Redis: a key with a TTL) and
//! only the holder runs the MQTT connection, with the client id every node
//! shares. Its persistent session stays at the MQTT broker while the lease
//! moves: QoS 1 messages published meanwhile wait there, and the next
//! holder, connecting with the same client id, gets them (and those the
//! last holder had not acknowledged: at least once). Unlike a shared
//! subscription, a plain one is restored from Mosquitto's persistence
//! file, so a Mosquitto restart loses nothing either.
//!
//! The holder renews every third of the TTL and stops ingesting (a clean
//! DISCONNECT, the session kept) once a renewal is overdue enough that the
//! lease could lapse before the next one: two nodes never ingest at once,
//! as long as clocks tick at the same rate. A node that does not hold it
//! asks as often and takes it once it lapsed. On shutdown the holder
//! disconnects, then gives the lease up, so another node takes over at once.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Ingest;
use crate::shutdown::Shutdown;

/// The lease a run of the ingest holds: one per MQTT session.
fn lease_name(client_id: &str) -> String {
    format!("roomcast:mqtt-lease:{client_id}")
}

/// This process, among the nodes that ask.
fn holder_name() -> String {
    format!("{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// Keeps asking for the lease and runs the ingest while this node holds it,
/// until `shutdown`.
pub(super) async fn keep(ingest: Ingest, ttl: Duration, shutdown: Shutdown) {
    let name = lease_name(&ingest.settings.client_id);
    let holder = holder_name();
    let every = ttl / 3;
    let mut held_until: Option<Instant> = None;
    let mut run: Option<(Shutdown, [JoinHandle<()>; 2])> = None;
    let mut failing = false;
    loop {
        let asked = Instant::now();
        let answer =
            tokio::time::timeout(every, ingest.broker.hold_lease(&name, &holder, ttl)).await;
        let answered = match answer {
            Ok(Ok(true)) => {
                held_until = Some(asked + ttl);
                true
            }
            Ok(Ok(false)) => {
                held_until = None;
                true
            }
            Ok(Err(error)) => {
                if !failing {
                    tracing::warn!(%error, lease = %name, "mqtt: cannot ask for the ingest lease; retrying");
                }
                false
            }
            Err(_) => {
                if !failing {
                    tracing::warn!(lease = %name, "mqtt: no answer about the ingest lease in time; retrying");
                }
                false
            }
        };
        failing = !answered;
        // Holding means: sure to hold it until the next renewal is due.
        let holding = held_until.is_some_and(|until| Instant::now() + every < until);
        if holding && run.is_none() {
            tracing::info!(lease = %name, %holder, "mqtt: took the ingest lease; ingesting");
            let until = shutdown.child();
            let tasks = ingest.run(&until);
            run = Some((until, tasks));
        } else if !holding && let Some(current) = run.take() {
            tracing::warn!(lease = %name, %holder, "mqtt: the ingest lease may lapse; stopping the ingest (the MQTT session keeps its messages for the next holder)");
            stop(current).await;
        }
        ingest.readiness.set_standby(answered && !holding);
        tokio::select! {
            _ = shutdown.requested() => break,
            _ = tokio::time::sleep_until(asked + every) => {}
        }
    }
    if let Some(current) = run.take() {
        stop(current).await;
        let release = ingest.broker.release_lease(&name, &holder);
        match tokio::time::timeout(Duration::from_secs(1), release).await {
            Ok(Ok(())) => tracing::debug!(lease = %name, "mqtt: ingest lease given up"),
            _ => {
                tracing::info!(lease = %name, "mqtt: could not give the ingest lease up; it lapses by itself")
            }
        }
    }
}

/// Ends a run: its tasks disconnect (keeping the session) and finish.
async fn stop((until, tasks): (Shutdown, [JoinHandle<()>; 2])) {
    until.trigger();
    for task in tasks {
        let _ = task.await;
    }
}
