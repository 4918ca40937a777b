//! payment-service against the real Postgres, NATS and Kafka-API broker: each test on its own
//! database, topics (TOPIC_PREFIX) and consumer groups.

use std::time::Duration;

use chrono::Utc;
use contracts::events::{
    OrderCancelled, OrderCreated, OrderLine, PaymentFailed, PaymentSucceeded, kinds, sources,
};
use contracts::topics::Topics;
use kit::Env;
use kit::db::PoolSettings;
use mesh::Event;
use mesh::kafka::{EventConsumer, EventProducer, KafkaSettings, Received};
use payment_service::{App, Config};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const WAIT: Duration = Duration::from_secs(30);

struct Running {
    base: String,
    http: reqwest::Client,
    topics: Topics,
    kafka: KafkaSettings,
    producer: EventProducer,
    /// Reads payment_success and payment_failed from the beginning.
    outcomes: EventConsumer,
    pool: PgPool,
    database_url: String,
    stop: kit::Shutdown,
}

impl Running {
    async fn publish(&self, event: &Event) {
        self.producer
            .publish(&self.topics.order_created, event)
            .await
            .expect("published");
    }

    async fn publish_cancelled(&self, event: &Event) {
        self.producer
            .publish(&self.topics.order_cancelled, event)
            .await
            .expect("published");
    }

    /// Waits until `count` distinct events went through the inbox.
    async fn wait_handled(&self, count: i64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self
            .count("SELECT count(*) FROM mesh_inbox WHERE consumer = 'payment-service'")
            .await
            < count
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} events were not handled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The order's payment, as `GET /payments/{order_id}` shows it.
    async fn payment(&self, order_id: Uuid) -> Value {
        let (status, payment) = self.get(&format!("/payments/{order_id}")).await;
        assert_eq!(status, 200, "{payment}");
        payment
    }

    /// `payments_total{status="<status>"}`, if the series exists.
    async fn payments_total(&self, status: &str) -> Option<i64> {
        let label = format!("status=\"{status}\"");
        let sample =
            testkit::http::metric_sample(&self.http, &self.base, "payments_total", &label).await;
        sample.map(|count| count as i64)
    }

    /// The next payment event; every order in a test has its own topics, so any record
    /// here belongs to this test.
    async fn next_outcome(&self) -> Received {
        tokio::time::timeout(WAIT, self.outcomes.next())
            .await
            .expect("a payment event within 30 s")
            .expect("a valid event")
    }

