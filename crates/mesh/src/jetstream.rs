//! JetStream: the low-latency fan-out side of the event bus.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, publish::PublishAck, stream};

use crate::event::Event;

/// JetStream's deduplication header: a message with an id seen within the stream's
/// duplicate window is acknowledged but not stored again.
pub const MSG_ID: &str = "Nats-Msg-Id";

#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    #[error("cannot create stream {stream}: {source}")]
    Stream {
        stream: String,
        source: jetstream::context::CreateStreamError,
    },
    #[error("cannot set the duplicate window of stream {stream}: {source}")]
    Window {
        stream: String,
        source: async_nats::Error,
    },
    #[error("cannot create consumer {durable} on {stream}: {source}")]
    Consumer {
        stream: String,
        durable: String,
        source: async_nats::Error,
    },
    #[error("publishing event {event_id} on {subject} failed: {source}")]
    Publish {
        subject: String,
        event_id: uuid::Uuid,
        source: jetstream::context::PublishError,
    },
}

/// Publishes events to, and consumes events from, JetStream.
#[derive(Debug, Clone)]
pub struct EventStream {
    context: jetstream::Context,
}

impl EventStream {
    pub fn new(client: async_nats::Client) -> Self {
        Self::from_context(jetstream::new(client))
    }

    /// Over a context built with other settings (the bridge's publish window).
    pub fn from_context(context: jetstream::Context) -> Self {
        Self { context }
    }

    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// Creates the stream if it does not exist (an existing stream is left as it is).
    pub async fn ensure_stream(
        &self,
        name: &str,
        subjects: Vec<String>,
        duplicate_window: Duration,
    ) -> Result<stream::Stream, JetStreamError> {
        self.context
            .get_or_create_stream(stream::Config {
                name: name.to_owned(),
                subjects,
                duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|source| JetStreamError::Stream {
                stream: name.to_owned(),
                source,
            })
    }

    /// As [`Self::ensure_stream`], and an existing stream whose duplicate window differs is
    /// brought to `duplicate_window` (its other settings kept): for the stream's owner, whose
    /// setting must win over whoever happened to create the stream first.
    pub async fn ensure_duplicate_window(
        &self,
        name: &str,
        subjects: Vec<String>,
        duplicate_window: Duration,
    ) -> Result<stream::Stream, JetStreamError> {
        let stream = self.ensure_stream(name, subjects, duplicate_window).await?;
        let current = stream.cached_info().config.clone();
        if current.duplicate_window == duplicate_window {
            return Ok(stream);
        }
        tracing::info!(stream = %name, from = ?current.duplicate_window, to = ?duplicate_window, "Setting the stream's duplicate window.");
        let error = |source: async_nats::Error| JetStreamError::Window {
            stream: name.to_owned(),
            source,
        };
        self.context
            .update_stream(stream::Config {
                duplicate_window,
                ..current
            })
            .await
            .map_err(|e| error(e.into()))?;
        self.context
            .get_stream(name)
            .await
            .map_err(|e| error(e.into()))
    }

    /// Publishes and waits for the stream's acknowledgement. With `msg_id`, a replay of the
    /// same message inside the duplicate window is absorbed (`ack.duplicate` is then true).
    pub async fn publish(
        &self,
        subject: &str,
        event: &Event,
        msg_id: Option<&str>,
    ) -> Result<PublishAck, JetStreamError> {
        let error = |source| JetStreamError::Publish {
            subject: subject.to_owned(),
            event_id: event.id,
            source,
        };
        let mut headers = event.nats_headers();
        if let Some(id) = msg_id {
            headers.insert(MSG_ID, id);
        }
        self.context
            .publish_with_headers(subject.to_owned(), headers, event.data.clone())
            .await
            .map_err(error)?
            .await
            .map_err(error)
    }

    /// A durable pull consumer with explicit acks on the messages matching any of
    /// `filter_subjects`: a message not acked within `ack_wait` is delivered again.
    pub async fn durable_consumer(
        &self,
        stream: &str,
        durable: &str,
        filter_subjects: &[String],
        ack_wait: Duration,
    ) -> Result<consumer::PullConsumer, JetStreamError> {
        let error = |source: async_nats::Error| JetStreamError::Consumer {
            stream: stream.to_owned(),
            durable: durable.to_owned(),
            source,
        };
        let stream_handle = self
            .context
            .get_stream(stream)
            .await
            .map_err(|e| error(e.into()))?;
        let (filter_subject, filter_subjects) = match filter_subjects {
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        stream_handle
            .get_or_create_consumer(
                durable,
                consumer::pull::Config {
                    durable_name: Some(durable.to_owned()),
                    filter_subject,
                    filter_subjects,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| error(e.into()))
    }
}

/// The JetStream counterpart of [`crate::kafka::run_worker`]: each message is decoded as an
/// [`Event`] and handled; success and permanent failures are acknowledged (a poison message
/// must not come back forever), transient failures are negatively acknowledged with a
/// growing delay so JetStream delivers them again.
pub async fn run_worker<H, F>(
    name: &str,
    consumer: consumer::PullConsumer,
    stop: tokio_util::sync::CancellationToken,
    handler: H,
) where
    H: Fn(Event) -> F,
    F: std::future::Future<Output = Result<(), crate::kafka::HandleError>>,
{
    use crate::kafka::HandleError;
    use async_nats::jetstream::AckKind;
    use futures::StreamExt;

    // Well inside `ack_wait`, so a handler slower than it (a delivery retrying with backoff)
    // is not delivered a second time while it works.
    let progress_every =
        (consumer.cached_info().config.ack_wait / 3).max(Duration::from_millis(100));
    tracing::info!(worker = %name, "JetStream consumer started.");
    while !stop.is_cancelled() {
        // One message at a time: a message fetched ahead would wait, unreported, behind a
        // slow handler (a delivery retrying with backoff) and pass its ack_wait.
        let mut messages = match consumer.stream().max_messages_per_batch(1).messages().await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(worker = %name, %error, "Cannot pull from JetStream; retrying.");
                if !kit::shutdown::pause(&stop, Duration::from_millis(500)).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::warn!(worker = %name, %error, "JetStream pull failed; resubscribing.");
                    break;
                }
                None => break,
            };
            let ack = match Event::from_nats(&message) {
                Err(error) => {
                    tracing::error!(worker = %name, subject = %message.subject, %error, "Skipping a message that is not an event.");
                    AckKind::Term
                }
                Ok(event) => {
                    let event_id = event.id;
                    match in_progress(&message, progress_every, handler(event)).await {
                        Ok(()) => AckKind::Ack,
                        Err(HandleError::Permanent(reason)) => {
                            tracing::error!(worker = %name, %event_id, %reason, "Event skipped.");
                            AckKind::Term
                        }
                        Err(HandleError::Transient(reason)) => {
                            let delivered = message.info().map_or(1, |i| i.delivered);
                            let delay = crate::kafka::EVENT_RETRY
                                .after(u32::try_from(delivered).unwrap_or(u32::MAX));
                            tracing::warn!(worker = %name, %event_id, %reason, ?delay, "Event will be redelivered.");
                            AckKind::Nak(Some(delay))
                        }
                    }
                }
            };
            if let Err(error) = message.ack_with(ack).await {
                // Not fatal: an unacknowledged message is redelivered after ack_wait.
                tracing::warn!(worker = %name, %error, "Acknowledgement failed.");
            }
        }
    }
}

/// Runs `work`, telling JetStream every `every` that `message` is still being worked on.
async fn in_progress<T>(
    message: &async_nats::jetstream::Message,
    every: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    let mut work = std::pin::pin!(work);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => {
                let progress = message.ack_with(async_nats::jetstream::AckKind::Progress).await;
                if let Err(error) = progress {
                    tracing::debug!(%error, "Progress not reported; the message may come again.");
                }
            }
        }
    }
}
