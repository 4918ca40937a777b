//! Events through the real Kafka-API broker, JetStream and Postgres: envelope round trips,
//! manual commits, deduplication, the outbox relay and the inbox.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use mesh::Event;
use mesh::jetstream::EventStream;
use mesh::kafka::{EventConsumer, EventProducer, KafkaSettings, Received, ensure_topics};
use mesh::{inbox, outbox, store};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Step {
    key: String,
    n: u32,
}

fn settings() -> KafkaSettings {
    KafkaSettings::new(testkit::kafka_brokers(), "mesh-events-test")
}

fn event(key: &str, n: u32) -> Event {
    Event::new(
        "shopmesh.test.step",
        "/mesh-test",
        key,
        &Step { key: key.into(), n },
    )
    .expect("serialises")
    .with_traceparent(Some(TRACEPARENT.into()))
}

async fn topic() -> String {
    let topic = testkit::unique_name("events");
    ensure_topics(&settings(), &[&topic], 3)
        .await
        .expect("topic");
    topic
}

async fn next(consumer: &EventConsumer) -> Received {
    tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("an event within 30 s")
        .expect("a valid event")
}

#[tokio::test]
async fn an_event_crosses_kafka_with_every_attribute_intact() {
    let topic = topic().await;
    let producer = EventProducer::new(&settings()).expect("producer");
    let sent = event("order-42", 1);
    let position = producer.publish(&topic, &sent).await.expect("published");

    let consumer = EventConsumer::new(&settings(), &testkit::unique_name("group"), &[&topic])
        .expect("consumer");
    let received = next(&consumer).await;
    assert_eq!(received.event, sent);
    assert_eq!(received.event.traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(received.partition, position.partition);
    assert_eq!(received.offset, position.offset);
    assert_eq!(received.event.data_as::<Step>().expect("data").n, 1);
    consumer.commit(&received).await.expect("committed");
}

#[tokio::test]
async fn an_uncommitted_event_is_delivered_again_to_the_group() {
    let topic = topic().await;
    let group = testkit::unique_name("group");
    let producer = EventProducer::new(&settings()).expect("producer");
    // One key: one partition, so the order is known.
    for n in 1..=3 {
        producer
            .publish(&topic, &event("same-key", n))
            .await
            .expect("published");
    }

    {
        let first = EventConsumer::new(&settings(), &group, &[&topic]).expect("consumer");
        let one = next(&first).await;
        let two = next(&first).await;
        assert_eq!(
            (
                one.event.data_as::<Step>().expect("data").n,
                two.event.data_as::<Step>().expect("data").n
            ),
            (1, 2)
        );
        // The effect of 1 is durable, that of 2 is not: only 1 is committed. Then "crash".
        first.commit(&one).await.expect("committed");
    }

    let second = EventConsumer::new(&settings(), &group, &[&topic]).expect("consumer");
    let again = next(&second).await;
    assert_eq!(
        again.event.data_as::<Step>().expect("data").n,
        2,
        "resumes after the commit"
    );
    let last = next(&second).await;
    assert_eq!(last.event.data_as::<Step>().expect("data").n, 3);
}

#[tokio::test]
async fn a_record_that_is_not_an_event_is_reported_with_its_position() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let topic = topic().await;
    let raw: FutureProducer = settings().client_config().create().expect("producer");
    raw.send(
        FutureRecord::to(&topic).key("k").payload("not an event"),
        Duration::from_secs(10),
    )
    .await
    .expect("sent");
    let consumer = EventConsumer::new(&settings(), &testkit::unique_name("group"), &[&topic])
        .expect("consumer");
    let error = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("within 30 s")
        .expect_err("malformed");
    match error {
        mesh::kafka::ConsumeError::Malformed {
            topic: t, offset, ..
        } => {
            assert_eq!(t, topic);
            assert_eq!(offset, 0);
        }
        other => panic!("unexpected {other}"),
    }
}

