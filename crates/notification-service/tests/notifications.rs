//! notification-service against the real Postgres, NATS and Kafka-API broker: each test on
//! its own database, topics (TOPIC_PREFIX) and consumer groups. Senders are injected
//! (counting, failing on cue) or the real WebhookSender against a local HTTP server.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use contracts::events::{
    NotificationFailed, OrderCancelled, OrderConfirmed, OrderCreated, OrderLine, PaymentFailed,
    PaymentSucceeded, kinds, sources,
};
use contracts::topics::Topics;
use futures::future::BoxFuture;
use kit::Env;
use kit::db::PoolSettings;
use mesh::Event;
use mesh::kafka::{EventConsumer, EventProducer, KafkaSettings};
use notification_service::{App, Config, Notification, Sender};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const WAIT: Duration = Duration::from_secs(30);

/// Counts its calls; fails the first `fail_first` of them, or all while `always_fail`;
/// takes `delay_ms` to answer.
#[derive(Debug, Default)]
struct Scripted {
    calls: AtomicU32,
    fail_first: AtomicU32,
    always_fail: AtomicBool,
    delay_ms: AtomicU64,
}

impl Scripted {
    fn failing_first(n: u32) -> Arc<Self> {
        let sender = Self::default();
        sender.fail_first.store(n, Ordering::SeqCst);
        Arc::new(sender)
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Sender for Scripted {
    fn send<'a>(&'a self, _n: &'a Notification) -> BoxFuture<'a, Result<(), String>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let result: Result<(), String> = if self.always_fail.load(Ordering::SeqCst) {
            Err("provider down".to_owned())
        } else if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            Err("provider hiccup".to_owned())
        } else {
            Ok(())
        };
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst));
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            result
        })
    }
}

struct Running {
    base: String,
    http: reqwest::Client,
    topics: Topics,
    kafka: KafkaSettings,
    producer: EventProducer,
    pool: PgPool,
    database_url: String,
    /// Dropped at the end unless it is another instance's.
    owns_database: bool,
    stop: kit::Shutdown,
}

/// A notification's state as the tests look at it.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    status: String,
    attempts: i32,
    last_error: Option<String>,
    event_type: String,
}

impl Running {
    async fn publish(&self, topic: &str, event: &Event) {
        self.producer
            .publish(topic, event)
            .await
            .expect("published");
    }

    async fn row(&self, event_id: Uuid) -> Option<Row> {
        sqlx::query_as(
            "SELECT status, attempts, last_error, event_type FROM notifications
             WHERE event_id = $1",
        )
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await
        .expect("row")
    }

