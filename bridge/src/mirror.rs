//! Kafka → JetStream, exactly once in effect and in partition order.
//!
//! - Records are published in the order the consumer hands them out (Kafka order per
//!   partition), pipelined: up to `max_in_flight` publishes wait for their acknowledgement at
//!   once, held in a queue that yields them in publish order.
//! - An offset is committed only once JetStream acknowledged every record of its partition up
//!   to it: the queue yields acknowledgements in order, so the last one seen per partition is
//!   the highest contiguous one. Commits go out every `commit_interval` or `commit_batch`
//!   acknowledgements, asynchronously, and once synchronously when an attempt ends.
//! - Nothing is skipped. When a publish or its acknowledgement fails, the attempt ends: the
//!   pipeline is dropped, the consumer closed, and after a backoff (100 ms doubling to 5 s) a
//!   new consumer resumes from the committed offsets. What had been stored already comes
//!   again with the same `Nats-Msg-Id`, and JetStream acknowledges it as a duplicate without
//!   storing it twice. While it waits the bridge is *blocked*, and `/ready` says why.
//!
//! Known limit: if a publish is lost in a disconnection while a later one of the same
//! partition got through, the replay stores the lost one after it. Such a reordering is
//! logged (JetStream's sequence goes backwards within the partition).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishError, publish::PublishAck};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use kit::backoff::Exponential;
use mesh::jetstream::EventStream;
use mesh::kafka::KafkaSettings;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::headers;
use crate::status::{State, TopicStats};
use crate::subject;

/// The pause after a failure, doubling while attempts keep failing without progress.
const RETRY: Exponential = Exponential::new(Duration::from_millis(100), Duration::from_secs(5));

/// The stream the records are stored in.
#[derive(Debug, Clone)]
pub(crate) struct StreamSpec {
    pub(crate) name: String,
    pub(crate) subjects: Vec<String>,
    pub(crate) duplicate_window: Duration,
}

/// Creates the stream unless it exists, and gives it the bridge's duplicate window either
/// way: the window is what absorbs the bridge's replays, so `BRIDGE_DUPLICATE_WINDOW` must
/// hold even when notification-service created the stream first, or an earlier run did
/// with another value.
pub(crate) async fn ensure_stream(
    jetstream: &jetstream::Context,
    spec: &StreamSpec,
) -> Result<(), String> {
    EventStream::from_context(jetstream.clone())
        .ensure_duplicate_window(&spec.name, spec.subjects.clone(), spec.duplicate_window)
        .await
        .map(drop)
        .map_err(|error| error.to_string())
}

/// Everything the mirror loop needs.
pub(crate) struct Mirror {
    pub(crate) kafka: KafkaSettings,
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    pub(crate) stream: StreamSpec,
    pub(crate) subject_prefix: String,
    pub(crate) max_in_flight: usize,
    pub(crate) commit_interval: Duration,
    pub(crate) commit_batch: usize,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) state: Arc<State>,
}

/// Why an attempt ended early.
struct Failure {
    reason: String,
    /// The topic of the record that could not be mirrored, if one record is to blame.
    topic: Option<Arc<TopicStats>>,
    /// Whether the attempt got anything acknowledged (then the backoff starts over).
    progressed: bool,
}

impl Failure {
    fn general(reason: String) -> Self {
        Self {
            reason,
            topic: None,
            progressed: false,
        }
    }
}

