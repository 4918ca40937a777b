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
        Self {
            context: jetstream::new(client),
        }
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

    /// A durable pull consumer with explicit acks: a message not acked within `ack_wait`
    /// is delivered again.
    pub async fn durable_consumer(
        &self,
        stream: &str,
        durable: &str,
        filter_subject: &str,
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
        stream_handle
            .get_or_create_consumer(
                durable,
                consumer::pull::Config {
                    durable_name: Some(durable.to_owned()),
                    filter_subject: filter_subject.to_owned(),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| error(e.into()))
    }
}
