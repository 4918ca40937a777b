//! Placing orders and moving them through the saga: the logic REST, gRPC and the
//! consumers share.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh::inbox;
use mesh::kafka::HandleError;
use mesh::rpc::Deadline;
use uuid::Uuid;

use crate::placements;
use crate::products::{Products, StockError};
use crate::store::{Item, Order, Status, Store};

/// Namespace of order ids derived from an `Idempotency-Key` (UUID v5).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x8f1c_6c2e_6a4b_4f0e_9b1d_5a3e_2c7d_1e90);
pub const DEFAULT_CARD_TOKEN: &str = "tok_visa";
pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i64 = 1000;
/// How long a placement may go without its order row before the sweep gives it up as
/// left behind by a process that died half-way. Giving up a placement that was merely slow
/// is safe (its order is then refused), just unkind.
pub const PLACEMENT_GRACE: Duration = Duration::from_secs(60);
/// Placements the sweep releases per round.
const SWEEP_BATCH: i64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Stock(#[from] StockError),
    #[error("order database: {0}")]
    Database(#[from] sqlx::Error),
    /// The service is shutting down under the order being placed.
    #[error("order-service is shutting down")]
    ShuttingDown,
    /// An earlier placement of the same order id (the same Idempotency-Key) failed and was
    /// given up; its stock is released, so the key cannot place the order any more.
    #[error("the placement of this order was given up")]
    KeySpent,
}

/// What the payment decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    Paid,
    Declined(String),
}

/// An order between its validation and its row.
struct PendingOrder {
    order_id: Uuid,
    user_id: Uuid,
    lines: Vec<(Uuid, i64)>,
    card_token: String,
    traceparent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Orders {
    pub store: Store,
    pub products: Products,
}

/// Merges repeated products and checks quantities.
pub fn normalise_lines(lines: &[(Uuid, i64)]) -> Result<Vec<(Uuid, i64)>, String> {
    if lines.is_empty() {
        return Err("items must not be empty".into());
    }
    let mut merged = BTreeMap::<Uuid, i64>::new();
    for (product_id, quantity) in lines {
        if !(1..=MAX_QUANTITY).contains(quantity) {
            return Err(format!(
                "quantity of {product_id} must be between 1 and {MAX_QUANTITY}"
            ));
        }
        *merged.entry(*product_id).or_default() += quantity;
    }
    if merged.len() > MAX_LINES {
        return Err(format!("at most {MAX_LINES} different products per order"));
    }
    if let Some((product_id, _)) = merged.iter().find(|(_, total)| **total > MAX_QUANTITY) {
        return Err(format!(
            "the lines of {product_id} add up to more than {MAX_QUANTITY}"
        ));
    }
    Ok(merged.into_iter().collect())
}

/// The total in cents; `None` if it does not fit in an `i64`.
pub fn order_total(items: &[Item]) -> Option<i64> {
    items.iter().try_fold(0_i64, |total, item| {
        total.checked_add(item.quantity.checked_mul(item.unit_price_cents)?)
    })
}

impl Orders {
    /// Reserves the stock, then writes the `PENDING` order and its `order_created` event.
    ///
    /// The reservation id is the order id, and with an idempotency key the order id is
    /// derived from it, so a retried request reserves once and returns the same order.
    pub async fn place(
        &self,
        user_id: Uuid,
        lines: &[(Uuid, i64)],
        card_token: Option<String>,
        idempotency_key: Option<&str>,
        traceparent: Option<String>,
    ) -> Result<Order, PlaceError> {
        let lines = normalise_lines(lines).map_err(PlaceError::Invalid)?;
        let card_token = card_token
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| DEFAULT_CARD_TOKEN.to_owned());
        if card_token.len() > 100 {
            return Err(PlaceError::Invalid(
                "card_token is longer than 100 characters".into(),
            ));
        }
        let order_id = match idempotency_key {
            Some(key) => Uuid::new_v5(
                &IDEMPOTENCY_NAMESPACE,
                format!("{user_id}:{key}").as_bytes(),
            ),
            None => Uuid::now_v7(),
        };
        if let Some(existing) = self.store.get(order_id).await? {
            return Ok(existing);
        }
        if !placements::begin(self.store.pool(), order_id).await? {
            return Err(PlaceError::KeySpent);
        }
        // The reservation and then the order row (or the reservation's release) run on a
        // task of their own, so they finish even if this caller gives up half-way (its
        // deadline passes, its client disconnects): dropped between the two, this future
        // would leave stock held by no order. The caller's deadline still bounds the
        // reservation call.
        let orders = self.clone();
        let deadline = Deadline::current();
        let placing = tokio::spawn(async move {
            let pending = PendingOrder {
                order_id,
                user_id,
                lines,
                card_token,
                traceparent,
            };
            orders.reserve_and_record(pending, deadline).await
        });
        match placing.await {
            Ok(placed) => placed,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(PlaceError::ShuttingDown),
        }
    }

