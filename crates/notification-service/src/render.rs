//! What each saga event tells the customer. Pure: no I/O, tested on its own.

use contracts::events::{
    OrderCancelled, OrderConfirmed, OrderCreated, PaymentFailed, PaymentSucceeded, kinds,
};
use mesh::Event;
use serde::de::DeserializeOwned;

/// A notification's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
    /// Whom it is for, when the event names a user (its id).
    pub user_hint: Option<String>,
}

/// The notification for `event`, or `None` for an event that has none (an unknown type,
/// or data that is not the type's payload).
pub fn render(event: &Event) -> Option<Rendered> {
    match event.kind.as_str() {
        kinds::ORDER_CREATED => {
            let order: OrderCreated = data(event)?;
            Some(Rendered {
                subject: format!("Order {} received", order.order_id),
                body: format!(
                    "We received your order {} ({} item{}, {}). We will let you know once the payment is through.",
                    order.order_id,
                    order.items.len(),
                    if order.items.len() == 1 { "" } else { "s" },
                    money(order.total_cents),
                ),
                user_hint: Some(order.user_id.to_string()),
            })
        }
        kinds::PAYMENT_SUCCEEDED => {
            let payment: PaymentSucceeded = data(event)?;
            Some(Rendered {
                subject: format!("Payment received for order {}", payment.order_id),
                body: format!(
                    "We received your payment of {} for order {}.",
                    money(payment.amount_cents),
                    payment.order_id
                ),
                user_hint: None,
            })
        }
        kinds::PAYMENT_FAILED => {
            let payment: PaymentFailed = data(event)?;
            Some(Rendered {
                subject: format!("Payment failed for order {}", payment.order_id),
                body: format!(
                    "Your payment of {} for order {} did not go through: {}.",
                    money(payment.amount_cents),
                    payment.order_id,
                    payment.reason
                ),
                user_hint: None,
            })
        }
        kinds::ORDER_CONFIRMED => {
            let order: OrderConfirmed = data(event)?;
            Some(Rendered {
                subject: format!("Order {} confirmed", order.order_id),
                body: format!(
                    "Your order {} ({}) is confirmed and on its way to being shipped.",
                    order.order_id,
                    money(order.total_cents)
                ),
                user_hint: Some(order.user_id.to_string()),
            })
        }
        kinds::ORDER_CANCELLED => {
            let order: OrderCancelled = data(event)?;
            Some(Rendered {
                subject: format!("Order {} cancelled", order.order_id),
                body: format!(
                    "Your order {} was cancelled: {}. Nothing was charged for it.",
                    order.order_id, order.reason
                ),
                user_hint: Some(order.user_id.to_string()),
            })
        }
        _ => None,
    }
}

fn data<T: DeserializeOwned>(event: &Event) -> Option<T> {
    match event.data_as() {
        Ok(data) => Some(data),
        Err(error) => {
            tracing::warn!(event_id = %event.id, kind = %event.kind, %error, "Event data is not its type's payload.");
            None
        }
    }
}

/// Integer cents as an amount: `1250` → `12.50`.
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use contracts::events::{NotificationFailed, OrderLine, sources};
    use uuid::Uuid;

    fn event<T: serde::Serialize>(kind: &str, data: &T) -> Event {
        Event::new(kind, sources::ORDER_SERVICE, "k", data).expect("serialises")
    }

    #[test]
    fn amounts_are_written_with_two_decimals() {
        assert_eq!(money(1250), "12.50");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(0), "0.00");
        assert_eq!(money(100_000_000), "1000000.00");
        assert_eq!(money(-1250), "-12.50");
    }

    #[test]
    fn every_saga_event_has_a_notification() {
        let order_id = Uuid::now_v7();
        let user_id = Uuid::now_v7();
        let created = render(&event(
            kinds::ORDER_CREATED,
            &OrderCreated {
                order_id,
                user_id,
                total_cents: 2_500,
                items: vec![OrderLine {
                    product_id: Uuid::now_v7(),
                    quantity: 2,
                    unit_price_cents: 1_250,
                }],
                card_token: "tok_visa".into(),
                created_at: Utc::now(),
            },
        ))
        .expect("created");
        assert!(created.subject.contains(&order_id.to_string()));
        assert!(created.body.contains("25.00"), "{}", created.body);
        assert!(created.body.contains("1 item,"), "{}", created.body);
        assert_eq!(created.user_hint, Some(user_id.to_string()));

        let paid = render(&event(
            kinds::PAYMENT_SUCCEEDED,
            &PaymentSucceeded {
                order_id,
                payment_id: Uuid::now_v7(),
                amount_cents: 2_500,
            },
        ))
        .expect("paid");
        assert!(paid.subject.starts_with("Payment received"));
        assert_eq!(paid.user_hint, None);

        let failed = render(&event(
            kinds::PAYMENT_FAILED,
            &PaymentFailed {
                order_id,
                payment_id: Uuid::now_v7(),
                amount_cents: 2_500,
                reason: "card declined".into(),
            },
        ))
        .expect("failed");
        assert!(failed.body.contains("card declined"));

        let confirmed = render(&event(
            kinds::ORDER_CONFIRMED,
            &OrderConfirmed {
                order_id,
                user_id,
                total_cents: 2_500,
            },
        ))
        .expect("confirmed");
        assert!(confirmed.subject.ends_with("confirmed"));

        let cancelled = render(&event(
            kinds::ORDER_CANCELLED,
            &OrderCancelled {
                order_id,
                user_id,
                reason: "payment failed: card declined".into(),
            },
        ))
        .expect("cancelled");
        assert!(cancelled.body.contains("payment failed: card declined"));
        assert_eq!(cancelled.user_hint, Some(user_id.to_string()));
    }

    #[test]
    fn unknown_types_and_wrong_data_have_none() {
        let dead_letter = event(
            kinds::NOTIFICATION_FAILED,
            &NotificationFailed {
                event_id: Uuid::now_v7(),
                event_type: kinds::ORDER_CREATED.into(),
                key: "k".into(),
                attempts: 5,
                last_error: "down".into(),
            },
        );
        assert_eq!(render(&dead_letter), None, "dead letters are not notified");
        assert_eq!(render(&event("shopmesh.unknown", &1)), None);
        assert_eq!(
            render(&event(kinds::ORDER_CREATED, &serde_json::json!({"x": 1}))),
            None
        );
    }
}
