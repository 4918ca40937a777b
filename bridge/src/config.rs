//! The bridge's settings, from environment variables (kit's [`Env`]), each with a default
//! that matches DESIGN.md so the binary runs with nothing set. A set but invalid value is a
//! startup error naming the variable.

use std::time::Duration;

use kit::{ConfigError, Env};
use mesh::kafka::{KafkaSettings, SagaSettings};

use crate::subject;

/// NATS subjects forwarded to a Kafka topic: `BRIDGE_REVERSE="in.orders.*=>orders;..."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseMapping {
    /// A core NATS subscription subject (wildcards allowed).
    pub subject: String,
    /// The Kafka topic the messages are produced to, keyed by the subject's last token.
    pub topic: String,
}

#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// `KAFKA_BROKERS`, `KAFKA_FETCH_WAIT_MAX` (default 5ms: tansu does not wake a waiting
    /// fetch, so this bounds the added latency).
    pub kafka: KafkaSettings,
    /// `NATS_URL`.
    pub nats_url: String,
    /// `BRIDGE_TOPICS`: comma-separated; default every saga topic of `TOPIC_PREFIX`.
    pub topics: Vec<String>,
    /// `EVENTS_STREAM` (default `EVENTS`): created if missing.
    pub stream: String,
    /// `BRIDGE_SUBJECT_PREFIX` (default `events`): records go to `<prefix>.<topic>.<key>`.
    pub subject_prefix: String,
    /// `BRIDGE_GROUP` (default `bridge`), prefixed with `TOPIC_PREFIX` like every group.
    pub group: String,
    /// `BRIDGE_DUPLICATE_WINDOW` (default 2m): how long JetStream remembers message ids, so
    /// the longest outage after which a replay is still absorbed.
    pub duplicate_window: Duration,
    /// `BRIDGE_MAX_IN_FLIGHT` (default 256): publishes awaiting JetStream's ack.
    pub max_in_flight: usize,
    /// `BRIDGE_ACK_TIMEOUT` (default 5s): a publish not acknowledged by then blocks mirroring.
    pub ack_timeout: Duration,
    /// `BRIDGE_COMMIT_INTERVAL` (default 100ms): how often acknowledged offsets are committed.
    pub commit_interval: Duration,
    /// `BRIDGE_COMMIT_BATCH` (default 500): commit sooner after this many acknowledgements.
    pub commit_batch: usize,
    /// `BRIDGE_LAG_INTERVAL` (default 2s): how often watermarks are fetched for the lag.
    pub lag_interval: Duration,
    /// `BRIDGE_STATUS_SUBJECT` (default `bridge.status`): the status endpoint of the NATS
    /// service `bridge`.
    pub status_subject: String,
    /// `BRIDGE_REVERSE`: `subject=>topic` pairs separated by `;` (default none).
    pub reverse: Vec<ReverseMapping>,
}

pub const DEFAULT_SUBJECT_PREFIX: &str = contracts::subjects::EVENTS_SUBJECT_PREFIX;
pub const DEFAULT_GROUP: &str = "bridge";
pub const DEFAULT_STATUS_SUBJECT: &str = "bridge.status";
pub const DEFAULT_DUPLICATE_WINDOW: Duration = contracts::subjects::EVENTS_DUPLICATE_WINDOW;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

