//! The MQTT ingest: the MQTT broker to read from, the topic filters and the
//! room template, QoS, credentials, TLS trust and the shared-subscription
//! group.
//!
//! Turned into `ingest::mqtt::MqttSettings` here only ([`MqttArgs::settings`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rumqttc::v5::mqttbytes::QoS;

use super::Secret;
use crate::ingest::mqtt::{Mapping, MqttConfigError, MqttSettings};
use crate::tls;

#[derive(Debug, Clone, Args)]
pub struct MqttArgs {
    /// MQTT broker to ingest device messages from: mqtt://host[:1883] or mqtts://host[:8883] (TLS).
    /// Each message is published to roomcast's broker, payload unchanged.
    #[arg(long, env = "MQTT_URL", help_heading = "MQTT ingest")]
    pub mqtt_url: Option<String>,

    /// MQTT topic filter to subscribe to (repeatable; `+` and `#` wildcards).
    #[arg(
        long = "mqtt-topic",
        env = "ROOMCAST_MQTT_TOPIC",
        default_value = "#",
        value_name = "FILTER",
        help_heading = "MQTT ingest"
    )]
    pub mqtt_topics: Vec<String>,

    /// Room of an MQTT message: text with {1}, {2}… for the levels matched by the filter's `+`
    /// wildcards, in order (filter devices/+/telemetry with device-{1}: devices/42/telemetry →
    /// device-42). Default: the topic itself.
    #[arg(
        long,
        env = "ROOMCAST_MQTT_ROOM",
        value_name = "TEMPLATE",
        help_heading = "MQTT ingest"
    )]
    pub mqtt_room: Option<String>,

    /// MQTT subscription QoS: 0 (at most once) or 1 (at least once; acknowledged only once
    /// published to roomcast's broker).
    #[arg(
        long,
        env = "ROOMCAST_MQTT_QOS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(0..=1),
        help_heading = "MQTT ingest"
    )]
    pub mqtt_qos: u8,

    /// MQTT user name.
    #[arg(long, env = "MQTT_USERNAME", help_heading = "MQTT ingest")]
    pub mqtt_username: Option<String>,

    /// MQTT password.
    #[arg(
        long,
        env = "MQTT_PASSWORD",
        hide_env_values = true,
        help_heading = "MQTT ingest"
    )]
    pub mqtt_password: Option<Secret>,

    /// MQTT client id; keep it stable per node, as the persistent session is keyed by it.
    /// Default: roomcast-$HOSTNAME, else roomcast-<random>.
    #[arg(long, env = "MQTT_CLIENT_ID", help_heading = "MQTT ingest")]
    pub mqtt_client_id: Option<String>,

    /// Host name, for the default MQTT client id.
    #[arg(long, env = "HOSTNAME", hide = true)]
    pub hostname: Option<String>,

    /// PEM file of the CA(s) that alone are trusted for an mqtts:// broker; default: the
    /// Mozilla roots.
    #[arg(
        long,
        env = "ROOMCAST_MQTT_CA_FILE",
        value_name = "PEM",
        help_heading = "MQTT ingest"
    )]
    pub mqtt_ca_file: Option<PathBuf>,

    /// MQTT 5 shared-subscription group: nodes subscribe to $share/GROUP/FILTER, so the MQTT
    /// broker hands each message to one node. Empty: plain subscriptions (one node only, or
    /// every node ingests every message).
    #[arg(
        long,
        env = "ROOMCAST_MQTT_SHARE_GROUP",
        default_value = "roomcast",
        value_name = "GROUP",
        help_heading = "MQTT ingest"
    )]
    pub mqtt_share_group: String,

    /// Seconds the MQTT broker keeps roomcast's session (subscriptions, queued QoS 1
    /// messages) while roomcast is disconnected.
    #[arg(
        long,
        env = "ROOMCAST_MQTT_SESSION_EXPIRY_S",
        default_value_t = 300,
        help_heading = "MQTT ingest"
    )]
    pub mqtt_session_expiry_s: u32,

    /// Keep the MQTT broker's retained messages as rooms' latest values for clients that join
    /// (needs a [[rules]] table with cache = "last" for those rooms); they are not sent as news.
    #[arg(long, env = "ROOMCAST_MQTT_RETAINED", help_heading = "MQTT ingest")]
    pub mqtt_retained: bool,

    /// Ingest through a lease of this many seconds in roomcast's broker (memory or redis): one
    /// node at a time holds it and ingests, with the client id every node shares (default
    /// roomcast-ingest), instead of a shared subscription; another node takes over when the
    /// holder stops renewing. 0: off.
    #[arg(
        long,
        env = "ROOMCAST_MQTT_LEASE_S",
        default_value_t = 0,
        value_name = "SECONDS",
        help_heading = "MQTT ingest"
    )]
    pub mqtt_lease_s: u64,
}

