//! MQTT ingest: roomcast subscribes to an MQTT broker (Mosquitto, EMQX,
//! HiveMQ, AWS IoT…) as an MQTT 5 client and publishes every message it
//! receives into roomcast's broker, on the room the topic maps to
//! ([`topics`]), payload bytes unchanged.
//!
//! Owns one MQTT connection (rumqttc) in two tasks spawned on the server's
//! `Shutdown`: the *connection* task polls the connection, (re)subscribes
//! after each CONNACK and reconnects with backoff; the *publisher* task
//! publishes each message with `Broker::publish` and only then acknowledges
//! it (QoS 1, manual acks), so a roomcast-broker outage holds messages at the
//! MQTT broker instead of losing them. The session is persistent (clean start
//! off, session expiry), so QoS 1 messages published while roomcast
//! reconnects wait for it. Nodes subscribe to `$share/<group>/<filter>`: the
//! MQTT broker hands each message to one node, which publishes it to every
//! node through roomcast's broker.
//!
//! Retained messages (`--mqtt-retained`) are the MQTT broker's latest value
//! of a topic. They are not news, so they are not published: each node
//! offers them to its own hub as the room's value for joiners
//! (`Hub::offer_latest`, which takes one only while the room has none: the
//! room's own messages are at least as new). The MQTT broker sends them when
//! a subscription is made; as it does not for shared subscriptions, each
//! node then also subscribes the plain filters (marked with a subscription
//! identifier) and at once unsubscribes them: the retained messages are
//! queued by the SUBSCRIBE, and a live message that came through that
//! subscription meanwhile is a copy of the shared one, dropped. Without
//! `--mqtt-retained` no retained message is asked for.
//!
//! Never: panics or exits on an MQTT failure (it shows on `/readyz` and in
//! `roomcast_mqtt_up`); logs the password; delivers a message to clients
//! itself (a retained value goes to the hub only as a room's value).
//! Called by `server` with the [`MqttSettings`] that `config::MqttArgs`
//! resolved at start (bad settings are errors there), through [`start`].

mod lease;
mod topics;

pub use topics::{Filter, Mapping, TopicError};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    Filter as SubscriptionFilter, Packet, Publish, RetainForwardRule, SubscribeProperties,
    SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::{NetworkOptions, TlsConfiguration, Transport};
use tokio::sync::mpsc;

use crate::backoff::Backoff;
use crate::brokers::{Broker, BrokerError};
use crate::shutdown::Shutdown;
use crate::{hub, telemetry};

/// QoS 1 messages the MQTT broker may have in flight to us unacknowledged
/// (MQTT 5 Receive Maximum); also the depth of the queue between the tasks.
const RECEIVE_MAXIMUM: u16 = 64;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// At most one warning per this period for dropped messages.
const DROP_LOG_PERIOD: Duration = Duration::from_secs(10);
/// The subscription identifier of the plain subscriptions made only to be
/// sent the retained messages (see the module header).
const RETAINED_SUBSCRIPTION: usize = 7;

/// Bad MQTT settings, reported at start.
#[derive(Debug, thiserror::Error)]
pub enum MqttConfigError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("--mqtt-url `{0}`: {1}")]
    Url(String, &'static str),
    #[error("cannot read --mqtt-ca-file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--mqtt-ca-file {path}: {source}")]
    Tls {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("--mqtt-ca-file needs an mqtts:// URL")]
    CaWithoutTls,
    #[error(
        "--mqtt-retained keeps retained messages as rooms' latest values: it needs a [[rules]] table with cache = \"last\" for those rooms in the config file"
    )]
    RetainedWithoutCache,
    #[error(
        "--mqtt-lease-s needs a broker that keeps leases (memory or redis); the {0} engine does not yet: use the shared subscription (--mqtt-share-group) instead"
    )]
    LeaseUnsupported(&'static str),
}

/// The resolved MQTT settings.
#[derive(Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    /// `Some` for mqtts://.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_id: String,
    pub mapping: Mapping,
    pub qos: QoS,
    /// `None`: plain subscriptions.
    pub share_group: Option<String>,
    pub session_expiry_s: u32,
    /// Larger messages are not ingested (`--max-payload`).
    pub max_payload: usize,
    /// Retained messages become rooms' latest values (`--mqtt-retained`).
    pub retained: bool,
    /// `Some(ttl)`: ingest only while holding the lease in roomcast's
    /// broker (`--mqtt-lease-s`); every node then uses the same client id.
    pub lease: Option<Duration>,
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No credentials here: settings may end up in a log line.
        f.debug_struct("MqttSettings")
            .field("broker", &format_args!("{}:{}", self.host, self.port))
            .field("tls", &self.tls.is_some())
            .field("client_id", &self.client_id)
            .field("filters", &self.mapping.filters())
            .finish_non_exhaustive()
    }
}

