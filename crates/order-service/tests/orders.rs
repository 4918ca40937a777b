//! order-service with the real product-service, Postgres, NATS and the Kafka-API broker.
//! Payment results are published by the test itself here; `saga.rs` runs the whole saga.

mod common;

use std::time::Duration;

use common::{Stack, items, start};
use contracts::events::{OrderCreated, PaymentFailed, PaymentSucceeded, kinds, sources};
use mesh::Event;
use mesh::kafka::{EventConsumer, EventProducer};
use serde_json::json;
use uuid::Uuid;

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

/// A key in any language is a key; one that cannot be read is refused, never taken for no
/// key (the retry would place a second order).
#[tokio::test]
async fn idempotency_keys_are_utf8_text_and_unreadable_ones_are_refused() {
    let stack = start("60s").await;
    let user = Uuid::now_v7();
    let product = stack.product(100, 10).await;
    let post = |key: reqwest::header::HeaderValue| {
        stack
            .http
            .post(format!("{}/orders", stack.orders))
            .bearer_auth(common::token_for(user))
            .header("idempotency-key", key)
            .json(&items(&product, 2))
    };
    let utf8 = || reqwest::header::HeaderValue::from_bytes("clé-1 ☕".as_bytes()).expect("value");
    let (first_status, first) = testkit::http::send_json(post(utf8())).await;
    let (second_status, second) = testkit::http::send_json(post(utf8())).await;
    assert_eq!(
        (first_status, second_status),
        (201, 201),
        "{first} {second}"
    );
    assert_eq!(first["id"], second["id"]);
    assert_eq!(stack.stock(&product).await, 8);

    let latin1 = reqwest::header::HeaderValue::from_bytes(b"cl\xe9-1").expect("value");
    let (status, body) = testkit::http::send_json(post(latin1)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_fields");
    assert_eq!(stack.stock(&product).await, 8, "nothing reserved");
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

/// Rewinds a consumer group to the start of `topic`, as if the offsets after the effects
/// had never been committed (the crash window between a handler's commit and Kafka's).
fn rewind_group(kafka: &mesh::kafka::KafkaSettings, group: &str, topic: &str) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..contracts::topics::PARTITIONS {
        list.add_partition_offset(topic, partition, Offset::Offset(0))
            .expect("partition");
    }
    consumer.commit(&list, CommitMode::Sync).expect("rewound");
}

/// The group's committed position summed over the topic's partitions.
fn committed_total(kafka: &mesh::kafka::KafkaSettings, group: &str, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..contracts::topics::PARTITIONS {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn a_crash_between_the_effect_and_the_offset_commit_changes_nothing() {
    let mut stack = start("60s").await;
    let user = Uuid::now_v7();
    let product = stack.product(500, 10).await;
    let (_, order) = stack.order(user, items(&product, 1), None).await;
    let order_id: Uuid = order["id"].as_str().expect("id").parse().expect("uuid");
    let success = Event::new(
        kinds::PAYMENT_SUCCEEDED,
        sources::PAYMENT_SERVICE,
        order_id.to_string(),
        &PaymentSucceeded {
            order_id,
            payment_id: Uuid::now_v7(),
            amount_cents: 500,
        },
    )
    .expect("event");
    publish(&stack, &stack.topics.payment_success, &success).await;
    let before = stack
        .wait_for_status(user, &order_id.to_string(), "CONFIRMED")
        .await;

    // The effect is durable; now lose the offset commit and start again.
    stack.stops[0].trigger();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kafka = stack.kafka.clone();
    let group = stack.topics.group("order-service");
    let topic = stack.topics.payment_success.clone();
    let rewound = tokio::task::spawn_blocking({
        let (kafka, group, topic) = (kafka.clone(), group.clone(), topic.clone());
        move || {
            rewind_group(&kafka, &group, &topic);
            committed_total(&kafka, &group, &topic)
        }
    })
    .await
    .expect("joined");
    assert_eq!(rewound, 0, "the group starts over");
    stack.restart_orders().await;

    // The event is delivered again (the group's position moves past it once more)...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (kafka, group, topic) = (kafka.clone(), group.clone(), topic.clone());
        let position = tokio::task::spawn_blocking(move || committed_total(&kafka, &group, &topic))
            .await
            .expect("joined");
        if position >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event was not redelivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...and meets the inbox: no second transition, no second event.
    let (_, after) = stack.get(user, &order_id.to_string()).await;
    assert_eq!(after["status"], "CONFIRMED");
    assert_eq!(
        after["updated_at"], before["updated_at"],
        "the order was not touched again"
    );
    assert_eq!(
        stack
            .terminal_events(&order_id.to_string(), Duration::from_secs(3))
            .await,
        [kinds::ORDER_CONFIRMED]
    );
    assert_eq!(stack.stock(&product).await, 9);
    stack.stop().await;
}

#[tokio::test]
async fn an_order_whose_row_cannot_be_written_gives_its_stock_back_and_spends_its_key() {
    use sqlx::Executor;
    let stack = start("60s").await;
    let user = Uuid::now_v7();
    let product = stack.product(100, 10).await;
    let db = stack.order_pool().await;
    // Every new order line is refused from now on: the order's transaction fails after the
    // stock was reserved.
    (&db)
        .execute("ALTER TABLE order_items ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
        .await
        .expect("constraint");

    let (status, body) = stack.order(user, items(&product, 3), Some("spent")).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["message"], "internal error", "nothing leaks");
    testkit::eventually("the reservation was given back", || async {
        stack.stock(&product).await == 10
    })
    .await;

    // The same key again: its reservation was undone for good, and the answer says so.
    let (status, body) = stack.order(user, items(&product, 3), Some("spent")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_spent");
    assert_eq!(stack.stock(&product).await, 10);

    (&db)
        .execute("ALTER TABLE order_items DROP CONSTRAINT refuse_all")
        .await
        .expect("constraint dropped");
    let (status, body) = stack.order(user, items(&product, 3), Some("fresh")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(stack.stock(&product).await, 7);
    db.close().await;
    stack.stop().await;
}

#[tokio::test]
async fn an_order_whose_caller_gives_up_half_way_is_still_written() {
    use sqlx::Executor;
    let stack = start("60s").await;
    let user = Uuid::now_v7();
    let product = stack.product(100, 10).await;
    // Holds every new order row back (reads go on), so the caller's deadline passes
    // between the reservation and the row.
    let db = stack.order_pool().await;
    let mut held = db.begin().await.expect("transaction");
    held.execute("LOCK TABLE orders IN EXCLUSIVE MODE")
        .await
        .expect("lock");

    let (status, body) = testkit::http::send_json(
        stack
            .http
            .post(format!("{}/orders", stack.orders))
            .bearer_auth(common::token_for(user))
            .header("mesh-timeout-ms", "1500")
            .json(&items(&product, 2)),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(stack.stock(&product).await, 8, "the stock was reserved");

    held.rollback().await.expect("lock released");
    testkit::eventually("the order was written after all", || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE user_id = $1")
            .bind(user)
            .fetch_one(&db)
            .await
            .expect("count");
        count == 1
    })
    .await;
    assert_eq!(stack.stock(&product).await, 8, "held by the order, once");
    db.close().await;
    stack.stop().await;
}

#[tokio::test]
async fn an_expired_order_that_cannot_be_cancelled_holds_up_no_other() {
    use sqlx::Executor;
    let stack = start("1s").await;
    let user = Uuid::now_v7();
    let product = stack.product(100, 100).await;
    // Any change to an order of 3 units (300 cents) fails, from before it exists.
    let db = stack.order_pool().await;
    (&db)
        .execute(
            "CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'this order is poisoned'; END $$;
         CREATE TRIGGER poisoned BEFORE UPDATE ON orders FOR EACH ROW
             WHEN (OLD.total_cents = 300) EXECUTE FUNCTION refuse_change();",
        )
        .await
        .expect("trigger");
    // More stuck orders than the sweep takes at once, all older than the healthy one.
    let mut poisoned = Vec::new();
    for _ in 0..21 {
        let (status, order) = stack.order(user, items(&product, 3), None).await;
        assert_eq!(status, 201, "{order}");
        poisoned.push(order["id"].as_str().expect("id").to_owned());
    }
    let (_, healthy) = stack.order(user, items(&product, 2), None).await;
    let healthy = healthy["id"].as_str().expect("id").to_owned();

    stack.wait_for_status(user, &healthy, "CANCELLED").await;
    for id in &poisoned {
        let (_, order) = stack.get(user, id).await;
        assert_eq!(order["status"], "PENDING");
    }
    assert_eq!(
        stack.stock(&product).await,
        100 - 21 * 3,
        "the cancelled order's stock came back; the stuck ones keep their own"
    );
    db.close().await;
    stack.stop().await;
}

/// product-service cannot release stock (its reservations refuse every change). The sweep
/// still cancels the expired order, for good: a payment that comes late finds it
/// CANCELLED, not PENDING again with its stock back on sale. Once releases work again the
/// sweep gives the stock back, once.
#[tokio::test]
async fn an_order_cancelled_while_its_stock_cannot_be_released_stays_cancelled() {
    use sqlx::Executor;
    let stack = start("1s").await;
    let user = Uuid::now_v7();
    let product = stack.product(100, 4).await;
    let (status, order) = stack.order(user, items(&product, 3), None).await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_str().expect("id").to_owned();
    let order_id: Uuid = id.parse().expect("uuid");

    let products_db = sqlx::PgPool::connect(&stack.databases[0])
        .await
        .expect("product database");
    (&products_db)
        .execute(
            "CREATE FUNCTION refuse_release() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'releases are down'; END $$;
         CREATE TRIGGER no_release BEFORE UPDATE ON reservations
             FOR EACH ROW EXECUTE FUNCTION refuse_release();",
        )
        .await
        .expect("trigger");

    stack.wait_for_status(user, &id, "CANCELLED").await;
    let orders_db = stack.order_pool().await;
    let released = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT stock_released_at IS NOT NULL FROM orders WHERE id = $1",
        )
        .bind(order_id)
        .fetch_one(&orders_db)
        .await
        .expect("order row")
    };
    assert!(!released().await, "the release could not have happened");
    assert_eq!(stack.stock(&product).await, 1, "still held");

    // The payment comes in late.
    let success = Event::new(
        kinds::PAYMENT_SUCCEEDED,
        sources::PAYMENT_SERVICE,
        id.clone(),
        &PaymentSucceeded {
            order_id,
            payment_id: Uuid::now_v7(),
            amount_cents: 300,
        },
    )
    .expect("event");
    publish(&stack, &stack.topics.payment_success, &success).await;
    testkit::eventually("the late payment was handled", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM mesh_inbox WHERE event_id = $1")
            .bind(success.id)
            .fetch_one(&orders_db)
            .await
            .expect("inbox")
            == 1
    })
    .await;
    assert_eq!(stack.get(user, &id).await.1["status"], "CANCELLED");

    (&products_db)
        .execute("DROP TRIGGER no_release ON reservations")
        .await
        .expect("releases work again");
    // The sweep's next rounds release it (every 200 ms); generous for a loaded machine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !released().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweep never released the stock"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stack.stock(&product).await, 4, "given back once");
    assert_eq!(
        stack.terminal_events(&id, Duration::from_secs(3)).await,
        [kinds::ORDER_CANCELLED]
    );
    products_db.close().await;
    orders_db.close().await;
    stack.stop().await;
}

async fn placement_count(db: &sqlx::PgPool, condition: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM placements WHERE {condition}"
    ))
    .fetch_one(db)
    .await
    .expect("count")
}

