//! The saga's producer: idempotent, `acks=all`, keyed by aggregate id.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::KafkaSettings;
use crate::event::Event;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(#[source] KafkaError),
    #[error("publishing event {event_id} to {topic} failed: {source}")]
    Publish {
        topic: String,
        event_id: uuid::Uuid,
        source: KafkaError,
    },
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Clone)]
pub struct EventProducer {
    producer: FutureProducer,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer")
            .field("delivery_timeout", &self.delivery_timeout)
            .finish()
    }
}

impl EventProducer {
    pub fn new(settings: &KafkaSettings) -> Result<Self, ProduceError> {
        let delivery_timeout = settings.delivery_timeout;
        let producer = settings
            .producer_config()
            .create()
            .map_err(ProduceError::Create)?;
        Ok(Self {
            producer,
            delivery_timeout,
        })
    }

    /// Sends `event` to `topic` keyed by `event.key` and waits for the broker's ack.
    pub async fn publish(&self, topic: &str, event: &Event) -> Result<Position, ProduceError> {
        let attributes = event.attribute_headers();
        let headers = attributes.iter().fold(
            OwnedHeaders::new_with_capacity(attributes.len()),
            |h, (name, value)| {
                h.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                })
            },
        );
        let record = FutureRecord::to(topic)
            .key(event.key.as_bytes())
            .payload(event.data.as_ref())
            .headers(headers)
            .timestamp(event.time.timestamp_millis());
        match self.producer.send(record, self.delivery_timeout).await {
            Ok(delivery) => Ok(Position {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((source, _)) => Err(ProduceError::Publish {
                topic: topic.to_owned(),
                event_id: event.id,
                source,
            }),
        }
    }
}