impl BridgeConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let saga = SagaSettings::from_env(env, "bridge")?;
        let topics = match env.get("BRIDGE_TOPICS") {
            Some(raw) => parse_topics(raw)?,
            None => saga.topics.all().iter().map(|t| (*t).to_owned()).collect(),
        };
        let stream = env.string_or("EVENTS_STREAM", contracts::topics::EVENTS_STREAM);
        if stream.contains(|c: char| c == '.' || c == '*' || c == '>' || c.is_whitespace()) {
            return Err(ConfigError::invalid(
                "EVENTS_STREAM",
                &stream,
                "a stream name cannot contain '.', '*', '>' or whitespace",
            ));
        }
        let subject_prefix = env.string_or("BRIDGE_SUBJECT_PREFIX", DEFAULT_SUBJECT_PREFIX);
        if !subject::is_literal_subject(&subject_prefix) {
            return Err(ConfigError::invalid(
                "BRIDGE_SUBJECT_PREFIX",
                &subject_prefix,
                "expected a subject without wildcards, like events or t1.events",
            ));
        }
        let status_subject = env.string_or("BRIDGE_STATUS_SUBJECT", DEFAULT_STATUS_SUBJECT);
        if !subject::is_literal_subject(&status_subject) {
            return Err(ConfigError::invalid(
                "BRIDGE_STATUS_SUBJECT",
                &status_subject,
                "expected a subject without wildcards",
            ));
        }
        let max_in_flight = env.parse_or("BRIDGE_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT)?;
        if max_in_flight == 0 {
            return Err(ConfigError::invalid(
                "BRIDGE_MAX_IN_FLIGHT",
                "0",
                "must be at least 1",
            ));
        }
        let commit_batch = env.parse_or("BRIDGE_COMMIT_BATCH", 500usize)?;
        if commit_batch == 0 {
            return Err(ConfigError::invalid(
                "BRIDGE_COMMIT_BATCH",
                "0",
                "must be at least 1",
            ));
        }
        let reverse = match env.get("BRIDGE_REVERSE") {
            Some(raw) => parse_reverse(raw)?,
            None => Vec::new(),
        };
        Ok(Self {
            nats_url: env.string_or("NATS_URL", kit::config::DEFAULT_NATS_URL),
            topics,
            stream,
            subject_prefix,
            group: saga
                .topics
                .group(&env.string_or("BRIDGE_GROUP", DEFAULT_GROUP)),
            duplicate_window: env
                .positive_duration_or("BRIDGE_DUPLICATE_WINDOW", DEFAULT_DUPLICATE_WINDOW)?,
            max_in_flight,
            ack_timeout: env.positive_duration_or("BRIDGE_ACK_TIMEOUT", Duration::from_secs(5))?,
            commit_interval: env
                .positive_duration_or("BRIDGE_COMMIT_INTERVAL", Duration::from_millis(100))?,
            commit_batch,
            lag_interval: env
                .positive_duration_or("BRIDGE_LAG_INTERVAL", Duration::from_secs(2))?,
            status_subject,
            reverse,
            kafka: saga.kafka,
        })
    }

    /// The stream's subjects: everything under the prefix.
    pub fn stream_subjects(&self) -> Vec<String> {
        contracts::subjects::stream_subjects(&self.subject_prefix)
    }
}

fn parse_topics(raw: &str) -> Result<Vec<String>, ConfigError> {
    let topics: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if topics.is_empty() {
        return Err(ConfigError::invalid(
            "BRIDGE_TOPICS",
            raw,
            "expected at least one topic",
        ));
    }
    // librdkafka reads a leading '^' as a regex subscription: topics are listed, not matched.
    if let Some(bad) = topics
        .iter()
        .find(|t| t.starts_with('^') || t.contains(|c: char| c.is_whitespace()))
    {
        return Err(ConfigError::invalid(
            "BRIDGE_TOPICS",
            raw,
            format!("{bad:?} is not a topic name"),
        ));
    }
    Ok(topics)
}

