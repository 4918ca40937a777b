//! The bridge against the real Kafka-API broker and NATS (JetStream): records mirrored once
//! each, in partition order, with headers, key and timestamp; a crash mid-stream; a NATS
//! outage; the reverse direction. Every test has its own topic (3 partitions), stream,
//! subject prefix and consumer group, so they run in parallel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use bridge::{Bridge, BridgeConfig, BridgeHandle, BridgeStatus, headers};
use futures::StreamExt;
use kit::{Env, ReadinessCheck};
use mesh::Event;
use mesh::kafka::{EventProducer, KafkaSettings, ensure_topics};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 3;
/// Origin timestamps far from "now", so a broker-assigned time would show.
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;
const WITHIN: Duration = Duration::from_secs(60);

fn settings() -> KafkaSettings {
    KafkaSettings::new(testkit::kafka_brokers(), "bridge-test")
}

/// Names of one test's own topic, stream, subject prefix and group.
struct Fixture {
    topic: String,
    stream: String,
    prefix: String,
    group: String,
    js: jetstream::Context,
}

impl Fixture {
    async fn new() -> Self {
        let topic = testkit::unique_name("bridge");
        ensure_topics(&settings(), &[&topic], PARTITIONS)
            .await
            .expect("topic");
        let prefix = testkit::unique_name("ev");
        let client = async_nats::connect(testkit::nats_url())
            .await
            .expect("NATS");
        Self {
            topic,
            stream: prefix.to_uppercase(),
            group: testkit::unique_name("group"),
            prefix,
            js: jetstream::new(client),
        }
    }

    fn status_subject(&self) -> String {
        // Outside `<prefix>.>`: requests must not land in the stream.
        format!("status.{}", self.prefix)
    }

    /// The bridge's configuration through its environment variables, plus `extra`.
    fn config(&self, nats_url: &str, extra: &[(&str, &str)]) -> BridgeConfig {
        let mut pairs: Vec<(String, String)> = vec![
            ("KAFKA_BROKERS".into(), testkit::kafka_brokers()),
            ("NATS_URL".into(), nats_url.to_owned()),
            ("BRIDGE_TOPICS".into(), self.topic.clone()),
            ("EVENTS_STREAM".into(), self.stream.clone()),
            ("BRIDGE_SUBJECT_PREFIX".into(), self.prefix.clone()),
            ("BRIDGE_GROUP".into(), self.group.clone()),
            ("BRIDGE_STATUS_SUBJECT".into(), self.status_subject()),
            ("BRIDGE_LAG_INTERVAL".into(), "500ms".into()),
        ];
        pairs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        BridgeConfig::from_env(&Env::from_pairs(pairs)).expect("valid config")
    }

    async fn start(&self, extra: &[(&str, &str)]) -> BridgeHandle {
        Bridge::start(
            self.config(&testkit::nats_url(), extra),
            &kit::Metrics::new("bridge-test"),
        )
        .await
        .expect("bridge started")
    }

    async fn count(&self) -> u64 {
        match self.js.get_stream(&self.stream).await {
            Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.messages),
            Err(_) => 0,
        }
    }

    /// Waits until the stream holds `expected` messages, then a moment more to be sure no
    /// duplicate follows; returns the final count.
    async fn settle_at(&self, expected: u64) -> u64 {
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            let count = self.count().await;
            if count >= expected || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.count().await
    }

    /// Every message of the stream, in stream order.
    async fn read_all(&self, count: u64) -> Vec<jetstream::Message> {
        let stream = self.js.get_stream(&self.stream).await.expect("stream");
        let consumer = stream
            .create_consumer(OrderedConfig::default())
            .await
            .expect("ordered consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let mut all = Vec::new();
        while (all.len() as u64) < count {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .expect("a message within 10 s")
                .expect("the stream goes on")
                .expect("no error");
            all.push(message);
        }
        all
    }

    async fn cleanup(&self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

/// What the test produced, by (partition, offset).
#[derive(Debug, Clone)]
struct Produced {
    n: usize,
    key: String,
    timestamp: i64,
}

fn raw_producer() -> FutureProducer {
    settings()
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces records `range` (keys k0..k9, a repeated header, explicit timestamps).
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    range: Range<usize>,
) -> BTreeMap<(i32, i64), Produced> {
    let sends = range.map(|n| async move {
        let key = format!("k{}", n % 10);
        let payload = format!("payload-{n}");
        let number = n.to_string();
        let timestamp = BASE_TIMESTAMP + i64::try_from(n).expect("small");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "n",
                value: Some(number.as_str()),
            })
            .insert(Header {
                key: "h",
                value: Some("first"),
            })
            .insert(Header {
                key: "h",
                value: Some("second"),
            });
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(headers)
            .timestamp(timestamp);
        let delivery = producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("produced");
        (
            (delivery.partition, delivery.offset),
            Produced { n, key, timestamp },
        )
    });
    futures::future::join_all(sends).await.into_iter().collect()
}

