//! The saga's consumers: a consumer group, offsets committed by hand after the effect.

use std::sync::Arc;

use bytes::Bytes;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaSettings;
use crate::event::{Event, EventError};

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("Kafka consumer error: {0}")]
    Kafka(#[from] KafkaError),
    /// A record that is not a valid event. Its position is given so the caller can record
    /// it and commit past it rather than block the partition forever.
    #[error("record {topic}/{partition}/{offset} is not a valid event: {source}")]
    Malformed {
        topic: String,
        partition: i32,
        offset: i64,
        source: EventError,
    },
}

/// A received event and where it came from.
#[derive(Debug, Clone)]
pub struct Received {
    pub event: Event,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A consumer-group member. Offsets are never committed automatically: call
/// [`EventConsumer::commit`] once the event's effect is durable, so a crash in between
/// means redelivery (which the inbox absorbs), never loss.
#[derive(Clone)]
pub struct EventConsumer {
    consumer: Arc<StreamConsumer>,
}

impl std::fmt::Debug for EventConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventConsumer").finish_non_exhaustive()
    }
}

impl EventConsumer {
    pub fn new(settings: &KafkaSettings, group: &str, topics: &[&str]) -> Result<Self, KafkaError> {
        let consumer: StreamConsumer = settings.group_consumer_config(group).create()?;
        consumer.subscribe(topics)?;
        Ok(Self {
            consumer: Arc::new(consumer),
        })
    }

    /// The next event. Waits as long as it takes; select on a shutdown token around it.
    pub async fn next(&self) -> Result<Received, ConsumeError> {
        let message = self.consumer.recv().await?;
        decode(&message)
    }

    /// Commits the position after `received` and waits for the broker to confirm: the
    /// group resumes from the next record.
    pub async fn commit(&self, received: &Received) -> Result<(), KafkaError> {
        self.commit_position(&received.topic, received.partition, received.offset)
            .await
    }

    /// Commits past `offset`, for records that were handled or deliberately skipped.
    pub async fn commit_position(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, partition, Offset::Offset(offset + 1))?;
        let consumer = self.consumer.clone();
        // A synchronous commit blocks its thread for a broker round trip.
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|_| KafkaError::Canceled)?
    }
}

fn decode(message: &impl Message) -> Result<Received, ConsumeError> {
    let malformed = |source| ConsumeError::Malformed {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        source,
    };
    // A repeated header reads as its first value, as `async_nats::HeaderMap::get` reads
    // it: the bridge copies every Kafka header to NATS in order, so the same record is the
    // same event on either side.
    let header = |name: &str| {
        message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
        })
    };
    let key = message
        .key()
        .and_then(|k| std::str::from_utf8(k).ok())
        .unwrap_or_default()
        .to_owned();
    let data = Bytes::copy_from_slice(message.payload().unwrap_or_default());
    let event = Event::from_parts(header, key, data).map_err(malformed)?;
    Ok(Received {
        event,
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

    use super::*;

    /// `event`'s headers with `ce_id` given twice, as a producer that appends might.
    fn twice_identified(event: &Event, second_id: &str) -> Vec<(&'static str, String)> {
        let mut headers = event.attribute_headers();
        headers.push((crate::event::ID, second_id.to_owned()));
        headers
    }

    #[test]
    fn a_repeated_header_reads_the_same_from_kafka_and_from_nats() {
        let event = Event::new(
            "shopmesh.test",
            "/test",
            "key-1",
            &serde_json::json!({"n": 1}),
        )
        .expect("event");
        let headers = twice_identified(&event, &uuid::Uuid::now_v7().to_string());

        let kafka_headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |all, (name, value)| {
                all.insert(Header {
                    key: name,
                    value: Some(value.as_str()),
                })
            });
        let record = OwnedMessage::new(
            Some(event.data.to_vec()),
            Some(event.key.clone().into_bytes()),
            "topic".into(),
            Timestamp::NotAvailable,
            0,
            7,
            Some(kafka_headers),
        );
        let from_kafka = decode(&record).expect("decodes").event;

        // What the bridge publishes: every Kafka header appended in order, and the key.
        let mut nats_headers = async_nats::HeaderMap::new();
        for (name, value) in &headers {
            nats_headers.append(*name, value.as_str());
        }
        nats_headers.insert(crate::event::PARTITION_KEY, event.key.as_str());
        let message = async_nats::Message {
            subject: "events.topic".into(),
            reply: None,
            payload: event.data.clone(),
            headers: Some(nats_headers),
            status: None,
            description: None,
            length: 0,
        };
        let from_nats = Event::from_nats(&message).expect("decodes");

        assert_eq!(from_kafka, event, "the first ce_id wins");
        assert_eq!(from_nats, from_kafka);
    }
}
