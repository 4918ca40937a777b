//! Topic creation. The broker used natively (tansu) does not auto-create topics, and
//! auto-creation would give the wrong partition count anyway, so every process that needs a
//! topic creates it at startup and treats "already exists" as success.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::KafkaSettings;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot reach the Kafka API at {brokers}: {source}")]
    Client { brokers: String, source: KafkaError },
    #[error("cannot create topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// Creates each topic with `partitions` partitions unless it exists.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[&str],
    partitions: i32,
) -> Result<(), TopicError> {
    let client_error = |source| TopicError::Client {
        brokers: settings.brokers.clone(),
        source,
    };
    let admin: AdminClient<DefaultClientContext> =
        settings.client_config().create().map_err(client_error)?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| NewTopic::new(topic, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(client_error)?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, partitions, "Topic created."),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Create { topic, code }),
        }
    }
    Ok(())
}