fn parse_reverse(raw: &str) -> Result<Vec<ReverseMapping>, ConfigError> {
    raw.split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| -> Result<ReverseMapping, ConfigError> {
            let (subject, topic) = pair.split_once("=>").ok_or_else(|| {
                ConfigError::invalid(
                    "BRIDGE_REVERSE",
                    raw,
                    format!("{pair:?} is not subject=>topic"),
                )
            })?;
            let (subject, topic) = (subject.trim(), topic.trim());
            if !subject::is_valid_filter(subject) {
                return Err(ConfigError::invalid(
                    "BRIDGE_REVERSE",
                    raw,
                    format!("{subject:?} is not a subject"),
                ));
            }
            if topic.is_empty() || topic.contains(|c: char| c.is_whitespace()) {
                return Err(ConfigError::invalid(
                    "BRIDGE_REVERSE",
                    raw,
                    format!("{topic:?} is not a topic name"),
                ));
            }
            Ok(ReverseMapping {
                subject: subject.to_owned(),
                topic: topic.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_design() {
        let config = BridgeConfig::from_env(&Env::default()).expect("defaults are valid");
        assert_eq!(config.topics, contracts::topics::ALL);
        assert_eq!(config.stream, "EVENTS");
        assert_eq!(config.subject_prefix, "events");
        assert_eq!(config.stream_subjects(), ["events.>"]);
        assert_eq!(config.group, "bridge");
        assert_eq!(config.duplicate_window, Duration::from_secs(120));
        assert_eq!(config.max_in_flight, 256);
        assert_eq!(config.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(config.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(
            config.kafka.fetch_wait_max,
            KafkaSettings::DEFAULT_FETCH_WAIT_MAX
        );
        assert!(config.reverse.is_empty());
    }

    #[test]
    fn a_prefix_namespaces_topics_and_group() {
        let env = Env::from_pairs([("TOPIC_PREFIX", "t1_"), ("BRIDGE_GROUP", "mirror")]);
        let config = BridgeConfig::from_env(&env).expect("valid");
        assert_eq!(config.topics[0], "t1_order_created");
        assert_eq!(config.topics.len(), 6);
        assert_eq!(config.group, "t1_mirror");
    }

    #[test]
    fn explicit_values_win() {
        let env = Env::from_pairs([
            ("BRIDGE_TOPICS", " a, b ,,"),
            ("EVENTS_STREAM", "EV_1"),
            ("BRIDGE_SUBJECT_PREFIX", "t1.events"),
            ("BRIDGE_DUPLICATE_WINDOW", "30s"),
            ("BRIDGE_MAX_IN_FLIGHT", "8"),
            ("BRIDGE_REVERSE", "in.orders.*=>orders; cmd.>=>commands"),
        ]);
        let config = BridgeConfig::from_env(&env).expect("valid");
        assert_eq!(config.topics, ["a", "b"]);
        assert_eq!(config.stream, "EV_1");
        assert_eq!(config.stream_subjects(), ["t1.events.>"]);
        assert_eq!(config.duplicate_window, Duration::from_secs(30));
        assert_eq!(config.max_in_flight, 8);
        assert_eq!(
            config.reverse,
            [
                ReverseMapping {
                    subject: "in.orders.*".into(),
                    topic: "orders".into()
                },
                ReverseMapping {
                    subject: "cmd.>".into(),
                    topic: "commands".into()
                },
            ]
        );
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (name, value) in [
            ("BRIDGE_TOPICS", "^order.*"),
            ("BRIDGE_TOPICS", " , "),
            ("EVENTS_STREAM", "my.stream"),
            ("BRIDGE_SUBJECT_PREFIX", "events.>"),
            ("BRIDGE_MAX_IN_FLIGHT", "0"),
            ("BRIDGE_MAX_IN_FLIGHT", "many"),
            ("BRIDGE_DUPLICATE_WINDOW", "0s"),
            ("BRIDGE_COMMIT_INTERVAL", "0"),
            ("BRIDGE_REVERSE", "in.orders.*"),
            ("BRIDGE_REVERSE", "in..x=>t"),
            ("BRIDGE_STATUS_SUBJECT", "bridge.*"),
        ] {
            let env = Env::from_pairs([(name, value)]);
            let err = BridgeConfig::from_env(&env).expect_err(name);
            assert_eq!(err.variable(), name, "{err}");
        }
    }
}
