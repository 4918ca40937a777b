//! The stack the order-service tests (and the saga bench) run: real product-service and
//! order-service, and as asked payment-service and notification-service, each run with its
//! own databases, mesh names and topic prefix.
#![allow(dead_code)]

use std::time::Duration;

use contracts::topics::Topics;
use kit::Env;
use mesh::kafka::{EventConsumer, KafkaSettings, SagaSettings};
use middleware::auth::{JwtKeys, JwtSettings};
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET: &str = "a-test-secret-that-is-at-least-32-bytes-long";

pub struct Stack {
    pub orders: String,
    pub products: String,
    /// payment-service's HTTP base, once it runs.
    pub payments: Option<String>,
    pub http: reqwest::Client,
    pub topics: Topics,
    pub kafka: KafkaSettings,
    pub stops: Vec<kit::Shutdown>,
    pub databases: Vec<String>,
    pub notifications_db: Option<String>,
    /// The topic prefix: services started later join the same saga.
    prefix: String,
    order_env: Env,
    order_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub fn env(pairs: &[(&str, String)]) -> Env {
    Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())))
}

/// Which services run beside product-service and order-service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Services {
    /// None: the tests play the payment side themselves.
    OrderSide,
    /// payment-service: orders are confirmed or cancelled for real.
    WithPayments,
    /// payment-service and notification-service.
    WholeSaga,
}

pub async fn start(payment_timeout: &str) -> Stack {
    start_with(payment_timeout, Services::OrderSide).await
}

pub async fn start_with(payment_timeout: &str, services: Services) -> Stack {
    let prefix = format!("{}_", testkit::unique_name("t"));
    let product_name = testkit::unique_name("product-service");
    let product_db = testkit::fresh_database_url("orders_products");
    let order_db = testkit::fresh_database_url("orders_test");

    let product_env = Env::from_pairs(
        testkit::ServiceEnv::new(&product_name)
            .database(&product_db)
            .set("JWT_SECRET", SECRET)
            .set("REDIS_URL", testkit::redis_url())
            .set("GRPC_ADDR", "127.0.0.1:0"),
    );
    let products = product_service::App::build(
        product_service::Config::from_env(&product_env).expect("config"),
    )
    .await
    .expect("product-service starts");

    let order_env = Env::from_pairs(
        testkit::ServiceEnv::new(&testkit::unique_name("order-service"))
            .database(&order_db)
            .kafka(&prefix)
            .set("PRODUCT_SERVICE_NAME", product_name)
            .set("GRPC_ADDR", "127.0.0.1:0")
            .set("ORDER_PAYMENT_TIMEOUT", payment_timeout)
            .set("ORDER_SWEEP_INTERVAL", "200ms")
            .set("JWT_SECRET", SECRET),
    );
    let order_config = order_service::Config::from_env(&order_env).expect("config");
    let orders = order_service::App::build(order_config)
        .await
        .expect("order-service starts");

    let mut stack = Stack {
        orders: format!("http://127.0.0.1:{}", orders.port()),
        products: format!("http://127.0.0.1:{}", products.port()),
        payments: None,
        http: reqwest::Client::new(),
        topics: Topics::new(&prefix),
        kafka: SagaSettings::from_env(&env(&[("KAFKA_BROKERS", testkit::kafka_brokers())]), "test")
            .expect("kafka")
            .kafka,
        stops: vec![orders.shutdown().clone(), products.shutdown().clone()],
        databases: vec![product_db, order_db],
        notifications_db: None,
        prefix: prefix.clone(),
        order_env: order_env.clone(),
        order_task: None,
    };
    tokio::spawn(products.run_until_stopped());
    stack.order_task = Some(tokio::spawn(orders.run_until_stopped()));
    if services != Services::OrderSide {
        stack.start_payments().await;
    }
    if services == Services::WholeSaga {
        stack.start_notifications().await;
    }
    stack
}

impl Stack {
    /// Stops order-service (gracefully: its consumer leaves the group) and starts a new
    /// instance on the same database, topics and consumer group.
    pub async fn restart_orders(&mut self) {
        self.stops[0].trigger();
        if let Some(task) = self.order_task.take() {
            let _ = task.await;
        }
        let config = order_service::Config::from_env(&self.order_env).expect("config");
        let orders = order_service::App::build(config)
            .await
            .expect("order-service restarts");
        self.orders = format!("http://127.0.0.1:{}", orders.port());
        self.stops[0] = orders.shutdown().clone();
        self.order_task = Some(tokio::spawn(orders.run_until_stopped()));
    }

