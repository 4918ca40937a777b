//! NATS → Kafka, for the subjects configured in `BRIDGE_REVERSE`.
//!
//! A core NATS subscription offers at most once, so this direction promises what the source
//! does: each message received is produced once (idempotent producer, `acks=all`), in the
//! order received, keyed by the subject's last token, with every NATS header. A message that
//! cannot be produced is counted as failed and logged; there is nothing to replay it from.
//! On stop, what NATS had delivered but the forwarder had not read yet is dropped too:
//! async-nats's `unsubscribe` closes the subscription at once, and its `drain` still drops
//! what the connection had read but not yet dispatched (seen in batches of 128 messages).
//!
//! Messages that carry `Kafka-Topic` came out of Kafka through this bridge; forwarding them
//! back would loop (a reverse filter overlapping the mirror's subjects), so they are not.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use mesh::kafka::KafkaSettings;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::headers;
use crate::status::ReverseStats;
use crate::subject;

/// How long a stopping forwarder waits for the broker to confirm what it already handed over.
const DRAIN: Duration = Duration::from_secs(10);
/// Pause before handing a record again to a producer whose queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(10);

/// The producer the forwarders use: the saga's settings (idempotent, `acks=all`).
pub(crate) fn producer(kafka: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
    kafka.producer_config().create()
}

/// Forwards until `stop`, then waits (briefly) for the deliveries in flight.
pub(crate) async fn run(
    mut subscriber: async_nats::Subscriber,
    producer: FutureProducer,
    stats: Arc<ReverseStats>,
    stop: CancellationToken,
) {
    tracing::info!(subject = %stats.subject, topic = %stats.topic, "Forwarding NATS to Kafka.");
    let mut deliveries = FuturesUnordered::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(outcome) = deliveries.next(), if !deliveries.is_empty() => account(&stats, outcome),
            message = subscriber.next() => {
                let Some(message) = message else { break };
                if let Some(delivery) = forward(&producer, &stats, &message).await {
                    deliveries.push(delivery);
                }
            }
        }
    }
    let drain = async {
        while let Some(outcome) = deliveries.next().await {
            account(&stats, outcome);
        }
    };
    if tokio::time::timeout(DRAIN, drain).await.is_err() {
        tracing::warn!(topic = %stats.topic, "Stopped with deliveries unconfirmed.");
    }
}

/// Hands one message to the producer; the returned future reports its delivery.
async fn forward(
    producer: &FutureProducer,
    stats: &ReverseStats,
    message: &async_nats::Message,
) -> Option<DeliveryFuture> {
    if message
        .headers
        .as_ref()
        .is_some_and(|h| h.get(headers::KAFKA_TOPIC).is_some())
    {
        tracing::debug!(
            subject = message.subject.as_str(),
            "Not forwarding a record mirrored from Kafka back to it."
        );
        return None;
    }
    let key = subject::last_token(&message.subject);
    let mut record = FutureRecord::to(&stats.topic)
        .key(key)
        .payload(&message.payload[..])
        .headers(headers::for_kafka(message.headers.as_ref()));
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Some(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                tokio::time::sleep(QUEUE_FULL_PAUSE).await;
            }
            Err((error, _)) => {
                stats.failed();
                tracing::warn!(subject = message.subject.as_str(), topic = %stats.topic, %error, "A NATS message could not be produced to Kafka.");
                return None;
            }
        }
    }
}

fn account(stats: &ReverseStats, outcome: <DeliveryFuture as Future>::Output) {
    match outcome {
        Ok(Ok(_)) => stats.forwarded(),
        Ok(Err((error, _))) => {
            stats.failed();
            tracing::warn!(topic = %stats.topic, %error, "A NATS message was not delivered to Kafka.");
        }
        Err(_) => {
            stats.failed();
            tracing::warn!(topic = %stats.topic, "The producer went away before a delivery was confirmed.");
        }
    }
}
