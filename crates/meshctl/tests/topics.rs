//! `meshctl topics ensure`, run as a user runs it, against the real Kafka-API broker.

use std::process::Command;
use std::time::Duration;

use mesh::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Partitions per topic the broker reports for each of `topics` (0 = no such topic).
fn partitions(topics: &[String]) -> Vec<usize> {
    let settings = KafkaSettings::new(testkit::kafka_brokers(), "meshctl-test");
    let consumer: BaseConsumer = settings.client_config().create().expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    topics
        .iter()
        .map(|topic| {
            metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len())
        })
        .collect()
}

#[test]
fn topics_ensure_creates_the_saga_topics_under_the_topic_prefix() {
    let prefix = format!("{}_", testkit::unique_name("meshctl"));
    let output = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["topics", "ensure", "--partitions", "2"])
        .env("KAFKA_BROKERS", testkit::kafka_brokers())
        .env("TOPIC_PREFIX", &prefix)
        .output()
        .expect("meshctl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let expected: Vec<String> = contracts::topics::ALL
        .iter()
        .map(|topic| format!("{prefix}{topic}"))
        .collect();
    for topic in &expected {
        assert!(stdout.contains(&format!("topic {topic} ready")), "{stdout}");
    }
    assert_eq!(partitions(&expected), vec![2; expected.len()]);
}

#[test]
fn topics_ensure_fails_when_no_broker_answers() {
    let output = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["topics", "ensure", "--brokers", "127.0.0.1:1"])
        .env("TOPIC_PREFIX", format!("{}_", testkit::unique_name("down")))
        .output()
        .expect("meshctl runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}