    /// Polls until the notification of `event_id` has `status`.
    async fn wait_for(&self, event_id: Uuid, status: &str) -> Row {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let row = self.row(event_id).await;
            if let Some(row) = row {
                if row.status == status {
                    return row;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "notification {event_id} is {row:?}, not {status}"
                );
            } else {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no notification for {event_id}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM notifications")
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        testkit::http::send_json(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        testkit::http::send_json(self.http.post(format!("{}{path}", self.base))).await
    }

    async fn stop(self) {
        self.stop.trigger();
        self.pool.close().await;
        if self.owns_database {
            testkit::drop_database(&self.database_url).await;
        }
    }

    /// A second instance on this one's database, reading its own topics (`TOPIC_PREFIX`),
    /// so both can be handed the same event at once.
    async fn another_instance(&self, sender: Arc<dyn Sender>) -> Running {
        let mut other = start_on(self.database_url.clone(), &[], Some(sender)).await;
        other.owns_database = false;
        other
    }
}

/// Starts the service with `sender`, or with the one `App::build` picks when `None`.
async fn start(extra: &[(&str, &str)], sender: Option<Arc<dyn Sender>>) -> Running {
    let database_url = testkit::fresh_database_url("notifications_test");
    start_on(database_url, extra, sender).await
}

async fn start_on(
    database_url: String,
    extra: &[(&str, &str)],
    sender: Option<Arc<dyn Sender>>,
) -> Running {
    let prefix = format!("{}_", testkit::unique_name("t"));
    let pairs = testkit::ServiceEnv::new(&testkit::unique_name("notification-service"))
        .database(&database_url)
        .kafka(&prefix)
        // Kafka directly unless a test asks for JetStream (which needs the bridge's stream).
        .set("NOTIFY_SOURCE", "kafka")
        .set_all(extra.iter().copied());
    let config = Config::from_env(&Env::from_pairs(pairs)).expect("config");
    let topics = config.saga.topics.clone();
    let kafka = config.saga.kafka.clone();
    let app = match sender {
        Some(sender) => App::build_with_sender(config, sender).await,
        None => App::build(config).await,
    }
    .expect("app starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = app.shutdown().clone();
    tokio::spawn(app.run_until_stopped());
    let producer = EventProducer::new(&kafka).expect("producer");
    let pool = kit::db::connect(&database_url, &PoolSettings::default())
        .await
        .expect("pool");
    Running {
        base,
        http: reqwest::Client::new(),
        topics,
        kafka,
        producer,
        pool,
        database_url,
        owns_database: true,
        stop,
    }
}

fn event<T: serde::Serialize>(kind: &str, source: &str, order_id: Uuid, data: &T) -> Event {
    Event::new(kind, source, order_id.to_string(), data)
        .expect("serialises")
        .with_traceparent(Some(TRACEPARENT.to_owned()))
}

fn order_created(order_id: Uuid) -> Event {
    event(
        kinds::ORDER_CREATED,
        sources::ORDER_SERVICE,
        order_id,
        &OrderCreated {
            order_id,
            user_id: Uuid::now_v7(),
            total_cents: 2_500,
            items: vec![OrderLine {
                product_id: Uuid::now_v7(),
                quantity: 2,
                unit_price_cents: 1_250,
            }],
            card_token: "tok_visa".into(),
            created_at: Utc::now(),
        },
    )
}

fn payment_succeeded(order_id: Uuid) -> Event {
    event(
        kinds::PAYMENT_SUCCEEDED,
        sources::PAYMENT_SERVICE,
        order_id,
        &PaymentSucceeded {
            order_id,
            payment_id: Uuid::now_v7(),
            amount_cents: 2_500,
        },
    )
}

fn payment_failed(order_id: Uuid) -> Event {
    event(
        kinds::PAYMENT_FAILED,
        sources::PAYMENT_SERVICE,
        order_id,
        &PaymentFailed {
            order_id,
            payment_id: Uuid::now_v7(),
            amount_cents: 2_500,
            reason: "card declined".into(),
        },
    )
}

fn order_confirmed(order_id: Uuid) -> Event {
    event(
        kinds::ORDER_CONFIRMED,
        sources::ORDER_SERVICE,
        order_id,
        &OrderConfirmed {
            order_id,
            user_id: Uuid::now_v7(),
            total_cents: 2_500,
        },
    )
}

fn order_cancelled(order_id: Uuid) -> Event {
    event(
        kinds::ORDER_CANCELLED,
        sources::ORDER_SERVICE,
        order_id,
        &OrderCancelled {
            order_id,
            user_id: Uuid::now_v7(),
            reason: "payment failed: card declined".into(),
        },
    )
}

#[tokio::test]
async fn an_event_on_each_topic_makes_exactly_one_sent_notification() {
    let sender = Arc::new(Scripted::default());
    let app = start(&[], Some(sender.clone())).await;
    let order_id = Uuid::now_v7();
    let sent = [
        (app.topics.order_created.clone(), order_created(order_id)),
        (
            app.topics.payment_success.clone(),
            payment_succeeded(order_id),
        ),
        (app.topics.payment_failed.clone(), payment_failed(order_id)),
        (
            app.topics.order_confirmed.clone(),
            order_confirmed(order_id),
        ),
        (
            app.topics.order_cancelled.clone(),
            order_cancelled(order_id),
        ),
    ];
    for (topic, event) in &sent {
        app.publish(topic, event).await;
    }
    for (_, event) in &sent {
        let row = app.wait_for(event.id, "SENT").await;
        assert_eq!(row.attempts, 1);
        assert_eq!(row.event_type, event.kind);
        assert_eq!(row.last_error, None);
    }
    assert_eq!(app.rows().await, 5);
    assert_eq!(sender.calls(), 5);

    let (status, body) = app.get("/notifications?status=SENT").await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|n| n["status"] == "SENT"));
    assert!(items.iter().all(|n| n["key"] == order_id.to_string()));
    assert!(
        items
            .iter()
            .all(|n| n["subject"].as_str().is_some_and(|s| !s.is_empty()))
    );
    let (_, dead) = app.get("/notifications?status=DEAD").await;
    assert_eq!(dead["items"].as_array().map(Vec::len), Some(0));
    let (status, body) = app.get("/notifications?status=LOST").await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "invalid_fields");
    app.stop().await;
}

