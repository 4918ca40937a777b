//! Kafka, through rdkafka only, so the same code runs against Apache Kafka and tansu.

mod admin;
mod consumer;
mod health;
mod producer;
mod worker;

use std::time::Duration;

use rdkafka::ClientConfig;

pub use admin::{TopicError, ensure_topics};
pub use consumer::{ConsumeError, EventConsumer, Received};
pub use health::KafkaCheck;
pub use producer::{EventProducer, Position, ProduceError};
pub use worker::{HandleError, run_worker};

/// The wait before an event whose handler failed transiently is handled again (by the
/// Kafka worker in-process, or by JetStream through a delayed NAK).
pub const EVENT_RETRY: kit::backoff::Exponential =
    kit::backoff::Exponential::new(Duration::from_millis(100), Duration::from_secs(5));

/// How to reach the Kafka API.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` bootstrap servers (`KAFKA_BROKERS`).
    pub brokers: String,
    /// Shown in broker logs and metrics.
    pub client_id: String,
    /// librdkafka's `fetch.wait.max.ms`. tansu does not wake a waiting fetch when a record
    /// arrives, so the default 500 ms would add half a second per saga hop; a few
    /// milliseconds keeps produce→consume around 10 ms (measured, DESIGN.md).
    pub fetch_wait_max: Duration,
    /// How long the producer keeps trying to deliver a record before reporting failure.
    pub delivery_timeout: Duration,
}

/// What a saga service needs to reach Kafka: the broker and its topic names.
#[derive(Debug, Clone)]
pub struct SagaSettings {
    pub kafka: KafkaSettings,
    pub topics: contracts::topics::Topics,
}

impl SagaSettings {
    /// `KAFKA_BROKERS`, `KAFKA_FETCH_WAIT_MAX` (default 5ms) and `TOPIC_PREFIX` (default none;
    /// tests use it to get topics of their own).
    pub fn from_env(env: &kit::Env, client_id: &str) -> Result<Self, kit::ConfigError> {
        let mut kafka = KafkaSettings::new(
            env.string_or("KAFKA_BROKERS", kit::config::DEFAULT_KAFKA_BROKERS),
            client_id,
        );
        kafka.fetch_wait_max = env.duration_or(
            "KAFKA_FETCH_WAIT_MAX",
            KafkaSettings::DEFAULT_FETCH_WAIT_MAX,
        )?;
        Ok(Self {
            kafka,
            topics: contracts::topics::Topics::new(&env.string_or("TOPIC_PREFIX", "")),
        })
    }

    /// Creates every saga topic that is missing.
    pub async fn ensure_topics(&self) -> Result<(), TopicError> {
        ensure_topics(
            &self.kafka,
            &self.topics.all(),
            contracts::topics::PARTITIONS,
        )
        .await
    }
}

impl KafkaSettings {
    pub const DEFAULT_FETCH_WAIT_MAX: Duration = Duration::from_millis(5);
    pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

    pub fn new(brokers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client_id: client_id.into(),
            fetch_wait_max: Self::DEFAULT_FETCH_WAIT_MAX,
            delivery_timeout: Self::DEFAULT_DELIVERY_TIMEOUT,
        }
    }

    /// The configuration every client starts from.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            // Fail fast enough for readiness checks and tests; librdkafka retries on its own.
            .set("socket.timeout.ms", "10000");
        config
    }

    /// A producer as the saga needs it: exactly one copy per send, in order per partition,
    /// even across retries (idempotent, `acks=all`), latency before throughput.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            );
        config
    }

    /// A member of consumer group `group` that commits its offsets itself, after the work is
    /// done, and that starts a new group from the beginning: no event published before its
    /// first start is lost.
    pub fn group_consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "fetch.wait.max.ms",
                self.fetch_wait_max.as_millis().max(1).to_string(),
            );
        config
    }
}