impl MqttArgs {
    /// `None` without `--mqtt-url`; an error for any setting that cannot work.
    /// `max_payload`: larger messages are not ingested (`--max-payload`).
    pub fn settings(&self, max_payload: usize) -> Result<Option<MqttSettings>, MqttConfigError> {
        let Some(url) = &self.mqtt_url else {
            return Ok(None);
        };
        let mapping = Mapping::new(&self.mqtt_topics, self.mqtt_room.as_deref())?;
        let bad_url = |why| MqttConfigError::Url(url.clone(), why);
        let parsed = url::Url::parse(url).map_err(|_| bad_url("not a URL"))?;
        let (tls, default_port) = match parsed.scheme() {
            "mqtt" => (false, 1883),
            "mqtts" => (true, 8883),
            _ => return Err(bad_url("the scheme must be mqtt:// or mqtts://")),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad_url(
                "give credentials with --mqtt-username/--mqtt-password (MQTT_USERNAME/MQTT_PASSWORD), not in the URL",
            ));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad_url("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = match (&self.mqtt_ca_file, tls) {
            (Some(_), false) => return Err(MqttConfigError::CaWithoutTls),
            (Some(path), true) => {
                let pem = std::fs::read(path).map_err(|source| MqttConfigError::CaFile {
                    path: path.clone(),
                    source,
                })?;
                let config =
                    tls::client_config_trusting(&pem).map_err(|source| MqttConfigError::Tls {
                        path: path.clone(),
                        source,
                    })?;
                Some(Arc::new(config))
            }
            (None, true) => Some(Arc::new(tls::client_config(&[]).map_err(|source| {
                MqttConfigError::Tls {
                    path: PathBuf::from("(Mozilla roots)"),
                    source,
                }
            })?)),
            (None, false) => None,
        };
        let lease = (self.mqtt_lease_s > 0).then(|| Duration::from_secs(self.mqtt_lease_s));
        let client_id = self.mqtt_client_id.clone().unwrap_or_else(|| {
            match self.hostname.as_deref().filter(|h| !h.is_empty()) {
                // One session that the lease's holder takes over.
                _ if lease.is_some() => "roomcast-ingest".to_owned(),
                Some(host) => format!("roomcast-{host}"),
                None => format!("roomcast-{:08x}", rand::random::<u32>()),
            }
        });
        Ok(Some(MqttSettings {
            host,
            port: parsed.port().unwrap_or(default_port),
            tls,
            username: self.mqtt_username.clone(),
            password: self.mqtt_password.as_ref().map(|p| p.expose().to_owned()),
            client_id,
            mapping,
            qos: if self.mqtt_qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            // With a lease one node subscribes at a time: plain subscriptions.
            share_group: Some(self.mqtt_share_group.clone())
                .filter(|g| !g.is_empty() && lease.is_none()),
            session_expiry_s: self.mqtt_session_expiry_s,
            max_payload,
            retained: self.mqtt_retained,
            lease,
        }))
    }
}
