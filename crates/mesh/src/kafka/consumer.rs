//! The saga's consumers: a consumer group, offsets committed by hand after the effect.

use std::sync::Arc;

use bytes::Bytes;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
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

fn decode(message: &BorrowedMessage<'_>) -> Result<Received, ConsumeError> {
    let malformed = |source| ConsumeError::Malformed {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        source,
    };
    let header = |name: &str| {
        message.headers().and_then(|headers| {
            headers
                .iter()
                .filter(|h| h.key == name)
                .last()
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