/// Whoever creates the stream first, its owner's duplicate window wins; a plain
/// `ensure_stream` leaves an existing stream as it is.
#[tokio::test]
async fn the_owner_sets_the_duplicate_window_of_an_existing_stream() {
    let client = async_nats::connect(testkit::nats_url())
        .await
        .expect("NATS");
    let events = EventStream::new(client);
    let prefix = testkit::unique_name("window");
    let stream = prefix.to_uppercase();
    let subjects = || vec![format!("{prefix}.>")];
    events
        .ensure_stream(&stream, subjects(), Duration::from_secs(120))
        .await
        .expect("created by someone else first");
    let kept = events
        .ensure_stream(&stream, subjects(), Duration::from_secs(30))
        .await
        .expect("left as it is");
    assert_eq!(
        kept.cached_info().config.duplicate_window,
        Duration::from_secs(120)
    );
    let owned = events
        .ensure_duplicate_window(&stream, subjects(), Duration::from_secs(3600))
        .await
        .expect("window set");
    assert_eq!(
        owned.cached_info().config.duplicate_window,
        Duration::from_secs(3600)
    );
    assert_eq!(owned.cached_info().config.subjects, subjects());
    events
        .context()
        .delete_stream(&stream)
        .await
        .expect("cleaned up");
}

#[tokio::test]
async fn an_event_crosses_jetstream_with_every_attribute_intact_and_replays_are_absorbed() {
    let client = async_nats::connect(testkit::nats_url())
        .await
        .expect("NATS");
    let events = EventStream::new(client);
    let prefix = testkit::unique_name("js");
    let stream = prefix.to_uppercase();
    events
        .ensure_stream(
            &stream,
            vec![format!("{prefix}.>")],
            Duration::from_secs(120),
        )
        .await
        .expect("stream");
    let sent = event("order-7", 1);
    let subject = format!("{prefix}.order_created.order-7");

    let ack = events
        .publish(&subject, &sent, Some("order_created/0/41"))
        .await
        .expect("acked");
    assert!(!ack.duplicate);
    let replay = events
        .publish(&subject, &sent, Some("order_created/0/41"))
        .await
        .expect("acked");
    assert!(replay.duplicate, "the same Nats-Msg-Id is stored once");

    let consumer = events
        .durable_consumer(
            &stream,
            "reader",
            &[format!("{prefix}.>")],
            Duration::from_secs(30),
        )
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("within 10 s")
        .expect("a message")
        .expect("no error");
    let received = Event::from_nats(&message).expect("an event");
    assert_eq!(received, sent);
    message.ack().await.expect("acked");

    let info = events
        .context()
        .get_stream(&stream)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .clone();
    assert_eq!(info.state.messages, 1);
    events
        .context()
        .delete_stream(&stream)
        .await
        .expect("cleanup");
}

/// A fresh stream holding one event, and a durable consumer on it with a one-second
/// ack_wait.
struct OneEvent {
    events: EventStream,
    stream: String,
    sent: Event,
    consumer: async_nats::jetstream::consumer::PullConsumer,
}

async fn one_event_in_a_fresh_stream(name: &str, durable: &str) -> OneEvent {
    let client = async_nats::connect(testkit::nats_url())
        .await
        .expect("NATS");
    let events = EventStream::new(client);
    let prefix = testkit::unique_name(name);
    let stream = prefix.to_uppercase();
    events
        .ensure_stream(
            &stream,
            vec![format!("{prefix}.>")],
            Duration::from_secs(60),
        )
        .await
        .expect("stream");
    let sent = event("k", 1);
    events
        .publish(&format!("{prefix}.t.k"), &sent, None)
        .await
        .expect("acked");
    let consumer = events
        .durable_consumer(
            &stream,
            durable,
            &[format!("{prefix}.>")],
            Duration::from_secs(1),
        )
        .await
        .expect("consumer");
    OneEvent {
        events,
        stream,
        sent,
        consumer,
    }
}