    /// Starts payment-service on the stack's topics; a test that started without it can
    /// bring it in late, as after an outage.
    pub async fn start_payments(&mut self) {
        let payment_db = testkit::fresh_database_url("orders_payments");
        let payment_env = Env::from_pairs(
            testkit::ServiceEnv::new(&testkit::unique_name("payment-service"))
                .database(&payment_db)
                .kafka(&self.prefix),
        );
        let payments = payment_service::App::build(
            payment_service::Config::from_env(&payment_env).expect("config"),
        )
        .await
        .expect("payment-service starts");
        self.payments = Some(format!("http://127.0.0.1:{}", payments.port()));
        self.stops.push(payments.shutdown().clone());
        self.databases.push(payment_db);
        tokio::spawn(payments.run_until_stopped());
    }

    async fn start_notifications(&mut self) {
        let notification_db = testkit::fresh_database_url("orders_notifications");
        let notification_env = Env::from_pairs(
            testkit::ServiceEnv::new(&testkit::unique_name("notification-service"))
                .database(&notification_db)
                .kafka(&self.prefix)
                // The test's topics have no bridge mirroring them: read Kafka directly.
                .set("NOTIFY_SOURCE", "kafka"),
        );
        let notifications = notification_service::App::build(
            notification_service::Config::from_env(&notification_env).expect("config"),
        )
        .await
        .expect("notification-service starts");

        self.stops.push(notifications.shutdown().clone());
        self.databases.push(notification_db.clone());
        self.notifications_db = Some(notification_db);
        tokio::spawn(notifications.run_until_stopped());
    }

    /// A pool on order-service's own database, to look at (or tamper with) its tables.
    pub async fn order_pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.databases[1])
            .await
            .expect("order database")
    }

    /// Notifications stored for an order (its events' keys), by event type.
    pub async fn notifications_for(&self, order_id: &str) -> Vec<(String, String)> {
        let Some(url) = &self.notifications_db else {
            return Vec::new();
        };
        let pool = kit::db::connect(url, &kit::db::PoolSettings::default())
            .await
            .expect("notification database");
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT event_type, status FROM notifications WHERE key = $1 ORDER BY created_at",
        )
        .bind(order_id)
        .fetch_all(&pool)
        .await
        .expect("notifications");
        pool.close().await;
        rows
    }
}

pub fn token_for(user: Uuid) -> String {
    JwtKeys::new(&JwtSettings::hs256(SECRET))
        .expect("keys")
        .issue(&user.to_string(), "buyer@example.com")
        .expect("token")
        .token
}

impl Stack {
    pub async fn product(&self, price_cents: i64, stock: i64) -> String {
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

    pub async fn stock(&self, product: &str) -> i64 {
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

    pub async fn order(&self, user: Uuid, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/orders", self.orders))
            .bearer_auth(token_for(user))
            .json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        testkit::http::send_json(request).await
    }

    pub async fn get(&self, user: Uuid, id: &str) -> (u16, Value) {
        testkit::http::send_json(
            self.http
                .get(format!("{}/orders/{id}", self.orders))
                .bearer_auth(token_for(user)),
        )
        .await
    }

    pub async fn wait_for_status(&self, user: Uuid, id: &str, want: &str) -> Value {
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

    /// The order's payment as payment-service shows it (`GET /payments/{order_id}`).
    pub async fn payment(&self, order_id: &str) -> (u16, Value) {
        let base = self.payments.as_deref().expect("payment-service runs");
        testkit::http::send_json(self.http.get(format!("{base}/payments/{order_id}"))).await
    }

    /// What the order side emitted, by reading its topics from the start.
    pub async fn terminal_events(&self, order_id: &str, quiet: Duration) -> Vec<String> {
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

    pub async fn stop(self) {
        for stop in &self.stops {
            stop.trigger();
        }
        for database in &self.databases {
            testkit::drop_database(database).await;
        }
    }
}

pub fn items(product: &str, quantity: i64) -> Value {
    json!({"items": [{"product_id": product, "quantity": quantity}]})
}