    async fn reserve_and_record(
        &self,
        order: PendingOrder,
        deadline: Option<Deadline>,
    ) -> Result<Order, PlaceError> {
        let reservation = order.order_id.to_string();
        let reserve = self.products.reserve(&reservation, &order.lines);
        let reserved = match deadline {
            Some(deadline) => deadline.scope(reserve).await,
            None => reserve.await,
        };
        let items = match reserved {
            Ok(items) => items,
            Err(error) if error.may_have_reserved() => {
                // The answer was lost, not necessarily the reservation.
                self.abandon(order.order_id);
                return Err(error.into());
            }
            Err(error) => {
                // Refused: nothing was reserved, and the same key may try again.
                if let Err(forget) = placements::forget(self.store.pool(), order.order_id).await {
                    tracing::warn!(order_id = %order.order_id, %forget, "Refused placement not forgotten; the sweep releases nothing held.");
                }
                return Err(error.into());
            }
        };
        let Some(total_cents) = order_total(&items) else {
            self.abandon(order.order_id);
            return Err(PlaceError::Invalid("the order's total is too large".into()));
        };
        let inserted = self
            .store
            .insert_pending(
                order.order_id,
                order.user_id,
                &items,
                total_cents,
                &order.card_token,
                order.traceparent,
            )
            .await;
        match inserted {
            Ok(Some(order)) => {
                tracing::info!(order_id = %order.id, total_cents = order.total_cents, "Order placed.");
                Ok(order)
            }
            // Given up meanwhile (it took longer than the grace): whoever gave it up releases.
            Ok(None) => Err(PlaceError::KeySpent),
            Err(error) => {
                // Nothing refers to the reservation if the order was not written.
                self.abandon(order.order_id);
                Err(error.into())
            }
        }
    }

    /// Gives up a placement whose reservation no order refers to, and releases its stock,
    /// in the background (the caller gets its error at once). What fails here (the order
    /// database, product-service) the sweep picks up: the placement row stays until the
    /// release is confirmed.
    fn abandon(&self, order_id: Uuid) {
        let orders = self.clone();
        tokio::spawn(async move {
            match placements::abandon(orders.store.pool(), order_id).await {
                Ok(true) => orders.release_placement(order_id).await,
                Ok(false) => {
                    tracing::info!(%order_id, "A retry placed the order meanwhile; its stock stays.");
                }
                Err(error) => {
                    tracing::warn!(%order_id, %error, "Placement not given up now; the sweep will.");
                }
            }
        });
    }

    /// Releases the stock of an abandoned placement; records it once product-service
    /// confirms, or leaves it to the next sweep.
    async fn release_placement(&self, order_id: Uuid) {
        if let Err(error) = self.products.release(&order_id.to_string()).await {
            tracing::warn!(%order_id, %error, "Stock of an abandoned placement not released yet; the sweep retries.");
            return;
        }
        match placements::mark_released(self.store.pool(), order_id).await {
            Ok(()) => tracing::info!(%order_id, "Stock of an order not placed released."),
            // Releasing again is harmless: the sweep will, then record it.
            Err(error) => tracing::warn!(%order_id, %error, "Release not recorded."),
        }
    }