#[tokio::test]
async fn an_unacknowledged_jetstream_message_is_delivered_again() {
    let OneEvent {
        events,
        stream,
        sent,
        consumer,
    } = one_event_in_a_fresh_stream("jsredeliver", "flaky").await;
    let mut messages = consumer.messages().await.expect("messages");
    let first = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("first delivery")
        .expect("message")
        .expect("no error");
    assert_eq!(Event::from_nats(&first).expect("event").id, sent.id);
    // No ack: the handler "failed". After ack_wait the message comes back.
    let second = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("redelivery")
        .expect("message")
        .expect("no error");
    assert_eq!(Event::from_nats(&second).expect("event").id, sent.id);
    assert_eq!(second.info().expect("info").delivered, 2);
    second.ack().await.expect("acked");
    events
        .context()
        .delete_stream(&stream)
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn a_handler_slower_than_ack_wait_is_not_handed_the_message_twice() {
    let OneEvent {
        events,
        stream,
        consumer,
        ..
    } = one_event_in_a_fresh_stream("jsslow", "slow").await;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let handled = std::sync::Arc::clone(&calls);
    let stop = CancellationToken::new();
    let worker = tokio::spawn(mesh::jetstream::run_worker(
        "slow",
        consumer,
        stop.clone(),
        move |_event| {
            let handled = std::sync::Arc::clone(&handled);
            async move {
                handled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Three times ack_wait.
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(())
            }
        },
    ));
    // The handler's three seconds, and two ack_waits after its ack.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "delivered once: the worker reported progress while it worked"
    );
    stop.cancel();
    worker.await.expect("worker stopped");
    events
        .context()
        .delete_stream(&stream)
        .await
        .expect("cleanup");
}

async fn fresh_store() -> (PgPool, String) {
    let url = testkit::fresh_database_url("mesh_store");
    kit::db::ensure_database(&url).await.expect("database");
    let pool = kit::db::connect(&url, &kit::db::PoolSettings::default())
        .await
        .expect("pool");
    // Installing twice at once is safe.
    let (a, b) = tokio::join!(store::install_schema(&pool), store::install_schema(&pool));
    a.expect("schema");
    b.expect("schema again");
    (pool, url)
}