#[tokio::test]
async fn the_same_event_delivered_twice_is_sent_once() {
    let sender = Arc::new(Scripted::default());
    let app = start(&[], Some(sender.clone())).await;
    let order_id = Uuid::now_v7();
    let event = order_created(order_id);
    app.publish(&app.topics.order_created, &event).await;
    app.publish(&app.topics.order_created, &event).await;
    // Same topic, same key, so same partition: once this one is sent, the duplicate has
    // been handled.
    let marker = order_created(order_id);
    app.publish(&app.topics.order_created, &marker).await;

    app.wait_for(marker.id, "SENT").await;
    let row = app.wait_for(event.id, "SENT").await;
    assert_eq!(row.attempts, 1);
    assert_eq!(app.rows().await, 2, "one row per event id");
    assert_eq!(sender.calls(), 2, "the duplicate was not sent again");
    app.stop().await;
}

#[tokio::test]
async fn a_sender_failing_twice_succeeds_on_the_third_attempt() {
    let sender = Scripted::failing_first(2);
    let app = start(&[("NOTIFY_RETRY_BASE", "10ms")], Some(sender.clone())).await;
    let event = payment_succeeded(Uuid::now_v7());
    app.publish(&app.topics.payment_success, &event).await;

    let row = app.wait_for(event.id, "SENT").await;
    assert_eq!(row.attempts, 3);
    assert_eq!(sender.calls(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_notification_that_keeps_failing_becomes_a_dead_letter_and_can_be_replayed() {
    let sender = Arc::new(Scripted::default());
    sender.always_fail.store(true, Ordering::SeqCst);
    let app = start(
        &[("NOTIFY_MAX_ATTEMPTS", "3"), ("NOTIFY_RETRY_BASE", "10ms")],
        Some(sender.clone()),
    )
    .await;
    let dead_letters = EventConsumer::new(
        &app.kafka,
        &testkit::unique_name("dlq-reader"),
        &[app.topics.notification_failed.as_str()],
    )
    .expect("consumer");
    let order_id = Uuid::now_v7();
    let event = order_cancelled(order_id);
    app.publish(&app.topics.order_cancelled, &event).await;

    let row = app.wait_for(event.id, "DEAD").await;
    assert_eq!(row.attempts, 3);
    assert_eq!(row.last_error.as_deref(), Some("provider down"));
    assert_eq!(sender.calls(), 3);

    let received = tokio::time::timeout(WAIT, dead_letters.next())
        .await
        .expect("a dead letter within 30 s")
        .expect("a valid event");
    assert_eq!(received.topic, app.topics.notification_failed);
    assert_eq!(received.event.kind, kinds::NOTIFICATION_FAILED);
    assert_eq!(received.event.source, sources::NOTIFICATION_SERVICE);
    assert_eq!(received.event.key, order_id.to_string());
    assert_eq!(received.event.traceparent.as_deref(), Some(TRACEPARENT));
    let letter: NotificationFailed = received.event.data_as().expect("payload");
    assert_eq!(letter.event_id, event.id);
    assert_eq!(letter.event_type, kinds::ORDER_CANCELLED);
    assert_eq!(letter.key, order_id.to_string());
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.last_error, "provider down");

    let (status, body) = app.get("/notifications?status=DEAD").await;
    assert_eq!(status, 200);
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["event_id"], event.id.to_string());
    assert_eq!(items[0]["attempts"], 3);

    // The provider is back: replay the dead letter.
    sender.always_fail.store(false, Ordering::SeqCst);
    let (status, body) = app
        .post(&format!("/notifications/{}/replay", event.id))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["attempts"], 0);
    let row = app.wait_for(event.id, "SENT").await;
    assert_eq!(row.attempts, 1);
    assert_eq!(sender.calls(), 4);

    let (status, body) = app
        .post(&format!("/notifications/{}/replay", event.id))
        .await;
    assert_eq!(status, 409, "only dead letters are replayed");
    assert_eq!(body["error"]["code"], "not_dead");
    let (status, _) = app
        .post(&format!("/notifications/{}/replay", Uuid::now_v7()))
        .await;
    assert_eq!(status, 404);
    assert_eq!(app.post("/notifications/not-a-uuid/replay").await.0, 404);
    app.stop().await;
}

