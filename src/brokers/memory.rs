//! The embedded broker: publishing hands the message straight to this node's
//! hub. The default when no Redis is configured; one node only.

use bytes::Bytes;

use super::{BoxFuture, Broker, BrokerError, Sink};

pub struct MemoryBroker {
    sink: Sink,
}

impl MemoryBroker {
    pub fn new(sink: Sink) -> Self {
        MemoryBroker { sink }
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        crate::telemetry::messages_received("memory", 1);
        self.sink.deliver(channel, payload);
        Box::pin(std::future::ready(Ok(())))
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "memory"
    }

    /// One process is the whole cluster: its one holder always holds
    /// (the default `hold_lease`).
    fn keeps_leases(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn publish_reaches_the_sink() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let seen = seen.clone();
            Sink::new(move |channel: &str, payload: Bytes| {
                seen.lock().unwrap().push((channel.to_string(), payload))
            })
        };
        let broker = MemoryBroker::new(sink);
        broker
            .publish("room", Bytes::from_static(b"hi"))
            .await
            .unwrap();
        assert!(broker.is_ready());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![("room".to_string(), Bytes::from_static(b"hi"))]
        );
    }
}
