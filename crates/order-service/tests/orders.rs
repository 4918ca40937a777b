//! order-service with the real product-service, Postgres, NATS and the Kafka-API broker.
//! Payment results are published by the test itself here; `saga.rs` runs the whole saga.

use std::time::Duration;

use contracts::events::{OrderCreated, PaymentFailed, PaymentSucceeded, kinds, sources};
use contracts::topics::Topics;
use kit::{Env, ServiceConfig};
use mesh::Event;
use mesh::kafka::{EventConsumer, EventProducer, KafkaSettings, SagaSettings};
use middleware::auth::{JwtKeys, JwtSettings};
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long";

struct Stack {
    orders: String,
    products: String,
    http: reqwest::Client,
    topics: Topics,
    kafka: KafkaSettings,
    stops: Vec<kit::Shutdown>,
    databases: Vec<String>,
}

fn env(pairs: &[(&str, String)]) -> Env {
    Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())))
}

async fn start(payment_timeout: &str) -> Stack {
    let prefix = format!("{}_", testkit::unique_name("t"));
    let product_name = testkit::unique_name("product-service");
    let product_db = testkit::fresh_database_url("orders_products");
    let order_db = testkit::fresh_database_url("orders_test");

    let product_env = env(&[
        ("HTTP_ADDR", "127.0.0.1:0".into()),
        ("DATABASE_URL", product_db.clone()),
        ("NATS_URL", testkit::nats_url()),
        ("SERVICE_NAME", product_name.clone()),
        ("SHUTDOWN_GRACE", "1s".into()),
    ]);
    let products = product_service::App::build(product_service::Config {
        service: ServiceConfig::from_env(&product_env, product_service::DEFAULTS).expect("config"),
        jwt: JwtSettings::hs256(SECRET),
        redis_url: testkit::redis_url(),
        cache_ttl: Duration::from_secs(60),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
    })
    .await
    .expect("product-service starts");

    let order_env = env(&[
        ("HTTP_ADDR", "127.0.0.1:0".into()),
        ("DATABASE_URL", order_db.clone()),
        ("NATS_URL", testkit::nats_url()),
        ("KAFKA_BROKERS", testkit::kafka_brokers()),
        ("SERVICE_NAME", testkit::unique_name("order-service")),
        ("PRODUCT_SERVICE_NAME", product_name),
        ("TOPIC_PREFIX", prefix.clone()),
        ("GRPC_ADDR", "127.0.0.1:0".into()),
        ("ORDER_PAYMENT_TIMEOUT", payment_timeout.into()),
        ("ORDER_SWEEP_INTERVAL", "200ms".into()),
        ("SHUTDOWN_GRACE", "1s".into()),
        ("JWT_SECRET", SECRET.into()),
    ]);
    let order_config = order_service::Config::from_env(&order_env).expect("config");
    let orders = order_service::App::build(order_config)
        .await
        .expect("order-service starts");

    let stack = Stack {
        orders: format!("http://127.0.0.1:{}", orders.port()),
        products: format!("http://127.0.0.1:{}", products.port()),
        http: reqwest::Client::new(),
        topics: Topics::new(&prefix),
        kafka: SagaSettings::from_env(&env(&[("KAFKA_BROKERS", testkit::kafka_brokers())]), "test")
            .expect("kafka")
            .kafka,
        stops: vec![orders.shutdown().clone(), products.shutdown().clone()],
        databases: vec![product_db, order_db],
    };
    tokio::spawn(products.run_until_stopped());
    tokio::spawn(orders.run_until_stopped());
    stack
}

fn token_for(user: Uuid) -> String {
    JwtKeys::new(&JwtSettings::hs256(SECRET))
        .expect("keys")
        .issue(&user.to_string(), "buyer@example.com")
        .expect("token")
        .token
}