fn header(message: &async_nats::Message, name: &str) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
}

fn position(message: &async_nats::Message) -> (i32, i64) {
    let partition = header(message, headers::KAFKA_PARTITION)
        .and_then(|p| p.parse().ok())
        .expect("Kafka-Partition");
    let offset = header(message, headers::KAFKA_OFFSET)
        .and_then(|o| o.parse().ok())
        .expect("Kafka-Offset");
    (partition, offset)
}

/// Each (partition, offset) once, offsets increasing per partition in stream order, and
/// `Nats-Msg-Id` matching: the stream is an exactly-once, in-order copy.
fn assert_exactly_once_in_order(
    topic: &str,
    messages: &[jetstream::Message],
    expected: &HashSet<(i32, i64)>,
) {
    let mut ids = HashSet::new();
    let mut last_offset: HashMap<i32, i64> = HashMap::new();
    let mut seen = HashSet::new();
    for message in messages {
        let (partition, offset) = position(message);
        let id = header(message, headers::MSG_ID).expect("Nats-Msg-Id");
        assert_eq!(id, format!("{topic}/{partition}/{offset}"));
        assert!(ids.insert(id.clone()), "{id} stored twice");
        if let Some(previous) = last_offset.insert(partition, offset) {
            assert!(
                previous < offset,
                "partition {partition}: offset {offset} stored after {previous}"
            );
        }
        seen.insert((partition, offset));
    }
    assert_eq!(
        &seen, expected,
        "the stream holds exactly the produced records"
    );
}

async fn wait_for<F: Fn(&BridgeStatus) -> bool>(handle: &BridgeHandle, what: &str, ok: F) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !ok(&handle.status()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            handle.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The group's committed offsets, by partition.
async fn committed(group: &str, topic: &str) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = settings()
        .client_config()
        .set("group.id", group)
        .create()
        .expect("consumer");
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut list = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            list.add_partition_offset(&topic, partition, Offset::Invalid)
                .expect("partition");
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(10))
            .expect("committed offsets");
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some((e.partition(), offset)),
                _ => None,
            })
            .collect()
    })
    .await
    .expect("joined")
}