/// Mirrors until `stop` is cancelled, retrying every failure after a backoff.
pub(crate) async fn run(mirror: Mirror, stop: CancellationToken) {
    let mut backoff = RETRY.start();
    loop {
        let failure = match mirror.attempt(&stop).await {
            Ok(()) => break,
            Err(failure) => failure,
        };
        if stop.is_cancelled() {
            tracing::warn!(reason = %failure.reason, "Stopped with a publish unacknowledged; it will be replayed on the next start.");
            break;
        }
        if failure.progressed {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        match &failure.topic {
            Some(topic) => topic.retried(),
            None => mirror.state.topics().iter().for_each(|t| t.retried()),
        }
        tracing::warn!(reason = %failure.reason, ?delay, "Mirroring blocked; resuming from the committed offsets after a pause.");
        mirror.state.block(failure.reason);
        if !kit::shutdown::pause(&stop, delay).await {
            break;
        }
    }
    tracing::info!("Mirror stopped.");
}

impl Mirror {
    /// One consumer's life: from the committed offsets until `stop` or the first failure.
    async fn attempt(&self, stop: &CancellationToken) -> Result<(), Failure> {
        Box::pin(ensure_stream(&self.jetstream, &self.stream))
            .await
            .map_err(Failure::general)?;
        let consumer = Arc::new(self.consumer().map_err(|error| {
            Failure::general(format!("cannot create the Kafka consumer: {error}"))
        })?);
        // JetStream answers and Kafka has a consumer: whatever blocked us is gone.
        self.state.unblock();
        let mut progress = Progress::default();
        let outcome = Box::pin(self.pump(&consumer, &mut progress, stop)).await;
        // Acknowledged is acknowledged, even when the attempt failed: a replay starts later.
        close(consumer, progress.take_final_commit()).await;
        outcome
    }

    fn consumer(&self) -> Result<StreamConsumer, KafkaError> {
        // A new group mirrors the topics from their beginning.
        let consumer: StreamConsumer = self.kafka.group_consumer_config(&self.group).create()?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(consumer)
    }

    /// Receive, publish, collect acknowledgements, commit; until `stop` (then the publishes in
    /// flight are awaited) or a failure.
    async fn pump(
        &self,
        consumer: &StreamConsumer,
        progress: &mut Progress,
        stop: &CancellationToken,
    ) -> Result<(), Failure> {
        let mut in_flight: FuturesOrdered<Pending> = FuturesOrdered::new();
        let mut topics: HashMap<String, Arc<TopicStats>> = self
            .state
            .topics()
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let mut ticker = tokio::time::interval(self.commit_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            if stopping && in_flight.is_empty() {
                return Ok(());
            }
            tokio::select! {
                biased;
                () = stop.cancelled(), if !stopping => {
                    tracing::info!(in_flight = in_flight.len(), "Stopping: awaiting the publishes in flight.");
                    stopping = true;
                }
                Some((sent, acked)) = in_flight.next(), if !in_flight.is_empty() => match acked {
                    Ok(ack) => {
                        progress.acknowledged(&sent, &ack);
                        if progress.uncommitted >= self.commit_batch {
                            commit(consumer, progress);
                        }
                    }
                    Err(error) => {
                        return Err(Failure {
                            reason: format!("JetStream did not acknowledge {sent}: {error}"),
                            topic: Some(sent.topic),
                            progressed: progress.progressed,
                        });
                    }
                },
                _ = ticker.tick() => commit(consumer, progress),
                received = consumer.recv(), if !stopping && in_flight.len() < self.max_in_flight => {
                    let (topic, record) = match received {
                        Ok(message) => {
                            let topic = match topics.get(message.topic()) {
                                Some(topic) => topic.clone(),
                                None => {
                                    let topic = self.state.topic(message.topic());
                                    topics.insert(topic.name.clone(), topic.clone());
                                    topic
                                }
                            };
                            (topic, Record::read(&message, &self.subject_prefix))
                        }
                        Err(error) => {
                            // Consumer errors are events (a broker went away, a topic is not
                            // there yet); librdkafka recovers on its own and no record is lost.
                            tracing::warn!(%error, "Kafka consumer error.");
                            continue;
                        }
                    };
                    let sent = Sent { topic, partition: record.partition, offset: record.offset };
                    match self
                        .jetstream
                        .publish_with_headers(record.subject, record.headers, record.payload)
                        .await
                    {
                        Ok(ack) => in_flight.push_back(async move { (sent, ack.await) }.boxed()),
                        Err(error) => {
                            return Err(Failure {
                                reason: format!("cannot publish {sent}: {error}"),
                                topic: Some(sent.topic),
                                progressed: progress.progressed,
                            });
                        }
                    }
                }
            }
        }
    }
}

/// A publish awaiting its acknowledgement, and the record it carries.
type Pending = BoxFuture<'static, (Sent, Result<PublishAck, PublishError>)>;

/// A Kafka record turned into a JetStream publish.
struct Record {
    partition: i32,
    offset: i64,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
}

impl Record {
    fn read<M: Message>(message: &M, subject_prefix: &str) -> Self {
        Self {
            partition: message.partition(),
            offset: message.offset(),
            subject: subject::event_subject(subject_prefix, message.topic(), message.key()),
            headers: headers::for_nats(message),
            payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        }
    }
}

/// Where a published record came from.
struct Sent {
    topic: Arc<TopicStats>,
    partition: i32,
    offset: i64,
}

impl fmt::Display for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&headers::msg_id(
            &self.topic.name,
            self.partition,
            self.offset,
        ))
    }
}

