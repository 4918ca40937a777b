//! The `payments` table.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A payment as `GET /payments/{order_id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub amount_cents: i64,
    /// `SUCCEEDED`, `FAILED`, `REFUNDED` (charged, then the order was cancelled) or `VOIDED`
    /// (the order was cancelled before it was charged; nothing was).
    pub status: String,
    /// Why it failed, or why the order was cancelled; `null` when it succeeded.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the charge was returned; `null` unless `REFUNDED`.
    pub refunded_at: Option<DateTime<Utc>>,
}

/// The outcome of a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Succeeded,
    Failed,
}

impl PaymentStatus {
    /// As stored in `payments.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }

    /// As the `status` label of `payments_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// What an order's cancellation did to its payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// It had been charged: the charge (this many cents) is returned.
    Refunded(i64),
    /// It had not been charged: now it never will be.
    Voided,
    /// Its payment had failed, or the cancellation was applied already.
    Unchanged,
}

/// Applies an order's cancellation to its payment inside the caller's transaction.
///
/// The void goes first: it takes the order's one payment row if nobody has, so the
/// order_created that may still come charges nothing. If a charge holds the row, Postgres
/// makes the insert wait for that charge to commit or roll back; the refund that follows is
/// a new statement, so it sees the committed charge.
pub(crate) async fn cancel(
    conn: &mut PgConnection,
    void_id: Uuid,
    order_id: Uuid,
    reason: &str,
) -> Result<Cancelled, sqlx::Error> {
    let voided = sqlx::query(
        "INSERT INTO payments (id, order_id, amount_cents, status, reason)
         VALUES ($1, $2, 0, 'VOIDED', $3)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(void_id)
    .bind(order_id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    if voided.rows_affected() == 1 {
        return Ok(Cancelled::Voided);
    }
    let refunded: Option<i64> = sqlx::query_scalar(
        "UPDATE payments SET status = 'REFUNDED', reason = $2, refunded_at = now()
         WHERE order_id = $1 AND status = 'SUCCEEDED'
         RETURNING amount_cents",
    )
    .bind(order_id)
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(refunded.map_or(Cancelled::Unchanged, Cancelled::Refunded))
}

/// Inserts the payment of an order inside the caller's transaction; `false` when the order
/// already has one (which is then left as it was).
pub(crate) async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    order_id: Uuid,
    amount_cents: i64,
    status: PaymentStatus,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO payments (id, order_id, amount_cents, status, reason)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(id)
    .bind(order_id)
    .bind(amount_cents)
    .bind(status.as_str())
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Reads payments for the REST routes.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn by_order(&self, order_id: Uuid) -> Result<Option<Payment>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, order_id, amount_cents, status, reason, created_at, refunded_at
             FROM payments WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await
    }
}