    /// Gives up placements left behind (older than `grace` without their order) and
    /// releases the stock of every abandoned one not released yet; returns how many.
    pub async fn release_left_behind(&self, grace: Duration) -> Result<usize, sqlx::Error> {
        let mut released = 0;
        for order_id in placements::left_behind(self.store.pool(), grace, SWEEP_BATCH).await? {
            if !placements::abandon(self.store.pool(), order_id).await? {
                continue;
            }
            self.release_placement(order_id).await;
            released += 1;
        }
        Ok(released)
    }

    /// The order if `user_id` owns it: another user's order does not exist for them.
    pub async fn get_for(
        &self,
        order_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<Order>, sqlx::Error> {
        Ok(self
            .store
            .get(order_id)
            .await?
            .filter(|order| order.user_id == user_id))
    }

    /// Applies a payment result once: confirm, or cancel and release the stock.
    pub async fn settle(
        &self,
        event_id: Uuid,
        order_id: Uuid,
        outcome: PaymentOutcome,
        traceparent: Option<String>,
    ) -> Result<(), HandleError> {
        let Some(mut tx) = inbox::begin_once(self.store.pool(), "order-service", event_id).await?
        else {
            return Ok(());
        };
        let mut cancelled = false;
        match self.store.lock_pending(&mut tx, order_id).await? {
            Err(None) => tracing::warn!(%order_id, "Payment result for an unknown order."),
            Err(Some(status)) => {
                if outcome == PaymentOutcome::Paid && status == Status::Cancelled {
                    tracing::warn!(%order_id, "Payment succeeded after the order was cancelled; payment-service refunds it when it reads the cancellation.");
                } else {
                    tracing::info!(%order_id, status = status.as_str(), "Payment result for a finished order ignored.");
                }
            }
            Ok((user_id, total_cents)) => match outcome {
                PaymentOutcome::Paid => {
                    self.store
                        .confirm(&mut tx, order_id, user_id, total_cents, traceparent)
                        .await?;
                    tracing::info!(%order_id, "Order confirmed.");
                }
                PaymentOutcome::Declined(reason) => {
                    let reason = format!("payment failed: {reason}");
                    self.store
                        .cancel(&mut tx, order_id, user_id, &reason, traceparent)
                        .await?;
                    tracing::info!(%order_id, %reason, "Order cancelled.");
                    cancelled = true;
                }
            },
        }
        tx.commit().await?;
        if cancelled {
            self.release_cancelled(order_id).await;
        }
        Ok(())
    }

    /// Gives a cancelled order's stock back and records it. The cancellation is committed
    /// first, so whatever happens here (product-service down, the answer lost, this process
    /// gone) the order stays CANCELLED: a late payment cannot confirm an order whose stock
    /// may be back on sale. What fails here the sweep retries ([`Self::release_cancelled_left`]);
    /// product-service releases a reservation once however often it is asked.
    async fn release_cancelled(&self, order_id: Uuid) -> bool {
        if let Err(error) = self.products.release(&order_id.to_string()).await {
            tracing::warn!(%order_id, %error, "Cancelled order's stock not released yet; the sweep retries.");
            return false;
        }
        match self.store.mark_stock_released(order_id).await {
            Ok(()) => true,
            Err(error) => {
                // Released, not recorded: the sweep asks again, which changes nothing.
                tracing::warn!(%order_id, %error, "Stock released but not recorded; the sweep retries.");
                false
            }
        }
    }

    /// Releases the stock of cancelled orders whose release did not go through before;
    /// returns how many were released.
    pub async fn release_cancelled_left(&self) -> Result<usize, sqlx::Error> {
        let mut released = 0;
        for order_id in self.store.stock_to_release(SWEEP_BATCH).await? {
            if self.release_cancelled(order_id).await {
                released += 1;
            }
        }
        Ok(released)
    }

    /// Cancels and compensates `PENDING` orders older than `timeout`; returns how many.
    ///
    /// Each order in a transaction of its own: one that fails to cancel does not undo the
    /// others, and no lock is held across more than one order.
    pub async fn cancel_expired(&self, timeout: Duration) -> Result<usize, sqlx::Error> {
        let mut cancelled = 0;
        // Orders that fail are passed over for the rest of the round, so however many are
        // stuck, the ones behind them are still reached.
        let mut stuck = Vec::new();
        loop {
            let expired = self.store.expired(timeout, SWEEP_BATCH, &stuck).await?;
            if expired.is_empty() {
                return Ok(cancelled);
            }
            for order_id in expired {
                match self.cancel_if_pending(order_id, timeout).await {
                    Ok(true) => cancelled += 1,
                    Ok(false) => stuck.push(order_id),
                    Err(error) => {
                        tracing::warn!(%order_id, %error, "Expired order not cancelled; the next sweep tries again.");
                        stuck.push(order_id);
                    }
                }
            }
        }
    }

    /// Cancels, if the order is still `PENDING` once locked (a payment result may have
    /// settled it meanwhile), then releases its stock.
    async fn cancel_if_pending(
        &self,
        order_id: Uuid,
        timeout: Duration,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.store.pool().begin().await?;
        let Ok((user_id, _)) = self.store.lock_pending(&mut tx, order_id).await? else {
            return Ok(false);
        };
        let reason = format!("payment not received within {timeout:?}");
        self.store
            .cancel(&mut tx, order_id, user_id, &reason, None)
            .await?;
        tx.commit().await?;
        tracing::info!(%order_id, "Order timed out and was cancelled.");
        self.release_cancelled(order_id).await;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_merged_and_checked() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert_eq!(
            normalise_lines(&[(b, 1), (a, 2), (b, 3)]),
            Ok(vec![(a, 2), (b, 4)])
        );
        assert!(normalise_lines(&[]).is_err());
        assert!(normalise_lines(&[(a, 0)]).is_err());
        assert!(normalise_lines(&[(a, MAX_QUANTITY + 1)]).is_err());
        let many: Vec<_> = (0..=MAX_LINES as u128)
            .map(|n| (Uuid::from_u128(n), 1))
            .collect();
        assert!(normalise_lines(&many).is_err());
        // Each line within the limit, together over it.
        assert!(normalise_lines(&[(a, MAX_QUANTITY), (a, 1)]).is_err());
        assert!(normalise_lines(&[(a, MAX_QUANTITY - 1), (a, 1)]).is_ok());
    }

    #[test]
    fn totals_that_do_not_fit_are_refused_not_wrapped() {
        let item = |quantity, unit_price_cents| Item {
            product_id: Uuid::from_u128(1),
            quantity,
            unit_price_cents,
        };
        assert_eq!(order_total(&[item(2, 1250), item(1, 100)]), Some(2600));
        assert_eq!(order_total(&[]), Some(0));
        assert_eq!(order_total(&[item(4, 1 << 62)]), None);
        assert_eq!(order_total(&[item(1, i64::MAX), item(1, 1)]), None);
    }

    #[test]
    fn idempotency_keys_give_stable_order_ids_per_user() {
        let user = Uuid::from_u128(7);
        let id = |user: Uuid, key: &str| {
            Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, format!("{user}:{key}").as_bytes())
        };
        assert_eq!(id(user, "k1"), id(user, "k1"));
        assert_ne!(id(user, "k1"), id(user, "k2"));
        assert_ne!(id(user, "k1"), id(Uuid::from_u128(8), "k1"));
    }
}