#[tokio::test]
async fn many_replays_at_once_are_all_delivered() {
    // More deliveries at once than the service's pool has connections.
    const LETTERS: usize = 24;
    let sender = Arc::new(Scripted::default());
    sender.always_fail.store(true, Ordering::SeqCst);
    let app = start(&[("NOTIFY_MAX_ATTEMPTS", "1")], Some(sender.clone())).await;
    let events: Vec<Event> = (0..LETTERS)
        .map(|_| order_cancelled(Uuid::now_v7()))
        .collect();
    for event in &events {
        app.publish(&app.topics.order_cancelled, event).await;
    }
    for event in &events {
        app.wait_for(event.id, "DEAD").await;
    }

    // The provider is back but slow, so the replayed deliveries overlap.
    sender.always_fail.store(false, Ordering::SeqCst);
    sender.delay_ms.store(100, Ordering::SeqCst);
    let paths: Vec<String> = events
        .iter()
        .map(|event| format!("/notifications/{}/replay", event.id))
        .collect();
    let replays = futures::future::join_all(paths.iter().map(|path| app.post(path))).await;
    for (status, body) in replays {
        assert_eq!(status, 202, "{body}");
    }
    for event in &events {
        let row = app.wait_for(event.id, "SENT").await;
        assert_eq!(row.attempts, 1, "{row:?}");
    }
    assert_eq!(sender.calls(), 2 * LETTERS as u32);
    app.stop().await;
}

/// Holds the sends of `held` keys while the test holds `gate`'s write lock; fails every
/// send while `fail` is set.
#[derive(Debug, Default)]
struct Gated {
    fail: AtomicBool,
    held: Mutex<std::collections::HashSet<String>>,
    gate: tokio::sync::RwLock<()>,
}

