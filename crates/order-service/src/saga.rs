//! The order side of the saga: payment results in, timeouts swept.

use std::time::Duration;

use contracts::events::{PaymentFailed, PaymentSucceeded, kinds};
use mesh::kafka::{HandleError, Received};
use tokio_util::sync::CancellationToken;

use crate::orders::{Orders, PLACEMENT_GRACE, PaymentOutcome};

/// Handles one `payment_success` or `payment_failed` event.
pub async fn handle_payment(orders: &Orders, received: Received) -> Result<(), HandleError> {
    let event = received.event;
    let (order_id, outcome) = match event.kind.as_str() {
        kinds::PAYMENT_SUCCEEDED => {
            let paid: PaymentSucceeded = event.data_as()?;
            (paid.order_id, PaymentOutcome::Paid)
        }
        kinds::PAYMENT_FAILED => {
            let failed: PaymentFailed = event.data_as()?;
            (failed.order_id, PaymentOutcome::Declined(failed.reason))
        }
        other => {
            return Err(HandleError::Permanent(format!(
                "unexpected event type {other}"
            )));
        }
    };
    orders
        .settle(
            event.id,
            order_id,
            outcome,
            // Runs in the event's consumer span: what it emits continues from there.
            middleware::trace::traceparent_or(event.traceparent.clone()),
        )
        .await
}

/// Every `interval`: cancels orders whose payment did not come in time, releases the stock
/// of cancelled orders whose release did not go through, and of placements that never
/// became orders.
pub async fn sweep_expired(
    orders: Orders,
    timeout: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        if !kit::shutdown::pause(&stop, interval).await {
            return;
        }
        if let Err(error) = orders.cancel_expired(timeout).await {
            tracing::warn!(%error, "Timeout sweep failed; retrying next round.");
        }
        if let Err(error) = orders.release_cancelled_left().await {
            tracing::warn!(%error, "Release sweep failed; retrying next round.");
        }
        if let Err(error) = orders.release_left_behind(PLACEMENT_GRACE).await {
            tracing::warn!(%error, "Placement sweep failed; retrying next round.");
        }
    }
}