    /// Fails if any payment event arrives within `window`.
    async fn assert_no_more_outcomes(&self, window: Duration) {
        if let Ok(extra) = tokio::time::timeout(window, self.outcomes.next()).await {
            panic!("unexpected extra payment event: {extra:?}");
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    async fn payments_for(&self, order_id: Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM payments WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        testkit::http::send_json(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn stop(self) {
        self.stop.trigger();
        self.pool.close().await;
        testkit::drop_database(&self.database_url).await;
    }
}

async fn start(extra: &[(&str, &str)]) -> Running {
    let database_url = testkit::fresh_database_url("payments_test");
    let prefix = format!("{}_", testkit::unique_name("t"));
    let pairs = testkit::ServiceEnv::new(&testkit::unique_name("payment-service"))
        .database(&database_url)
        .kafka(&prefix)
        .set_all(extra.iter().copied());
    let config = Config::from_env(&Env::from_pairs(pairs)).expect("config");
    let topics = config.saga.topics.clone();
    let kafka = config.saga.kafka.clone();
    // Builds the topics too.
    let app = App::build(config).await.expect("app starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = app.shutdown().clone();
    tokio::spawn(app.run_until_stopped());
    let producer = EventProducer::new(&kafka).expect("producer");
    let outcomes = EventConsumer::new(
        &kafka,
        &testkit::unique_name("reader"),
        &[
            topics.payment_success.as_str(),
            topics.payment_failed.as_str(),
        ],
    )
    .expect("consumer");
    let pool = kit::db::connect(&database_url, &PoolSettings::default())
        .await
        .expect("pool");
    Running {
        base,
        http: reqwest::Client::new(),
        topics,
        kafka,
        producer,
        outcomes,
        pool,
        database_url,
        stop,
    }
}

fn order_created(order_id: Uuid, total_cents: i64, card_token: &str) -> Event {
    Event::new(
        kinds::ORDER_CREATED,
        sources::ORDER_SERVICE,
        order_id.to_string(),
        &OrderCreated {
            order_id,
            user_id: Uuid::now_v7(),
            total_cents,
            items: vec![OrderLine {
                product_id: Uuid::now_v7(),
                quantity: 1,
                unit_price_cents: total_cents,
            }],
            card_token: card_token.to_owned(),
            created_at: Utc::now(),
        },
    )
    .expect("serialises")
    .with_traceparent(Some(TRACEPARENT.to_owned()))
}

fn order_cancelled(order_id: Uuid, reason: &str) -> Event {
    Event::new(
        kinds::ORDER_CANCELLED,
        sources::ORDER_SERVICE,
        order_id.to_string(),
        &OrderCancelled {
            order_id,
            user_id: Uuid::now_v7(),
            reason: reason.to_owned(),
        },
    )
    .expect("serialises")
}

#[tokio::test]
async fn a_valid_card_pays_and_emits_payment_success() {
    let app = start(&[]).await;
    let order_id = Uuid::now_v7();
    app.publish(&order_created(order_id, 4_250, "tok_visa"))
        .await;

    let received = app.next_outcome().await;
    assert_eq!(received.topic, app.topics.payment_success);
    let event = &received.event;
    assert_eq!(event.kind, kinds::PAYMENT_SUCCEEDED);
    assert_eq!(event.source, sources::PAYMENT_SERVICE);
    assert_eq!(event.key, order_id.to_string());
    assert_eq!(
        event.traceparent.as_deref(),
        Some(TRACEPARENT),
        "the trace continues"
    );
    let paid: PaymentSucceeded = event.data_as().expect("payload");
    assert_eq!(paid.order_id, order_id);
    assert_eq!(paid.amount_cents, 4_250);

    let (status, payment) = app.get(&format!("/payments/{order_id}")).await;
    assert_eq!(status, 200, "{payment}");
    assert_eq!(payment["id"], paid.payment_id.to_string());
    assert_eq!(payment["order_id"], order_id.to_string());
    assert_eq!(payment["amount_cents"], 4_250);
    assert_eq!(payment["status"], "SUCCEEDED");
    assert_eq!(payment["reason"], Value::Null);
    assert!(
        chrono::DateTime::parse_from_rfc3339(payment["created_at"].as_str().expect("time")).is_ok()
    );

    let (status, body) = app.get(&format!("/payments/{}", Uuid::now_v7())).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(app.get("/payments/not-a-uuid").await.0, 404);

    assert_eq!(app.payments_total("succeeded").await, Some(1));
    app.stop().await;
}

#[tokio::test]
async fn a_declining_card_emits_payment_failed_with_the_reason() {
    let app = start(&[]).await;
    let order_id = Uuid::now_v7();
    app.publish(&order_created(order_id, 4_250, "tok_decline_insufficient"))
        .await;

    let received = app.next_outcome().await;
    assert_eq!(received.topic, app.topics.payment_failed);
    assert_eq!(received.event.kind, kinds::PAYMENT_FAILED);
    assert_eq!(received.event.key, order_id.to_string());
    let failed: PaymentFailed = received.event.data_as().expect("payload");
    assert_eq!(failed.order_id, order_id);
    assert_eq!(failed.reason, "card declined");

    let (status, payment) = app.get(&format!("/payments/{order_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(payment["status"], "FAILED");
    assert_eq!(payment["reason"], "card declined");
    app.stop().await;
}

#[tokio::test]
async fn a_total_over_the_limit_emits_payment_failed() {
    let app = start(&[("PAYMENT_LIMIT_CENTS", "5000")]).await;
    let under = Uuid::now_v7();
    let over = Uuid::now_v7();
    app.publish(&order_created(over, 5_001, "tok_visa")).await;
    app.publish(&order_created(under, 5_000, "")).await;

    let mut seen = Vec::new();
    for _ in 0..2 {
        let received = app.next_outcome().await;
        seen.push((received.event.key.clone(), received.topic.clone(), received));
    }
    for (key, topic, received) in seen {
        if key == over.to_string() {
            assert_eq!(topic, app.topics.payment_failed);
            let failed: PaymentFailed = received.event.data_as().expect("payload");
            assert_eq!(failed.reason, "amount over the limit of 5000 cents");
            assert_eq!(failed.amount_cents, 5_001);
        } else {
            assert_eq!(key, under.to_string());
            assert_eq!(
                topic, app.topics.payment_success,
                "the limit itself is allowed, and an empty token is tok_visa"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_same_event_delivered_twice_pays_once_and_emits_once() {
    let app = start(&[]).await;
    let order_id = Uuid::now_v7();
    let event = order_created(order_id, 999, "tok_visa");
    app.publish(&event).await;
    app.publish(&event).await;

    let received = app.next_outcome().await;
    assert_eq!(received.event.key, order_id.to_string());
    // Both records share a key, hence a partition: the duplicate is handled right after.
    app.assert_no_more_outcomes(Duration::from_secs(4)).await;
    assert_eq!(app.payments_for(order_id).await, 1);
    assert_eq!(app.count("SELECT count(*) FROM mesh_outbox").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM mesh_inbox WHERE consumer = 'payment-service'")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn two_different_events_for_one_order_still_make_one_payment() {
    let app = start(&[]).await;
    let order_id = Uuid::now_v7();
    app.publish(&order_created(order_id, 999, "tok_visa")).await;
    // A second, different event (its own ce_id) for the same order, declining this time.
    app.publish(&order_created(order_id, 999, "tok_decline"))
        .await;

    let received = app.next_outcome().await;
    assert_eq!(
        received.topic, app.topics.payment_success,
        "the first decides"
    );
    app.wait_handled(2).await;
    app.assert_no_more_outcomes(Duration::from_secs(3)).await;
    assert_eq!(app.payments_for(order_id).await, 1);
    let (status, payment) = app.get(&format!("/payments/{order_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(payment["status"], "SUCCEEDED");
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_record_does_not_stop_the_consumer() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let app = start(&[]).await;
    let raw: FutureProducer = app.kafka.client_config().create().expect("raw producer");
    raw.send(
        FutureRecord::to(&app.topics.order_created)
            .key("garbage")
            .payload("garbage"),
        Duration::from_secs(10),
    )
    .await
    .expect("sent");

    let order_id = Uuid::now_v7();
    app.publish(&order_created(order_id, 100, "tok_visa")).await;
    let received = app.next_outcome().await;
    assert_eq!(received.topic, app.topics.payment_success);
    assert_eq!(received.event.key, order_id.to_string());
    assert_eq!(app.payments_for(order_id).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn an_order_cancelled_after_its_charge_is_refunded_once() {
    let app = start(&[]).await;
    let order_id = Uuid::now_v7();
    app.publish(&order_created(order_id, 4_250, "tok_visa"))
        .await;
    assert_eq!(app.next_outcome().await.topic, app.topics.payment_success);

    let cancelled = order_cancelled(order_id, "payment timed out");
    app.publish_cancelled(&cancelled).await;
    // Delivered twice, then cancelled again by another event: same key, same partition, so
    // once the third is handled the duplicate was too.
    app.publish_cancelled(&cancelled).await;
    app.publish_cancelled(&order_cancelled(order_id, "again"))
        .await;
    app.wait_handled(3).await;

    let payment = app.payment(order_id).await;
    assert_eq!(payment["status"], "REFUNDED", "{payment}");
    assert_eq!(payment["amount_cents"], 4_250);
    assert_eq!(payment["reason"], "payment timed out");
    assert!(
        chrono::DateTime::parse_from_rfc3339(payment["refunded_at"].as_str().expect("time"))
            .is_ok(),
        "{payment}"
    );
    assert_eq!(app.payments_total("refunded").await, Some(1));
    // A refund emits nothing: the order is cancelled already.
    app.assert_no_more_outcomes(Duration::from_secs(2)).await;
    app.stop().await;
}

#[tokio::test]
async fn an_order_cancelled_before_its_charge_is_never_charged() {
    let app = start(&[]).await;
    let order_id = Uuid::now_v7();
    app.publish_cancelled(&order_cancelled(order_id, "payment timed out"))
        .await;
    app.wait_handled(1).await;
    let payment = app.payment(order_id).await;
    assert_eq!(payment["status"], "VOIDED", "{payment}");
    assert_eq!(payment["amount_cents"], 0);
    assert_eq!(payment["refunded_at"], Value::Null);

    // The order_created that was still on its way.
    app.publish(&order_created(order_id, 4_250, "tok_visa"))
        .await;
    app.wait_handled(2).await;
    app.assert_no_more_outcomes(Duration::from_secs(3)).await;
    assert_eq!(app.payment(order_id).await["status"], "VOIDED");
    assert_eq!(app.payments_for(order_id).await, 1);
    assert_eq!(app.count("SELECT count(*) FROM mesh_outbox").await, 0);
    assert_eq!(app.payments_total("voided").await, Some(1));
    assert_eq!(app.payments_total("succeeded").await, None);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_payment_stays_failed_when_its_order_is_cancelled() {
    let app = start(&[]).await;
    let order_id = Uuid::now_v7();
    app.publish(&order_created(order_id, 4_250, "tok_decline"))
        .await;
    assert_eq!(app.next_outcome().await.topic, app.topics.payment_failed);
    app.publish_cancelled(&order_cancelled(order_id, "payment failed: card declined"))
        .await;
    app.wait_handled(2).await;

    let payment = app.payment(order_id).await;
    assert_eq!(payment["status"], "FAILED", "{payment}");
    assert_eq!(payment["reason"], "card declined");
    assert_eq!(payment["refunded_at"], Value::Null);
    assert_eq!(app.payments_total("refunded").await, None);
    assert_eq!(app.payments_total("voided").await, None);
    app.stop().await;
}

/// The cancellation arrives while the charge is being written: it waits for the charge's
/// transaction and refunds what it committed, rather than voiding beside it.
#[tokio::test]
async fn a_cancellation_racing_the_charge_waits_for_it_and_refunds() {
    let app = start(&[]).await;
    let order_id = Uuid::now_v7();
    // A charge in flight: its row written, its transaction not committed yet.
    let mut charge = app.pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO payments (id, order_id, amount_cents, status) VALUES ($1, $2, 700, 'SUCCEEDED')",
    )
    .bind(Uuid::now_v7())
    .bind(order_id)
    .execute(&mut *charge)
    .await
    .expect("charge row");

    app.publish_cancelled(&order_cancelled(order_id, "payment timed out"))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while app
        .count(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cancellation never waited for the charge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    charge.commit().await.expect("commit the charge");

    app.wait_handled(1).await;
    let payment = app.payment(order_id).await;
    assert_eq!(payment["status"], "REFUNDED", "{payment}");
    assert_eq!(payment["amount_cents"], 700);
    assert_eq!(app.payments_for(order_id).await, 1);
    app.stop().await;
}