impl MqttSettings {
    /// What we subscribe to for `filter`.
    fn subscription(&self, filter: &Filter) -> String {
        match &self.share_group {
            Some(group) => format!("$share/{group}/{filter}"),
            None => filter.to_string(),
        }
    }

    /// The subscriptions that carry the messages. Retained messages come
    /// with them only on plain subscriptions with `--mqtt-retained`.
    fn subscriptions(&self) -> Vec<SubscriptionFilter> {
        let retained = self.retained && self.share_group.is_none();
        self.mapping
            .filters()
            .iter()
            .map(|filter| {
                let mut subscription = SubscriptionFilter::new(self.subscription(filter), self.qos);
                subscription.retain_forward_rule = match retained {
                    true => RetainForwardRule::OnEverySubscribe,
                    false => RetainForwardRule::Never,
                };
                subscription
            })
            .collect()
    }

    /// The plain filters subscribed only for their retained messages (and
    /// unsubscribed at once): with `--mqtt-retained` and a share group.
    fn retained_subscriptions(&self) -> Vec<SubscriptionFilter> {
        if !self.retained || self.share_group.is_none() {
            return Vec::new();
        }
        (self.mapping.filters().iter())
            .map(|filter| SubscriptionFilter::new(filter.to_string(), self.qos))
            .collect()
    }

    fn options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_start(false)
            .set_session_expiry_interval(Some(self.session_expiry_s))
            .set_receive_maximum(Some(RECEIVE_MAXIMUM))
            // The topic and properties come on top of the payload; the MQTT
            // broker drops (for us) what exceeds this, rumqttc refuses it.
            .set_max_packet_size(Some(
                u32::try_from(self.max_payload.saturating_add(70_000)).unwrap_or(u32::MAX),
            ))
            .set_manual_acks(true);
        // Small PUBACKs must leave at once: with Nagle's algorithm and the
        // peer's delayed ACKs each would wait tens of ms, and with few
        // messages in flight that caps the rate.
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        if let (Some(user), password) = (&self.username, &self.password) {
            options.set_credentials(user, password.as_deref().unwrap_or(""));
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls.clone())));
        }
        options
    }
}

/// Whether the ingest is connected and subscribed (or, with a lease,
/// standing by while another node ingests), for `/readyz`.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<[AtomicBool; 2]>);

const SUBSCRIBED: usize = 0;
const STANDBY: usize = 1;

impl Readiness {
    /// Subscribed, or standing by.
    pub fn is_up(&self) -> bool {
        self.state() != "down"
    }

    /// `up` (connected and subscribed), `standby` (another node holds the
    /// ingest lease) or `down`.
    pub fn state(&self) -> &'static str {
        if self.0[SUBSCRIBED].load(Ordering::Relaxed) {
            "up"
        } else if self.0[STANDBY].load(Ordering::Relaxed) {
            "standby"
        } else {
            "down"
        }
    }

    /// Records the state; true if it changed.
    fn set(&self, up: bool) -> bool {
        let changed = self.0[SUBSCRIBED].swap(up, Ordering::Relaxed) != up;
        if changed {
            telemetry::mqtt_up(up);
        }
        changed
    }

    fn set_standby(&self, standby: bool) {
        self.0[STANDBY].store(standby, Ordering::Relaxed);
    }
}

/// Starts the ingest on `shutdown`; returns its readiness. `hub` takes the
/// retained messages as rooms' values (`--mqtt-retained`). With a lease
/// (`--mqtt-lease-s`) the ingest runs only while this node holds it.
pub fn start(
    settings: MqttSettings,
    broker: Arc<dyn Broker>,
    hub: Arc<hub::Hub>,
    shutdown: &Shutdown,
) -> Readiness {
    let readiness = Readiness::default();
    telemetry::mqtt_up(false);
    let lease = settings.lease;
    let ingest = Ingest {
        settings: Arc::new(settings),
        broker,
        hub,
        readiness: readiness.clone(),
    };
    match lease {
        Some(ttl) => {
            shutdown.spawn(lease::keep(ingest, ttl, shutdown.clone()));
        }
        None => {
            ingest.run(shutdown);
        }
    }
    readiness
}

/// What one run of the ingest needs.
struct Ingest {
    settings: Arc<MqttSettings>,
    broker: Arc<dyn Broker>,
    hub: Arc<hub::Hub>,
    readiness: Readiness,
}