#[tokio::test]
async fn every_record_is_mirrored_once_in_partition_order_with_its_headers() {
    let fixture = Fixture::new().await;
    let bridge = fixture.start(&[]).await;
    let producer = raw_producer();
    let produced = produce(&producer, &fixture.topic, 0..300).await;
    // A valid saga event among them: it must read back as the same event from NATS.
    let event = Event::new(
        "shopmesh.order.created",
        "/bridge-test",
        "order-1",
        &serde_json::json!({"order_id": "order-1", "total_cents": 1250}),
    )
    .expect("event")
    .with_traceparent(Some(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    ));
    let event_at = EventProducer::new(&settings())
        .expect("producer")
        .publish(&fixture.topic, &event)
        .await
        .expect("event produced");
    let total = produced.len() + 1;

    assert_eq!(fixture.settle_at(total as u64).await, total as u64);
    let messages = fixture.read_all(total as u64).await;
    let mut expected: HashSet<(i32, i64)> = produced.keys().copied().collect();
    expected.insert((event_at.partition, event_at.offset));
    assert_exactly_once_in_order(&fixture.topic, &messages, &expected);

    let mut events = 0;
    for message in &messages {
        let at = position(message);
        if at == (event_at.partition, event_at.offset) {
            assert_eq!(Event::from_nats(message).expect("an event"), event);
            assert_eq!(
                message.subject.as_str(),
                format!("{}.{}.order-1", fixture.prefix, fixture.topic)
            );
            events += 1;
            continue;
        }
        let sent = &produced[&at];
        assert_eq!(
            message.subject.as_str(),
            format!("{}.{}.{}", fixture.prefix, fixture.topic, sent.key)
        );
        assert_eq!(message.payload, format!("payload-{}", sent.n).as_bytes());
        let nats_headers = message.headers.as_ref().expect("headers");
        let all = |name: &str| -> Vec<String> {
            nats_headers
                .get_all(name)
                .map(|v| v.as_str().to_owned())
                .collect()
        };
        assert_eq!(all("h"), ["first", "second"], "repeated header in order");
        assert_eq!(all("n"), [sent.n.to_string()]);
        assert_eq!(all(headers::PARTITION_KEY), [sent.key.as_str()]);
        assert_eq!(all(headers::KAFKA_TOPIC), [fixture.topic.as_str()]);
        assert_eq!(all(headers::KAFKA_TIMESTAMP), [sent.timestamp.to_string()]);
    }
    assert_eq!(events, 1);

    // The same figures on NATS (the service's status endpoint) as in the handle.
    wait_for(&bridge, "every record counted", |s| {
        s.topics[&fixture.topic].mirrored == total as u64
    })
    .await;
    let reply = fixture
        .js
        .client()
        .request(fixture.status_subject(), "".into())
        .await
        .expect("status reply");
    let status: BridgeStatus = serde_json::from_slice(&reply.payload).expect("status JSON");
    assert_eq!(status.topics[&fixture.topic].mirrored, total as u64);
    assert_eq!(status.blocked, None);
    wait_for(&bridge, "lag drops to zero", |s| {
        s.topics[&fixture.topic].lag == 0
    })
    .await;

    // A graceful stop commits the end of every partition.
    bridge.stop().await;
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for &(partition, offset) in &expected {
        let end = ends.entry(partition).or_default();
        *end = (*end).max(offset + 1);
    }
    assert_eq!(committed(&fixture.group, &fixture.topic).await, ends);
    fixture.cleanup().await;
}

#[tokio::test]
async fn a_crash_mid_stream_leaves_no_gap_and_no_duplicate() {
    let fixture = Fixture::new().await;
    let producer = raw_producer();
    let mut produced = produce(&producer, &fixture.topic, 0..200).await;

    // Commit every 25 acknowledgements (and not on a timer), so the crash leaves records that
    // are stored but not committed: the restart must replay them and JetStream absorb them.
    let first = fixture
        .start(&[
            ("BRIDGE_MAX_IN_FLIGHT", "8"),
            ("BRIDGE_COMMIT_BATCH", "25"),
            ("BRIDGE_COMMIT_INTERVAL", "1h"),
        ])
        .await;
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let mirrored = first.status().topics[&fixture.topic].mirrored;
        if mirrored >= 30 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing mirrored");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let at_crash = first.status().topics[&fixture.topic].mirrored;
    first.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored_before = fixture.count().await;
    eprintln!("crash after {at_crash} acknowledged, {stored_before} stored");

    produced.extend(produce(&producer, &fixture.topic, 200..300).await);
    let second = fixture.start(&[]).await;
    assert_eq!(fixture.settle_at(300).await, 300);
    let messages = fixture.read_all(300).await;
    let expected: HashSet<(i32, i64)> = produced.keys().copied().collect();
    assert_exactly_once_in_order(&fixture.topic, &messages, &expected);

    // What the first bridge stored but had not committed came again, as duplicates.
    eprintln!(
        "after restart: {:?}",
        second.status().topics[&fixture.topic]
    );
    second.stop().await;
    fixture.cleanup().await;
}

async fn nats_addr() -> SocketAddr {
    let url = testkit::nats_url();
    let host_port = url
        .trim_start_matches("nats://")
        .trim_end_matches('/')
        .to_owned();
    tokio::net::lookup_host(host_port)
        .await
        .expect("NATS address resolves")
        .next()
        .expect("an address")
}