impl Stack {
    async fn product(&self, price_cents: i64, stock: i64) -> String {
        let response = self
            .http
            .post(format!("{}/products", self.products))
            .bearer_auth(token_for(Uuid::now_v7()))
            .json(&json!({"name": "Thing", "price_cents": price_cents, "stock": stock}))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 201);
        let product: Value = response.json().await.expect("json");
        product["id"].as_str().expect("id").to_owned()
    }

    async fn stock(&self, product: &str) -> i64 {
        let product: Value = self
            .http
            .get(format!("{}/products/{product}", self.products))
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .expect("json");
        product["stock"].as_i64().expect("stock")
    }

    async fn order(&self, user: Uuid, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/orders", self.orders))
            .bearer_auth(token_for(user))
            .json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("answer");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, user: Uuid, id: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/orders/{id}", self.orders))
            .bearer_auth(token_for(user))
            .send()
            .await
            .expect("answer");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn wait_for_status(&self, user: Uuid, id: &str, want: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, order) = self.get(user, id).await;
            if order["status"] == want {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order stayed {}",
                order["status"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the order side emitted, by reading its topics from the start.
    async fn terminal_events(&self, order_id: &str, quiet: Duration) -> Vec<String> {
        let consumer = EventConsumer::new(
            &self.kafka,
            &testkit::unique_name("observer"),
            &[&self.topics.order_confirmed, &self.topics.order_cancelled],
        )
        .expect("consumer");
        let mut kinds = Vec::new();
        while let Ok(Ok(received)) = tokio::time::timeout(quiet, consumer.next()).await {
            if received.event.key == order_id {
                kinds.push(received.event.kind);
            }
        }
        kinds
    }

    async fn stop(self) {
        for stop in &self.stops {
            stop.trigger();
        }
        for database in &self.databases {
            testkit::drop_database(database).await;
        }
    }
}

fn items(product: &str, quantity: i64) -> Value {
    json!({"items": [{"product_id": product, "quantity": quantity}]})
}

#[tokio::test]
async fn placing_an_order_reserves_stock_and_bad_orders_are_refused() {
    let stack = start("60s").await;
    let user = Uuid::now_v7();
    let product = stack.product(1250, 5).await;

    let (status, order) = stack.order(user, items(&product, 2), None).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["user_id"], user.to_string());
    assert_eq!(order["total_cents"], 2500);
    assert_eq!(order["items"][0]["unit_price_cents"], 1250);
    assert_eq!(stack.stock(&product).await, 3);

    let (status, body) = stack.order(user, items(&product, 4), None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_stock");
    assert_eq!(
        stack.stock(&product).await,
        3,
        "a refused order takes nothing"
    );

    let (status, body) = stack
        .order(user, items(&Uuid::now_v7().to_string(), 1), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (422, json!("unknown_product"))
    );
    let (status, _) = stack.order(user, json!({"items": []}), None).await;
    assert_eq!(status, 422);
    let (status, _) = stack.order(user, items(&product, 0), None).await;
    assert_eq!(status, 422);

    // Another user's order does not exist for them.
    let id = order["id"].as_str().expect("id");
    assert_eq!(stack.get(user, id).await.0, 200);
    assert_eq!(stack.get(Uuid::now_v7(), id).await.0, 404);
    let anonymous = stack
        .http
        .get(format!("{}/orders/{id}", stack.orders))
        .send()
        .await
        .expect("answer");
    assert_eq!(anonymous.status(), 401);
    stack.stop().await;
}

#[tokio::test]
async fn a_retried_order_with_the_same_idempotency_key_reserves_once() {
    let stack = start("60s").await;
    let user = Uuid::now_v7();
    let product = stack.product(100, 10).await;
    let (first_status, first) = stack.order(user, items(&product, 3), Some("key-1")).await;
    let (second_status, second) = stack.order(user, items(&product, 3), Some("key-1")).await;
    assert_eq!((first_status, second_status), (201, 201));
    assert_eq!(first["id"], second["id"]);
    assert_eq!(stack.stock(&product).await, 7);
    stack.stop().await;
}

#[tokio::test]
async fn an_order_whose_payment_never_comes_is_cancelled_and_compensated() {
    let stack = start("1s").await;
    let user = Uuid::now_v7();
    let product = stack.product(100, 4).await;
    let (_, order) = stack.order(user, items(&product, 3), None).await;
    let id = order["id"].as_str().expect("id").to_owned();
    assert_eq!(stack.stock(&product).await, 1);

    let cancelled = stack.wait_for_status(user, &id, "CANCELLED").await;
    assert!(
        cancelled["cancel_reason"]
            .as_str()
            .is_some_and(|r| r.contains("payment not received")),
        "{cancelled}"
    );
    assert_eq!(stack.stock(&product).await, 4, "stock returned");
    assert_eq!(
        stack.terminal_events(&id, Duration::from_secs(3)).await,
        [kinds::ORDER_CANCELLED]
    );
    stack.stop().await;
}

async fn publish(stack: &Stack, topic: &str, event: &Event) {
    EventProducer::new(&stack.kafka)
        .expect("producer")
        .publish(topic, event)
        .await
        .expect("published");
}

#[tokio::test]
async fn payment_results_settle_orders_once_whatever_the_repetition() {
    let stack = start("60s").await;
    let user = Uuid::now_v7();
    let product = stack.product(500, 10).await;
    let (_, paid) = stack.order(user, items(&product, 1), None).await;
    let (_, declined) = stack.order(user, items(&product, 2), None).await;
    let paid_id: Uuid = paid["id"].as_str().expect("id").parse().expect("uuid");
    let declined_id: Uuid = declined["id"].as_str().expect("id").parse().expect("uuid");
    assert_eq!(stack.stock(&product).await, 7);

    let success = Event::new(
        kinds::PAYMENT_SUCCEEDED,
        sources::PAYMENT_SERVICE,
        paid_id.to_string(),
        &PaymentSucceeded {
            order_id: paid_id,
            payment_id: Uuid::now_v7(),
            amount_cents: 500,
        },
    )
    .expect("event");
    let failure = Event::new(
        kinds::PAYMENT_FAILED,
        sources::PAYMENT_SERVICE,
        declined_id.to_string(),
        &PaymentFailed {
            order_id: declined_id,
            payment_id: Uuid::now_v7(),
            amount_cents: 1000,
            reason: "card declined".into(),
        },
    )
    .expect("event");
    // Each delivered twice (a redelivery), and a contradicting late result for the paid order.
    for _ in 0..2 {
        publish(&stack, &stack.topics.payment_success, &success).await;
        publish(&stack, &stack.topics.payment_failed, &failure).await;
    }
    let late_failure = Event::new(
        kinds::PAYMENT_FAILED,
        sources::PAYMENT_SERVICE,
        paid_id.to_string(),
        &PaymentFailed {
            order_id: paid_id,
            payment_id: Uuid::now_v7(),
            amount_cents: 500,
            reason: "late".into(),
        },
    )
    .expect("event");

    stack
        .wait_for_status(user, &paid_id.to_string(), "CONFIRMED")
        .await;
    publish(&stack, &stack.topics.payment_failed, &late_failure).await;
    let cancelled = stack
        .wait_for_status(user, &declined_id.to_string(), "CANCELLED")
        .await;
    assert_eq!(cancelled["cancel_reason"], "payment failed: card declined");
    assert_eq!(
        stack.stock(&product).await,
        9,
        "the declined order's 2 came back, the paid 1 did not"
    );

    assert_eq!(
        stack
            .terminal_events(&paid_id.to_string(), Duration::from_secs(3))
            .await,
        [kinds::ORDER_CONFIRMED]
    );
    assert_eq!(
        stack
            .terminal_events(&declined_id.to_string(), Duration::from_secs(1))
            .await,
        [kinds::ORDER_CANCELLED]
    );
    let (_, still) = stack.get(user, &paid_id.to_string()).await;
    assert_eq!(
        still["status"], "CONFIRMED",
        "a late failure changes nothing"
    );
    stack.stop().await;
}

#[tokio::test]
async fn order_created_carries_what_payment_needs() {
    let stack = start("60s").await;
    let user = Uuid::now_v7();
    let product = stack.product(300, 3).await;
    let (_, order) = stack
        .order(
            user,
            json!({"items": [{"product_id": product, "quantity": 2}], "card_token": "tok_decline_x"}),
            None,
        )
        .await;
    let consumer = EventConsumer::new(
        &stack.kafka,
        &testkit::unique_name("observer"),
        &[&stack.topics.order_created],
    )
    .expect("consumer");
    let received = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("an event")
        .expect("valid");
    assert_eq!(received.event.kind, kinds::ORDER_CREATED);
    assert_eq!(received.event.key, order["id"].as_str().expect("id"));
    let created: OrderCreated = received.event.data_as().expect("payload");
    assert_eq!(created.total_cents, 600);
    assert_eq!(created.card_token, "tok_decline_x");
    assert_eq!(created.user_id, user);
    stack.stop().await;
}
