//! RFC 2136 dynamic DNS update, signed with TSIG (RFC 8945): works with
//! BIND, Knot, PowerDNS and anything else that accepts signed updates.
//! Messages go over TCP (length-prefixed, RFC 1035 §4.2.2), one per
//! connection; the zone comes from `--rfc2136-zone` or, when unset, from
//! asking the server for the SOA of each parent of the record's name.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use futures_util::future::BoxFuture;
use hickory_proto::op::{Message, Query, ResponseCode, update_message};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, RData, Record, RecordSet, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{DnsError, DnsProvider, TxtRecord, zone_candidates};
use crate::tls::settings::TsigAlgorithmKind;

const NAME: &str = "rfc2136";
const TIMEOUT: Duration = Duration::from_secs(10);
const TXT_TTL: u32 = 60;
/// Allowed clock skew for TSIG, seconds (RFC 8945 recommends 300).
const FUDGE: u16 = 300;

pub struct Rfc2136 {
    server: String,
    zone: Option<String>,
    signer: TSigner,
}

fn fail(message: impl Into<String>) -> DnsError {
    DnsError {
        provider: NAME,
        message: message.into(),
    }
}

fn name(text: &str) -> Result<Name, DnsError> {
    let mut name =
        Name::from_ascii(text).map_err(|e| fail(format!("`{text}` is not a DNS name: {e}")))?;
    name.set_fqdn(true);
    Ok(name)
}

impl Rfc2136 {
    pub fn new(
        server: String,
        zone: Option<String>,
        key_name: &str,
        secret_base64: &str,
        algorithm: TsigAlgorithmKind,
    ) -> Result<Self, DnsError> {
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret_base64.trim())
            .map_err(|e| fail(format!("--rfc2136-tsig-secret is not base64: {e}")))?;
        let algorithm = match algorithm {
            TsigAlgorithmKind::HmacSha256 => TsigAlgorithm::HmacSha256,
            TsigAlgorithmKind::HmacSha384 => TsigAlgorithm::HmacSha384,
            TsigAlgorithmKind::HmacSha512 => TsigAlgorithm::HmacSha512,
        };
        let signer = TSigner::new(secret, algorithm, name(key_name)?, FUDGE)
            .map_err(|e| fail(format!("TSIG key `{key_name}`: {e}")))?;
        Ok(Rfc2136 {
            server,
            zone,
            signer,
        })
    }

    /// One request/response over a fresh TCP connection.
    async fn exchange(&self, message: &Message) -> Result<Message, DnsError> {
        let bytes = message
            .to_vec()
            .map_err(|e| fail(format!("cannot encode the DNS message: {e}")))?;
        let exchange = async {
            let mut stream = TcpStream::connect(&self.server).await?;
            let length = u16::try_from(bytes.len())
                .map_err(|_| std::io::Error::other("DNS message over 64 KiB"))?;
            stream.write_all(&length.to_be_bytes()).await?;
            stream.write_all(&bytes).await?;
            stream.flush().await?;
            let length = stream.read_u16().await?;
            let mut answer = vec![0; usize::from(length)];
            stream.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| fail(format!("{}: no answer within {TIMEOUT:?}", self.server)))?
            .map_err(|e| fail(format!("{}: {e}", self.server)))?;
        let response = Message::from_vec(&answer)
            .map_err(|e| fail(format!("{}: unreadable DNS answer: {e}", self.server)))?;
        if response.id != message.id {
            return Err(fail(format!(
                "{}: answer id {} for request id {}",
                self.server, response.id, message.id
            )));
        }
        Ok(response)
    }

    /// Signs and sends an update; any rcode but NOERROR is an error.
    async fn update(&self, mut message: Message, what: &str) -> Result<(), DnsError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        message
            .finalize(&self.signer, now)
            .map_err(|e| fail(format!("cannot sign the update with TSIG: {e}")))?;
        let response = self.exchange(&message).await?;
        match response.response_code {
            ResponseCode::NoError => Ok(()),
            code => Err(fail(format!(
                "{} refused to {what}: {code} (check the TSIG key name, secret and algorithm, and that the key may update the zone)",
                self.server
            ))),
        }
    }

    /// The zone that holds `fqdn`.
    async fn zone_for(&self, fqdn: &Name) -> Result<Name, DnsError> {
        if let Some(zone) = &self.zone {
            let zone = name(zone)?;
            if !zone.zone_of(fqdn) {
                return Err(fail(format!("{fqdn} is not in --rfc2136-zone {zone}")));
            }
            return Ok(zone);
        }
        for candidate in zone_candidates(&fqdn.to_ascii()).into_iter().skip(1) {
            let candidate = name(&candidate)?;
            let mut query = Message::query();
            query.add_query(Query::query(candidate.clone(), RecordType::SOA));
            let response = self.exchange(&query).await?;
            let is_apex = response
                .answers
                .iter()
                .any(|r| r.record_type() == RecordType::SOA && r.name == candidate);
            if response.response_code == ResponseCode::NoError && is_apex {
                return Ok(candidate);
            }
        }
        Err(fail(format!(
            "{} is authoritative for no parent of {fqdn}; set --rfc2136-zone",
            self.server
        )))
    }
}

fn txt_set(fqdn: &Name, value: &str) -> RecordSet {
    let mut set = RecordSet::with_ttl(fqdn.clone(), RecordType::TXT, TXT_TTL);
    set.insert(
        Record::from_rdata(
            fqdn.clone(),
            TXT_TTL,
            RData::TXT(TXT::new(vec![value.to_string()])),
        ),
        0,
    );
    set
}

impl DnsProvider for Rfc2136 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn add_txt<'a>(
        &'a self,
        fqdn: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<TxtRecord, DnsError>> {
        Box::pin(async move {
            let owner = name(fqdn)?;
            let zone = self.zone_for(&owner).await?;
            let message =
                update_message::append(txt_set(&owner, value), zone.clone(), false, false);
            self.update(message, &format!("add TXT {fqdn} in zone {zone}"))
                .await?;
            Ok(TxtRecord {
                fqdn: fqdn.to_string(),
                value: value.to_string(),
                handle: vec![zone.to_ascii()],
            })
        })
    }

    fn remove_txt<'a>(&'a self, record: &'a TxtRecord) -> BoxFuture<'a, Result<(), DnsError>> {
        Box::pin(async move {
            let owner = name(&record.fqdn)?;
            let zone = match record.handle.first() {
                Some(zone) => name(zone)?,
                None => self.zone_for(&owner).await?,
            };
            if !zone.zone_of(&owner) {
                return Err(fail(format!("{owner} is not in zone {zone}")));
            }
            let message = update_message::delete_by_rdata(
                txt_set(&owner, &record.value),
                zone.clone(),
                false,
            );
            self.update(
                message,
                &format!("remove TXT {} in zone {zone}", record.fqdn),
            )
            .await
        })
    }
}