#[tokio::test]
async fn a_nats_outage_blocks_the_bridge_then_it_catches_up_without_loss() {
    let fixture = Fixture::new().await;
    let proxy = testkit::TcpProxy::start(nats_addr().await)
        .await
        .expect("proxy");
    let config = fixture.config(
        &format!("nats://{}", proxy.local_addr()),
        &[("BRIDGE_ACK_TIMEOUT", "1s")],
    );
    let bridge = Bridge::start(config, &kit::Metrics::new("bridge-test"))
        .await
        .expect("bridge started");
    let probe = bridge.probe();
    let producer = raw_producer();
    let mut produced = produce(&producer, &fixture.topic, 0..50).await;
    assert_eq!(fixture.settle_at(50).await, 50);
    assert!(probe.check().await.is_ok(), "ready while NATS is up");

    proxy.cut();
    produced.extend(produce(&producer, &fixture.topic, 50..150).await);
    wait_for(&bridge, "blocked while NATS is unreachable", |s| {
        s.blocked.is_some()
    })
    .await;
    let reason = probe.check().await.expect_err("not ready while blocked");
    eprintln!("while cut: {reason}");
    assert!(bridge.status().topics[&fixture.topic].retries >= 1);
    // Stay cut through a few retries.
    tokio::time::sleep(Duration::from_secs(3)).await;

    proxy.restore();
    assert_eq!(fixture.settle_at(150).await, 150);
    let messages = fixture.read_all(150).await;
    let expected: HashSet<(i32, i64)> = produced.keys().copied().collect();
    assert_exactly_once_in_order(&fixture.topic, &messages, &expected);
    wait_for(&bridge, "unblocked once NATS is back", |s| {
        s.blocked.is_none()
    })
    .await;
    assert!(probe.check().await.is_ok(), "ready again");

    bridge.stop().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn configured_subjects_are_forwarded_to_kafka_with_key_and_headers() {
    let fixture = Fixture::new().await;
    let reverse_topic = testkit::unique_name("bridge_in");
    // A second mapping: the forwarders share one producer and must not mix topics up.
    let other_topic = testkit::unique_name("bridge_in_other");
    ensure_topics(&settings(), &[&reverse_topic, &other_topic], PARTITIONS)
        .await
        .expect("topic");
    let base = testkit::unique_name("in");
    let other_base = testkit::unique_name("in_other");
    let filter = format!("{base}.*");
    let other_filter = format!("{other_base}.*");
    let mapping = format!("{filter}=>{reverse_topic};{other_filter}=>{other_topic}");
    let bridge = fixture.start(&[("BRIDGE_REVERSE", mapping.as_str())]).await;

    let client = async_nats::connect(testkit::nats_url())
        .await
        .expect("NATS");
    let mut nats_headers = async_nats::HeaderMap::new();
    nats_headers.append("h", "first");
    nats_headers.append("h", "second");
    nats_headers.insert("ce_type", "shopmesh.test");
    client
        .publish_with_headers(format!("{base}.order-9"), nats_headers, "hello".into())
        .await
        .expect("published");
    client
        .publish(format!("{other_base}.order-10"), "other".into())
        .await
        .expect("published");
    client.flush().await.expect("flushed");

    let consumer: StreamConsumer = settings()
        .group_consumer_config(&testkit::unique_name("group"))
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[&reverse_topic, &other_topic])
        .expect("subscribed");
    let mut records = Vec::new();
    for _ in 0..2 {
        let record = tokio::time::timeout(WITHIN, consumer.recv())
            .await
            .expect("a record within 60 s")
            .expect("no error")
            .detach();
        records.push(record);
    }
    records.sort_by_key(|r| r.topic() != reverse_topic);
    let (record, other) = (&records[0], &records[1]);
    assert_eq!(record.topic(), reverse_topic);
    assert_eq!(other.topic(), other_topic);
    assert_eq!(other.key(), Some(&b"order-10"[..]));
    assert_eq!(other.payload(), Some(&b"other"[..]));
    assert_eq!(record.key(), Some(&b"order-9"[..]));
    assert_eq!(record.payload(), Some(&b"hello"[..]));
    let mut pairs: Vec<(String, String)> = record
        .headers()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("ce_type".to_owned(), "shopmesh.test".to_owned()),
            ("h".to_owned(), "first".to_owned()),
            ("h".to_owned(), "second".to_owned()),
        ]
    );
    wait_for(&bridge, "the forwards are counted", |s| {
        s.reverse[&filter].forwarded == 1 && s.reverse[&other_filter].forwarded == 1
    })
    .await;
    bridge.stop().await;
    fixture.cleanup().await;
}