#[tokio::test]
async fn stock_held_by_a_placement_that_never_became_an_order_is_released_by_the_sweep() {
    let stack = start("60s").await;
    let user = Uuid::now_v7();
    let product = stack.product(100, 10).await;
    let (status, order) = stack.order(user, items(&product, 4), Some("crashed")).await;
    assert_eq!(status, 201, "{order}");
    let id = Uuid::parse_str(order["id"].as_str().expect("id")).expect("uuid");
    assert_eq!(stack.stock(&product).await, 6);
    let db = stack.order_pool().await;
    assert_eq!(
        placement_count(&db, "true").await,
        0,
        "a placed order leaves none"
    );

    // As if the process had died between the reservation and the order row, a while ago.
    for sql in [
        "DELETE FROM mesh_outbox WHERE event_key = $1::text",
        "DELETE FROM order_items WHERE order_id = $1",
        "DELETE FROM orders WHERE id = $1",
        "INSERT INTO placements (id, created_at) VALUES ($1, now() - interval '5 minutes')",
    ] {
        sqlx::query(sql)
            .bind(id)
            .execute(&db)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
    }

    testkit::eventually("the sweep released the stock", || async {
        stack.stock(&product).await == 10
    })
    .await;
    testkit::eventually("the release was recorded", || async {
        placement_count(&db, "released_at IS NOT NULL").await == 1
    })
    .await;
    let (status, body) = stack.order(user, items(&product, 4), Some("crashed")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_spent");
    assert_eq!(stack.stock(&product).await, 10);
    db.close().await;
    stack.stop().await;
}

#[tokio::test]
async fn the_sweep_never_releases_the_stock_of_an_order_that_was_written() {
    let stack = start("60s").await;
    let user = Uuid::now_v7();
    let product = stack.product(100, 10).await;
    let (status, order) = stack.order(user, items(&product, 3), None).await;
    assert_eq!(status, 201, "{order}");
    let id = Uuid::parse_str(order["id"].as_str().expect("id")).expect("uuid");
    // A placement row the sweep finds old, for an order that exists: the order wins.
    let db = stack.order_pool().await;
    sqlx::query(
        "INSERT INTO placements (id, created_at) VALUES ($1, now() - interval '5 minutes')",
    )
    .bind(id)
    .execute(&db)
    .await
    .expect("placement");
    testkit::eventually("the sweep looked at it", || async {
        placement_count(&db, "true").await == 0
    })
    .await;
    assert_eq!(stack.stock(&product).await, 7, "the order keeps its stock");
    let (_, order) = stack.get(user, &id.to_string()).await;
    assert_eq!(order["status"], "PENDING");
    db.close().await;
    stack.stop().await;
}