impl Ingest {
    /// Connects and ingests until `until` ends: spawns the connection and
    /// publisher tasks on it and returns them.
    fn run(&self, until: &Shutdown) -> [tokio::task::JoinHandle<()>; 2] {
        // Capacity: every ack the publisher may owe (RECEIVE_MAXIMUM) plus the
        // subscriptions (and the retained ones' unsubscriptions), so the
        // publisher never waits on a connection task that waits on it.
        let requests =
            usize::from(RECEIVE_MAXIMUM) * 2 + self.settings.mapping.filters().len() * 3 + 8;
        let (client, eventloop) = AsyncClient::new(self.settings.options(), requests);
        let (queue, received) = mpsc::channel(usize::from(RECEIVE_MAXIMUM));
        let connection = Connection {
            settings: self.settings.clone(),
            client: client.clone(),
            readiness: self.readiness.clone(),
            queue,
            shutdown: until.clone(),
        };
        let publisher = Publisher {
            settings: self.settings.clone(),
            client,
            broker: self.broker.clone(),
            hub: self.hub.clone(),
            shutdown: until.clone(),
            last_drop_log: None,
        };
        [
            until.spawn(connection.run(eventloop)),
            until.spawn(publisher.run(received)),
        ]
    }
}

/// The connection task's state.
struct Connection {
    settings: Arc<MqttSettings>,
    client: AsyncClient,
    readiness: Readiness,
    queue: mpsc::Sender<Publish>,
    shutdown: Shutdown,
}

