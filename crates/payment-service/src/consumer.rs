//! The saga's step 2: each `order_created` becomes one payment and one payment event, in one
//! transaction with the inbox record, so a redelivery changes nothing.
//!
//! Each `order_cancelled` is applied to the order's payment the same way: a charge is
//! refunded, and an order not charged yet never will be ([`store::cancel`]). Most
//! cancellations follow a failed payment and change nothing; the others come from the
//! order-service sweep, which cancels orders whose payment result took too long.

use contracts::events::{
    OrderCancelled, OrderCreated, PaymentFailed, PaymentSucceeded, kinds, sources,
};
use contracts::topics::Topics;
use mesh::kafka::HandleError;
use mesh::{Event, inbox, outbox};
use prometheus::{IntCounterVec, Opts};
use sqlx::PgPool;
use uuid::Uuid;

use crate::charge::decide;
use crate::store::{self, Cancelled, PaymentStatus};

/// The inbox's consumer name, and the consumer group's (under the topic prefix).
pub const CONSUMER: &str = "payment-service";

/// Charges orders.
#[derive(Clone)]
pub(crate) struct Payments {
    pool: PgPool,
    topics: Topics,
    limit_cents: i64,
    outcomes: IntCounterVec,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments")
            .field("topics", &self.topics)
            .field("limit_cents", &self.limit_cents)
            .finish_non_exhaustive()
    }
}

impl Payments {
    pub(crate) fn new(
        pool: PgPool,
        topics: Topics,
        limit_cents: i64,
        metrics: &kit::Metrics,
    ) -> Result<Self, prometheus::Error> {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "payments_total",
                "Payments recorded, by status: succeeded, failed; and refunded or voided by an order's cancellation.",
            ),
            &["status"],
        )?;
        Ok(Self {
            pool,
            topics,
            limit_cents,
            outcomes: metrics.register(outcomes),
        })
    }

    /// Handles one `order_created` or `order_cancelled` event.
    pub(crate) async fn handle(&self, event: &Event) -> Result<(), HandleError> {
        match event.kind.as_str() {
            kinds::ORDER_CREATED => self.charge(event).await,
            kinds::ORDER_CANCELLED => self.cancel(event).await,
            other => Err(HandleError::Permanent(format!(
                "unexpected event type {other:?} (expected {} or {})",
                kinds::ORDER_CREATED,
                kinds::ORDER_CANCELLED
            ))),
        }
    }

    /// Returns or voids the payment of a cancelled order.
    async fn cancel(&self, event: &Event) -> Result<(), HandleError> {
        let order: OrderCancelled = event.data_as()?;
        let Some(mut tx) = inbox::begin_once(&self.pool, CONSUMER, event.id).await? else {
            return Ok(());
        };
        let cancelled =
            store::cancel(&mut tx, Uuid::now_v7(), order.order_id, &order.reason).await?;
        tx.commit().await?;
        let order_id = order.order_id;
        match cancelled {
            Cancelled::Refunded(amount_cents) => {
                self.outcomes.with_label_values(&["refunded"]).inc();
                tracing::warn!(%order_id, amount_cents, reason = %order.reason, "Order cancelled after it was charged; payment refunded.");
            }
            Cancelled::Voided => {
                self.outcomes.with_label_values(&["voided"]).inc();
                tracing::info!(%order_id, reason = %order.reason, "Order cancelled before it was charged; it never will be.");
            }
            Cancelled::Unchanged => {
                tracing::debug!(%order_id, "Order cancelled; its payment needs nothing.");
            }
        }
        Ok(())
    }

    /// Charges the order of an `order_created` event.
    async fn charge(&self, event: &Event) -> Result<(), HandleError> {
        let order: OrderCreated = event.data_as()?;
        let Some(mut tx) = inbox::begin_once(&self.pool, CONSUMER, event.id).await? else {
            return Ok(());
        };

        let reason = decide(&order.card_token, order.total_cents, self.limit_cents).err();
        let status = if reason.is_none() {
            PaymentStatus::Succeeded
        } else {
            PaymentStatus::Failed
        };
        let payment_id = Uuid::now_v7();
        let inserted = store::insert(
            &mut tx,
            payment_id,
            order.order_id,
            order.total_cents,
            status,
            reason.as_deref(),
        )
        .await?;
        if !inserted {
            // Another order_created for an order that already has its payment: the inbox
            // row is kept (this event is handled), nothing is charged or emitted again.
            tx.commit().await?;
            tracing::info!(event_id = %event.id, order_id = %order.order_id, "Order already has a payment; nothing emitted.");
            return Ok(());
        }

        let key = order.order_id.to_string();
        let (topic, emitted) = match &reason {
            None => (
                &self.topics.payment_success,
                Event::new(
                    kinds::PAYMENT_SUCCEEDED,
                    sources::PAYMENT_SERVICE,
                    key,
                    &PaymentSucceeded {
                        order_id: order.order_id,
                        payment_id,
                        amount_cents: order.total_cents,
                    },
                ),
            ),
            Some(reason) => (
                &self.topics.payment_failed,
                Event::new(
                    kinds::PAYMENT_FAILED,
                    sources::PAYMENT_SERVICE,
                    key,
                    &PaymentFailed {
                        order_id: order.order_id,
                        payment_id,
                        amount_cents: order.total_cents,
                        reason: reason.clone(),
                    },
                ),
            ),
        };
        // Handled in the event's consumer span: payment_* continues the trace from here.
        let emitted =
            emitted?.with_traceparent(middleware::trace::traceparent_or(event.traceparent.clone()));
        outbox::enqueue(&mut tx, topic, &emitted).await?;
        tx.commit().await?;

        self.outcomes.with_label_values(&[status.label()]).inc();
        tracing::info!(
            order_id = %order.order_id,
            %payment_id,
            amount_cents = order.total_cents,
            status = status.as_str(),
            reason = reason.as_deref().unwrap_or(""),
            "Payment recorded."
        );
        Ok(())
    }
}
