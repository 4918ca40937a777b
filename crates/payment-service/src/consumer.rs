//! The saga's step 2: each `order_created` becomes one payment and one payment event, in one
//! transaction with the inbox record, so a redelivery changes nothing.

use contracts::events::{OrderCreated, PaymentFailed, PaymentSucceeded, kinds, sources};
use contracts::topics::Topics;
use mesh::kafka::HandleError;
use mesh::{Event, inbox, outbox};
use prometheus::{IntCounterVec, Opts};
use sqlx::PgPool;
use uuid::Uuid;

use crate::charge::decide;
use crate::store::{self, PaymentStatus};

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
                "Payments recorded, by status: succeeded, failed.",
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

    /// Handles one `order_created` event.
    pub(crate) async fn handle(&self, event: &Event) -> Result<(), HandleError> {
        if event.kind != kinds::ORDER_CREATED {
            return Err(HandleError::Permanent(format!(
                "unexpected event type {:?} (expected {})",
                event.kind,
                kinds::ORDER_CREATED
            )));
        }
        let order: OrderCreated = event.data_as()?;

        let mut tx = self.pool.begin().await?;
        if !inbox::record_once(&mut tx, CONSUMER, event.id).await? {
            tracing::debug!(event_id = %event.id, order_id = %order.order_id, "Event already handled.");
            return Ok(());
        }

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
        let emitted = emitted?.with_traceparent(event.traceparent.clone());
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