impl Connection {
    async fn run(self, mut eventloop: EventLoop) {
        let address = format!("{}:{}", self.settings.host, self.settings.port);
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut ever_connected = false;
        // Whether the current outage was logged (one line per state change).
        let mut outage_logged = false;
        // SUBACKs since the CONNACK: the first answers the subscription, a
        // second the retained messages' one (the broker answers in order).
        let mut subacks = 0u32;
        loop {
            let polled = tokio::select! {
                _ = self.shutdown.requested() => break,
                polled = eventloop.poll() => polled,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff.reset();
                    if ever_connected {
                        telemetry::mqtt_reconnected();
                    }
                    ever_connected = true;
                    outage_logged = false;
                    subacks = 0;
                    tracing::debug!(%address, session_present = ack.session_present, "mqtt: connected");
                    self.subscribe().await;
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    subacks += 1;
                    if subacks == 1 {
                        self.subscribed(&address, &ack.return_codes);
                    } else if !all_granted(&ack.return_codes) {
                        // The rooms go without values; the ingest is up.
                        tracing::warn!(%address, codes = ?ack.return_codes, "mqtt: the broker refused the subscription for retained messages");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let queued = tokio::select! {
                        _ = self.shutdown.requested() => break,
                        queued = self.queue.send(publish) => queued,
                    };
                    if queued.is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::Disconnect(disconnect))) => {
                    tracing::warn!(%address, reason = ?disconnect.reason_code, "mqtt: the broker closed the session");
                }
                Ok(_) => {}
                Err(error) => {
                    let was_up = self.readiness.set(false);
                    if !outage_logged {
                        outage_logged = true;
                        log_outage(&address, &error, was_up || ever_connected);
                    } else {
                        tracing::debug!(%address, %error, "mqtt: reconnect attempt failed");
                    }
                    tokio::select! {
                        _ = self.shutdown.requested() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        // A clean DISCONNECT keeps the session (it has an expiry), so the
        // messages queued for this node wait for it.
        if self.readiness.set(false) || ever_connected {
            let _ = self.client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(event) = eventloop.poll().await {
                    if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
        tracing::debug!("mqtt: ingest stopped");
    }

    /// Subscribes every filter (again after a reconnect: harmless with a
    /// present session, needed after one expired), and with
    /// `--mqtt-retained` and a share group asks for the retained messages.
    async fn subscribe(&self) {
        if let Err(error) = self
            .client
            .subscribe_many(self.settings.subscriptions())
            .await
        {
            tracing::warn!(%error, "mqtt: cannot queue the subscription");
        }
        let retained = self.settings.retained_subscriptions();
        if retained.is_empty() {
            return;
        }
        // The MQTT broker queues the retained messages while it handles the
        // SUBSCRIBE, before it reads the UNSUBSCRIBE behind it.
        let marked = SubscribeProperties {
            id: Some(RETAINED_SUBSCRIPTION),
            user_properties: Vec::new(),
        };
        let paths: Vec<String> = retained.iter().map(|f| f.path.clone()).collect();
        let mut queued = self
            .client
            .subscribe_many_with_properties(retained, marked)
            .await;
        for path in paths {
            if queued.is_ok() {
                queued = self.client.unsubscribe(path).await;
            }
        }
        if let Err(error) = queued {
            tracing::warn!(%error, "mqtt: cannot queue the subscription for retained messages");
        }
    }

    fn subscribed(&self, address: &str, codes: &[SubscribeReasonCode]) {
        if all_granted(codes) {
            if self.readiness.set(true) {
                let filters: Vec<String> = (self.settings.mapping.filters().iter())
                    .map(|f| self.settings.subscription(f))
                    .collect();
                tracing::info!(%address, client_id = %self.settings.client_id, ?filters, "mqtt: connected and subscribed");
            }
        } else {
            self.readiness.set(false);
            tracing::error!(%address, ?codes, "mqtt: the broker refused the subscription (ACL? shared subscriptions unsupported?)");
        }
    }
}

fn all_granted(codes: &[SubscribeReasonCode]) -> bool {
    codes
        .iter()
        .all(|code| matches!(code, SubscribeReasonCode::Success(_)))
}

fn log_outage(address: &str, error: &ConnectionError, was_connected: bool) {
    if was_connected {
        tracing::warn!(%address, %error, "mqtt: connection lost; reconnecting with backoff");
    } else {
        tracing::warn!(%address, %error, "mqtt: cannot connect; retrying with backoff");
    }
}

/// What became of one MQTT message.
enum Outcome {
    /// Published, or dropped for good (counted): acknowledge it.
    Done,
    /// Shutting down before it could be published: leave it unacknowledged,
    /// the MQTT broker delivers it again.
    Stopped,
}

/// The publisher task's state.
struct Publisher {
    settings: Arc<MqttSettings>,
    client: AsyncClient,
    broker: Arc<dyn Broker>,
    hub: Arc<hub::Hub>,
    shutdown: Shutdown,
    last_drop_log: Option<Instant>,
}

impl Publisher {
    async fn run(mut self, mut received: mpsc::Receiver<Publish>) {
        loop {
            let publish = tokio::select! {
                _ = self.shutdown.requested() => break,
                publish = received.recv() => publish,
            };
            let Some(publish) = publish else { break };
            match self.ingest(&publish).await {
                // Err: the connection task is gone (shutdown); the message is
                // redelivered to the session.
                Outcome::Done => {
                    let _ = self.client.ack(&publish).await;
                }
                Outcome::Stopped => break,
            }
        }
    }

    /// Publishes one message to roomcast's broker, waiting out an outage.
    async fn ingest(&mut self, publish: &Publish) -> Outcome {
        let Some(room) = std::str::from_utf8(&publish.topic)
            .ok()
            .and_then(|topic| self.settings.mapping.room(topic))
        else {
            return self.drop_message(publish, "bad_topic", "no --mqtt-topic filter matches");
        };
        if let Err(error) = hub::validate_room_name(&room) {
            return self.drop_message(publish, "bad_room", &error.to_string());
        }
        if publish.payload.len() > self.settings.max_payload {
            return self.drop_message(publish, "too_large", "payload over --max-payload");
        }
        if publish.retain {
            // Sent for a new subscription (retain-as-published is off, so a
            // live message never has the flag).
            if self.settings.retained {
                self.hub.offer_latest(&room, publish.payload.clone());
            }
            telemetry::mqtt_message("retained");
            return Outcome::Done;
        }
        let properties = publish.properties.as_ref();
        if properties.is_some_and(|p| p.subscription_identifiers == [RETAINED_SUBSCRIPTION]) {
            // Live, through the retained messages' plain subscription before
            // its UNSUBSCRIBE: the shared subscription brings it too.
            telemetry::mqtt_message("duplicate");
            return Outcome::Done;
        }
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut waiting = false;
        loop {
            match self.broker.publish(&room, publish.payload.clone()).await {
                Ok(()) => {
                    if waiting {
                        tracing::info!("mqtt: roomcast's broker is back; ingest resumed");
                    }
                    telemetry::mqtt_message("published");
                    telemetry::message_published("mqtt");
                    return Outcome::Done;
                }
                Err(BrokerError::Unavailable(reason)) => {
                    if !waiting {
                        waiting = true;
                        tracing::warn!(%reason, "mqtt: roomcast's broker is unavailable; holding MQTT messages unacknowledged until it is back");
                    }
                    tokio::select! {
                        _ = self.shutdown.requested() => return Outcome::Stopped,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
                Err(error) => return self.drop_message(publish, "refused", &error.to_string()),
            }
        }
    }

    /// Counts a message that cannot be ingested; logs at most one warning per
    /// [`DROP_LOG_PERIOD`] so a misconfigured device cannot flood the log.
    fn drop_message(&mut self, publish: &Publish, outcome: &'static str, why: &str) -> Outcome {
        telemetry::mqtt_message(outcome);
        let topic = String::from_utf8_lossy(&publish.topic);
        if self
            .last_drop_log
            .is_none_or(|at| at.elapsed() >= DROP_LOG_PERIOD)
        {
            self.last_drop_log = Some(Instant::now());
            tracing::warn!(%topic, outcome, why, "mqtt: message not ingested (counted in roomcast_mqtt_messages_total; further ones logged at debug for 10 s)");
        } else {
            tracing::debug!(%topic, outcome, why, "mqtt: message not ingested");
        }
        Outcome::Done
    }
}
