//! The whole saga with every service running for real: product, order, payment and
//! notification services, Postgres, NATS and the Kafka-API broker.

mod common;

use std::time::Duration;

use common::{Services, items, start_with};
use contracts::events::kinds;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn a_paid_order_is_confirmed_and_keeps_its_stock() {
    let stack = start_with("60s", Services::WholeSaga).await;
    let user = Uuid::now_v7();
    let product = stack.product(1250, 5).await;
    let (status, order) = stack.order(user, items(&product, 2), None).await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_str().expect("id").to_owned();

    let confirmed = stack.wait_for_status(user, &id, "CONFIRMED").await;
    assert!(confirmed.get("cancel_reason").is_none(), "{confirmed}");
    assert_eq!(stack.stock(&product).await, 3, "the stock stays taken");
    assert_eq!(
        stack.terminal_events(&id, Duration::from_secs(3)).await,
        [kinds::ORDER_CONFIRMED]
    );
    wait_for_notifications(
        &stack,
        &id,
        &[
            kinds::ORDER_CREATED,
            kinds::PAYMENT_SUCCEEDED,
            kinds::ORDER_CONFIRMED,
        ],
    )
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn a_declined_card_cancels_the_order_and_returns_the_stock() {
    let stack = start_with("60s", Services::WholeSaga).await;
    let user = Uuid::now_v7();
    let product = stack.product(800, 4).await;
    let body = json!({"items": [{"product_id": product, "quantity": 3}], "card_token": "tok_decline_insufficient_funds"});
    let (_, order) = stack.order(user, body, None).await;
    let id = order["id"].as_str().expect("id").to_owned();
    assert_eq!(stack.stock(&product).await, 1);

    let cancelled = stack.wait_for_status(user, &id, "CANCELLED").await;
    assert_eq!(cancelled["cancel_reason"], "payment failed: card declined");
    assert_eq!(stack.stock(&product).await, 4, "stock returned");
    wait_for_notifications(
        &stack,
        &id,
        &[
            kinds::ORDER_CREATED,
            kinds::PAYMENT_FAILED,
            kinds::ORDER_CANCELLED,
        ],
    )
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn an_order_over_the_payment_limit_is_cancelled() {
    let stack = start_with("60s", Services::WholeSaga).await;
    let user = Uuid::now_v7();
    // 2 x 600,000 cents is over the default limit of 1,000,000.
    let product = stack.product(600_000, 2).await;
    let (_, order) = stack.order(user, items(&product, 2), None).await;
    let id = order["id"].as_str().expect("id").to_owned();
    let cancelled = stack.wait_for_status(user, &id, "CANCELLED").await;
    assert!(
        cancelled["cancel_reason"]
            .as_str()
            .is_some_and(|r| r.contains("limit")),
        "{cancelled}"
    );
    assert_eq!(stack.stock(&product).await, 2);
    stack.stop().await;
}

/// payment-service was down past the order's payment deadline: the sweep cancelled the
/// order and returned its stock. When payment-service comes back it reads both the
/// order_created and the order_cancelled, in either order, and the customer ends up not
/// charged: the payment is voided (cancellation read first) or refunded (charge first).
#[tokio::test]
async fn an_order_cancelled_while_payments_were_down_is_not_charged_in_the_end() {
    let mut stack = start_with("1s", Services::OrderSide).await;
    let user = Uuid::now_v7();
    let product = stack.product(300, 5).await;
    let (status, order) = stack.order(user, items(&product, 2), None).await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_str().expect("id").to_owned();
    stack.wait_for_status(user, &id, "CANCELLED").await;
    assert_eq!(stack.stock(&product).await, 5, "stock returned");

    stack.start_payments().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let payment = loop {
        let (status, payment) = stack.payment(&id).await;
        if status == 200
            && ["VOIDED", "REFUNDED"].contains(&payment["status"].as_str().unwrap_or(""))
        {
            break payment;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the payment stayed {status} {payment}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        payment["reason"]
            .as_str()
            .is_some_and(|r| r.contains("payment not received")),
        "the cancellation's reason: {payment}"
    );
    // A late payment_success, if the charge came first, leaves the order cancelled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.get(user, &id).await.1["status"], "CANCELLED");
    assert_eq!(stack.stock(&product).await, 5);
    stack.stop().await;
}

/// Every event of the order produced one notification, each sent.
async fn wait_for_notifications(stack: &common::Stack, order_id: &str, expected: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = stack.notifications_for(order_id).await;
        let mut kinds: Vec<_> = rows.iter().map(|(kind, _)| kind.as_str()).collect();
        kinds.sort_unstable();
        let mut want = expected.to_vec();
        want.sort_unstable();
        if kinds == want && rows.iter().all(|(_, status)| status == "SENT") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "notifications: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