/// Per partition: the next offset to commit and whether it changed since the last commit.
#[derive(Default)]
struct Progress {
    partitions: HashMap<(usize, i32), PartitionProgress>,
    /// Acknowledgements since the last commit.
    uncommitted: usize,
    progressed: bool,
}

struct PartitionProgress {
    topic: Arc<TopicStats>,
    partition: i32,
    next_offset: i64,
    /// The highest stream sequence acknowledged for this partition, to notice reordering.
    last_sequence: u64,
    dirty: bool,
}

impl Progress {
    /// Acknowledgements arrive in publish order, so `sent` is the partition's highest
    /// contiguous acknowledged record.
    fn acknowledged(&mut self, sent: &Sent, ack: &PublishAck) {
        sent.topic.acknowledged(ack.duplicate);
        self.progressed = true;
        self.uncommitted += 1;
        let partition = self
            .partitions
            .entry((sent.topic.id, sent.partition))
            .or_insert_with(|| PartitionProgress {
                topic: sent.topic.clone(),
                partition: sent.partition,
                next_offset: sent.offset,
                last_sequence: 0,
                dirty: false,
            });
        if ack.sequence != 0 && ack.sequence < partition.last_sequence {
            tracing::warn!(record = %sent, sequence = ack.sequence, previous = partition.last_sequence, "Record stored after a later record of its partition (a publish was lost in a disconnection).");
        }
        partition.last_sequence = partition.last_sequence.max(ack.sequence);
        partition.next_offset = sent.offset + 1;
        partition.dirty = true;
    }

    /// The offsets to commit since the last call, if any; also what the lag is measured from.
    /// Every partition's acknowledged position, for the last, synchronous commit. An
    /// asynchronous commit that failed (rdkafka tells only a callback) would otherwise stay
    /// behind on a partition that went quiet, and the next start would replay from there.
    fn take_final_commit(&mut self) -> Option<TopicPartitionList> {
        for partition in self.partitions.values_mut() {
            partition.dirty = true;
        }
        self.take_commit()
    }

    fn take_commit(&mut self) -> Option<TopicPartitionList> {
        self.uncommitted = 0;
        let mut list = TopicPartitionList::new();
        for partition in self.partitions.values_mut().filter(|p| p.dirty) {
            partition.dirty = false;
            partition
                .topic
                .set_position(partition.partition, partition.next_offset);
            if let Err(error) = list.add_partition_offset(
                &partition.topic.name,
                partition.partition,
                Offset::Offset(partition.next_offset),
            ) {
                tracing::warn!(topic = %partition.topic.name, partition = partition.partition, %error, "Offset not committed.");
            }
        }
        (list.count() > 0).then_some(list)
    }
}

/// Commits asynchronously: a lost commit only means a longer (deduplicated) replay.
fn commit(consumer: &StreamConsumer, progress: &mut Progress) {
    if let Some(list) = progress.take_commit()
        && let Err(error) = consumer.commit(&list, CommitMode::Async)
    {
        tracing::warn!(%error, "Offset commit failed; the next one covers it.");
    }
}

