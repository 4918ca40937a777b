//! Topic creation and the Kafka readiness check against the real Kafka-API broker.

use std::time::Duration;

use kit::ReadinessCheck;
use mesh::kafka::{KafkaCheck, KafkaSettings, ensure_topics};
use rdkafka::consumer::{BaseConsumer, Consumer};

fn settings() -> KafkaSettings {
    KafkaSettings::new(testkit::kafka_brokers(), "mesh-test")
}

fn partitions_of(topic: &str) -> usize {
    let consumer: BaseConsumer = settings().client_config().create().expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .unwrap_or(0)
}

#[tokio::test]
async fn creates_topics_once_and_accepts_existing_ones() {
    let a = testkit::unique_name("admin_a");
    let b = testkit::unique_name("admin_b");
    ensure_topics(&settings(), &[&a, &b], 3)
        .await
        .expect("created");
    // Running it again (a second service starting) is not an error.
    ensure_topics(&settings(), &[&a, &b], 3)
        .await
        .expect("already there");
    let counts = tokio::task::spawn_blocking(move || (partitions_of(&a), partitions_of(&b)))
        .await
        .expect("joined");
    assert_eq!(counts, (3, 3));
}

#[tokio::test]
async fn kafka_check_is_ready_against_the_broker() {
    let check = KafkaCheck::new(&settings(), Duration::from_secs(5)).expect("client");
    assert_eq!(check.check().await, Ok(()));
}

#[tokio::test]
async fn kafka_check_is_unready_when_nothing_answers() {
    // Port 1 is never a Kafka broker.
    let down = KafkaSettings::new("127.0.0.1:1", "mesh-test");
    let check = KafkaCheck::new(&down, Duration::from_millis(500)).expect("client");
    assert!(check.check().await.is_err());
}

#[tokio::test]
async fn ensure_topics_reports_an_unreachable_broker() {
    let down = KafkaSettings::new("127.0.0.1:1", "mesh-test");
    let topic = testkit::unique_name("admin_down");
    let result = tokio::time::timeout(Duration::from_secs(30), ensure_topics(&down, &[&topic], 1))
        .await
        .expect("gives up within its own timeouts");
    assert!(result.is_err());
}