impl Sender for Gated {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.fail.load(Ordering::SeqCst) {
                return Err("provider down".to_owned());
            }
            let held = self.held.lock().expect("lock").contains(&n.key);
            if held {
                drop(self.gate.read().await);
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn new_events_are_not_held_up_behind_replays() {
    let sender = Arc::new(Gated::default());
    sender.fail.store(true, Ordering::SeqCst);
    let app = start(&[("NOTIFY_MAX_ATTEMPTS", "1")], Some(sender.clone())).await;
    let letters: Vec<Event> = (0..6).map(|_| order_cancelled(Uuid::now_v7())).collect();
    for event in &letters {
        app.publish(&app.topics.order_cancelled, event).await;
    }
    for event in &letters {
        app.wait_for(event.id, "DEAD").await;
    }

    // Every replay's send hangs: they take all the background slots and queue for more.
    sender.fail.store(false, Ordering::SeqCst);
    *sender.held.lock().expect("lock") = letters.iter().map(|e| e.key.clone()).collect();
    let gate = sender.gate.write().await;
    for event in &letters {
        let (status, body) = app
            .post(&format!("/notifications/{}/replay", event.id))
            .await;
        assert_eq!(status, 202, "{body}");
    }

    let fresh = order_cancelled(Uuid::now_v7());
    app.publish(&app.topics.order_cancelled, &fresh).await;
    let row = app.wait_for(fresh.id, "SENT").await;
    assert_eq!(row.attempts, 1);
    for event in &letters {
        assert_eq!(app.row(event.id).await.expect("row").status, "PENDING");
    }

    drop(gate);
    for event in &letters {
        app.wait_for(event.id, "SENT").await;
    }
    app.stop().await;
}

/// Counts the sends of each event; holds those of `held` until `release`.
#[derive(Debug, Default)]
struct HeldBack {
    calls: Mutex<std::collections::HashMap<Uuid, u32>>,
    held: Mutex<Option<Uuid>>,
    released: tokio::sync::Notify,
}

impl HeldBack {
    fn calls(&self, event_id: Uuid) -> u32 {
        let calls = self.calls.lock().expect("lock");
        calls.get(&event_id).copied().unwrap_or(0)
    }

    fn release(&self) {
        *self.held.lock().expect("lock") = None;
        self.released.notify_waiters();
    }
}

impl Sender for HeldBack {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), String>> {
        *self
            .calls
            .lock()
            .expect("lock")
            .entry(n.event_id)
            .or_default() += 1;
        Box::pin(async move {
            loop {
                let released = self.released.notified();
                if *self.held.lock().expect("lock") != Some(n.event_id) {
                    return Ok(());
                }
                released.await;
            }
        })
    }
}

#[tokio::test]
async fn an_event_two_instances_receive_at_once_is_sent_once() {
    let sender = Arc::new(HeldBack::default());
    let first = start(&[], Some(sender.clone())).await;
    let second = first.another_instance(sender.clone()).await;
    // The second's consumer is assigned its partitions and handling events before the test
    // relies on it.
    let warm_up = order_created(Uuid::now_v7());
    second.publish(&second.topics.order_created, &warm_up).await;
    second.wait_for(warm_up.id, "SENT").await;
    let event = order_created(Uuid::now_v7());
    *sender.held.lock().expect("lock") = Some(event.id);

    // The first instance is sending it, and holds its delivery lock meanwhile.
    first.publish(&first.topics.order_created, &event).await;
    testkit::eventually("the first instance is sending it", || async {
        sender.calls(event.id) > 0
    })
    .await;
    // The second gets it too (a redelivery, a replay racing it): it must not send it, and
    // must not let go of the event either, in case the first never finishes.
    second.publish(&second.topics.order_created, &event).await;
    // Behind it on its partition: sent once the second is done with the event.
    let marker = order_created(Uuid::parse_str(&event.key).expect("order id"));
    second.publish(&second.topics.order_created, &marker).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sender.calls(event.id), 1, "the second instance kept out");
    assert_eq!(
        sender.calls(marker.id),
        0,
        "the second still holds the event"
    );
    assert_eq!(first.row(event.id).await.expect("row").status, "PENDING");

    sender.release();
    let row = first.wait_for(event.id, "SENT").await;
    assert_eq!(row.attempts, 1);
    second.wait_for(marker.id, "SENT").await;
    assert_eq!(sender.calls(event.id), 1, "sent once in all");
    second.stop().await;
    first.stop().await;
}

/// A webhook receiver: records each POSTed JSON body, answers 500 to the first
/// `fail_first` of them and 200 afterwards.
#[derive(Clone, Default)]
struct Hook {
    bodies: Arc<Mutex<Vec<Value>>>,
    fail_first: Arc<AtomicU32>,
}

impl Hook {
    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().expect("lock").clone()
    }

    /// Serves on 127.0.0.1:0; returns the URL to POST to.
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}/hook")
    }
}