async fn pending(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM mesh_outbox WHERE sent_at IS NULL")
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn two_relays_publish_each_outbox_row_once_in_order() {
    let (pool, url) = fresh_store().await;
    let topic = topic().await;
    let keys = ["a", "b", "c"];
    let mut written = Vec::new();
    for n in 0..30u32 {
        let key = keys[n as usize % keys.len()];
        let e = event(key, n);
        let mut tx = pool.begin().await.expect("tx");
        outbox::enqueue(&mut tx, &topic, &e)
            .await
            .expect("enqueued");
        tx.commit().await.expect("commit");
        written.push(e);
    }
    // A rolled-back change leaves no event behind.
    let mut tx = pool.begin().await.expect("tx");
    let ghost = event("a", 999);
    outbox::enqueue(&mut tx, &topic, &ghost)
        .await
        .expect("enqueued");
    tx.rollback().await.expect("rollback");

    let producer = EventProducer::new(&settings()).expect("producer");
    let stop = CancellationToken::new();
    let relays: Vec<_> = (0..2)
        .map(|_| {
            let relay = outbox::OutboxRelay::new(pool.clone(), producer.clone()).with_batch_size(7);
            tokio::spawn(relay.run(stop.clone()))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while pending(&pool).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relays did not drain the outbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let consumer = EventConsumer::new(&settings(), &testkit::unique_name("group"), &[&topic])
        .expect("consumer");
    let mut seen = HashSet::new();
    let mut last_per_key = HashMap::<String, u32>::new();
    for _ in 0..written.len() {
        let received = next(&consumer).await;
        assert!(seen.insert(received.event.id), "event delivered twice");
        let step: Step = received.event.data_as().expect("data");
        if let Some(previous) = last_per_key.insert(step.key.clone(), step.n) {
            assert!(
                previous < step.n,
                "key {} out of order: {previous} then {}",
                step.key,
                step.n
            );
        }
        assert_ne!(received.event.id, ghost.id);
    }
    let expected: HashSet<_> = written.iter().map(|e| e.id).collect();
    assert_eq!(seen, expected);
    // Nothing else follows: no duplicate and no ghost.
    let extra = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await;
    assert!(extra.is_err(), "unexpected extra record: {extra:?}");

    stop.cancel();
    for relay in relays {
        relay.await.expect("relay stopped");
    }
    pool.close().await;
    testkit::drop_database(&url).await;
}

#[tokio::test]
async fn rows_stay_pending_while_the_broker_is_unreachable_then_leave() {
    let (pool, url) = fresh_store().await;
    let topic = topic().await;
    let e = event("k", 1);
    let mut tx = pool.begin().await.expect("tx");
    outbox::enqueue(&mut tx, &topic, &e)
        .await
        .expect("enqueued");
    tx.commit().await.expect("commit");

    let mut down = KafkaSettings::new("127.0.0.1:1", "mesh-test");
    down.delivery_timeout = Duration::from_millis(500);
    let unreachable = EventProducer::new(&down).expect("producer");
    let relay = outbox::OutboxRelay::new(pool.clone(), unreachable);
    assert!(relay.publish_pending().await.is_err());
    assert_eq!(pending(&pool).await, 1, "nothing is marked sent on failure");

    let relay = outbox::OutboxRelay::new(
        pool.clone(),
        EventProducer::new(&settings()).expect("producer"),
    );
    assert_eq!(relay.publish_pending().await.expect("sent"), 1);
    assert_eq!(pending(&pool).await, 0);
    let consumer = EventConsumer::new(&settings(), &testkit::unique_name("group"), &[&topic])
        .expect("consumer");
    assert_eq!(next(&consumer).await.event, e);
    pool.close().await;
    testkit::drop_database(&url).await;
}

#[tokio::test]
async fn a_row_that_fails_holds_back_the_later_rows_of_its_key_only() {
    let (pool, url) = fresh_store().await;
    let topic = topic().await;
    // Over the producer's message.max.bytes (1 MB): refused every time.
    let too_large = Event::new(
        "shopmesh.test.step",
        "/mesh-test",
        "k",
        &serde_json::json!({"blob": "x".repeat(1_500_000)}),
    )
    .expect("serialises");
    let after_it = event("k", 2);
    let other_key = event("other", 3);
    for e in [&too_large, &after_it, &other_key] {
        let mut tx = pool.begin().await.expect("tx");
        outbox::enqueue(&mut tx, &topic, e).await.expect("enqueued");
        tx.commit().await.expect("commit");
    }

    let relay = outbox::OutboxRelay::new(
        pool.clone(),
        EventProducer::new(&settings()).expect("producer"),
    );
    assert_eq!(relay.publish_pending().await.expect("partly sent"), 1);
    let unsent: Vec<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM mesh_outbox WHERE sent_at IS NULL ORDER BY seq")
            .fetch_all(&pool)
            .await
            .expect("unsent");
    assert_eq!(unsent, [too_large.id, after_it.id], "k's later row waits");

    let consumer = EventConsumer::new(&settings(), &testkit::unique_name("group"), &[&topic])
        .expect("consumer");
    assert_eq!(next(&consumer).await.event, other_key);
    let extra = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await;
    assert!(extra.is_err(), "nothing of k went out: {extra:?}");
    pool.close().await;
    testkit::drop_database(&url).await;
}

/// A consumer whose effect is a row in `effects`.
async fn handle(pool: &PgPool, e: &Event) -> bool {
    let mut tx = pool.begin().await.expect("tx");
    if !inbox::record_once(&mut tx, "test-consumer", e.id)
        .await
        .expect("inbox")
    {
        return false;
    }
    sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
        .bind(e.id)
        .execute(&mut *tx)
        .await
        .expect("effect");
    tx.commit().await.expect("commit");
    true
}

#[tokio::test]
async fn the_inbox_skips_redelivered_events_even_concurrent_ones() {
    let (pool, url) = fresh_store().await;
    sqlx::query("CREATE TABLE effects (event_id UUID NOT NULL)")
        .execute(&pool)
        .await
        .expect("table");
    let e = event("k", 1);
    assert!(handle(&pool, &e).await, "first delivery applies");
    assert!(!handle(&pool, &e).await, "redelivery is skipped");

    let burst = event("k", 2);
    let outcomes = futures::future::join_all((0..5).map(|_| handle(&pool, &burst))).await;
    assert_eq!(outcomes.iter().filter(|applied| **applied).count(), 1);

    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(effects, 2);
    pool.close().await;
    testkit::drop_database(&url).await;
}
