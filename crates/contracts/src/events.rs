//! The saga's event payloads (the `data` of each CloudEvent) and their `ce_type`s.
//!
//! Money is integer cents, ids are UUIDs, times RFC 3339, as in the REST contract.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `ce_type` of each event.
pub mod kinds {
    pub const ORDER_CREATED: &str = "shopmesh.order.created";
    pub const PAYMENT_SUCCEEDED: &str = "shopmesh.payment.succeeded";
    pub const PAYMENT_FAILED: &str = "shopmesh.payment.failed";
    pub const ORDER_CONFIRMED: &str = "shopmesh.order.confirmed";
    pub const ORDER_CANCELLED: &str = "shopmesh.order.cancelled";
    pub const NOTIFICATION_FAILED: &str = "shopmesh.notification.failed";
}

/// `ce_source` of each emitter.
pub mod sources {
    pub const ORDER_SERVICE: &str = "/order-service";
    pub const PAYMENT_SERVICE: &str = "/payment-service";
    pub const NOTIFICATION_SERVICE: &str = "/notification-service";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// `order_created`, keyed by order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub total_cents: i64,
    pub items: Vec<OrderLine>,
    /// The simulated card (DESIGN.md: `tok_visa` succeeds, `tok_decline*` fails).
    pub card_token: String,
    pub created_at: DateTime<Utc>,
}

/// `payment_success`, keyed by order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSucceeded {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub amount_cents: i64,
}

/// `payment_failed`, keyed by order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub amount_cents: i64,
    pub reason: String,
}

/// `order_confirmed`, keyed by order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub total_cents: i64,
}

/// `order_cancelled`, keyed by order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub reason: String,
}

/// `notification_failed`: a notification that kept failing, parked as a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationFailed {
    /// The `ce_id` of the event the notification was for.
    pub event_id: Uuid,
    pub event_type: String,
    pub key: String,
    pub attempts: i32,
    pub last_error: String,
}