async fn receive(State(hook): State<Hook>, Json(body): Json<Value>) -> StatusCode {
    hook.bodies.lock().expect("lock").push(body);
    let fail = hook
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

#[tokio::test]
async fn the_webhook_sender_posts_the_notification_as_json() {
    let hook = Hook::default();
    let url = hook.serve().await;
    let app = start(&[("NOTIFY_WEBHOOK_URL", url.as_str())], None).await;
    let order_id = Uuid::now_v7();
    let event = order_created(order_id);
    app.publish(&app.topics.order_created, &event).await;

    let row = app.wait_for(event.id, "SENT").await;
    assert_eq!(row.attempts, 1);
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let body = &bodies[0];
    assert_eq!(body["event_id"], event.id.to_string());
    assert_eq!(body["event_type"], kinds::ORDER_CREATED);
    assert_eq!(body["key"], order_id.to_string());
    assert_eq!(body["attempt"], 1);
    assert!(
        body["subject"]
            .as_str()
            .is_some_and(|s| s.contains(&order_id.to_string())),
        "{body}"
    );
    assert!(
        body["body"].as_str().is_some_and(|s| s.contains("25.00")),
        "{body}"
    );
    assert!(body["user_hint"].is_string(), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_answering_500_is_retried() {
    let hook = Hook::default();
    hook.fail_first.store(2, Ordering::SeqCst);
    let url = hook.serve().await;
    let app = start(
        &[
            ("NOTIFY_WEBHOOK_URL", url.as_str()),
            ("NOTIFY_RETRY_BASE", "10ms"),
        ],
        None,
    )
    .await;
    let event = order_confirmed(Uuid::now_v7());
    app.publish(&app.topics.order_confirmed, &event).await;

    let row = app.wait_for(event.id, "SENT").await;
    assert_eq!(row.attempts, 3);
    assert!(
        row.last_error.as_deref().is_some_and(|e| e.contains("500")),
        "{row:?}"
    );
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 3);
    assert_eq!(
        bodies
            .iter()
            .map(|b| b["attempt"].clone())
            .collect::<Vec<_>>(),
        [1, 2, 3].map(Value::from)
    );
    app.stop().await;
}

/// Read from JetStream, where the bridge publishes, with a topic prefix holding a dot (a
/// subject token separator the bridge folds into the topic's token, and no valid character
/// of a durable consumer's name).
#[tokio::test]
async fn events_from_the_jetstream_stream_are_notified_once() {
    let subject_prefix = testkit::unique_name("ev");
    let stream = subject_prefix.to_uppercase();
    let topic_prefix = format!("{}.", testkit::unique_name("dotted"));
    let sender = Scripted::failing_first(0);
    let running = start(
        &[
            ("NOTIFY_SOURCE", "jetstream"),
            ("EVENTS_STREAM", &stream),
            ("EVENTS_SUBJECT_PREFIX", &subject_prefix),
            ("TOPIC_PREFIX", &topic_prefix),
        ],
        Some(sender.clone()),
    )
    .await;
    let nats = async_nats::connect(testkit::nats_url())
        .await
        .expect("NATS");
    let events = mesh::jetstream::EventStream::new(nats);
    let order_id = Uuid::now_v7();
    let event = order_confirmed(order_id);
    // Where the bridge would publish it.
    let subject = contracts::subjects::event_subject(
        &subject_prefix,
        &running.topics.order_confirmed,
        Some(order_id.to_string().as_bytes()),
    );
    assert!(running.topics.order_confirmed.contains('.'));
    events
        .publish(&subject, &event, Some("order_confirmed/0/1"))
        .await
        .expect("published");
    let row = running.wait_for(event.id, "SENT").await;
    assert_eq!(row.event_type, kinds::ORDER_CONFIRMED);

    // The same event again under another message id (a replay the dedup window missed).
    events
        .publish(&subject, &event, Some("order_confirmed/0/2"))
        .await
        .expect("published");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(running.rows().await, 1);
    assert_eq!(sender.calls(), 1, "sent once");
    events
        .context()
        .delete_stream(&stream)
        .await
        .expect("cleanup");
    running.stop().await;
}

/// A notification left PENDING while the service runs (a background delivery that met a
/// database failure and gave up, say) is found by the periodic sweep and sent, once.
#[tokio::test]
async fn a_notification_stranded_pending_is_sent_by_the_periodic_sweep() {
    let sender = Scripted::failing_first(0);
    let running = start(&[("NOTIFY_PENDING_SWEEP", "200ms")], Some(sender.clone())).await;
    // Well after the start's own sweep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let event_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO notifications (event_id, event_type, key, subject, body, status, attempts)
         VALUES ($1, $2, 'order-1', 'Order confirmed', 'Your order is confirmed.', 'PENDING', 1)",
    )
    .bind(event_id)
    .bind(kinds::ORDER_CONFIRMED)
    .execute(&running.pool)
    .await
    .expect("a stranded row");
    running.wait_for(event_id, "SENT").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sender.calls(), 1, "sent once, whatever the sweeps after");
    running.stop().await;
}
