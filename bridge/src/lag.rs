//! Lag: per topic, how many records are in Kafka and not yet in JetStream.
//!
//! Per partition it is the high watermark minus the next offset to mirror: the furthest of
//! the group's committed offset and the mirror's acknowledged position (which runs ahead of
//! the commit by up to one commit interval), or the low watermark for a partition never
//! mirrored. Watermarks and committed offsets are blocking broker round trips, so they are
//! fetched every few seconds on the blocking pool, with a consumer of their own that never
//! joins the group.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mesh::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::status::State;

/// Each broker request's limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct LagProbe {
    consumer: Arc<BaseConsumer>,
    topics: Vec<String>,
    interval: Duration,
    state: Arc<State>,
}

/// One partition's marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marks {
    partition: i32,
    low: i64,
    high: i64,
    committed: Option<i64>,
}

impl LagProbe {
    pub(crate) fn new(
        kafka: &KafkaSettings,
        group: &str,
        topics: Vec<String>,
        interval: Duration,
        state: Arc<State>,
    ) -> Result<Self, KafkaError> {
        // The group id is only used to read the group's committed offsets: this consumer
        // never subscribes, so it never joins the group or takes partitions.
        let consumer: BaseConsumer = kafka
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topics,
            interval,
            state,
        })
    }

    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let consumer = self.consumer.clone();
            let topics = self.topics.clone();
            let measured =
                match tokio::task::spawn_blocking(move || measure(&consumer, &topics)).await {
                    Ok(measured) => measured,
                    Err(error) => {
                        tracing::warn!(%error, "Lag measurement failed.");
                        continue;
                    }
                };
            for (topic, marks) in measured {
                match marks {
                    Ok(marks) => {
                        let stats = self.state.topic(&topic);
                        stats.set_lag(lag(&marks, &stats.positions()));
                    }
                    // The last figure stays; readiness reports an unreachable broker anyway.
                    Err(error) => tracing::debug!(%topic, %error, "Lag not measured."),
                }
            }
        }
    }
}

type Measured = Vec<(String, Result<Vec<Marks>, KafkaError>)>;

fn measure(consumer: &BaseConsumer, topics: &[String]) -> Measured {
    // Serve the client's own events (errors, logs) so they do not pile up.
    let _ = consumer.poll(Duration::ZERO);
    topics
        .iter()
        .map(|topic| (topic.clone(), topic_marks(consumer, topic)))
        .collect()
}

fn topic_marks(consumer: &BaseConsumer, topic: &str) -> Result<Vec<Marks>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut list = TopicPartitionList::with_capacity(partitions.len());
    for &partition in &partitions {
        list.add_partition_offset(topic, partition, Offset::Invalid)?;
    }
    let committed = consumer.committed_offsets(list, REQUEST_TIMEOUT)?;
    partitions
        .into_iter()
        .map(|partition| -> Result<Marks, KafkaError> {
            let (low, high) = consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
            let committed = committed
                .find_partition(topic, partition)
                .and_then(|element| match element.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                });
            Ok(Marks {
                partition,
                low,
                high,
                committed,
            })
        })
        .collect()
}

/// The records of a topic not yet mirrored, given its partitions' marks and the mirror's
/// acknowledged positions (next offset per partition).
fn lag(marks: &[Marks], positions: &HashMap<i32, i64>) -> i64 {
    marks
        .iter()
        .map(|m| {
            let next = m
                .committed
                .into_iter()
                .chain(positions.get(&m.partition).copied())
                .max()
                .unwrap_or(m.low)
                .max(m.low);
            (m.high - next).max(0)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(partition: i32, low: i64, high: i64, committed: Option<i64>) -> Marks {
        Marks {
            partition,
            low,
            high,
            committed,
        }
    }

    #[test]
    fn lag_counts_what_is_neither_committed_nor_acknowledged() {
        let positions = HashMap::from([(1, 90)]);
        let all = [
            // Never mirrored: everything still in the partition.
            marks(0, 5, 20, None),
            // Acknowledged past the last commit: the acknowledged position counts.
            marks(1, 0, 100, Some(80)),
            // Committed, mirror not running here.
            marks(2, 0, 50, Some(50)),
        ];
        assert_eq!(lag(&all, &positions), 15 + 10);
        // Retention moved the low watermark past the commit: those records are gone.
        assert_eq!(lag(&[marks(0, 40, 50, Some(10))], &HashMap::new()), 10);
    }
}