/// Commits `last` and waits for the broker, then closes the consumer (leaving the group, so
/// the next consumer gets the partitions at once). Both block a thread for a round trip.
async fn close(consumer: Arc<StreamConsumer>, last: Option<TopicPartitionList>) {
    let closing = tokio::task::spawn_blocking(move || {
        if let Some(list) = last
            && let Err(error) = consumer.commit(&list, CommitMode::Sync)
        {
            tracing::warn!(%error, "Final offset commit failed; the replay will be longer.");
        }
        drop(consumer);
    });
    if let Err(error) = closing.await {
        tracing::warn!(%error, "Closing the Kafka consumer failed.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedHeaders, OwnedMessage, Timestamp};

    fn ack(sequence: u64, duplicate: bool) -> PublishAck {
        serde_json::from_value(serde_json::json!({
            "stream": "S", "seq": sequence, "duplicate": duplicate
        }))
        .expect("an ack")
    }

    #[test]
    fn commits_follow_the_acknowledgements_per_partition() {
        let metrics = kit::Metrics::new("bridge");
        let state = State::new(&metrics, &["t".to_owned()], &[]).expect("state");
        let topic = state.topic("t");
        let sent = |partition, offset| Sent {
            topic: topic.clone(),
            partition,
            offset,
        };
        let mut progress = Progress::default();
        assert!(progress.take_commit().is_none(), "nothing acknowledged yet");

        progress.acknowledged(&sent(0, 10), &ack(1, false));
        progress.acknowledged(&sent(1, 3), &ack(2, false));
        progress.acknowledged(&sent(0, 11), &ack(3, true));
        assert_eq!(progress.uncommitted, 3);
        let list = progress.take_commit().expect("offsets");
        let offsets = list.to_topic_map();
        assert_eq!(offsets[&("t".to_owned(), 0)], Offset::Offset(12));
        assert_eq!(offsets[&("t".to_owned(), 1)], Offset::Offset(4));
        assert_eq!(progress.uncommitted, 0);
        assert_eq!(topic.positions()[&0], 12);

        // Only what moved is committed again.
        progress.acknowledged(&sent(1, 4), &ack(4, false));
        let offsets = progress.take_commit().expect("offsets").to_topic_map();
        assert_eq!(offsets.len(), 1);
        assert_eq!(offsets[&("t".to_owned(), 1)], Offset::Offset(5));

        // The last commit covers every partition, in case an earlier one failed unseen.
        let last = progress
            .take_final_commit()
            .expect("offsets")
            .to_topic_map();
        assert_eq!(last.len(), 2);
        assert_eq!(last[&("t".to_owned(), 0)], Offset::Offset(12));
        assert_eq!(last[&("t".to_owned(), 1)], Offset::Offset(5));

        let status = state.status();
        assert_eq!(status.topics["t"].mirrored, 3);
        assert_eq!(status.topics["t"].duplicates, 1);
    }

    #[test]
    fn a_record_becomes_a_publish_on_its_subject() {
        let message = OwnedMessage::new(
            Some(b"payload".to_vec()),
            Some(b"order 7".to_vec()),
            "order_created".into(),
            Timestamp::CreateTime(5),
            1,
            9,
            Some(OwnedHeaders::new()),
        );
        let record = Record::read(&message, "events");
        assert_eq!(record.subject, "events.order_created.order_7");
        assert_eq!(record.payload, Bytes::from_static(b"payload"));
        assert_eq!((record.partition, record.offset), (1, 9));
        assert_eq!(
            record.headers.get(headers::MSG_ID).map(|v| v.as_str()),
            Some("order_created/1/9")
        );
        assert_eq!(
            record
                .headers
                .get(headers::PARTITION_KEY)
                .map(|v| v.as_str()),
            Some("order 7")
        );
    }
}
