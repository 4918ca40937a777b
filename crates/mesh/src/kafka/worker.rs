//! The loop every saga consumer runs: receive, handle, commit; retry what failed.

use std::future::Future;
use std::time::Duration;

use kit::shutdown::pause;
use tokio_util::sync::CancellationToken;

use super::{ConsumeError, EVENT_RETRY, EventConsumer, Received};

/// How a handler's failure is treated.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying (database or broker unavailable, an upstream timed out). The same
    /// event is handled again after a backoff; its offset is not committed meanwhile, so a
    /// crash in between means redelivery, which the handler's inbox absorbs.
    #[error("transient: {0}")]
    Transient(String),
    /// Will never succeed (an event this service cannot understand). Logged, then skipped.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// A database that failed may work on the next attempt.
impl From<sqlx::Error> for HandleError {
    fn from(error: sqlx::Error) -> Self {
        Self::Transient(error.to_string())
    }
}

/// An event that cannot be read (or built) now never will be.
impl From<crate::event::EventError> for HandleError {
    fn from(error: crate::event::EventError) -> Self {
        Self::Permanent(error.to_string())
    }
}

/// Consumes until `stop` is cancelled. An event in hand is finished before stopping.
pub async fn run_worker<H, F>(
    name: &str,
    consumer: EventConsumer,
    stop: CancellationToken,
    handler: H,
) where
    H: Fn(Received) -> F,
    F: Future<Output = Result<(), HandleError>>,
{
    tracing::info!(worker = %name, "Consumer started.");
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => break,
            next = consumer.next() => next,
        };
        let received = match next {
            Ok(received) => received,
            Err(ConsumeError::Malformed {
                topic,
                partition,
                offset,
                source,
            }) => {
                tracing::error!(worker = %name, %topic, partition, offset, %source, "Skipping a record that is not an event.");
                commit_or_warn(
                    name,
                    consumer.commit_position(&topic, partition, offset).await,
                );
                continue;
            }
            Err(error) => {
                tracing::warn!(worker = %name, %error, "Kafka error; retrying.");
                if !pause(&stop, Duration::from_millis(500)).await {
                    return;
                }
                continue;
            }
        };
        let mut backoff = EVENT_RETRY.start();
        loop {
            match handler(received.clone()).await {
                Ok(()) => break,
                Err(HandleError::Permanent(reason)) => {
                    tracing::error!(worker = %name, event_id = %received.event.id, kind = %received.event.kind, %reason, "Event skipped.");
                    break;
                }
                Err(HandleError::Transient(reason)) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(worker = %name, event_id = %received.event.id, %reason, ?delay, "Event will be retried.");
                    if !pause(&stop, delay).await {
                        return;
                    }
                }
            }
        }
        commit_or_warn(name, consumer.commit(&received).await);
    }
    tracing::info!(worker = %name, "Consumer stopped.");
}

fn commit_or_warn(name: &str, result: Result<(), rdkafka::error::KafkaError>) {
    if let Err(error) = result {
        // Not fatal: the next commit covers this offset, and a redelivery is absorbed.
        tracing::warn!(worker = %name, %error, "Offset commit failed.");
    }
}
